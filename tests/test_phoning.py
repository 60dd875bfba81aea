"""Phoning steps: the call sheet, its round trip through `answers import`, the run, and the
terminal session driven for real (piped stdin, tmux, two operators at once)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import text

from campflow.store import db
from tests.conftest import rows, scalar

OP = "CALLS"
UTC = dt.timezone.utc
CAMPFLOW = str(Path(sys.executable).parent / "campflow")
SPEC = """kind: Questionnaire
code: QP
label: Qualification
questions:
  - {code: CATALOGUE, label: "Catalogue ?", type: choice, choices: [oui, non, "plus tard, peut-être"], required: true}
  - {code: RDV, label: "Rendez-vous ?", type: bool}
  - {code: EFFECTIF, label: Effectif, type: number}
  - {code: DATE_RDV, label: Date du rendez-vous, type: date}
  - {code: CANAUX, label: Canaux, type: multi_choice, choices: [E-mail, Téléphone, Courrier]}
  - {code: NOM, label: Nom du décideur, type: text}
---
kind: Operation
code: CALLS
label: Calls
timezone: Europe/Paris
party_kinds: [prospect, client]
steps:
  - {code: APPEL, label: Appel de qualification, kind: phoning, questionnaire: QP, next: []}
  - {code: PARCONTACT, label: Appel par contact, kind: phoning_contact, questionnaire: QP, next: []}
  - {code: EXPORT, label: Export, kind: spreadsheet_export, columns: [party.code], next: []}
"""
PARTIES = ("FICHE;TIERS;NOM;TEL;FAX;EMAIL;ADRESSE;CP;VILLE\n"
           "PRO;P001;=1+2 Boulangerie;04 78 00 00 01;04 78 00 00 09;info@p1.fr;1 rue A;69001;Lyon\n"
           "PRO;P002;Garage Deux;04 78 00 00 02;;;2 rue B;69002;Lyon\n"
           "CLI;P003;Trois SA;04 78 00 00 03;;;;;Villeurbanne\n"
           "PRO;P004;Quatre SARL;04 78 00 00 04;;;;;Vénissieux\n")
CONTACTS = ("TIERS;CONTACT;CIVILITE;NOM;PRENOM;FONCTION;TEL\n"
            "P001;C1;Mme;Martin;Claire;DIRECTION;06 00 00 00 01\n"
            "P001;C2;M.;@Durand;Paul;ACHATS;06 00 00 00 02\n"
            "P002;C1;M.;Petit;Luc;DIRECTION;06 00 00 00 03\n")


@pytest.fixture
def calls(examples_applied, cli, tmp_path):
    """Operation CALLS: P001…P004 in APPEL; P001 (two contacts) and P003 (none) in PARCONTACT."""
    (tmp_path / "calls.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    for args in (("apply", tmp_path / "calls.yaml"), ("parties", "import", tmp_path / "parties.csv", "--quiet"),
                 ("contacts", "import", tmp_path / "contacts.csv", "--quiet")):
        result = cli(*args)
        assert result.code == 0, result.err
    enter("APPEL", "P001", "P002", "P003", "P004")
    enter("PARCONTACT", "P001", "P003")
    return tmp_path


def execute(sql: str, **params) -> None:
    with db.engine().begin() as conn:
        conn.execute(text(sql), params)


def enter(step: str, *parties: str) -> None:
    """Put parties into a step as `to_process`, as routing would."""
    execute("""insert into step_target (step_id, party_id, operation_id)
               select s.id, p.id, s.operation_id from step s join operation o on o.id = s.operation_id
               join party p on p.code = any(:parties) where o.code = :op and s.code = :step""",
            op=OP, step=step, parties=list(parties))


def status(party: str, step: str = "APPEL", operation: str = OP):
    return rows("""select st.status, st.attempts, st.callback_at from step_target st
                   join party p on p.id = st.party_id join step s on s.id = st.step_id
                   join operation o on o.id = s.operation_id
                   where p.code = :party and s.code = :step and o.code = :op""",
                party=party, step=step, op=operation)[0]


def contact_status(party: str, contact: str, step: str = "PARCONTACT"):
    found = rows("""select stc.status, stc.attempts, stc.callback_at from step_target_contact stc
                    join contact c on c.id = stc.contact_id join party p on p.id = c.party_id
                    join step s on s.id = stc.step_id
                    where p.code = :party and c.code = :contact and s.code = :step""",
                 party=party, contact=contact, step=step)
    return found[0] if found else None


def answers(party: str, contact: str | None = None):
    return dict(rows("""
        select q.code, coalesce(a.value, array_to_string(a.choices, '|')) from answer a
        join question q on q.id = a.question_id join party p on p.id = a.party_id
        left join contact c on c.id = a.contact_id
        where p.code = :party and c.code is not distinct from :contact""", party=party, contact=contact))


def set_callback(party: str, when: dt.datetime, attempts: int = 1, step: str = "APPEL") -> None:
    execute("""update step_target st set callback_at = :when, attempts = :attempts from step s, party p
               where s.id = st.step_id and p.id = st.party_id and s.code = :step and p.code = :party
                 and s.operation_id = (select id from operation where code = :op)""",
            when=when, attempts=attempts, step=step, party=party, op=OP)


def phoning_step(step: str = "APPEL"):
    from campflow.store.phoning import find_phoning_step

    with db.session() as session:
        return find_phoning_step(session, OP, step)


# -- the call sheet -----------------------------------------------------------------------


def open_sheet(path: Path):
    book = openpyxl.load_workbook(path)
    return book, book["Appels"]


def drop_downs(book, sheet) -> dict[str, list[str]]:
    """Header → the values of its drop-down list, read from the hidden sheet it points to."""
    header = [c.value for c in sheet[2]]
    found = {}
    for check in sheet.data_validations.dataValidation:
        if check.type != "list":
            continue
        column = str(check.sqref).split(":")[0].rstrip("0123456789")
        source, cells = check.formula1.split("!")
        assert source == "'Listes'"
        start, end = cells.replace("$", "").split(":")
        values = [c.value for row in book["Listes"][start:end] for c in row]
        found[header[openpyxl.utils.column_index_from_string(column) - 1]] = values
    return found


HEADER = ["TIERS", "NOM (FICHE)", "TEL", "FAX", "EMAIL", "ADRESSE", "CP", "VILLE", "CODE CONTACT", "CIVILITE",
          "PRENOM", "NOM CONTACT", "FONCTION", "TEL CONTACT", "TENTATIVES", "RAPPEL PREVU", "QP.CATALOGUE",
          "QP.RDV", "QP.EFFECTIF", "QP.DATE_RDV", "QP.CANAUX", "QP.NOM", "STATUT", "RAPPEL"]


class TestCallSheet:
    def test_headers_rows_drop_downs_and_inert_text(self, calls, cli):
        set_callback("P002", dt.datetime(2030, 3, 12, 13, 30, tzinfo=UTC), attempts=2)
        execute("""insert into answer (operation_id, party_id, question_id, value)
                   select o.id, p.id, q.id, '-1 remarque' from operation o, party p, question q
                   where o.code = :op and p.code = 'P002' and q.code = 'NOM'""", op=OP)
        result = cli("phoning", OP, "APPEL", "--sheet", calls / "appels.xlsx")
        assert result.code == 0, result.err
        assert "call sheet of 4 parties" in result.out
        book, sheet = open_sheet(calls / "appels.xlsx")
        assert sheet["A1"].value.startswith("Appels CALLS/APPEL — Appel de qualification")
        # a card column named like a question (NOM) is renamed, so the import reads QP.NOM only
        assert [c.value for c in sheet[2]] == HEADER
        assert sheet.freeze_panes == "B3"
        data = {r[0]: dict(zip(HEADER, r)) for r in sheet.iter_rows(min_row=3, values_only=True)}
        assert list(data) == ["P001", "P002", "P003", "P004"]
        first = data["P001"]
        assert first["NOM (FICHE)"] == "'=1+2 Boulangerie"  # inert: shown as text, never a formula
        assert sheet["B3"].data_type == "s"
        assert (first["CODE CONTACT"], first["PRENOM"], first["FONCTION"]) == ("C1", "Claire", "DIRECTION")
        assert (first["TENTATIVES"], first["RAPPEL PREVU"], first["STATUT"]) == (0, None, None)
        second = data["P002"]
        assert second["TENTATIVES"] == 2
        assert second["RAPPEL PREVU"] == dt.datetime(2030, 3, 12, 14, 30)  # in the operation's time zone
        assert second["QP.NOM"] == "'-1 remarque"
        lists = drop_downs(book, sheet)
        assert lists == {"QP.CATALOGUE": ["oui", "non", "plus tard, peut-être"], "QP.RDV": ["oui", "non"],
                         "STATUT": ["to_process", "ok_continue", "not_processed_continue", "failed", "excluded",
                                    "wrong_number"]}
        assert book["Listes"].sheet_state == "hidden"
        ranges = {str(c.sqref) for c in sheet.data_validations.dataValidation}
        assert "W3:W6" in ranges and "Q3:Q6" in ranges  # STATUT and QP.CATALOGUE on the four rows

    def test_a_filled_sheet_imports_back(self, calls, cli):
        path = calls / "appels.xlsx"
        assert cli("phoning", OP, "APPEL", "--sheet", path).code == 0
        book, sheet = open_sheet(path)
        at = {row[0].value: row[0].row for row in sheet.iter_rows(min_row=3)}
        column = {h: i + 1 for i, h in enumerate(HEADER)}

        def fill(party, **cells):
            for header, value in cells.items():
                sheet.cell(at[party], column[header.replace("__", ".")], value)

        fill("P001", QP__CATALOGUE="plus tard, peut-être", QP__RDV="oui", QP__EFFECTIF=12,
             QP__DATE_RDV=dt.datetime(2026, 4, 15), QP__CANAUX="E-mail; Courrier", STATUT="ok_continue")
        fill("P002", RAPPEL=dt.datetime(2030, 3, 12, 14, 30))
        fill("P003", STATUT="wrong_number", QP__NOM="M. Trois")
        book.save(path)
        result = cli("answers", "import", OP, "APPEL", path, "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out) == {"rows": 4, "answers_written": 6, "statuses_changed": 2,
                                          "callbacks": 1, "rejected": 0}
        assert answers("P001") == {"CATALOGUE": "plus tard, peut-être", "RDV": "true", "EFFECTIF": "12",
                                   "DATE_RDV": "2026-04-15", "CANAUX": "E-mail|Courrier"}
        assert answers("P003") == {"NOM": "M. Trois"}
        assert status("P001")[0] == "ok_continue"
        assert status("P002") == ("to_process", 1, dt.datetime(2030, 3, 12, 13, 30, tzinfo=UTC))
        assert status("P003")[0] == "wrong_number"
        assert status("P004") == ("to_process", 0, None)

    def test_a_sheet_of_earlier_answers_imports_back_unchanged(self, calls, cli):
        from campflow.store.phoning import Answered, load_card
        from campflow.store.phoning_calls import Call, record_call

        step = phoning_step()
        question = {q.code: q.id for q in step.questions}
        with db.session() as session:
            party = session.scalar(text("select id from party where code = 'P001'"))
            card = load_card(session, step, party, None)
            record_call(session, step, card, Call({question["RDV"]: Answered("false"),
                                                   question["CANAUX"]: Answered(choices=("Téléphone", "E-mail")),
                                                   question["EFFECTIF"]: Answered("1200.5")}, "no_answer"))
        path = calls / "appels.xlsx"
        assert cli("phoning", OP, "APPEL", "--sheet", path).code == 0
        row = next(r for r in open_sheet(path)[1].iter_rows(min_row=3, values_only=True) if r[0] == "P001")
        assert dict(zip(HEADER, row))["QP.RDV"] == "non"
        result = cli("answers", "import", OP, "APPEL", path, "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out)["answers_written"] == 0  # the same values as stored
        assert answers("P001") == {"RDV": "false", "CANAUX": "Téléphone|E-mail", "EFFECTIF": "1200.5"}

    def test_phoning_contact_sheet_has_a_row_per_contact(self, calls, cli):
        path = calls / "contacts.xlsx"
        result = cli("phoning", OP, "PARCONTACT", "--sheet", path)
        assert result.code == 0, result.err
        assert "call sheet of 3 contacts of 2 parties" in result.out
        book, sheet = open_sheet(path)
        header = [c.value for c in sheet[2]]
        assert header[8] == "CONTACT"
        listed = [(r[0], r[8], r[11]) for r in sheet.iter_rows(min_row=3, values_only=True)]
        assert listed == [("P001", "C1", "Martin"), ("P001", "C2", "'@Durand"), ("P003", None, None)]
        # each contact has its own row now, so the party settles once both are answered
        assert contact_status("P001", "C2") == ("to_process", 0, None)
        sheet.cell(3, header.index("STATUT") + 1, "ok_continue")
        sheet.cell(3, header.index("QP.CATALOGUE") + 1, "oui")
        book.save(path)
        result = cli("answers", "import", OP, "PARCONTACT", path)
        assert result.code == 0, result.err
        assert contact_status("P001", "C1")[0] == "ok_continue"
        assert answers("P001", "C1") == {"CATALOGUE": "oui"}
        from campflow.store.routing import sync_contacts

        with db.session() as session:
            sync_contacts(session, phoning_step("PARCONTACT").step_id)
        assert status("P001", "PARCONTACT")[0] == "to_process"  # C2 is still to call

    @pytest.mark.parametrize(("args", "message"), [
        ((OP, "NOPE"), f"operation {OP} has no step NOPE"),
        ((OP, "EXPORT"), f"step EXPORT of {OP} is a spreadsheet_export step, not a phoning step; its phoning "
                         "steps: APPEL, PARCONTACT"),
        (("NOPE", "APPEL"), "no operation NOPE"),
    ])
    def test_a_step_that_is_not_phoning_is_one_clear_error(self, calls, cli, args, message):
        for extra in ((), ("--sheet", calls / "x.xlsx")):
            result = cli("phoning", *args, *extra)
            assert result.code == 1
            assert message in " ".join(result.err.split())
            assert "Traceback" not in result.err
        assert not (calls / "x.xlsx").exists()


RUN_SPEC = """kind: Operation
code: RUNCALLS
label: Run calls
timezone: Europe/Paris
party_kinds: [prospect, client]
steps:
  - {code: APPEL, label: Appel, kind: phoning, questionnaire: QP, event: CALLED}
  - {code: SUITE, label: Suite, kind: other, next: []}
"""


class TestRunOperation:
    def test_a_run_writes_the_call_sheet_and_leaves_parties_to_process(self, calls, cli, prefect, monkeypatch):
        from flows.run_operation import run_operation

        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(calls / "out"))
        (calls / "run.yaml").write_text(RUN_SPEC, encoding="utf-8")
        assert cli("apply", calls / "run.yaml").code == 0
        assert cli("targets", "add", "RUNCALLS", "--where", "kind in (PRO, CLI)").code == 0
        reports = {r["code"]: r for r in run_operation("RUNCALLS")}
        report = reports["APPEL"]
        assert report["state"] == "Completed"
        assert report["entered"] == 4 and report["processed"] == 0
        assert report["after"] == {"to_process": 4}
        [output] = report["outputs"]
        assert Path(output).name == "RUNCALLS-APPEL-appels.xlsx"
        assert f"call sheet of 4 parties: {Path(output).name}" in report["reason"]
        sheet = openpyxl.load_workbook(output)["Appels"]
        assert [r[0] for r in sheet.iter_rows(min_row=3, values_only=True)] == ["P001", "P002", "P003", "P004"]
        assert scalar("select count(*) from event") == 0
        execute("""update step_target st set status = 'ok_continue' from step s, party p
                   where s.id = st.step_id and p.id = st.party_id and s.code = 'APPEL'
                   and s.operation_id = (select id from operation where code = 'RUNCALLS') and p.code = 'P001'""")
        again = {r["code"]: r for r in run_operation("RUNCALLS")}["APPEL"]
        assert len(again["outputs"]) == 1
        assert "call sheet of 3 parties" in again["reason"]
        assert scalar("select count(*) from event where code = 'CALLED'") == 1


# -- the session's logic ------------------------------------------------------------------


class TestAnswers:
    @pytest.mark.parametrize(("kind", "choices", "typed", "value", "picked"), [
        ("choice", ("oui", "non", "plus tard"), "3", "plus tard", None),
        ("choice", ("oui", "non", "plus tard"), "PLUS TARD", "plus tard", None),
        ("choice", ("10", "5", "1"), "1", "1", None),  # a choice's text wins over its number
        ("multi_choice", ("E-mail", "Téléphone", "Courrier"), "1, 3", None, ("E-mail", "Courrier")),
        ("multi_choice", ("E-mail", "Téléphone", "Courrier"), "3 1", None, ("Courrier", "E-mail")),
        ("multi_choice", ("E-mail", "Téléphone", "Courrier"), "téléphone;e-mail", None, ("Téléphone", "E-mail")),
        ("number", (), "1 200,5", "1200.5", None),
        ("number", (), "-3", "-3", None),
        ("bool", (), "Oui", "true", None),
        ("bool", (), "n", "false", None),
        ("date", (), "15/04/2026", "2026-04-15", None),
        ("date", (), "2026-04-15", "2026-04-15", None),
        ("text", (), "  =rappeler  ", "=rappeler", None),
    ])
    def test_answers_are_stored_as_the_import_stores_them(self, kind, choices, typed, value, picked):
        from campflow.store.phoning import Answered, CallQuestion, parse_answer

        question = CallQuestion(1, "Q", "Q", kind, choices, False)
        assert parse_answer(question, typed) == Answered(value, picked)

    @pytest.mark.parametrize(("kind", "typed", "message"), [
        ("choice", "peut-être", "'peut-être' is not a choice; answer one of 1 oui, 2 non"),
        ("choice", "3", "'3' is not a choice"),
        ("multi_choice", "1, 7", "'7' is not a choice"),
        ("number", "douze", "'douze' is not a number"),
        ("bool", "bof", "'bof' is not a yes or no"),
        ("date", "31/02/2026", "'31/02/2026' is not a date; write 2026-03-12 or 12/03/2026"),
    ])
    def test_answers_that_do_not_fit_are_refused(self, kind, typed, message):
        from campflow.store.phoning import BadAnswer, CallQuestion, parse_answer

        with pytest.raises(BadAnswer, match=message):
            parse_answer(CallQuestion(1, "Q", "Q", kind, ("oui", "non"), False), typed)


class TestNextCall:
    def offered(self, step, claims, passed=()):
        from campflow.store.phoning import next_call

        with db.session() as session:
            card = next_call(session, step, claims, passed)
        return card

    def test_due_callbacks_first_then_never_called_by_code(self, calls):
        from campflow.store.phoning import CallClaims

        now = dt.datetime.now(UTC)
        set_callback("P004", now - dt.timedelta(hours=1))
        set_callback("P003", now - dt.timedelta(hours=2))
        set_callback("P001", now + dt.timedelta(hours=1))  # not due yet: not offered
        step = phoning_step()
        with CallClaims(db.engine()) as claims:
            order, passed = [], []
            while (card := self.offered(step, claims, passed)) is not None:
                order.append(card.party_code)
                passed.append(card.call)
                claims.release(step.step_id, *card.call)
        assert order == ["P003", "P004", "P002"]

    def test_two_operators_never_get_the_same_call(self, calls):
        from campflow.store.phoning import CallClaims

        step = phoning_step()
        with contextlib.ExitStack() as stack:
            operators = [stack.enter_context(CallClaims(db.engine())) for _ in range(5)]
            shown = [self.offered(step, claims) for claims in operators[:4]]
            assert [c.party_code for c in shown] == ["P001", "P002", "P003", "P004"]
            assert self.offered(step, operators[4]) is None  # all four on someone's screen
            operators[0].release(step.step_id, *shown[0].call)
            assert self.offered(step, operators[4]).party_code == "P001"  # released: free again

    def test_phoning_contact_goes_contact_by_contact(self, calls):
        from campflow.store.phoning import CallClaims
        from campflow.store.phoning_calls import Call, record_call

        step = phoning_step("PARCONTACT")
        with CallClaims(db.engine()) as claims:
            card = self.offered(step, claims)
            assert (card.who, card.contact.name, [c.code for c in card.contacts]) == (
                "P001/C1", "Mme Claire Martin", ["C1", "C2"])
            with db.session() as session:
                record_call(session, step, card, Call({}, "not_processed_continue"))
            claims.release(step.step_id, *card.call)
            assert status("P001", "PARCONTACT")[0] == "to_process"  # C2 still to call
            card = self.offered(step, claims)
            assert card.who == "P001/C2"
            with db.session() as session:
                record_call(session, step, card, Call({}, "failed"))
            claims.release(step.step_id, *card.call)
        # the party takes the best of its contacts' statuses once all have one
        assert status("P001", "PARCONTACT")[0] == "not_processed_continue"
        assert (contact_status("P001", "C1")[0], contact_status("P001", "C2")[0]) == (
            "not_processed_continue", "failed")
        with CallClaims(db.engine()) as claims:
            assert self.offered(step, claims).who == "P003"  # no contact: the party itself

    def test_a_call_settled_meanwhile_is_not_overwritten(self, calls, cli):
        from campflow.store.phoning import Answered, CallClaims, CallTaken
        from campflow.store.phoning_calls import Call, record_call

        step = phoning_step()
        with CallClaims(db.engine()) as claims:
            card = self.offered(step, claims)
            assert cli("status", "set", OP, "APPEL", card.party_code, "excluded").code == 0
            with pytest.raises(CallTaken, match="P001 was settled meanwhile"), db.session() as session:
                record_call(session, step, card, Call({step.questions[0].id: Answered("oui")}, "ok_continue"))
        assert status("P001")[0] == "excluded"
        assert answers("P001") == {}

    def test_contacts_of_a_party_level_call_take_its_status(self, calls):
        from campflow.store.phoning import CallClaims
        from campflow.store.phoning_calls import Call, record_call

        execute("""insert into step_target_contact (step_id, contact_id, party_id)
                   select s.id, c.id, c.party_id from step s, contact c join party p on p.id = c.party_id
                   where s.code = 'APPEL' and p.code = 'P001'
                     and s.operation_id = (select id from operation where code = :op)""", op=OP)
        step = phoning_step()
        with CallClaims(db.engine()) as claims, db.session() as session:
            record_call(session, step, self.offered(step, claims), Call({}, "not_processed_continue"))
        assert rows("select distinct status from step_target_contact") == [("not_processed_continue",)]


# -- the terminal session, driven for real ------------------------------------------------


def session_env() -> dict[str, str]:
    return {**os.environ, "CAMPFLOW_DATABASE_URL": db.database_url(), "COLUMNS": "120",
            "PYTHONUNBUFFERED": "1", "TERM": "dumb"}


def run_session(*lines: str, step: str = "APPEL", operator: str = "JDUPONT") -> subprocess.CompletedProcess:
    return subprocess.run([CAMPFLOW, "phoning", OP, step, "--operator", operator], input="".join(
        f"{line}\n" for line in lines), capture_output=True, text=True, env=session_env(), timeout=60)


class Screen:
    """A session in a subprocess whose output is read as it comes, to answer what it shows."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.output = ""
        self.process: subprocess.Popen | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.process = subprocess.Popen([CAMPFLOW, "phoning", OP, *self.args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=session_env())
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for chunk in iter(lambda: self.process.stdout.read(1), ""):
            self.output += chunk

    def wait_for(self, text_: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text_ not in self.output:
            assert time.monotonic() < deadline, f"never showed {text_!r}:\n{self.output}"
            assert self.process.poll() is None or text_ in self.output, self.output
            time.sleep(0.05)

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n")
        self.process.stdin.flush()

    def end(self) -> str:
        """End the input (the session quits) and return everything it showed."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0, self.output
        self.reader.join(timeout=5)
        self.process.stdout.close()
        return self.output

    def __enter__(self) -> Screen:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:  # a failed test: stop the session it started
            self.process.kill()
            self.process.wait(timeout=30)
        self.reader.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


class TestSession:
    def test_scripted_session_answers_two_parties(self, calls):
        result = run_session(
            "1", "oui", "12", "15/04/2026", "1,2", "Mme Durand", "1",  # P001: the questionnaire, OK continue
            "!", "3", "12/03/2030 14:30",  # P002: no one to ask; call back
        )  # then the input ends: the session stops at P003, leaving it as it was
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "Phoning CALLS/APPEL — Appel de qualification · operator JDUPONT" in out
        assert "4 to call now (0 callbacks due), 0 callbacks later" in out
        assert "P001 · =1+2 Boulangerie (prospect)" in out
        assert "P001 saved: ok_continue · 6 answer(s)" in out
        assert "P002 saved: to_process · 0 answer(s), attempts 1, call back 2030-03-12 14:30 (Europe/Paris)" in out
        assert "stopped: nothing saved for P003; 2 call(s) saved in this session" in out
        assert answers("P001") == {"CATALOGUE": "oui", "RDV": "true", "EFFECTIF": "12", "DATE_RDV": "2026-04-15",
                                   "CANAUX": "E-mail|Téléphone", "NOM": "Mme Durand"}
        assert status("P001") == ("ok_continue", 0, None)
        assert status("P002") == ("to_process", 1, dt.datetime(2030, 3, 12, 13, 30, tzinfo=UTC))
        assert status("P003") == ("to_process", 0, None)
        assert scalar("select reason from step_target st join party p on p.id = st.party_id join step s "
                      "on s.id = st.step_id where s.code = 'APPEL' and p.code = 'P002'") == \
            "phoning: callback by JDUPONT"

    def test_bad_input_is_asked_again(self, calls):
        result = run_session(
            "peut-être", "", "2",  # an unknown choice, then nothing for a required question
            "bof", "non", "douze", "7", "31/02/2026", "2026-02-28", "1, 9", "", "", "9",
            "3", "demain", "01/01/2020 10:00", "", "4",  # bad callbacks, back to the menu, no answer
            "q")
        assert result.returncode == 0, result.stderr
        out = " ".join(result.stdout.split())
        for message in ("'peut-être' is not a choice; answer one of 1 oui, 2 non, 3 plus tard, peut-être",
                        "CATALOGUE is required; answer it, or ! to go to the outcome",
                        "'bof' is not a yes or no", "'douze' is not a number", "'31/02/2026' is not a date",
                        "'9' is not a choice", "'9' is not an outcome",
                        "'demain' is not a date and time; write 2026-03-12 14:30 or 12/03/2026 14:30 "
                        "(read in Europe/Paris)", "'01/01/2020 10:00' is past",
                        "P001 saved: to_process · 4 answer(s), attempts 1"):
            assert message in out
        assert answers("P001") == {"CATALOGUE": "non", "RDV": "false", "EFFECTIF": "7", "DATE_RDV": "2026-02-28"}
        assert status("P001") == ("to_process", 1, None)
        assert "P002 ·" in out  # the next party came; q stopped there

    def test_enter_at_the_outcome_takes_ok_continue(self, calls):
        result = run_session("1", "", "", "", "", "", "", "q")  # CATALOGUE oui, Enter at the rest and the outcome
        assert result.returncode == 0, result.stderr
        assert "outcome [1 OK, continue] > " in result.stdout  # the prompt shows the default
        assert "P001 saved: ok_continue · 1 answer(s)" in result.stdout
        assert status("P001") == ("ok_continue", 0, None)
        assert answers("P001") == {"CATALOGUE": "oui"}

    def test_quitting_in_the_middle_leaves_the_party_untouched(self, calls):
        before = rows("select * from step_target order by 1, 2")
        result = run_session("1", "oui", "q")
        assert result.returncode == 0, result.stderr
        assert "stopped: nothing saved for P001; 0 call(s) saved in this session" in result.stdout
        assert answers("P001") == {}
        assert rows("select * from step_target order by 1, 2") == before

    def test_due_callbacks_come_first_and_enter_keeps_previous_answers(self, calls):
        now = dt.datetime.now(UTC)
        set_callback("P002", now - dt.timedelta(minutes=5))
        execute("""insert into answer (operation_id, party_id, question_id, value)
                   select o.id, p.id, q.id, '40' from operation o, party p, question q
                   where o.code = :op and p.code = 'P002' and q.code = 'EFFECTIF'""", op=OP)
        result = run_session("2", "", "", "", "", "", "1", "q")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "4 to call now (1 callbacks due)" in out
        assert out.index("P002 ·") < out.index("P001 ·")  # the due callback first
        assert "EFFECTIF: 40" in out and "EFFECTIF [40] > " in out
        assert "P002 saved: ok_continue · 1 answer(s)" in out
        assert status("P002")[0] == "ok_continue"
        assert answers("P002") == {"CATALOGUE": "non", "EFFECTIF": "40"}

    def test_phoning_contact_session_goes_contact_by_contact(self, calls):
        result = run_session("!", "1", "oui", "1", "!", "2", "!", "5", step="PARCONTACT")
        out = result.stdout
        assert result.returncode == 0, result.stderr
        assert "Ask for  C1 Mme Claire Martin · DIRECTION · 06 00 00 00 01" in out
        assert "Calls    first call" in out
        assert "OK needs the required answers: CATALOGUE" in out
        assert "P001/C1 saved: ok_continue" in out
        assert "P001/C2 saved: not_processed_continue" in out
        assert "P003 skipped" in out
        assert "no party left to call in CALLS/PARCONTACT (2 call(s) saved in this session)" in out
        assert answers("P001", "C1") == {"CATALOGUE": "oui"}
        assert status("P001", "PARCONTACT")[0] == "ok_continue"
        assert status("P003", "PARCONTACT")[0] == "to_process"

    def test_two_sessions_at_once_never_show_the_same_party(self, calls):
        with Screen("APPEL") as first, Screen("APPEL") as second:
            first.start()
            first.wait_for("CATALOGUE > ")
            second.start()
            second.wait_for("CATALOGUE > ")
            assert "P001 ·" in first.output and "P001 ·" not in second.output
            assert "P002 ·" in second.output
            for line in ("!", "2"):  # the second settles P002 and gets P003, never P001
                second.type(line)
            second.wait_for("P003 ·")
            first.type("!")
            first.type("2")
            first.wait_for("P004 ·")
            outputs = first.end(), second.end()
        assert "P002 ·" not in outputs[0] and "P001 ·" not in outputs[1]
        assert "P004 ·" not in outputs[1]
        assert [status(p)[0] for p in ("P001", "P002", "P003", "P004")] == [
            "not_processed_continue", "not_processed_continue", "to_process", "to_process"]

    def test_two_sessions_racing_through_the_list_save_each_party_once(self, calls):
        script = "".join("!\n2\n" for _ in range(10))
        processes = [subprocess.Popen([CAMPFLOW, "phoning", OP, "APPEL"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=session_env()) for _ in range(2)]
        outs = [p.communicate(script, timeout=60)[0] for p in processes]
        saved = [{line.split()[0] for line in out.splitlines() if " saved: " in line} for out in outs]
        assert saved[0].isdisjoint(saved[1])
        assert saved[0] | saved[1] == {"P001", "P002", "P003", "P004"}
        assert all(p.returncode == 0 for p in processes)


class TestTmux:
    def test_a_terminal_session_shows_the_card_and_saves_the_call(self, calls):
        socket = f"campflow-test-{uuid.uuid4().hex[:8]}"
        tmux = ["tmux", "-L", socket]
        command = " ".join([
            "env", shlex.quote(f"CAMPFLOW_DATABASE_URL={db.database_url()}"),
            shlex.quote(CAMPFLOW), "phoning", OP, "APPEL", "--operator", "JDUPONT",
            "; echo '[exit '$?']'; sleep 120"])
        subprocess.run([*tmux, "new-session", "-d", "-x", "200", "-y", "50", "-s", "call", command], check=True)

        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "call"], capture_output=True, text=True,
                                  check=True).stdout

        def wait_for(text_: str) -> str:
            deadline = time.monotonic() + 30
            while text_ not in (shown := screen()):
                assert time.monotonic() < deadline, f"never showed {text_!r}:\n{shown}"
                time.sleep(0.1)
            return shown

        def prompt(asked: str) -> str:
            """Wait until the last line shown is this prompt (tmux trims trailing spaces)."""
            deadline = time.monotonic() + 30
            while True:
                shown = screen()
                if shown.strip() and shown.strip().splitlines()[-1].endswith(asked.rstrip()):
                    return shown
                assert time.monotonic() < deadline, f"never asked {asked!r}:\n{shown}"
                time.sleep(0.1)

        def keys(*typed: str) -> None:
            for line in typed:
                subprocess.run([*tmux, "send-keys", "-t", "call", "-l", line], check=True)
                subprocess.run([*tmux, "send-keys", "-t", "call", "Enter"], check=True)

        try:
            shown = prompt("CATALOGUE > ")
            assert "P001 · =1+2 Boulangerie (prospect)" in shown
            assert "tel 04 78 00 00 01" in shown and "1 rue A, 69001 Lyon" in shown
            assert "Claire Martin" in shown and "ACHATS" in shown
            keys("3", "oui", "", "", "", "")
            prompt("outcome [1 OK, continue] > ")
            keys("1")
            shown = wait_for("P002 · Garage Deux")
            assert "P001 saved: ok_continue · 2 answer(s)" in shown
            prompt("CATALOGUE > ")
            keys("q")
            shown = wait_for("[exit 0]")
            assert "stopped: nothing saved for P002" in shown
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)
        assert status("P001")[0] == "ok_continue"
        assert answers("P001") == {"CATALOGUE": "plus tard, peut-être", "RDV": "true"}
        assert status("P002") == ("to_process", 0, None)
