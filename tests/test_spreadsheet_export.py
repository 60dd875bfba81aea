"""The spreadsheet_export step kind on the real PostgreSQL: workbook, sheets, statuses."""

from __future__ import annotations

import datetime as dt

import openpyxl
import pytest

from campflow.core.kinds import StepContext, step_kind
from campflow.errors import SpecError
from campflow.store import db
from tasks.kinds import spreadsheet_export
from tests.conftest import load_files, rows, scalar

PARTIES = """FICHE;TIERS;NOM;VILLE;SECTEUR;STAT(2)
PRO;P001;Boulangerie Lefèvre;Paris;Commerce;A
PRO;P002;Menuiserie Gaëlle;Lyon;BTP;B
CLI;C001;Société Générale d'Équipements;Paris;Industrie;A
CLI;C002;Ébénisterie Noël;Nîmes;;
"""
CONTACTS = """TIERS;CONTACT;NOM;PRENOM
P001;C1;Lefèvre;Hélène
P001;C2;Gérard;Loïc
C001;C1;Dupré;François
"""
SPECS = """kind: Questionnaire
code: Q1
label: Salon
questions:
  - {code: CATALOGUE, label: Catalogue, type: choice, choices: [oui, non]}
  - {code: INTERETS, label: Intérêts, type: multi_choice, choices: [erp, crm, paie]}
---
kind: Operation
code: OP
label: Salon ERP
timezone: Europe/Paris
starts_at: 2026-03-01T09:00
progress: 40
party_kinds: [prospect, client]
steps:
  - code: EXPORT
    label: Liste des intéressés
    kind: spreadsheet_export
    columns: [PCFIDX.TIERS, CLI.NOM, PRO.NOM, VILLE, party.stat(2), SECTEUR, T2.PRENOM,
              answers.Q1.CATALOGUE, answers.Q1.INTERETS, operation.label, MANIF.DEBUT,
              operation.progress, step.code, target.status, target.attempts]
"""
HEADER = ("PCFIDX.TIERS", "CLI.NOM", "PRO.NOM", "VILLE", "party.stat(2)", "SECTEUR", "T2.PRENOM",
          "answers.Q1.CATALOGUE", "answers.Q1.INTERETS", "operation.label", "MANIF.DEBUT",
          "operation.progress", "step.code", "target.status", "target.attempts")


@pytest.fixture
def operation(database, cli, tmp_path):
    """Four parties (two with contacts), the operation, and its EXPORT step's targets."""
    load_files(cli, tmp_path, PARTIES, CONTACTS, SPECS)
    with db.engine().begin() as conn:
        conn.exec_driver_sql("""
            insert into operation_target (operation_id, party_id)
            select o.id, p.id from operation o, party p;
            insert into step_target (step_id, party_id, operation_id)
            select s.id, p.id, s.operation_id from step s, party p;
            -- P001's targeted contact is C2, though C1 has the lowest code
            insert into operation_target_contact (operation_id, contact_id, party_id)
            select o.id, c.id, c.party_id from operation o, contact c join party p on p.id = c.party_id
            where p.code = 'P001' and c.code = 'C2';
            insert into step_target_contact (step_id, contact_id, party_id)
            select s.id, c.id, c.party_id from step s, contact c;
            insert into answer (operation_id, party_id, question_id, value, choices)
            select o.id, p.id, q.id, a.value, a.choices
            from (values ('P001', 'CATALOGUE', 'oui', null::text[]),
                         ('C001', 'INTERETS', null, array['erp', 'paie'])) a(party, question, value, choices)
            join party p on p.code = a.party join question q on q.code = a.question, operation o;
        """)
    return tmp_path


def export(out_dir, **settings):
    """Run the kind on OP/EXPORT in one transaction, as the flow does."""
    step_id, stored = rows("select id, settings from step where code = 'EXPORT'")[0]
    ctx = StepContext(operation_id=scalar("select id from operation where code = 'OP'"),
                      operation_code="OP", step_id=step_id, step_code="EXPORT",
                      kind="spreadsheet_export", settings={**stored, **settings}, output_dir=out_dir)
    with db.session() as session:
        return step_kind("spreadsheet_export").run(session, ctx)


def sheets(path):
    """Each sheet's rows, padded to the header's width (read-only mode drops trailing blanks)."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        found = {}
        for sheet in book:
            table = list(sheet.iter_rows(values_only=True))
            width = len(table[0])
            found[sheet.title] = [row + (None,) * (width - len(row)) for row in table]
        return found
    finally:
        book.close()


class TestWorkbook:
    def test_header_values_and_order(self, operation):
        outcome = export(operation / "out")
        path = operation / "out" / "OP-EXPORT.xlsx"
        assert outcome.outputs == (path,)
        assert outcome.processed == 4 and outcome.statuses == {"ok_continue": 4}
        begins = dt.datetime(2026, 3, 1, 9, 0)  # Europe/Paris, as written in the spec
        common = ("Salon ERP", begins, 40, "EXPORT", "to_process", 0)
        assert sheets(path) == {"Export": [
            HEADER,
            ("C001", "Société Générale d'Équipements", None, "Paris", "A", "Industrie", "François",
             None, "erp, paie", *common),
            ("C002", "Ébénisterie Noël", None, "Nîmes", None, None, None, None, None, *common),
            ("P001", None, "Boulangerie Lefèvre", "Paris", "A", "Commerce", "Loïc", "oui", None,
             *common),
            ("P002", None, "Menuiserie Gaëlle", "Lyon", "B", "BTP", None, None, None, *common),
        ]}
        assert sorted(p.name for p in (operation / "out").iterdir()) == ["OP-EXPORT.xlsx"]

    def test_split_over_sheets_each_with_its_header(self, operation, monkeypatch):
        with db.engine().begin() as conn:
            conn.exec_driver_sql("""
                insert into party (code, kind, name) select 'X' || n, 'client', 'Extra ' || n
                from generate_series(1, 3) n;
                insert into step_target (step_id, party_id, operation_id)
                select s.id, p.id, s.operation_id from step s, party p where p.code like 'X%%'""")
        monkeypatch.setattr(spreadsheet_export, "ROWS_PER_SHEET", 3)
        outcome = export(operation / "out", columns=["party.code"])
        assert outcome.processed == 7
        found = sheets(operation / "out" / "OP-EXPORT.xlsx")
        assert found == {
            "Export": [("party.code",), ("C001",), ("C002",), ("P001",)],
            "Export (2)": [("party.code",), ("P002",), ("X1",), ("X2",)],
            "Export (3)": [("party.code",), ("X3",)],
        }

    def test_target_contact_and_event_columns(self, operation):
        with db.engine().begin() as conn:
            conn.exec_driver_sql("""
                update operation_target set source = 'import:cibles.xlsx';
                insert into event_code (code, label) values ('EXPO', 'Exporté');
                insert into event (operation_id, step_id, party_id, code)
                select s.operation_id, s.id, p.id, 'EXPO' from step s, party p where p.code = 'P001'""")
        export(operation / "out", columns=["TIERS", "MANIFTIERS.ORIGINE", "T2.CONTACT",
                                           "target_contact.status", "event.code", "GRTEVT.LIBELLE"])
        assert sheets(operation / "out" / "OP-EXPORT.xlsx")["Export"][1:] == [
            ("C001", "import:cibles.xlsx", "C1", "to_process", None, None),
            ("C002", "import:cibles.xlsx", None, None, None, None),
            ("P001", "import:cibles.xlsx", "C2", "to_process", "EXPO", "Exporté"),
            ("P002", "import:cibles.xlsx", None, None, None, None),
        ]

    def test_formulas_are_made_inert(self, operation):
        names = ['=HYPERLINK("http://evil.example","clic")', "+1", "-2+3", "@SUM(A1:A2)"]
        with db.engine().begin() as conn:
            for code, name in zip(("C001", "C002", "P001", "P002"), names, strict=True):
                conn.exec_driver_sql("update party set name = %s where code = %s", (name, code))
            conn.exec_driver_sql("update party set city = %s, fields = fields || %s::jsonb "
                                 "where code = 'P001'", ("\tTab", '{"secteur": "\\rCR"}'))
            conn.exec_driver_sql("update party set city = %s where code = 'P002'", ("sans\x07bip",))
        export(operation / "out", columns=["party.name", "VILLE", "SECTEUR", "target.attempts"])
        body = sheets(operation / "out" / "OP-EXPORT.xlsx")["Export"][1:]
        assert body == [
            ('\'=HYPERLINK("http://evil.example","clic")', "Paris", "Industrie", 0),
            ("'+1", "Nîmes", None, 0),
            ("'-2+3", "'\tTab", "'\rCR", 0),
            ("'@SUM(A1:A2)", "sansbip", "BTP", 0),
        ]


class TestStatuses:
    def test_exported_parties_are_processed_once(self, operation):
        with db.engine().begin() as conn:
            conn.exec_driver_sql("update step_target set status = 'excluded' where party_id = "
                                 "(select id from party where code = 'P002')")
        outcome = export(operation / "out")
        assert outcome.processed == 3
        assert rows("select p.code, t.status, t.processed_at is not null from step_target t "
                    "join party p on p.id = t.party_id order by p.code") == [
            ("C001", "ok_continue", True), ("C002", "ok_continue", True),
            ("P001", "ok_continue", True), ("P002", "excluded", False)]
        assert rows("select status, count(*), count(processed_at) from step_target_contact "
                    "group by status") == [("ok_continue", 3, 3)]
        (operation / "out" / "OP-EXPORT.xlsx").unlink()
        again = export(operation / "out")
        assert (again.processed, again.outputs, again.statuses) == (0, (), {})
        assert list((operation / "out").iterdir()) == []

    def test_unknown_column_is_refused_before_anything_happens(self, operation):
        with pytest.raises(SpecError) as error:
            export(operation / "out", columns=["PCFIDX.TIERS", "CLI.NOMM"])
        assert "step OP/EXPORT column 2 'CLI.NOMM': unknown field 'NOMM'" in str(error.value)
        assert scalar("select count(*) from step_target where status = 'to_process'") == 4
        assert not (operation / "out").exists()


class TestWriteWorkbook:
    def test_a_failure_leaves_no_file(self, tmp_path):
        def broken_rows():
            yield ("ok",)
            raise RuntimeError("connection lost")

        path = tmp_path / "OP-S1.xlsx"
        path.write_bytes(b"previous export")
        with pytest.raises(RuntimeError):
            spreadsheet_export.write_workbook(path, ["party.code"], broken_rows())
        assert path.read_bytes() == b"previous export"
        assert [p.name for p in tmp_path.iterdir()] == ["OP-S1.xlsx"]

    def test_no_rows_still_makes_a_valid_workbook(self, tmp_path):
        path = tmp_path / "empty.xlsx"
        assert spreadsheet_export.write_workbook(path, ["party.code"], []) == 0
        assert sheets(path) == {"Export": [("party.code",)]}
