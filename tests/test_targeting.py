"""Parties, contacts and targets imports, and the targeting commands, on the real PostgreSQL."""

from __future__ import annotations

import csv
import json

import openpyxl
import pytest

from tests.conftest import rows, scalar

PARTIES = """FICHE;TIERS;NOM;EMAIL;VILLE;CP;SECTEUR;STAT(2)
PRO;P001;Boulangerie Lefèvre;contact@lefevre.fr;Paris;75011;Commerce;A
PRO;P002;Menuiserie Gaëlle;;Lyon;69003;BTP;B
CLI;C001;Société Générale d'Équipements;info@sge.fr;Paris;75008;Industrie;A
FOU;F001;Fournitures Brûlé;;Lille;59000;Industrie;
"""
CONTACTS = """TIERS;CONTACT;NOM;PRENOM;FONCTION;EMAIL
P001;C1;Lefèvre;Hélène;direction;helene@lefevre.fr
P001;C2;Gérard;Loïc;ACHATS;
C001;C1;Dupré;François;DIRECTION;
"""
OPERATION = """kind: Operation
code: OP
label: Test
party_kinds: [prospect, client]
steps:
  - {code: S1, label: Appel, kind: other}
"""


@pytest.fixture
def loaded(database, cli, tmp_path):
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (tmp_path / "op.yaml").write_text(OPERATION, encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv"), ("contacts", "import", tmp_path / "contacts.csv"),
                 ("apply", tmp_path / "op.yaml")):
        result = cli(*args)
        assert result.code == 0, result.err
    return tmp_path


def write_xlsx(path, table):
    book = openpyxl.Workbook()
    for row in table:
        book.active.append(row)
    book.save(path)
    return path


class TestPartiesImport:
    def test_columns_custom_and_indexed_fields(self, loaded):
        assert rows("select code, kind, name, city, fields from party order by code") == [
            ("C001", "client", "Société Générale d'Équipements", "Paris", {"secteur": "Industrie", "stat(2)": "A"}),
            ("F001", "supplier", "Fournitures Brûlé", "Lille", {"secteur": "Industrie"}),
            ("P001", "prospect", "Boulangerie Lefèvre", "Paris", {"secteur": "Commerce", "stat(2)": "A"}),
            ("P002", "prospect", "Menuiserie Gaëlle", "Lyon", {"secteur": "BTP", "stat(2)": "B"}),
        ]
        assert rows("select table_name, name, indexed from custom_field order by name") == [
            ("party", "secteur", False), ("party", "stat", True)]

    def test_upsert_keeps_what_empty_cells_do_not_change(self, loaded, cli):
        (loaded / "update.csv").write_text("KIND,CODE,NAME,CITY,STAT(1)\nclient,P001,Boulangerie Lefèvre SA,,IDF\n",
                                           encoding="utf-8")
        result = cli("parties", "import", loaded / "update.csv", "--json")
        assert json.loads(result.out) == {"rows": 1, "created": 0, "updated": 1, "rejected": 0}
        assert rows("select kind, name, city, email, fields from party where code = 'P001'") == [
            ("client", "Boulangerie Lefèvre SA", "Paris", "contact@lefevre.fr",
             {"secteur": "Commerce", "stat(1)": "IDF", "stat(2)": "A"})]

    def test_bad_rows_reject_the_whole_file(self, database, cli, tmp_path):
        bad = tmp_path / "bad.csv"
        bad.write_text("FICHE;TIERS;NOM;EMAIL\nPRO;P1;Un;\nXYZ;P2;Deux;\nPRO;;Trois;\nPRO;P4;;\n"
                       "PRO;P5;Cinq;pas-une-adresse\nPRO;P1;Six;\n", encoding="utf-8")
        result = cli("parties", "import", bad)
        assert result.code == 1
        err = " ".join(result.err.split())
        for expected in ("bad.csv row 3: unknown FICHE 'XYZ'", "bad.csv row 4: TIERS (party code) is empty",
                         "bad.csv row 5: NOM (name) is empty",
                         "bad.csv row 6: EMAIL 'pas-une-adresse' is not an e-mail address",
                         "bad.csv row 7: party code P1 appears again (first at row 2)",
                         "5 of 6 row(s) rejected; nothing was imported"):
            assert expected in err
        assert scalar("select count(*) from party") == 0

    def test_skip_bad_rows_imports_the_good_ones(self, database, cli, tmp_path):
        bad = tmp_path / "bad.csv"
        bad.write_text("FICHE;TIERS;NOM\nPRO;P1;Un\nXYZ;P2;Deux\n", encoding="utf-8")
        report = tmp_path / "rejected.csv"
        result = cli("parties", "import", bad, "--skip-bad-rows", "--report", report)
        assert result.code == 0, result.err
        assert "1 bad row(s) skipped" in result.out
        assert scalar("select count(*) from party") == 1
        import csv

        with report.open(encoding="utf-8") as f:
            assert list(csv.reader(f, delimiter=";"))[1][:2] == ["3", "unknown FICHE 'XYZ'; use one of "
                                                                 "CLI, PRO, FOU, VRP, TIA or client, prospect, "
                                                                 "supplier, sales_rep, other"]

    def test_windows_1252_csv(self, database, cli, tmp_path):
        path = tmp_path / "cp1252.csv"
        path.write_bytes("FICHE\tTIERS\tNOM\tVILLE\nPRO\tP1\tCœur de Bœuf €\tBéziers\n".encode("cp1252"))
        assert cli("parties", "import", path).code == 0
        assert rows("select name, city from party") == [("Cœur de Bœuf €", "Béziers")]

    def test_contacts_need_their_party(self, loaded, cli):
        assert rows("select p.code, c.code, c.first_name, c.function from contact c join party p "
                    "on p.id = c.party_id order by 1, 2") == [
            ("C001", "C1", "François", "DIRECTION"), ("P001", "C1", "Hélène", "DIRECTION"),
            ("P001", "C2", "Loïc", "ACHATS")]
        (loaded / "bad.csv").write_text("TIERS;CONTACT;NOM\nP404;C1;Personne\n", encoding="utf-8")
        result = cli("contacts", "import", loaded / "bad.csv")
        assert result.code == 1
        assert "bad.csv row 2: unknown party P404" in result.err


class TestTargetsImport:
    def test_xlsx_with_header_on_row_3(self, loaded, cli):
        path = write_xlsx(loaded / "targets.xlsx", [
            ["Cible du salon"], [], ["Fiche", "Tiers", "Contact", "Nom"],
            ["PRO", "P001", "C1", "ignored"], ["PRO", "P001", "C2", None], ["CLI", "C001", None, None]])
        result = cli("targets", "import", "OP", path)
        assert result.code == 0, result.err
        assert "2 parties targeted" in result.out and "2 contacts" in result.out
        assert rows("select p.code from operation_target t join party p on p.id = t.party_id order by 1") == [
            ("C001",), ("P001",)]
        again = cli("targets", "import", "OP", path, "--json")
        assert json.loads(again.out)["already"] == 2
        assert scalar("select count(*) from operation_target") == 2

    def test_every_bad_row_is_reported_and_nothing_imported(self, loaded, cli):
        path = loaded / "bad.csv"
        path.write_text("FICHE,TIERS,CONTACT\nPRO,P001,\nXYZ,P002,\nPRO,,\nPRO,P404,\nCLI,P002,\n"
                        "FOU,F001,\nPRO,P001,C9\n", encoding="utf-8")
        result = cli("targets", "import", "OP", path)
        assert result.code == 1
        err = " ".join(result.err.split())
        for expected in ("row 3: unknown FICHE 'XYZ'", "row 4: TIERS (party code) is empty",
                         "row 5: unknown party P404", "row 6: party P002 is a prospect, not a client",
                         "row 8: party P001 has no contact C9", "5 of 7 row(s) rejected"):
            assert expected in err
        assert "row 7" not in err  # the supplier is left out, not an error
        assert scalar("select count(*) from operation_target") == 0

    def test_parties_of_other_kinds_are_left_out_and_counted(self, loaded, cli):
        (loaded / "more.csv").write_text("FICHE;TIERS;NOM\nFOU;F002;Fer\nTIA;T001;Tiers\n", encoding="utf-8")
        assert cli("parties", "import", loaded / "more.csv").code == 0
        path = loaded / "targets.csv"
        path.write_text("FICHE;TIERS;CONTACT\nPRO;P001;C1\nFOU;F001;\nCLI;C001;\nFOU;F002;\nTIA;T001;\n",
                        encoding="utf-8")
        result = cli("targets", "import", "OP", path, "--report", loaded / "report.csv")
        assert result.code == 0, result.err
        out = " ".join(result.out.split())
        assert "2 parties targeted, 1 contacts" in out
        assert "1 other party, 2 suppliers left out: the operation targets prospect, client" in out
        assert rows("select p.code from operation_target t join party p on p.id = t.party_id order by 1") == [
            ("C001",), ("P001",)]
        with (loaded / "report.csv").open(newline="", encoding="utf-8") as report:
            assert list(csv.reader(report, delimiter=";")) == [
                ["row", "reason"],
                ["3", "left out: party F001 is a supplier; operation OP targets prospect, client"],
                ["5", "left out: party F002 is a supplier; operation OP targets prospect, client"],
                ["6", "left out: party T001 is of kind other; operation OP targets prospect, client"]]
        again = json.loads(cli("targets", "import", "OP", path, "--json").out)
        assert again["left_out"] == {"other": 1, "supplier": 2} and again["already"] == 2

    def test_a_left_out_kind_does_not_hide_the_bad_rows(self, loaded, cli):
        path = loaded / "targets.csv"
        path.write_text("FICHE;TIERS\nFOU;F001\nPRO;P404\nFOU;F404\n", encoding="utf-8")
        result = cli("targets", "import", "OP", path)
        assert result.code == 1
        err = " ".join(result.err.split())
        assert "row 3: unknown party P404" in err and "row 4: unknown party F404" in err
        assert "2 of 3 row(s) rejected; nothing was imported" in err and "Traceback" not in err
        assert scalar("select count(*) from operation_target") == 0

    @pytest.mark.parametrize(("content", "message"), [
        (b"", "the file is empty"),
        (b"FICHE;NOM\nPRO;x\n", "no header row with the columns FICHE and TIERS in the first 20 rows (row 1 has: FICHE, NOM)"),
        (b"PK\x03\x04" + bytes(range(256)) * 4, "this is not a text CSV file"),
        (b"\x00\x01\x02binary\x00\x00" * 100, "this is not a text CSV file"),
    ])
    def test_files_that_are_not_target_lists(self, loaded, cli, content, message):
        path = loaded / "file.csv"
        path.write_bytes(content)
        result = cli("targets", "import", "OP", path)
        assert result.code == 1
        assert message in " ".join(result.err.split())
        assert "file.csv" in result.err
        assert scalar("select count(*) from operation_target") == 0

    def test_unknown_operation(self, loaded, cli):
        path = loaded / "t.csv"
        path.write_text("FICHE;TIERS\nPRO;P001\n", encoding="utf-8")
        result = cli("targets", "import", "NOPE", path)
        assert result.code == 1
        assert "no operation NOPE" in result.err


class TestTargetingCommands:
    def test_add_where(self, loaded, cli):
        result = cli("targets", "add", "OP", "--where", "VILLE = paris and not CP matches '75011'", "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out) == {"rows": 1, "parties_added": 1, "contacts_added": 0, "rejected": 0,
                                          "already": 0}
        assert rows("select p.code from operation_target t join party p on p.id = t.party_id") == [("C001",)]
        cli("targets", "add", "OP", "--where", "T2.FONCTION = ACHATS or party.stat(2) in (B)")
        assert scalar("select count(*) from operation_target") == 3

    def test_add_where_on_a_contact_field_targets_the_matching_contacts(self, loaded, cli):
        def targeted_contacts():
            return rows("""select p.code, c.code from operation_target_contact t join contact c on c.id = t.contact_id
                           join party p on p.id = t.party_id order by 1, 2""")

        result = cli("targets", "add", "OP", "--where", "T2.FONCTION = DIRECTION")
        assert result.code == 0, result.err
        assert "2 parties targeted, 2 contacts" in result.out  # as a contact import does
        assert targeted_contacts() == [("C001", "C1"), ("P001", "C1")]  # not P001's buyer C2
        # read contact by contact: the party's other fields with this contact's
        result = cli("targets", "add", "OP", "--where", "T2.FONCTION = ACHATS and VILLE = Paris or CP = 69003",
                     "--json")
        assert json.loads(result.out) == {"rows": 2, "parties_added": 1, "contacts_added": 1, "rejected": 0,
                                          "already": 1}  # P002 has no contact: a party alone
        assert targeted_contacts() == [("C001", "C1"), ("P001", "C1"), ("P001", "C2")]
        assert scalar("select count(*) from operation_target") == 3

    def test_add_where_kind_and_bad_field(self, loaded, cli):
        cli("targets", "add", "OP", "--where", "FICHE in (PRO, FOU)")
        assert scalar("select count(*) from operation_target") == 2  # the supplier is not a target kind
        result = cli("targets", "add", "OP", "--where", "VILE = Paris")
        assert result.code == 1
        assert "unknown field" in result.err and "VILLE" in result.err and "^^^^" in result.err

    def test_from_step(self, loaded, cli):
        from sqlalchemy import text

        from campflow.store import db

        (loaded / "op2.yaml").write_text(OPERATION.replace("code: OP\n", "code: OP2\n"), encoding="utf-8")
        cli("apply", loaded / "op2.yaml")
        with db.engine().begin() as conn:
            conn.execute(text("""insert into step_target (step_id, party_id, operation_id, status)
                select s.id, p.id, s.operation_id, case p.code when 'P001' then 'ok_continue'
                    when 'P002' then 'failed' else 'not_processed_continue' end
                from step s join operation o on o.id = s.operation_id and o.code = 'OP2', party p"""))
        result = cli("targets", "from-step", "OP", "--source", "OP2/S1", "--processed-only", "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out)["parties_added"] == 2  # P001 and C001; F001 is a supplier
        result = cli("targets", "from-step", "OP", "--source", "OP2/S1", "--json")
        assert json.loads(result.out)["parties_added"] == 1  # P002, whose status is failed
        assert scalar("select count(*) from operation_target") == 3
        assert "no action step S9" in cli("targets", "from-step", "OP", "--source", "OP2/S9").err

    def test_list_sort_and_json(self, loaded, cli):
        cli("targets", "add", "OP", "--where", "kind in (prospect, client)")
        result = cli("targets", "list", "OP", "--sort", "-name", "--json")
        data = json.loads(result.out)
        assert data["total"] == 3
        assert [r["code"] for r in data["rows"]] == ["C001", "P002", "P001"]
        table = cli("targets", "list", "OP", "--sort", "city")
        assert table.out.index("Lyon") < table.out.index("Paris")
        assert "--sort 'town': sort by one of" in cli("targets", "list", "OP", "--sort", "town").err
        assert "--status needs --step" in cli("targets", "list", "OP", "--status", "failed").err


class TestCascades:
    """The per-party tables follow deletions of their parents (statement-level triggers)."""

    def test_deleting_parents_deletes_their_rows(self, loaded, cli):
        from sqlalchemy import text

        from campflow.store import db
        cli("targets", "add", "OP", "--where", "kind in (prospect, client)")
        with db.engine().begin() as conn:
            conn.execute(text("""insert into operation_target_contact (operation_id, contact_id, party_id)
                select 1, id, party_id from contact"""))
            conn.execute(text("""insert into step_target (step_id, party_id, operation_id)
                select s.id, t.party_id, t.operation_id from operation_target t join step s
                on s.operation_id = t.operation_id"""))
            conn.execute(text("""insert into step_target_contact (step_id, contact_id, party_id)
                select s.id, c.contact_id, c.party_id from operation_target_contact c join step s
                on s.operation_id = c.operation_id"""))
            conn.execute(text("delete from party where code = 'P001'"))
        assert scalar("select count(*) from operation_target") == 2
        assert scalar("select count(*) from step_target") == 2
        assert scalar("select count(*) from operation_target_contact") == 1
        assert scalar("select count(*) from step_target_contact") == 1
        with db.engine().begin() as conn:
            conn.execute(text("delete from contact"))
        assert scalar("select count(*) from operation_target_contact") == 0
        assert scalar("select count(*) from step_target_contact") == 0
        with db.engine().begin() as conn:
            conn.execute(text("delete from operation"))
        assert scalar("select count(*) from operation_target") == 0
        assert scalar("select count(*) from step_target") == 0

    def test_truncating_a_parent_empties_its_per_party_tables(self, loaded, cli):
        from sqlalchemy import text

        from campflow.store import db
        cli("targets", "add", "OP", "--where", "kind in (prospect, client)")
        with db.engine().begin() as conn:
            conn.execute(text("truncate party cascade"))
        assert scalar("select count(*) from operation_target") == 0
