#!/usr/bin/env python3
"""Write the campflow demo data set (French B2B) into examples/data/.

    python examples/make_data.py

Stdlib + openpyxl only, no network, random.Random(2026): two runs write the same bytes.
Formats follow SPEC.md section 5. Files:

  parties.csv      400 parties: 150 CLI, 180 PRO, 30 FOU, 20 VRP, 20 TIA (UTF-8, ';')
  contacts.csv     1 to 3 contacts (C1..C3) per CLI, PRO and FOU party (UTF-8, ';')
  targets.xlsx     target of the demo operation SALON-ERP-2026 (party_kinds: prospect,
                   client): title on row 1, row 2 empty, header on row 3, then 200 rows
  targets-bad.csv  target file with bad rows (Windows-1252, TAB, CRLF)
  parties-bad.csv  parties file with bad rows (UTF-8, ';'), codes unused in parties.csv

Bad rows, numbered as a spreadsheet program shows them (header = row 1). The tables
TARGETS_BAD_ROWS and PARTIES_BAD_ROWS below drive the generator; the final check asserts
that the files, these tables and this comment agree.

  targets-bad.csv                                 parties-bad.csv
  row  4  FICHE XYZ: unknown table                row  4  FICHE XYZ: unknown kind
  row  7  TIERS empty                             row  6  TIERS empty
  row  9  party P99999 does not exist             row  8  NOM empty
  row 11  FICHE CLI with a prospect's code        row 10  EMAIL without @
  row 13  FICHE FOU: suppliers are not targeted   row 12  TIERS duplicates row 3
  row 15  contact C9 unknown for that party
  good: rows 2 3 5 6 8 10 12 14 16 17             good: rows 2 3 5 7 9 11 13 14
"""

from __future__ import annotations

import csv
import io
import random
import re
import unicodedata
import zipfile
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import openpyxl
from openpyxl.styles import Font, PatternFill

DATA = Path(__file__).resolve().parent / "data"
SEED = 2026
FIXED_TIME = datetime(2026, 1, 5, 9, 0, 0)  # document and zip dates of the .xlsx

TARGETS_BAD_ROWS = {  # row -> (fault, reason); other rows up to TARGETS_BAD_LAST_ROW are good
    4: ("unknown_fiche", "FICHE XYZ: unknown table"),
    7: ("empty_tiers", "TIERS empty"),
    9: ("unknown_party", "party P99999 does not exist"),
    11: ("fiche_mismatch", "FICHE CLI with a prospect's code"),
    13: ("kind_not_targeted", "FICHE FOU: suppliers are not targeted"),  # left out, not an error
    15: ("unknown_contact", "contact C9 unknown for that party"),
}
TARGETS_BAD_LAST_ROW = 17
PARTIES_BAD_ROWS = {  # row -> (fault, reason); other rows up to PARTIES_BAD_LAST_ROW are good
    4: ("unknown_fiche", "FICHE XYZ: unknown kind"),
    6: ("empty_tiers", "TIERS empty"),
    8: ("empty_nom", "NOM empty"),
    10: ("email_without_at", "EMAIL without @"),
    12: ("duplicate_tiers", "TIERS duplicates row 3"),
}
PARTIES_BAD_LAST_ROW = 14
PARTIES_BAD_DUPLICATE_OF = 3

KIND_COUNTS = {"CLI": 150, "PRO": 180, "FOU": 30, "VRP": 20, "TIA": 20}
CODE_PREFIX = {"CLI": "C", "PRO": "P", "FOU": "F", "VRP": "V", "TIA": "T"}
CONTACT_KINDS = ("CLI", "PRO", "FOU")
TARGET_KINDS = ("CLI", "PRO")  # party_kinds of the demo operation
TARGET_ROWS = 200
TARGET_TITLE = "Cible Salon ERP 2026 — export CRM"

PARTY_HEADER = ["FICHE", "TIERS", "NOM", "EMAIL", "TEL", "FAX", "ADRESSE", "CP", "VILLE",
                "PAYS", "SECTEUR", "EFFECTIF", "STAT(1)", "STAT(2)"]
CONTACT_HEADER = ["TIERS", "CONTACT", "CIVILITE", "NOM", "PRENOM", "FONCTION", "EMAIL", "TEL"]
TARGET_HEADER = ["FICHE", "TIERS", "CONTACT", "NOM"]
EMAIL_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")

SECTORS = {"Industrie": 20, "Commerce": 22, "Services": 25, "BTP": 15,
           "Agroalimentaire": 10, "Santé": 8}
TRADES = {
    "Industrie": ["Chaudronnerie", "Fonderie", "Décolletage", "Mécanique", "Plasturgie",
                  "Tôlerie", "Usinage", "Ateliers"],
    "Commerce": ["Quincaillerie", "Librairie", "Droguerie", "Papeterie", "Négoce",
                 "Jardinerie", "Caves", "Maison"],
    "Services": ["Transports", "Cabinet", "Imprimerie", "Agence", "Nettoyage",
                 "Déménagements", "Bureau d'études", "Sécurité"],
    "BTP": ["Menuiserie", "Ébénisterie", "Maçonnerie", "Charpente", "Plomberie",
            "Électricité", "Serrurerie", "Couverture"],
    "Agroalimentaire": ["Boulangerie", "Pâtisserie", "Fromagerie", "Brasserie",
                        "Conserverie", "Charcuterie", "Chocolaterie", "Minoterie"],
    "Santé": ["Laboratoire", "Pharmacie", "Clinique", "Cabinet médical", "Cabinet dentaire",
              "Orthopédie", "Ambulances", "Centre d'imagerie"],
}
PLACES = ["du Vieux-Port", "des Alpes", "de l'Estuaire", "du Léman", "des Deux-Rives",
          "de la Côte d'Opale", "du Périgord", "du Val de Loire", "des Monts d'Arrée",
          "du Pays Basque", "de la Forêt", "du Château", "de l'Océan", "des Hauts-de-Seine"]
COMPANY_ADJECTIVES = ["Générale", "Nouvelle", "Française", "Régionale", "Européenne",
                      "Méridionale", "Bretonne", "Alsacienne", "Lyonnaise", "Normande"]
COMPANY_NOUNS = ["Équipements", "Études", "Emballages", "Outillage", "Installations",
                 "Impressions", "Entretien", "Fournitures", "Bâtiment", "Négoce",
                 "Matériaux", "Logistique", "Applications industrielles"]
COMPANY_SUFFIXES = ["Industries", "SAS", "SARL", "& Associés", "Groupe", "et Cie",
                    "Conseil", "Distribution", "Services"]
SURNAMES = [  # Windows-1252 safe: they end up in targets-bad.csv
    "Lefèvre", "Dupré", "Gérard", "Bénard", "Müller", "Caron", "Brûlé", "Côté", "Hébert",
    "Mérieux", "Lemaître", "Barthélemy", "Faure", "Giraud", "Roussel", "Morin", "Fontaine",
    "Chevalier", "Rivière", "Guérin", "Ménard", "Thévenin", "Prévost", "Béranger", "Noël",
    "Le Gall", "Le Goff", "Kerbrat", "Schneider", "Meyer", "Da Silva", "Pereira", "Martin",
    "Bernard", "Dubois", "Durand", "Leroy", "Moreau", "Laurent", "Mercier", "Boyer",
    "Garnier", "Roux", "Fournier", "Girard", "Perrin", "Brunet", "Blanchard", "Gauthier",
    "Masson", "Dumont", "Clément", "Aubry", "Poirier", "Desprès", "Marchand", "D'Almeida",
    "Ollivier", "Lebœuf", "Josselin", "Crépin", "Sénéchal", "Hervé",
]
CONTACT_SURNAMES = SURNAMES + ["Nguyễn", "Trần", "Lê", "Haddad", "Benali"]
FIRST_NAMES = {
    "M.": ["François", "Jérôme", "Loïc", "Noël", "Jean-François", "Benoît", "Cédric",
           "Thibault", "Gaël", "Hervé", "Frédéric", "Stéphane", "Rémi", "Joël", "Raphaël",
           "Sébastien", "Grégoire", "Aurélien", "Étienne", "Pierre", "Nicolas", "Olivier",
           "Julien", "Thomas", "Antoine", "Mathéo"],
    "Mme": ["Hélène", "Anaïs", "Chloé", "Gaëlle", "Maëlle", "Zoé", "Léa", "Mélanie",
            "Océane", "Céline", "Agnès", "Bérénice", "Noémie", "Élodie", "Sophie",
            "Aurélie", "Marie-Hélène", "Françoise", "Inès", "Clémence", "Émilie", "Valérie",
            "Camille", "Nathalie", "Sandrine", "Joëlle"],
}
FUNCTIONS = ["DIRECTION", "ACHATS", "MARKETING", "TECHNIQUE", "COMPTABILITE"]
ISPS = ["orange.fr", "wanadoo.fr", "free.fr", "sfr.fr", "laposte.net", "gmail.com"]
DOMAIN_STOPWORDS = {"et", "de", "du", "des", "la", "le", "les", "d", "l", "sas", "sarl",
                    "sa", "cie"}

FRENCH_CITIES = [  # city, postal codes, STAT(1) region, phone zone, weight
    ("Paris", [f"750{n:02d}" for n in range(1, 21)], "IDF", "1", 30),
    ("Boulogne-Billancourt", ["92100"], "IDF", "1", 4),
    ("Nanterre", ["92000"], "IDF", "1", 3),
    ("Saint-Denis", ["93200"], "IDF", "1", 3),
    ("Créteil", ["94000"], "IDF", "1", 2),
    ("Versailles", ["78000"], "IDF", "1", 2),
    ("Lyon", [f"6900{n}" for n in range(1, 10)], "ARA", "4", 12),
    ("Villeurbanne", ["69100"], "ARA", "4", 3),
    ("Grenoble", ["38000", "38100"], "ARA", "4", 4),
    ("Saint-Étienne", ["42000", "42100"], "ARA", "4", 3),
    ("Clermont-Ferrand", ["63000", "63100"], "ARA", "4", 2),
    ("Annecy", ["74000"], "ARA", "4", 2),
    ("Marseille", [f"130{n:02d}" for n in range(1, 17)], "PACA", "4", 10),
    ("Aix-en-Provence", ["13090", "13100"], "PACA", "4", 3),
    ("Nice", ["06000", "06100", "06200"], "PACA", "4", 4),
    ("Toulon", ["83000"], "PACA", "4", 2),
    ("Lille", ["59000", "59800"], "HDF", "3", 7),
    ("Roubaix", ["59100"], "HDF", "3", 2),
    ("Amiens", ["80000"], "HDF", "3", 2),
    ("Nantes", ["44000", "44100", "44200", "44300"], "PDL", "2", 7),
    ("Angers", ["49000", "49100"], "PDL", "2", 3),
    ("Le Mans", ["72000", "72100"], "PDL", "2", 2),
    ("Bordeaux", ["33000", "33100", "33200", "33300", "33800"], "NAQ", "5", 7),
    ("Mérignac", ["33700"], "NAQ", "5", 2),
    ("Limoges", ["87000", "87100"], "NAQ", "5", 2),
    ("Poitiers", ["86000"], "NAQ", "5", 2),
    ("La Rochelle", ["17000"], "NAQ", "5", 2),
    ("Toulouse", ["31000", "31100", "31200", "31300", "31400", "31500"], "OCC", "5", 7),
    ("Montpellier", ["34000", "34070", "34080"], "OCC", "4", 4),
    ("Nîmes", ["30000", "30900"], "OCC", "4", 2),
    ("Perpignan", ["66000"], "OCC", "4", 1),
    ("Strasbourg", ["67000", "67100", "67200"], "GE", "3", 6),
    ("Mulhouse", ["68100", "68200"], "GE", "3", 2),
    ("Metz", ["57000", "57050"], "GE", "3", 2),
    ("Nancy", ["54000", "54100"], "GE", "3", 2),
    ("Reims", ["51100"], "GE", "3", 2),
    ("Rennes", ["35000", "35200", "35700"], "BRE", "2", 6),
    ("Brest", ["29200"], "BRE", "2", 3),
    ("Quimper", ["29000"], "BRE", "2", 2),
    ("Lorient", ["56100"], "BRE", "2", 2),
]
FOREIGN_CITIES = [  # city, postal codes, country, phone pattern (d = digit)
    ("Bruxelles", ["1000", "1050"], "BE", "+32 2 Ddd dd dd"),
    ("Liège", ["4000"], "BE", "+32 4 Ddd dd dd"),
    ("Namur", ["5000"], "BE", "+32 81 Dd dd dd"),
    ("Genève", ["1201", "1204"], "CH", "+41 22 Ddd dd dd"),
    ("Lausanne", ["1003", "1005"], "CH", "+41 21 Ddd dd dd"),
]
STREETS = ["rue de la République", "avenue Jean Jaurès", "boulevard Victor Hugo",
           "rue du Général de Gaulle", "rue Émile Zola", "place de l'Église", "rue des Écoles",
           "avenue de la Libération", "rue Pasteur", "chemin des Vignes", "impasse des Lilas",
           "allée des Châtaigniers", "rue Saint-Éloi", "boulevard Gambetta", "avenue Foch",
           "rue de la Gare", "rue Édouard Herriot", "rue des Frères Lumière", "route de Lyon",
           "rue de l'Hôtel de Ville", "cours Mirabeau", "rue Léon Blum", "quai des Chartrons"]
STREET_PREFIXES = ["ZI des Pénitents", "ZA du Bois Joli", "Parc d'activités de la Gare",
                   "Bâtiment B", "Zone artisanale Les Landes"]
FOREIGN_STREETS = {"BE": ["Rue du Marché", "Rue de la Loi", "Chaussée de Wavre", "Avenue Louise",
                          "Boulevard d'Avroy", "Rue de Fer"],
                   "CH": ["Rue du Rhône", "Place Saint-François", "Avenue de la Gare",
                          "Rue de Lausanne", "Quai du Mont-Blanc"]}


# ---------------------------------------------------------------- text helpers

def ascii_fold(text: str) -> str:
    """Drop accents and ligatures: 'Lebœuf Nguyễn' -> 'Leboeuf Nguyen'."""
    for ligature, plain in (("œ", "oe"), ("Œ", "Oe"), ("æ", "ae"), ("Æ", "Ae"), ("ß", "ss")):
        text = text.replace(ligature, plain)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def mailbox(first: str, last: str) -> str:
    """prenom.nom, ascii-folded: ('Jean-François', 'Le Gall') -> jean-francois.le-gall."""
    def part(text: str) -> str:
        text = ascii_fold(text).lower().replace("'", "")
        return re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return f"{part(first)}.{part(last)}"


def de(place: str) -> str:
    """French 'de' with elision and contraction: de Lyon, d'Angers, du Mans."""
    if place.startswith("Le "):
        return "du " + place[3:]
    if place.startswith("Les "):
        return "des " + place[4:]
    return ("d'" if ascii_fold(place[0]).lower() in "aeiouy" else "de ") + place


def digits(rng: random.Random, pattern: str) -> str:
    """Fill a phone pattern: D = digit 1-9, d = digit 0-9."""
    return "".join(str(rng.randint(1, 9)) if c == "D" else str(rng.randint(0, 9)) if c == "d"
                   else c for c in pattern)


def french_pattern(zone: str, international: bool) -> str:
    """'+33 1 Dd dd dd dd' or '01 Dd dd dd dd'."""
    return f"+33 {zone} Dd dd dd dd" if international else f"0{zone} Dd dd dd dd"


# ---------------------------------------------------------------- parties

def pick_location(rng: random.Random, fiche: str) -> dict:
    """Address fields of a party (mostly France, a few BE/CH) and its phone pattern."""
    if fiche in CONTACT_KINDS and rng.random() < 0.04:
        city, codes, country, phone = rng.choice(FOREIGN_CITIES)
        address = f"{rng.choice(FOREIGN_STREETS[country])} {rng.randint(1, 120)}"
        return {"ADRESSE": address, "CP": rng.choice(codes), "VILLE": city, "PAYS": country,
                "STAT(1)": "", "_phone": phone}
    city, codes, region, zone, _ = rng.choices(FRENCH_CITIES,
                                               weights=[c[4] for c in FRENCH_CITIES])[0]
    return {"ADRESSE": street_address(rng), "CP": rng.choice(codes), "VILLE": city,
            "PAYS": "FR", "STAT(1)": region,
            "_phone": french_pattern(zone, international=rng.random() < 0.35)}


def street_address(rng: random.Random) -> str:
    """'12 rue de la République', sometimes '7 bis …' or 'ZA du Bois Joli, 3 …'."""
    number = f"{rng.randint(1, 150)}{rng.choices(['', ' bis', ' ter'], [90, 8, 2])[0]}"
    line = f"{number} {rng.choice(STREETS)}"
    if rng.random() < 0.08:
        line = f"{rng.choice(STREET_PREFIXES)}, {line}"
    return line


def pick_sector(rng: random.Random, fiche: str) -> str:
    """SECTEUR of a party, by kind."""
    if fiche == "FOU":
        return rng.choice(["Industrie", "Commerce", "Services"])
    if fiche in ("VRP", "TIA"):
        return {"VRP": "Commerce", "TIA": "Services"}[fiche]
    return rng.choices(list(SECTORS), weights=list(SECTORS.values()))[0]


def company_name(rng: random.Random, sector: str) -> str:
    """A French company name: 'Boulangerie Lefèvre & Fils', 'Société Générale d'Études'…"""
    trade, who = rng.choice(TRADES[sector]), rng.choice(SURNAMES)
    first = rng.choice(FIRST_NAMES[rng.choice(["M.", "Mme"])])
    name = rng.choice([
        f"{trade} {who}", f"{trade} {who} & Fils", f"{trade} {first} {who}",
        f"{trade} {who} Frères", f"{trade} {rng.choice(PLACES)}",
        f"{who} {rng.choice(COMPANY_SUFFIXES)}", f"Établissements {who}",
        f"Société {rng.choice(COMPANY_ADJECTIVES)} {de(rng.choice(COMPANY_NOUNS))}",
    ])
    if rng.random() < 0.06 and not name.endswith(("SAS", "SARL")):
        name += rng.choice([" SARL", " SAS", " SA"])
    return name


def rep_name(rng: random.Random) -> tuple[str, tuple[str, str] | None]:
    """A sales rep: a person ('Jérôme Bénard', 'BÉNARD Jérôme') or an agency."""
    first, last = rng.choice(FIRST_NAMES[rng.choice(["M.", "Mme"])]), rng.choice(SURNAMES)
    style = rng.randrange(4)
    if style == 0:
        return f"{first} {last}", (first, last)
    if style == 1:
        return f"{last.upper()} {first}", (first, last)
    return rng.choice([f"Agence commerciale {last}", f"{last} Représentation"]), None


def other_name(rng: random.Random, city: str) -> str:
    """An 'other' party: chamber of commerce, town hall, association, law firm…"""
    who = rng.choice(SURNAMES)
    return rng.choice([
        f"Chambre de Commerce et d'Industrie {de(city)}", f"Mairie {de(city)}",
        f"Association des Entrepreneurs {de(city)}", f"Office de Tourisme {de(city)}",
        f"Cabinet {who} & Associés", f"Agence {who} Communication",
    ])


def party_name(rng: random.Random, fiche: str, sector: str, city: str):
    """(NOM, (first, last) when the party is a person, else None)."""
    if fiche == "VRP":
        return rep_name(rng)
    if fiche == "TIA":
        return other_name(rng, city), None
    return company_name(rng, sector), None


def party_email(rng: random.Random, name: str, person, country: str, domains: set):
    """(EMAIL, domain): contact@<name>.fr for companies, prenom.nom@<isp> for a person."""
    if person:
        return f"{mailbox(*person)}@{rng.choice(ISPS)}", None
    words = [w for w in re.split(r"[^a-z0-9]+", ascii_fold(name).lower())
             if w and w not in DOMAIN_STOPWORDS]
    base, tld = "-".join(words[:4]), {"BE": "be", "CH": "ch"}.get(country, "fr")
    domain, n = f"{base}.{tld}", 2
    while domain in domains:
        domain, n = f"{base}{n}.{tld}", n + 1
    domains.add(domain)
    box = rng.choices(["contact", "info", "accueil", "commercial"], [70, 15, 10, 5])[0]
    return f"{box}@{domain}", domain


def headcount(rng: random.Random, fiche: str) -> int:
    """EFFECTIF: mostly small and medium companies."""
    if fiche == "VRP":
        return rng.randint(1, 3)
    weights = [50, 40, 10, 0] if fiche == "TIA" else [35, 35, 20, 10]
    low, high = rng.choices([(1, 9), (10, 49), (50, 249), (250, 2500)], weights)[0]
    return rng.randint(low, high)


def segment(rng: random.Random, fiche: str, staff: int) -> str:
    """STAT(2): A/B/C by size, with some noise; none for reps and others."""
    if fiche in ("VRP", "TIA"):
        return ""
    if rng.random() < 0.1:
        return rng.choice("ABC")
    return "A" if staff >= 100 else "B" if staff >= 20 else "C"


def make_party(rng: random.Random, fiche: str, code: str, seen: dict) -> dict:
    """One party row; keys starting with _ are kept for contacts, not written."""
    loc = pick_location(rng, fiche)
    sector = pick_sector(rng, fiche)
    name, person = party_name(rng, fiche, sector, loc["VILLE"])
    while name in seen["names"]:
        name, person = party_name(rng, fiche, sector, loc["VILLE"])
    seen["names"].add(name)
    email, domain = party_email(rng, name, person, loc["PAYS"], seen["domains"])
    tel = digits(rng, loc["_phone"])
    fax = tel[:-2] + f"{(int(tel[-2:]) + rng.randint(1, 9)) % 100:02d}"
    staff = headcount(rng, fiche)
    row = {"FICHE": fiche, "TIERS": code, "NOM": name, "EMAIL": email, "TEL": tel,
           "FAX": fax if rng.random() < 0.3 else "", **loc, "SECTEUR": sector,
           "EFFECTIF": str(staff), "STAT(2)": segment(rng, fiche, staff), "_domain": domain}
    return blank_some(rng, row)


def blank_some(rng: random.Random, row: dict) -> dict:
    """Empty a few optional cells, as in any real CRM export."""
    for column, share in (("EMAIL", 0.03), ("TEL", 0.02), ("SECTEUR", 0.03),
                          ("EFFECTIF", 0.04), ("STAT(2)", 0.03)):
        if rng.random() < share:
            row[column] = ""
    return row


def make_parties(rng: random.Random, seen: dict) -> list[dict]:
    """The 400 parties of parties.csv, grouped by kind, codes in sequence (C00001…)."""
    return [make_party(rng, fiche, f"{CODE_PREFIX[fiche]}{n:05d}", seen)
            for fiche, count in KIND_COUNTS.items() for n in range(1, count + 1)]


# ---------------------------------------------------------------- contacts

def pick_functions(rng: random.Random, count: int) -> list[str]:
    """Distinct FONCTION values; the first contact is often the boss."""
    if rng.random() < 0.55:
        return ["DIRECTION"] + rng.sample(FUNCTIONS[1:], count - 1)
    return rng.sample(FUNCTIONS, count)


def contact_phone(rng: random.Random, party: dict) -> str:
    """A direct line in the party's zone, or a French mobile."""
    if party["PAYS"] != "FR" or rng.random() < 0.5:
        return digits(rng, party["_phone"])
    return digits(rng, french_pattern(rng.choice("67"), party["_phone"].startswith("+")))


def party_contacts(rng: random.Random, party: dict) -> list[dict]:
    """1 to 3 contacts C1, C2, C3 of one party, with distinct mailboxes."""
    count = rng.choices([1, 2, 3], [45, 35, 20])[0]
    rows, boxes = [], set()
    for n, function in enumerate(pick_functions(rng, count), 1):
        civility = rng.choice(["M.", "Mme"])
        first, last = rng.choice(FIRST_NAMES[civility]), rng.choice(CONTACT_SURNAMES)
        while mailbox(first, last) in boxes:
            first, last = rng.choice(FIRST_NAMES[civility]), rng.choice(CONTACT_SURNAMES)
        boxes.add(mailbox(first, last))
        email = f"{mailbox(first, last)}@{party['_domain']}" if rng.random() > 0.05 else ""
        tel = contact_phone(rng, party) if rng.random() > 0.05 else ""
        rows.append({"TIERS": party["TIERS"], "CONTACT": f"C{n}", "CIVILITE": civility,
                     "NOM": last, "PRENOM": first, "FONCTION": function,
                     "EMAIL": email, "TEL": tel})
    return rows


def make_contacts(rng: random.Random, parties: list[dict]) -> list[dict]:
    """Contacts of every client, prospect and supplier."""
    return [contact for party in parties if party["FICHE"] in CONTACT_KINDS
            for contact in party_contacts(rng, party)]


def contact_codes(contacts: list[dict]) -> dict[str, list[str]]:
    """Party code -> its contact codes."""
    codes = defaultdict(list)
    for contact in contacts:
        codes[contact["TIERS"]].append(contact["CONTACT"])
    return codes


# ---------------------------------------------------------------- targets

def target_row(fiche: str, party: dict, contact: str = "") -> dict:
    """One row of a target file."""
    return {"FICHE": fiche, "TIERS": party["TIERS"], "CONTACT": contact, "NOM": party["NOM"]}


def make_targets(rng: random.Random, parties: list[dict], contacts: list[dict]) -> list[dict]:
    """TARGET_ROWS rows over clients and prospects: party rows and contact rows."""
    codes = contact_codes(contacts)
    candidates = [p for p in parties if p["FICHE"] in TARGET_KINDS]
    rng.shuffle(candidates)
    rows = []
    for party in candidates:
        if len(rows) >= TARGET_ROWS:
            break
        own = codes[party["TIERS"]]
        picked = [""] if rng.random() < 0.6 else rng.sample(own, rng.randint(1, min(2, len(own))))
        rows += [target_row(party["FICHE"], party, code) for code in picked]
    return sorted(rows[:TARGET_ROWS], key=lambda r: (r["FICHE"], r["TIERS"], r["CONTACT"]))


def bad_target(rng: random.Random, fault: str, by_kind: dict) -> dict:
    """A target row with exactly one fault."""
    prospect, client = rng.choice(by_kind["PRO"]), rng.choice(by_kind["CLI"])
    return {
        "unknown_fiche": lambda: target_row("XYZ", prospect),
        "empty_tiers": lambda: {**target_row("PRO", prospect), "TIERS": ""},
        "unknown_party": lambda: {"FICHE": "PRO", "TIERS": "P99999", "CONTACT": "",
                                  "NOM": "Fromagerie Hélène Lachaîne"},
        "fiche_mismatch": lambda: target_row("CLI", prospect),
        "kind_not_targeted": lambda: target_row("FOU", rng.choice(by_kind["FOU"])),
        "unknown_contact": lambda: target_row("CLI", client, "C9"),
    }[fault]()


def make_bad_targets(rng: random.Random, parties: list[dict], contacts: list[dict]):
    """Rows 2..TARGETS_BAD_LAST_ROW of targets-bad.csv, bad ones at TARGETS_BAD_ROWS."""
    by_kind = defaultdict(list)
    for party in parties:
        by_kind[party["FICHE"]].append(party)
    codes = contact_codes(contacts)
    good = iter(rng.sample(by_kind["CLI"] + by_kind["PRO"], TARGETS_BAD_LAST_ROW))
    rows = []
    for number in range(2, TARGETS_BAD_LAST_ROW + 1):
        if number in TARGETS_BAD_ROWS:
            rows.append(bad_target(rng, TARGETS_BAD_ROWS[number][0], by_kind))
            continue
        party = next(good)
        contact = rng.choice(codes[party["TIERS"]]) if rng.random() < 0.3 else ""
        rows.append(target_row(party["FICHE"], party, contact))
    return rows


# ---------------------------------------------------------------- bad parties

def spoil(row: dict, fault: str, original: dict) -> None:
    """Give a good party row exactly one fault."""
    if fault == "unknown_fiche":
        row["FICHE"] = "XYZ"
    elif fault == "empty_tiers":
        row["TIERS"] = ""
    elif fault == "empty_nom":
        row["NOM"] = ""
    elif fault == "email_without_at":
        row["EMAIL"] = (row["EMAIL"] or "contact@exemple.fr").replace("@", ".")
    elif fault == "duplicate_tiers":
        row["TIERS"] = original["TIERS"]


def make_bad_parties(rng: random.Random, seen: dict) -> list[dict]:
    """Rows 2..PARTIES_BAD_LAST_ROW of parties-bad.csv: new parties (codes from 901 on)."""
    duplicate = next(n for n, (fault, _) in PARTIES_BAD_ROWS.items() if fault == "duplicate_tiers")
    rows, counters = [], Counter()
    for number in range(2, PARTIES_BAD_LAST_ROW + 1):
        fiche = rng.choice(["CLI", "PRO", "PRO", "FOU", "VRP", "TIA"])
        if number == duplicate:  # same kind as the row it duplicates: the code is the only fault
            fiche = rows[PARTIES_BAD_DUPLICATE_OF - 2]["FICHE"]
        counters[fiche] += 1
        code = f"{CODE_PREFIX[fiche]}{900 + counters[fiche]:05d}"
        rows.append(make_party(rng, fiche, code, seen))
    for number, (fault, _) in PARTIES_BAD_ROWS.items():
        spoil(rows[number - 2], fault, rows[PARTIES_BAD_DUPLICATE_OF - 2])
    return rows


# ---------------------------------------------------------------- writing

def write_csv(path: Path, header: list[str], rows: list[dict], *, delimiter: str = ";",
              encoding: str = "utf-8", newline: str = "\n") -> None:
    """Write rows (dicts; extra _keys ignored) under a header line."""
    with path.open("w", encoding=encoding, newline="") as file:
        writer = csv.DictWriter(file, header, delimiter=delimiter, lineterminator=newline,
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_targets_xlsx(path: Path, rows: list[dict]) -> None:
    """targets.xlsx: title on row 1, empty row 2, header on row 3, targets below."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Cible"
    sheet["A1"] = TARGET_TITLE
    sheet["A1"].font = Font(bold=True, size=14)
    for column, name in enumerate(TARGET_HEADER, 1):
        cell = sheet.cell(row=3, column=column, value=name)
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
    for number, row in enumerate(rows, 4):
        for column, name in enumerate(TARGET_HEADER, 1):
            sheet.cell(row=number, column=column, value=row[name] or None)
    for letter, width in zip("ABCD", (8, 10, 10, 48)):
        sheet.column_dimensions[letter].width = width
    sheet.freeze_panes = "A4"
    sheet.auto_filter.ref = f"A3:D{3 + len(rows)}"
    save_xlsx(workbook, path)


def save_xlsx(workbook, path: Path) -> None:
    """Save a workbook reproducibly: fixed document dates and zip entry dates."""
    workbook.properties.creator = "campflow examples/make_data.py"
    workbook.properties.created = FIXED_TIME
    buffer = io.BytesIO()
    workbook.save(buffer)
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + stamp, data)
            entry = zipfile.ZipInfo(info.filename, FIXED_TIME.timetuple()[:6])
            dst.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)


CALLSHEET_HEADER = ["TIERS", "NOM", "VILLE", "STATUT", "RAPPEL", "Q1.CATALOGUE", "AGRANDISSEMENT", "REMARQUE"]


def make_callsheet(rng: random.Random, parties: list[dict]) -> list[dict]:
    """Answers of the Lyon phoning campaign: who wants the catalogue, who to call back."""
    rows = []
    for party in parties:
        if party["FICHE"] not in ("PRO", "CLI") or not party["CP"].startswith("69"):
            continue
        outcome = rng.choice(["oui", "oui", "non", "plus tard", "rappel", "injoignable"])
        row = {"TIERS": party["TIERS"], "NOM": party["NOM"], "VILLE": party["VILLE"], "STATUT": "",
               "RAPPEL": "", "Q1.CATALOGUE": "", "AGRANDISSEMENT": "", "REMARQUE": ""}
        if outcome == "rappel":
            row.update(STATUT="to_process", RAPPEL="2026-03-12 14:30", REMARQUE="Rappeler après le salon")
        elif outcome == "injoignable":
            row.update(STATUT="not_processed_continue", REMARQUE="Numéro non attribué")
        else:
            row.update(STATUT="ok_continue", **{"Q1.CATALOGUE": outcome},
                       AGRANDISSEMENT=rng.choice(["oui", "non", ""]))
        rows.append(row)
    return rows


def write_callsheet_xlsx(path: Path, rows: list[dict]) -> None:
    """callsheet-answers.xlsx: a call sheet as operators send it back, header on row 2."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Appels"
    sheet["A1"] = "Prospection Lyon 2026 — appels du 9 mars"
    for column, name in enumerate(CALLSHEET_HEADER, 1):
        sheet.cell(row=2, column=column, value=name).font = Font(bold=True)
    for number, row in enumerate(rows, 3):
        for column, name in enumerate(CALLSHEET_HEADER, 1):
            sheet.cell(row=number, column=column, value=row[name] or None)
    save_xlsx(workbook, path)


# ---------------------------------------------------------------- checks

def read_csv(path: Path, delimiter: str = ";", encoding: str = "utf-8"):
    """(header, rows as dicts) of a CSV file."""
    with path.open(encoding=encoding, newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        return reader.fieldnames, list(reader)


def party_faults(rows: list[dict]) -> dict[int, str]:
    """{row number: fault} under the party import rules (header = row 1)."""
    faults, first_row = {}, {}
    for number, row in enumerate(rows, 2):
        checks = [("unknown_fiche", row["FICHE"] not in KIND_COUNTS),
                  ("empty_tiers", not row["TIERS"]), ("empty_nom", not row["NOM"]),
                  ("email_without_at", row["EMAIL"] and "@" not in row["EMAIL"]),
                  ("duplicate_tiers", row["TIERS"] in first_row)]
        fault = next((name for name, bad in checks if bad), None)
        if fault:
            faults[number] = fault
        first_row.setdefault(row["TIERS"], number)
    return faults


def target_fault(row: dict, kinds: dict, contacts: set) -> str | None:
    """The first fault of a target row under the SPEC section 5 rules, or None."""
    fiche, tiers, contact = row["FICHE"], row["TIERS"], row["CONTACT"]
    checks = [("unknown_fiche", fiche not in KIND_COUNTS), ("empty_tiers", not tiers),
              ("unknown_party", tiers not in kinds), ("fiche_mismatch", kinds.get(tiers) != fiche),
              ("kind_not_targeted", fiche not in TARGET_KINDS),
              ("unknown_contact", contact and (tiers, contact) not in contacts)]
    return next((name for name, bad in checks if bad), None)


def target_faults(rows: list[dict], kinds: dict, contacts: set, first: int) -> dict[int, str]:
    """{row number: fault} of a target file whose data start on row `first`."""
    faults = {n: target_fault(row, kinds, contacts) for n, row in enumerate(rows, first)}
    return {n: fault for n, fault in faults.items() if fault}


def check_documented(table: dict) -> None:
    """The docstring at the top lists exactly this table's rows and reasons."""
    for number, (_, reason) in table.items():
        assert f"row {number:>2}  {reason}" in __doc__, (number, reason)


def check_parties() -> dict[str, str]:
    """parties.csv: header, kinds, codes, e-mails; returns code -> FICHE."""
    header, parties = read_csv(DATA / "parties.csv")
    assert header == PARTY_HEADER
    assert party_faults(parties) == {}
    assert Counter(p["FICHE"] for p in parties) == Counter(KIND_COUNTS)
    assert all(p["TIERS"].startswith(CODE_PREFIX[p["FICHE"]]) for p in parties)
    assert all(EMAIL_RE.match(p["EMAIL"]) for p in parties if p["EMAIL"])
    assert len({p["NOM"] for p in parties}) == len(parties)
    assert {p["PAYS"] for p in parties} == {"FR", "BE", "CH"}
    return {p["TIERS"]: p["FICHE"] for p in parties}


def check_contacts(kinds: dict) -> set:
    """contacts.csv: 1-3 contacts C1.. per CLI/PRO/FOU party; returns {(party, contact)}."""
    header, contacts = read_csv(DATA / "contacts.csv")
    assert header == CONTACT_HEADER
    codes = contact_codes(contacts)
    assert set(codes) == {code for code, fiche in kinds.items() if fiche in CONTACT_KINDS}
    assert all(own == [f"C{n}" for n in range(1, len(own) + 1)] and len(own) <= 3
               for own in codes.values())
    assert all(c["CIVILITE"] in FIRST_NAMES and c["FONCTION"] in FUNCTIONS for c in contacts)
    assert all(EMAIL_RE.match(c["EMAIL"]) for c in contacts if c["EMAIL"])
    return {(c["TIERS"], c["CONTACT"]) for c in contacts}


def check_targets(kinds: dict, contacts: set) -> int:
    """targets.xlsx: layout, and only existing clients/prospects and their contacts."""
    sheet = openpyxl.load_workbook(DATA / "targets.xlsx").active
    cells = [["" if v is None else str(v) for v in row]
             for row in sheet.iter_rows(values_only=True)]
    assert cells[0][0] == TARGET_TITLE and not any(cells[1]) and cells[2] == TARGET_HEADER
    rows = [dict(zip(TARGET_HEADER, row)) for row in cells[3:]]
    assert len(rows) == TARGET_ROWS
    assert target_faults(rows, kinds, contacts, first=4) == {}
    assert len({(r["TIERS"], r["CONTACT"]) for r in rows}) == len(rows)
    assert {r["FICHE"] for r in rows} == set(TARGET_KINDS)
    assert any(r["CONTACT"] for r in rows) and any(not r["CONTACT"] for r in rows)
    return len(rows)


def check_bad_targets(kinds: dict, contacts: set) -> int:
    """targets-bad.csv: Windows-1252, TAB, bad rows exactly where TARGETS_BAD_ROWS says."""
    raw = (DATA / "targets-bad.csv").read_bytes()
    try:
        raw.decode("utf-8")
        raise AssertionError("targets-bad.csv must not be valid UTF-8")
    except UnicodeDecodeError:
        pass
    header, rows = read_csv(DATA / "targets-bad.csv", delimiter="\t", encoding="cp1252")
    assert header == TARGET_HEADER and len(rows) == TARGETS_BAD_LAST_ROW - 1
    expected = {number: fault for number, (fault, _) in TARGETS_BAD_ROWS.items()}
    assert target_faults(rows, kinds, contacts, first=2) == expected
    assert len(set(expected.values())) == len(expected)
    check_documented(TARGETS_BAD_ROWS)
    return len(rows)


def check_bad_parties(kinds: dict) -> int:
    """parties-bad.csv: bad rows exactly where PARTIES_BAD_ROWS says, new codes only."""
    header, rows = read_csv(DATA / "parties-bad.csv")
    assert header == PARTY_HEADER and len(rows) == PARTIES_BAD_LAST_ROW - 1
    expected = {number: fault for number, (fault, _) in PARTIES_BAD_ROWS.items()}
    assert party_faults(rows) == expected
    duplicate = rows[PARTIES_BAD_DUPLICATE_OF - 2]["TIERS"]
    assert [r["TIERS"] for r in rows].count(duplicate) == 2
    assert not {r["TIERS"] for r in rows} & set(kinds)
    check_documented(PARTIES_BAD_ROWS)
    return len(rows)


def check() -> dict[str, int]:
    """Re-read every file, assert the data set is consistent; rows per file."""
    kinds = check_parties()
    contacts = check_contacts(kinds)
    return {"parties.csv": len(kinds), "contacts.csv": len(contacts),
            "targets.xlsx": check_targets(kinds, contacts),
            "targets-bad.csv": check_bad_targets(kinds, contacts),
            "parties-bad.csv": check_bad_parties(kinds)}


def main() -> None:
    """Generate the files, then check them."""
    rng = random.Random(SEED)
    seen = {"names": set(), "domains": set()}
    DATA.mkdir(parents=True, exist_ok=True)
    parties = make_parties(rng, seen)
    contacts = make_contacts(rng, parties)
    write_csv(DATA / "parties.csv", PARTY_HEADER, parties)
    write_csv(DATA / "contacts.csv", CONTACT_HEADER, contacts)
    write_targets_xlsx(DATA / "targets.xlsx", make_targets(rng, parties, contacts))
    write_csv(DATA / "targets-bad.csv", TARGET_HEADER, make_bad_targets(rng, parties, contacts),
              delimiter="\t", encoding="cp1252", newline="\r\n")
    write_csv(DATA / "parties-bad.csv", PARTY_HEADER, make_bad_parties(rng, seen))
    write_callsheet_xlsx(DATA / "callsheet-answers.xlsx", make_callsheet(random.Random(SEED + 1), parties))
    for name, count in check().items():
        print(f"{name:16} {count:4} rows")


if __name__ == "__main__":
    main()
