"""`status set` and `answers import` (call sheets) on the real PostgreSQL, with the example specs."""

from __future__ import annotations

import datetime as dt
import json

import openpyxl
import pytest

from tests.conftest import rows, scalar

OP = "SALON-ERP-2026"
PARTIES = "FICHE;TIERS;NOM\n" + "".join(f"PRO;P00{i};Prospect {i}\n" for i in range(1, 8)) + "CLI;C001;Client\n"
CONTACTS = "TIERS;CONTACT;NOM\nP001;C1;Lefèvre\nP001;C2;Gérard\nC001;C1;Dupré\n"
UTC = dt.timezone.utc
MULTI_SPEC = """kind: Questionnaire
code: QM
label: Canaux
questions:
  - {code: CANAUX, label: Canaux préférés, type: multi_choice, choices: [E-mail, Téléphone, Courrier]}
---
kind: Operation
code: OPM
label: Multi
timezone: Europe/Paris
steps:
  - {code: S1, label: Appel, kind: phoning, questionnaire: QM}
"""


def enter(step: str, *parties: str, operation: str = OP) -> None:
    """Put parties into a step as `to_process`, as routing would."""
    from sqlalchemy import text

    from campflow.store import db

    with db.engine().begin() as conn:
        conn.execute(text("""
            insert into step_target (step_id, party_id, operation_id, status)
            select s.id, p.id, s.operation_id, 'to_process' from step s
            join operation o on o.id = s.operation_id join party p on p.code = any(:parties)
            where o.code = :op and s.code = :step"""), {"op": operation, "step": step, "parties": list(parties)})


@pytest.fixture
def phoning(examples_applied, cli, tmp_path):
    """Parties P001…P007 and C001 with contacts; all but P007 are in step S2."""
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    for kind in ("parties", "contacts"):
        result = cli(kind, "import", tmp_path / f"{kind}.csv", "--quiet")
        assert result.code == 0, result.err
    enter("S2", "P001", "P002", "P003", "P004", "P005", "P006", "C001")
    return tmp_path


def write_sheet(path, header, *data):
    """A call sheet as exported: a title on row 1, the header on row 2."""
    book = openpyxl.Workbook()
    book.active.append([f"Appels {OP}"])
    for row in (header, *data):
        book.active.append(list(row))
    book.save(path)
    return path


def answers(party: str, contact: str | None = None):
    """{question: value or choices} of a party (or contact) in the operation."""
    return dict(rows("""
        select q.code, coalesce(a.value, array_to_string(a.choices, '|')) from answer a
        join question q on q.id = a.question_id join party p on p.id = a.party_id
        left join contact c on c.id = a.contact_id
        where p.code = :party and c.code is not distinct from :contact""", party=party, contact=contact))


def status(party: str, step: str = "S2"):
    return rows("""select st.status, st.attempts, st.callback_at, st.processed_at is not null from step_target st
                   join party p on p.id = st.party_id join step s on s.id = st.step_id
                   where p.code = :party and s.code = :step""", party=party, step=step)[0]


def contact_status(party: str, contact: str, step: str = "S2"):
    found = rows("""select stc.status, stc.attempts, stc.processed_at is not null from step_target_contact stc
                    join contact c on c.id = stc.contact_id join party p on p.id = c.party_id
                    join step s on s.id = stc.step_id
                    where p.code = :party and c.code = :contact and s.code = :step""",
                 party=party, contact=contact, step=step)
    return found[0] if found else None


def flat(text: str) -> str:
    return " ".join(text.split())


class TestStatusSet:
    def test_a_final_status_marks_the_party_processed(self, phoning, cli):
        result = cli("status", "set", OP, "S2", "P001", "ok_continue", "--reason", "intéressé")
        assert result.code == 0, result.err
        assert "P001 in S2: to_process → ok_continue" in result.out
        assert status("P001") == ("ok_continue", 0, None, True)
        assert scalar("select reason from step_target st join party p on p.id = st.party_id "
                      "where p.code = 'P001'") == "intéressé"

    def test_custom_target_state_is_a_status(self, phoning, cli):
        assert cli("status", "set", OP, "S2", "P002", "WRONG_NUMBER").code == 0
        assert status("P002")[0] == "wrong_number"  # stored as defined

    def test_callback_keeps_to_process_and_counts_attempts(self, phoning, cli):
        result = cli("status", "set", OP, "S2", "P001", "to_process", "--callback-at", "2026-03-12 14:30")
        assert result.code == 0, result.err
        assert "call back 2026-03-12 14:30 (Europe/Paris); attempts: 1" in result.out
        # read in the operation's timezone: Paris is UTC+1 in March before the change of hour
        assert status("P001") == ("to_process", 1, dt.datetime(2026, 3, 12, 13, 30, tzinfo=UTC), False)
        cli("status", "set", OP, "S2", "P001", "to_process", "--callback-at", "13/03/2026 09:00+00:00")
        assert status("P001")[:3] == ("to_process", 2, dt.datetime(2026, 3, 13, 9, 0, tzinfo=UTC))
        again = cli("status", "set", OP, "S2", "P001", "to_process", "--callback-at", "2026-03-13T10:00",
                    "--json")
        assert json.loads(again.out)["attempts"] == 2  # the same callback again is not a new attempt

    def test_contact_status_gets_its_own_row(self, phoning, cli):
        assert contact_status("P001", "C1") is None
        result = cli("status", "set", OP, "S2", "P001", "failed", "--contact", "C1")
        assert result.code == 0, result.err
        assert "P001/C1 in S2: to_process → failed" in result.out
        assert contact_status("P001", "C1") == ("failed", 0, True)
        assert status("P001")[0] == "to_process"  # the party settles when the step runs
        cli("status", "set", OP, "S2", "P001", "to_process", "--contact", "C2", "--callback-at", "2026-03-12 10:00")
        assert contact_status("P001", "C2") == ("to_process", 1, False)

    @pytest.mark.parametrize(("args", "message"), [
        (("NOPE", "S2", "P001", "ok_continue"), "no operation NOPE"),
        ((OP, "S22", "P001", "ok_continue"), f"operation {OP} has no step S22; did you mean S2"),
        ((OP, "G1", "P001", "ok_continue"), f"G1 is a group of steps in {OP}; statuses belong to its "
                                            "action steps (S3, S4)"),
        ((OP, "S2", "P0011", "ok_continue"), "no party P0011; did you mean P001"),
        ((OP, "S2", "P007", "ok_continue"), f"P007 is not in step S2 of {OP}; it enters the step when "
                                            "the previous step routes it"),
        ((OP, "S2", "P001", "ok_continue", "--contact", "C3"), "party P001 has no contact C3; did you mean"),
        ((OP, "S2", "P001", "okay"), "unknown status 'okay'; use one of to_process, ok_continue, "
                                     "not_processed_continue, failed, excluded, wrong_number"),
        ((OP, "S2", "P001", "to_process", "--callback-at", "demain"), "--callback-at 'demain' is not a "
                                                                       "date and time"),
        ((OP, "S2", "P001", "to_process", "--callback-at", "31/02/2026 10:00"), "is not a date and time"),
        ((OP, "S2", "P001", "ok_continue", "--callback-at", "2026-03-12 14:30"),
         "--callback-at goes with to_process"),
    ])
    def test_bad_arguments_get_one_clear_error(self, phoning, cli, args, message):
        result = cli("status", "set", *args)
        assert result.code == 1
        assert message in flat(result.err)
        assert scalar("select count(*) from step_target where status <> 'to_process' or attempts > 0") == 0
        assert scalar("select count(*) from step_target_contact") == 0


HEADER = ["TIERS", "NOM", "CONTACT", "STATUT", "RAPPEL", "CATALOGUE", "Q1.AGRANDISSEMENT", "EFFECTIF_IT",
          "REMARQUE"]


class TestAnswersImport:
    def test_xlsx_call_sheet_writes_answers_statuses_and_callbacks(self, phoning, cli):
        sheet = write_sheet(
            phoning / "appels.xlsx", HEADER,
            ["P001", "Prospect 1", None, "ok_continue", None, "Oui", "non", 12, "Très intéressé"],
            ["P002", "Prospect 2", None, "to_process", dt.datetime(2026, 3, 12, 14, 30), "PLUS TARD"],
            ["C001", "Client", "C1", "failed", None, "non", None, 3.5],
            ["P003", "Prospect 3", None, None, None, None, None, None, "rappeler lundi"],
        )
        result = cli("answers", "import", OP, "S2", sheet, "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out) == {"rows": 4, "answers_written": 8, "statuses_changed": 2,
                                          "callbacks": 1, "rejected": 0}
        assert answers("P001") == {"CATALOGUE": "oui", "AGRANDISSEMENT": "non", "EFFECTIF_IT": "12",
                                   "REMARQUE": "Très intéressé"}
        assert answers("P002") == {"CATALOGUE": "plus tard"}  # stored as the choice is defined
        assert answers("C001", "C1") == {"CATALOGUE": "non", "EFFECTIF_IT": "3.5"}
        assert answers("P003") == {"REMARQUE": "rappeler lundi"}
        assert status("P001") == ("ok_continue", 0, None, True)
        assert status("P002") == ("to_process", 1, dt.datetime(2026, 3, 12, 13, 30, tzinfo=UTC), False)
        assert status("P003") == ("to_process", 0, None, False)
        assert contact_status("C001", "C1") == ("failed", 0, True)
        assert scalar("select count(distinct step_id) from answer") == 1
        assert scalar("select count(*) from answer where answered_at is null") == 0

    def test_csv_call_sheet_with_bool_and_date_questions(self, phoning, cli):
        enter("S4", "P001", "P002", "P003")
        sheet = phoning / "relance.csv"
        sheet.write_text("Relance;;\nTIERS;RDV;Q2.DATE_RDV;STATUS;CALLBACK_AT\nP001;Oui;12/03/2026;ok_continue;\n"
                         "P002;0;2026-03-20;;\nP003;;;to_process;20/03/2026 09:30\n", encoding="cp1252")
        result = cli("answers", "import", OP, "S4", sheet)
        assert result.code == 0, result.err
        assert "3 rows: 4 answers written, 1 statuses changed, 1 callbacks" in result.out
        assert answers("P001") == {"RDV": "true", "DATE_RDV": "2026-03-12"}
        assert answers("P002") == {"RDV": "false", "DATE_RDV": "2026-03-20"}
        assert status("P003", "S4") == ("to_process", 1, dt.datetime(2026, 3, 20, 8, 30, tzinfo=UTC), False)

    def test_multi_choice_values_are_each_a_choice(self, database, cli, tmp_path):
        (tmp_path / "multi.yaml").write_text(MULTI_SPEC, encoding="utf-8")
        (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
        for args in (("apply", tmp_path / "multi.yaml"), ("parties", "import", tmp_path / "parties.csv")):
            assert cli(*args).code == 0
        enter("S1", "P001", "P002", operation="OPM")
        sheet = tmp_path / "multi.csv"
        sheet.write_text('TIERS;CANAUX\nP001;téléphone, e-mail\nP002;"Courrier;Fax"\n', encoding="utf-8")
        bad = cli("answers", "import", "OPM", "S1", sheet)
        assert bad.code == 1
        assert "multi.csv row 3: CANAUX: 'Courrier;Fax' has 'Fax' not among E-mail, Téléphone, Courrier" \
            in flat(bad.err)
        sheet.write_text("TIERS;CANAUX\nP001;téléphone, e-mail\nP002;Courrier\n", encoding="utf-8")
        assert cli("answers", "import", "OPM", "S1", sheet).code == 0
        assert rows("select value, choices from answer order by party_id") == [
            (None, ["Téléphone", "E-mail"]), (None, ["Courrier"])]

    def test_every_bad_row_is_reported_and_nothing_is_written(self, phoning, cli):
        sheet = write_sheet(
            phoning / "bad.xlsx", HEADER,
            ["P001", None, None, "ok_continue", None, "oui"],                            # 3: good
            ["X999", None, None, "ok_continue"],                                         # 4
            ["P007", None, None, "ok_continue"],                                         # 5
            ["P001", None, "C9", "ok_continue"],                                         # 6
            ["P002", None, None, "fini"],                                                # 7
            ["P003", None, None, "to_process", "demain 10h"],                            # 8
            ["P004", None, None, "ok_continue", "2026-03-12 10:00"],                     # 9
            ["P005", None, None, None, None, "peut-être", "plus tard", "douze"],         # 10
            ["P001", None, None, "failed"],                                              # 11
            [None, "sans code", None, "ok_continue"],                                    # 12
            ["P006", None, None, None, None, None, None, None, None, "en trop"],         # 13
        )
        result = cli("answers", "import", OP, "S2", sheet)
        assert result.code == 1
        err = flat(result.err)
        for expected in (
            "bad.xlsx row 4: unknown party X999; import it with campflow parties import",
            f"bad.xlsx row 5: P007 is not in step S2 of {OP}; it enters the step when the previous step routes it",
            "bad.xlsx row 6: party P001 has no contact C9",
            "bad.xlsx row 7: unknown status 'fini'; use one of to_process, ok_continue, "
            "not_processed_continue, failed, excluded, wrong_number",
            "bad.xlsx row 8: RAPPEL 'demain 10h' is not a date and time; write 2026-03-12 14:30",
            "bad.xlsx row 9: RAPPEL goes with status to_process (a call to make again), but P004 is ok_continue",
            "bad.xlsx row 10: CATALOGUE: 'peut-être' is not one of oui, non, plus tard; AGRANDISSEMENT: "
            "'plus tard' is not one of oui, non; EFFECTIF_IT: 'douze' is not a number",
            "bad.xlsx row 11: party P001 appears again (first at row 3)",
            "bad.xlsx row 12: TIERS (party code) is empty",
            'bad.xlsx row 13: cells outside the columns: J="en trop"',
            "10 of 11 row(s) rejected; nothing was imported",
        ):
            assert expected in err
        assert scalar("select count(*) from answer") == 0
        assert scalar("select count(*) from step_target where status <> 'to_process'") == 0

    def test_bad_bool_and_date_answers(self, phoning, cli):
        enter("S4", "P001")
        sheet = phoning / "s4.csv"
        sheet.write_text("TIERS;RDV;DATE_RDV\nP001;peut-être;31/02/2026\n", encoding="utf-8")
        err = flat(cli("answers", "import", OP, "S4", sheet).err)
        assert ("s4.csv row 2: RDV: 'peut-être' is not a yes or no; write oui/non, yes/no, true/false or 1/0; "
                "DATE_RDV: '31/02/2026' is not a date; write 2026-03-12 or 12/03/2026") in err

    def test_skip_bad_rows_imports_the_good_ones(self, phoning, cli):
        sheet = write_sheet(phoning / "mixed.xlsx", HEADER, ["P001", None, None, "ok_continue", None, "oui"],
                            ["X999", None, None, "ok_continue"], ["P002", None, None, None, None, "non"])
        report = phoning / "rejets.csv"
        result = cli("answers", "import", OP, "S2", sheet, "--skip-bad-rows", "--report", report)
        assert result.code == 0, result.err
        assert "3 rows: 2 answers written, 1 statuses changed, 0 callbacks" in result.out
        assert "1 bad row(s) skipped" in result.out
        assert report.read_text(encoding="utf-8").splitlines() == [
            "row;reason", '4;"unknown party X999; import it with campflow parties import"']
        assert answers("P001") == {"CATALOGUE": "oui"} and answers("P002") == {"CATALOGUE": "non"}

    def test_empty_cells_keep_previous_answers_and_reimport_changes_nothing(self, phoning, cli):
        first = write_sheet(phoning / "first.xlsx", HEADER,
                            ["P001", None, None, "to_process", "2026-03-12 10:00", "plus tard", "oui", 8, "à rappeler"])
        assert json.loads(cli("answers", "import", OP, "S2", first, "--json").out)["answers_written"] == 4
        again = json.loads(cli("answers", "import", OP, "S2", first, "--json").out)
        assert (again["answers_written"], again["statuses_changed"], again["callbacks"]) == (0, 0, 0)
        assert status("P001")[:2] == ("to_process", 1)
        second = write_sheet(phoning / "second.xlsx", ["TIERS", "CATALOGUE", "REMARQUE", "STATUT"],
                             ["P001", "oui", None, "ok_continue"])
        assert cli("answers", "import", OP, "S2", second, "--quiet").code == 0
        assert answers("P001") == {"CATALOGUE": "oui", "AGRANDISSEMENT": "oui", "EFFECTIF_IT": "8",
                                   "REMARQUE": "à rappeler"}
        assert status("P001")[0] == "ok_continue"

    def test_step_without_questionnaire_takes_statuses_only(self, phoning, cli):
        enter("S3", "P001", "P002")
        sheet = phoning / "s3.csv"
        sheet.write_text("TIERS;STATUT;REMARQUE\nP001;ok_continue;ignorée\nP002;excluded;\n", encoding="utf-8")
        result = cli("answers", "import", OP, "S3", sheet)
        assert result.code == 0, result.err
        assert "2 rows: 0 answers written, 2 statuses changed" in result.out
        assert status("P002", "S3")[0] == "excluded"
        sheet.write_text("TIERS;Q1.CATALOGUE\nP001;oui\n", encoding="utf-8")
        err = flat(cli("answers", "import", OP, "S3", sheet).err)
        assert ("s3.csv column B: Q1.CATALOGUE is a question of Q1, which step S3 does not ask (it has no "
                "questionnaire)") in err

    def test_another_steps_questions_and_empty_headers_are_refused(self, phoning, cli):
        sheet = phoning / "wrong.csv"
        sheet.write_text("TIERS;CATALOGUE;Q2.RDV\nP001;oui;oui\n", encoding="utf-8")
        err = flat(cli("answers", "import", OP, "S2", sheet).err)
        assert "wrong.csv column C: Q2.RDV is a question of Q2, which step S2 does not ask" in err
        sheet.write_text("TIERS;NOM\nP001;x\n", encoding="utf-8")
        err = flat(cli("answers", "import", OP, "S2", sheet).err)
        assert "nothing to import: the header row (row 1) has none of STATUT, RAPPEL, CATALOGUE" in err
        sheet.write_text("CODE;STATUT\nP001;ok_continue\n", encoding="utf-8")
        assert "no header row with the column TIERS" in flat(cli("answers", "import", OP, "S2", sheet).err)
        assert scalar("select count(*) from answer") == 0

    def test_help_has_an_example(self, cli):
        for group, command in (("status", "set"), ("answers", "import")):
            result = cli(group, command, "--help")
            assert result.code == 0 and "Example:" in result.out
