"""Field references TABLE.FIELD: tables, standard and custom fields, dictionary, answers."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from campflow.core.field_catalog import FieldCatalog
from campflow.core.fields import FieldRef
from campflow.core.template_fields import parse_template_fields
from campflow.errors import FormulaError

CATALOG = FieldCatalog(
    custom={"party": {"stat": True, "SECTEUR": False}, "T2": {"hobby": False}},
    aliases={
        "CLI_NOM": "party.name",
        "T2.NOMCONTACT": "contact.last_name",
        "STATISTIQUE": "party.stat",
        "STAT2": "party.stat(2)",
        "ODBC.VILLE_CLI": "PCFIDX.VILLE",
        "CLI.RS": "party.name",
        "Q_CAT": "answers.Q1.CATALOGUE",
        "BROKEN": "party.nope",
    },
    questions={"Q1": ["CATALOGUE", "AGRANDISSEMENT"], "Q2": ("RDV",)},
)

# The contract (brief and SPEC section 4), written out rather than read from the module.
STANDARD = {
    "party": {
        "code": ["TIERS", "CODE"], "kind": ["FICHE", "KIND"],
        "name": ["NOM", "NAME", "RAISON_SOCIALE"], "email": ["EMAIL", "MAIL"],
        "phone": ["TEL", "PHONE", "TELEPHONE"], "fax": ["FAX"],
        "address": ["ADRESSE", "ADDRESS"], "postal_code": ["CP", "POSTAL_CODE", "CODE_POSTAL"],
        "city": ["VILLE", "CITY"], "country": ["PAYS", "COUNTRY"],
        "created_at": ["CREATION"], "updated_at": ["MODIFICATION"],
    },
    "contact": {
        "code": ["CONTACT", "CODE"], "last_name": ["NOM", "NAME", "LAST_NAME"],
        "first_name": ["PRENOM", "FIRST_NAME"], "function": ["FONCTION", "FUNCTION"],
        "email": ["EMAIL", "MAIL"], "phone": ["TEL", "PHONE"], "title": ["CIVILITE", "TITLE"],
    },
    "operation": {
        "code": ["MANIF", "CODE"], "label": ["LIBELLE", "LABEL"],
        "starts_at": ["DEBUT", "STARTS_AT"], "ends_at": ["FIN", "ENDS_AT"],
        "location": ["LIEU", "LOCATION"], "state": ["ETAT", "STATE"],
        "family": ["FAMILLE", "FAMILY"], "type": ["TYPE"],
        "responsible": ["RESPONSABLE", "RESPONSIBLE"], "progress": ["AVANCEMENT", "PROGRESS"],
    },
    "target": {
        "added_at": ["DATE_AJOUT", "ADDED_AT"], "source": ["ORIGINE", "SOURCE"],
        "status": ["STATUT", "STATUS"], "attempts": ["TENTATIVES", "ATTEMPTS"],
        "callback_at": ["RAPPEL", "CALLBACK_AT"], "processed_at": ["TRAITE_LE", "PROCESSED_AT"],
        "reason": ["MOTIF", "REASON"],
    },
    "step": {
        "code": ["ETAPE", "CODE"], "label": ["LIBELLE", "LABEL"], "kind": ["NATURE", "KIND"],
        "run_at": ["REALISATION", "RUN_AT"],
    },
    "event": {"code": ["CODE_EVT", "CODE"], "occurred_at": ["DATE", "OCCURRED_AT"]},
    "event_code": {"code": ["CODE"], "label": ["LIBELLE", "LABEL"]},
}  # fmt: skip
STANDARD["target_contact"] = STANDARD["target"]

STANDARD_CASES = [
    (table, written, column)
    for table, columns in STANDARD.items()
    for column, others in columns.items()
    for name in others
    for written in (name, name.lower(), name.capitalize())
]


def resolve_error(text: str, catalog: FieldCatalog = CATALOG, **kwargs: object) -> FormulaError:
    with pytest.raises(FormulaError) as info:
        catalog.resolve(text, **kwargs)  # type: ignore[arg-type]
    return info.value


class TestTables:
    @pytest.mark.parametrize(
        ("text", "table", "kind", "shown"),
        [
            ("party.code", "party", None, "party.code"),
            ("PCFIDX.code", "party", None, "party.code"),
            ("tiers.code", "party", None, "party.code"),
            ("CLI.code", "party", "client", "CLI.code"),
            ("pro.code", "party", "prospect", "PRO.code"),
            ("FOU.code", "party", "supplier", "FOU.code"),
            ("Vrp.code", "party", "sales_rep", "VRP.code"),
            ("TIA.code", "party", "other", "TIA.code"),
            ("contact.code", "contact", None, "contact.code"),
            ("t2.code", "contact", None, "contact.code"),
            ("operation.code", "operation", None, "operation.code"),
            ("MANIF.code", "operation", None, "operation.code"),
            ("target.status", "target", None, "target.status"),
            ("MANIFTIERS.status", "target", None, "target.status"),
            ("target_contact.status", "target_contact", None, "target_contact.status"),
            ("MANIFCONTACT.status", "target_contact", None, "target_contact.status"),
            ("STEP.code", "step", None, "step.code"),
            ("event.code", "event", None, "event.code"),
            ("EVTTIERS.code", "event", None, "event.code"),
            ("event_code.code", "event_code", None, "event_code.code"),
            ("GRTEVT.code", "event_code", None, "event_code.code"),
        ],
    )
    def test_alias(self, text: str, table: str, kind: str | None, shown: str) -> None:
        ref = CATALOG.resolve(text)
        assert (ref.table, ref.party_kind, ref.custom, str(ref)) == (table, kind, False, shown)


class TestStandardFields:
    @pytest.mark.parametrize(("table", "written", "column"), STANDARD_CASES)
    def test_every_name(self, table: str, written: str, column: str) -> None:
        ref = FieldCatalog().resolve(f"{table}.{written}")
        assert ref == FieldRef(table, column)

    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("CLI.NOM", "CLI.name"),
            ("PCFIDX.VILLE", "party.city"),
            ("cli.cp", "CLI.postal_code"),
            ("T2.PRENOM", "contact.first_name"),
            ("MANIF.LIBELLE", "operation.label"),
            ("MANIFTIERS.RAPPEL", "target.callback_at"),
            ("EVTTIERS.DATE", "event.occurred_at"),
            ("GRTEVT.LIBELLE", "event_code.label"),
            ("TIERS.TIERS", "party.code"),
        ],
    )
    def test_french_names(self, text: str, shown: str) -> None:
        assert str(CATALOG.resolve(text)) == shown


class TestBareNames:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("VILLE", "party.city"),
            ("nom", "party.name"),  # party comes before contact
            ("TIERS", "party.code"),
            ("PRENOM", "contact.first_name"),
            ("CONTACT", "contact.code"),
            ("secteur", "party.secteur"),
            ("stat(1)", "party.stat(1)"),
            ("HOBBY", "contact.hobby"),
        ],
    )
    def test_party_then_contact(self, text: str, shown: str) -> None:
        assert str(CATALOG.resolve(text)) == shown


SECTEUR = FieldRef("party", "secteur", custom=True)


class TestCustomFields:
    @pytest.mark.parametrize(
        ("text", "expected", "key", "shown"),
        [
            ("party.secteur", SECTEUR, "secteur", "party.secteur"),
            ("PCFIDX.SECTEUR", SECTEUR, "secteur", "party.secteur"),
            ("party.stat(2)", FieldRef("party", "stat", None, 2, True), "stat(2)", "party.stat(2)"),
            (
                "CLI.STAT(12)",
                FieldRef("party", "stat", "client", 12, custom=True),
                "stat(12)",
                "CLI.stat(12)",
            ),
            ("T2.Hobby", FieldRef("contact", "hobby", custom=True), "hobby", "contact.hobby"),
        ],
    )
    def test_custom(self, text: str, expected: FieldRef, key: str, shown: str) -> None:
        ref = CATALOG.resolve(text)
        assert (ref, ref.key, str(ref)) == (expected, key, shown)

    def test_standard_name_wins_over_custom(self) -> None:
        catalog = FieldCatalog(custom={"party": {"nom": False}})
        assert catalog.resolve("party.NOM") == FieldRef("party", "name")

    def test_custom_fields_only_on_party_and_contact(self) -> None:
        message = "custom fields belong to party or contact; got table 'step'"
        with pytest.raises(ValueError, match=message):
            FieldCatalog(custom={"step": {"x": False}})

    def test_other_tables_have_no_custom_fields(self) -> None:
        assert resolve_error("operation.secteur").code == "unknown_field"


class TestDictionary:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("CLI_NOM", "party.name"),  # bare alias
            ("cli_nom", "party.name"),
            ("T2.NOMCONTACT", "contact.last_name"),  # qualified alias
            ("contact.nomcontact", "contact.last_name"),  # same table, another alias
            ("T2__NOMCONTACT", "contact.last_name"),
            ("party.CLI_NOM", "party.name"),  # bare alias within its table
            ("CLI.CLI_NOM", "CLI.name"),  # the table's kind is kept
            ("ODBC.VILLE_CLI", "party.city"),  # whole text, table unknown to campflow
            ("STATISTIQUE(3)", "party.stat(3)"),  # the written index applies
            ("STAT2", "party.stat(2)"),
            ("CLI.RS", "CLI.name"),
            ("Q_CAT", "answers.Q1.CATALOGUE"),
        ],
    )
    def test_alias(self, text: str, shown: str) -> None:
        assert str(CATALOG.resolve(text)) == shown

    def test_dictionary_name_comes_first(self) -> None:
        # Divalto reads the ODBC dictionary before the standard names
        catalog = FieldCatalog(aliases={"VILLE": "party.name", "party.CP": "party.name",
                                        "T2.NOM": "contact.first_name"})
        assert str(catalog.resolve("VILLE")) == "party.name"
        assert str(catalog.resolve("CLI.VILLE")) == "CLI.name"  # a bare name applies in its table
        assert str(catalog.resolve("party.cp")) == "party.name"
        assert str(catalog.resolve("PCFIDX__CP")) == "party.name"
        assert str(catalog.resolve("T2.NOM")) == "contact.first_name"
        # where the dictionary says nothing, the standard names still answer
        assert str(catalog.resolve("PRENOM")) == "contact.first_name"
        assert str(catalog.resolve("party.NOM")) == "party.name"
        assert str(catalog.resolve("NOM")) == "party.name"

    @pytest.mark.parametrize(
        ("aliases", "alias", "hidden"),
        [
            ({"VILLE": "party.name"}, "VILLE", ["party.city"]),
            ({"party.CP": "party.name"}, "party.CP", ["party.postal_code"]),
            ({"T2.NOM": "contact.first_name"}, "T2.NOM", ["contact.last_name"]),
            # written alone, NOM meant party.name; T2.NOM still means contact.last_name
            ({"NOM": "contact.last_name"}, "NOM", ["party.name"]),
            ({"SECTEUR": "party.city"}, "SECTEUR", ["party.secteur"]),  # a custom field too
            ({"NOM": "party.name"}, "NOM", []),  # means what it would hide
            ({"CLI_NOM": "party.name"}, "CLI_NOM", []),
            ({"ODBC.VILLE": "party.city"}, "ODBC.VILLE", []),  # a table campflow does not know
            ({"VILLE": "party.nope"}, "VILLE", ["party.city"]),  # broken: still hides
        ],
    )
    def test_hidden_fields(self, aliases: dict[str, str], alias: str, hidden: list[str]) -> None:
        catalog = FieldCatalog(custom={"party": {"secteur": False}}, aliases=aliases)
        assert [str(ref) for ref in catalog.hidden_fields(alias)] == hidden

    @pytest.mark.parametrize(
        ("text", "code", "message", "start", "end"),
        [
            (
                "T2.CLI_NOM",  # a bare alias of party is no field of contact
                "unknown_field",
                "unknown field 'CLI_NOM' in table contact; closest: NOM, last_name",
                3,
                10,
            ),
            (
                "PRO.RS",  # CLI.RS belongs to CLI
                "unknown_field",
                "unknown field 'RS' in table party; known: code, kind, name, email, phone, fax, "
                "address, postal_code, city, country, created_at, updated_at, stat, secteur",
                4,
                6,
            ),
            (
                "STAT2(3)",
                "bad_index",
                "STAT2 already means party.stat(2); remove '(3)'",
                5,
                8,
            ),
            (
                "CLI_NOM(2)",
                "bad_index",
                "CLI_NOM means party.name, which is not indexed; remove '(2)'",
                7,
                10,
            ),
            (
                "STATISTIQUE",
                "bad_index",
                "STATISTIQUE means party.stat, which is indexed; write e.g. STATISTIQUE(1)",
                0,
                11,
            ),
            (
                "BROKEN",
                "unknown_field",
                "dictionary name BROKEN means 'party.nope', which names nothing: "
                "unknown field 'nope' in table party; known: code, kind, name, email, phone, "
                "fax, address, postal_code, city, country, created_at, updated_at, stat, secteur",
                0,
                6,
            ),
        ],
    )
    def test_errors(self, text: str, code: str, message: str, start: int, end: int) -> None:
        error = resolve_error(text)
        assert (error.code, error.message, error.start, error.end) == (code, message, start, end)


class TestAnswers:
    @pytest.mark.parametrize(
        ("text", "questionnaire", "question"),
        [
            ("answers.Q1.CATALOGUE", "Q1", "CATALOGUE"),
            ("ANSWERS.q1.agrandissement", "Q1", "AGRANDISSEMENT"),
            ("answers__Q2__rdv", "Q2", "RDV"),
        ],
    )
    def test_answer(self, text: str, questionnaire: str, question: str) -> None:
        ref = CATALOG.resolve(text)
        assert ref == FieldRef(
            "answers", question, questionnaire=questionnaire, question=question
        )
        assert str(ref) == f"answers.{questionnaire}.{question}"

    @pytest.mark.parametrize(
        ("text", "code", "message", "start", "end"),
        [
            (
                "answers.Q3.X",
                "unknown_question",
                "unknown questionnaire 'Q3'; known: Q1, Q2",
                8,
                10,
            ),
            ("answers.q.X", "unknown_question", "unknown questionnaire 'q'; closest: Q2, Q1", 8, 9),
            (
                "answers.Q1.CATALOG",
                "unknown_question",
                "questionnaire Q1 has no question 'CATALOG'; closest: CATALOGUE",
                11,
                18,
            ),
            (
                "answers.Q2.ZZZ",
                "unknown_question",
                "questionnaire Q2 has no question 'ZZZ'; known: RDV",
                11,
                14,
            ),
            (
                "answers.Q1",
                "bad_reference",
                "'answers.Q1' is not an answer; write answers.QUESTIONNAIRE.QUESTION",
                0,
                10,
            ),
            ("answers.Q2.RDV(1)", "bad_index", "answers are not indexed; remove '(1)'", 14, 17),
        ],
    )
    def test_errors(self, text: str, code: str, message: str, start: int, end: int) -> None:
        error = resolve_error(text)
        assert (error.code, error.message, error.start, error.end) == (code, message, start, end)

    def test_no_questionnaire_defined(self) -> None:
        error = resolve_error("answers.Q1.X", FieldCatalog())
        assert error.message == "unknown questionnaire 'Q1'; none is defined"


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "code", "message", "start", "end"),
        [
            (
                "party.VILE",
                "unknown_field",
                "unknown field 'VILE' in table party; closest: VILLE, city",
                6,
                10,
            ),
            (
                "contact.PRENON",
                "unknown_field",
                "unknown field 'PRENON' in table contact; closest: PRENOM, first_name",
                8,
                14,
            ),
            (
                "T2.NOMCONTACTE",
                "unknown_field",
                "unknown field 'NOMCONTACTE' in table contact; closest: NOMCONTACT, CONTACT, code",
                3,
                14,
            ),
            (
                "party.statt(2)",
                "unknown_field",
                "unknown field 'statt' in table party; closest: stat, STAT2, STATISTIQUE",
                6,
                11,
            ),
            (
                "VILE",
                "unknown_field",
                "unknown field 'VILE' (a name without a table is looked up in party, then "
                "contact); closest: VILLE, city, title, CIVILITE",
                0,
                4,
            ),
            ("CLX.NOM", "unknown_table", "unknown table 'CLX' in 'CLX.NOM'; closest: CLI", 0, 3),
            (
                "MANIFTIER.x",
                "unknown_table",
                "unknown table 'MANIFTIER' in 'MANIFTIER.x'; closest: MANIFTIERS, MANIF",
                0,
                9,
            ),
            (
                "party.stat",
                "bad_index",
                "field party.stat is indexed; write the element number, e.g. party.stat(1)",
                6,
                10,
            ),
            ("party.name(2)", "bad_index", "field party.name is not indexed; remove '(2)'", 10, 13),
            (
                "party.secteur(1)",
                "bad_index",
                "field party.secteur is not indexed; remove '(1)'",
                13,
                16,
            ),
            (
                "party.stat(0)",
                "bad_index",
                "bad index '(0)' in 'party.stat(0)'; indexes are whole numbers from 1",
                10,
                13,
            ),
            (
                "party.stat()",
                "bad_index",
                "bad index '()' in 'party.stat()'; indexes are whole numbers from 1",
                10,
                12,
            ),
            (
                "party.stat(x)",
                "bad_index",
                "bad index in 'party.stat(x)'; write the element number last, e.g. party.stat(2)",
                10,
                13,
            ),
            (
                "party.stat(2",
                "bad_index",
                "bad index in 'party.stat(2'; write the element number last, e.g. party.stat(2)",
                10,
                12,
            ),
            (
                "party.",
                "bad_reference",
                "'party.' is not a field reference; write TABLE.FIELD, e.g. party.name",
                6,
                7,
            ),
            (
                "",
                "bad_reference",
                "'' is not a field reference; write TABLE.FIELD, e.g. party.name",
                0,
                1,
            ),
            (
                "party.city.x",
                "bad_reference",
                "'party.city.x' has too many parts; write TABLE.FIELD, e.g. party.name",
                11,
                12,
            ),
        ],
    )
    def test_error(self, text: str, code: str, message: str, start: int, end: int) -> None:
        error = resolve_error(text)
        assert (error.code, error.message, error.start, error.end) == (code, message, start, end)

    def test_nothing_close_lists_the_known_fields(self) -> None:
        error = resolve_error("step.zzz")
        known = "known: code, label, kind, run_at, state"
        assert error.message == f"unknown field 'zzz' in table step; {known}"

    def test_offsets_shift_into_the_source(self) -> None:
        source = "columns: [CLI.NOM, party.VILE]"
        error = resolve_error("party.VILE", start_offset=19, source=source)
        assert (error.start, error.end, error.text) == (25, 29, source)
        assert error.caret_line() == f"  {source}\n                           ^^^^"

    def test_offset_without_source_keeps_the_caret_under_the_name(self) -> None:
        error = resolve_error("party.VILE", start_offset=4)
        assert (error.start, error.end, error.token) == (10, 14, "VILE")
        assert error.caret_line() == "      party.VILE\n            ^^^^"

    def test_caret_without_source(self) -> None:
        error = resolve_error("CLX.NOM")
        assert str(error) == "unknown table 'CLX' in 'CLX.NOM'; closest: CLI\n  CLX.NOM\n  ^^^"


class TestNames:
    def test_party(self) -> None:
        names = CATALOG.names("PCFIDX")
        assert names[:4] == ("code", "TIERS", "kind", "FICHE")
        assert {"VILLE", "city", "stat", "secteur", "CLI_NOM", "STATISTIQUE"} <= set(names)
        assert "RS" not in names and "NOMCONTACT" not in names

    def test_kind_table_adds_its_own_aliases(self) -> None:
        assert "RS" in CATALOG.names("cli")
        assert "RS" not in CATALOG.names("PRO")

    def test_contact(self) -> None:
        assert {"PRENOM", "first_name", "hobby", "NOMCONTACT"} <= set(CATALOG.names("T2"))

    def test_answers(self) -> None:
        assert CATALOG.names("answers") == ("Q1.CATALOGUE", "Q1.AGRANDISSEMENT", "Q2.RDV")

    def test_unknown_table(self) -> None:
        with pytest.raises(ValueError, match="unknown table 'nope'; must be one of party, PCFIDX"):
            CATALOG.names("nope")


class TestFieldRef:
    def test_frozen_and_hashable(self) -> None:
        ref = CATALOG.resolve("CLI.stat(2)")
        assert {ref, CATALOG.resolve("cli.STAT(2)")} == {ref}
        with pytest.raises(FrozenInstanceError):
            ref.index = 3  # type: ignore[misc]

    def test_key_of_a_column_is_its_name(self) -> None:
        assert CATALOG.resolve("VILLE").key == "city"

    def test_empty_catalog(self) -> None:
        assert FieldCatalog() == FieldCatalog(custom={}, aliases={}, questions={})
        assert str(FieldCatalog().resolve("CLI.NOM")) == "CLI.name"

    def test_catalog_is_frozen(self) -> None:
        with pytest.raises(FrozenInstanceError):
            CATALOG.aliases = {}  # type: ignore[misc]
        with pytest.raises(TypeError):
            CATALOG.aliases["X"] = "party.name"  # type: ignore[index]


class TestTemplateFields:
    @pytest.mark.parametrize(
        ("syntax", "text", "found"),
        [
            (
                "html",
                "<p>Dear [[CLI.NOM]], [[ T2.PRENOM ]] [x] [[answers.Q1.CATALOGUE]]</p>",
                (("CLI.NOM", 10, 17), ("T2.PRENOM", 24, 33), ("answers.Q1.CATALOGUE", 43, 63)),
            ),
            ("html", "[[]] [[party.stat(2)]]", (("", 2, 2), ("party.stat(2)", 7, 20))),
            ("text", "Invitation — [[PCFIDX.NOM]]", (("PCFIDX.NOM", 15, 25),)),
            (
                "rtf",
                r"{\rtf1\ansi [note] {\b [CLI.NOM]} caf\'e9 [party.stat(2)] [[T2.PRENOM]]}",
                (("CLI.NOM", 24, 31), ("party.stat(2)", 43, 56), ("T2.PRENOM", 60, 69)),
            ),
            ("rtf", r"{\rtf1 [x] [1.2] [a b.c]}", ()),
            (
                "merge",
                r" MERGEFIELD CLI__NOM \* MERGEFORMAT target_contact__STATUT answers__Q1__X",
                (
                    ("CLI__NOM", 12, 20),
                    ("target_contact__STATUT", 36, 58),
                    ("answers__Q1__X", 59, 73),
                ),
            ),
            ("merge", " MERGEFIELD __init__ NOM ", ()),
        ],
    )
    def test_found(self, syntax: str, text: str, found: tuple[tuple[str, int, int], ...]) -> None:
        assert parse_template_fields(text, syntax) == found
        for name, start, end in found:
            assert text[start:end] == name

    def test_each_resolves_with_a_caret_into_the_template(self) -> None:
        text = "Bonjour [[CLI.PRENON]]"
        ((name, start, _),) = parse_template_fields(text, "html")
        with pytest.raises(FormulaError) as info:
            CATALOG.resolve(name, start, text)
        assert info.value.caret_line() == f"  {text}\n                ^^^^^^"

    def test_merge_fields_resolve(self) -> None:
        text = "MERGEFIELD CLI__CODE_POSTAL"
        names = [CATALOG.resolve(n, s, text) for n, s, _ in parse_template_fields(text, "merge")]
        assert [str(ref) for ref in names] == ["CLI.postal_code"]

    def test_unknown_syntax(self) -> None:
        message = "syntax must be one of html, rtf, merge, text; got 'md'"
        with pytest.raises(ValueError, match=message):
            parse_template_fields("x", "md")
