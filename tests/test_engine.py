"""The run-operation flow against the real PostgreSQL, under one Prefect test harness."""

from __future__ import annotations

import re
import smtplib
import socket

import pytest
from sqlalchemy import text

from campflow.errors import CampflowError
from campflow.store import db
from tests.conftest import final_task_runs, rows, scalar

PARTIES = """FICHE;TIERS;NOM;VILLE;SECTEUR
PRO;P1;Un;Lyon;BTP
PRO;P2;Deux;Paris;BTP
PRO;P3;Trois;Lyon;Commerce
CLI;C1;Quatre;Paris;BTP
CLI;C2;Cinq;Lyon;Commerce
"""
CONTACTS = "TIERS;CONTACT;NOM\nP1;A;Alpha\nP1;B;Beta\nC1;A;Gamma\n"
QUESTIONNAIRE = """kind: Questionnaire
code: Q
label: Q
questions:
  - {code: CAT, label: Catalogue, type: choice, choices: [oui, non]}
"""
PREVIOUS = """kind: Operation
code: PREV
label: Last year
steps:
  - {code: S6, label: Survey, kind: other, next: []}
"""
OPERATION = """kind: Operation
code: OP
label: Branching
party_kinds: [prospect, client]
steps:
  - code: A
    label: Call
    kind: phoning
    questionnaire: Q
    event: CALLED
    next:
      - to: B
        conditions:
          C1: {answer: Q.CAT, op: equals, value: oui}
          C2: {party_kind: [prospect]}
          C3: {status: {operation: PREV, step: S6, in: [ok_continue]}}
        formula: C1 or (C2 and not C3)
      - to: C
        when_status: [failed]
      - to: D
        conditions: {V: {field: party.city, op: equals, value: lyon}}
  - {code: B, label: Catalogue, kind: other, next: []}
  - {code: C, label: Failed ones, kind: other, next: []}
  - code: D
    label: Lyon commerce
    kind: other
    where: {conditions: {S: {field: party.secteur, op: equals, value: Commerce}}}
"""


@pytest.fixture
def operation(database, cli, tmp_path, prefect):
    for name, content in (("parties.csv", PARTIES), ("contacts.csv", CONTACTS)):
        (tmp_path / name).write_text(content, encoding="utf-8")
    specs = tmp_path / "specs"
    specs.mkdir()
    for name, content in (("q.yaml", QUESTIONNAIRE), ("prev.yaml", PREVIOUS), ("op.yaml", OPERATION)):
        (specs / name).write_text(content, encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv"), ("contacts", "import", tmp_path / "contacts.csv"),
                 ("apply", specs), ("targets", "add", "OP", "--where", "kind in (PRO, CLI)"),
                 ("targets", "add", "PREV", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, result.err
    execute("""insert into operation_target_contact (operation_id, contact_id, party_id)
               select o.id, c.id, c.party_id from contact c, operation o where o.code = 'OP'""")
    return "OP"


def execute(sql: str, **params) -> None:
    with db.engine().begin() as conn:
        conn.execute(text(sql), params)


def in_step(step: str, operation: str = "OP") -> dict[str, str]:
    return dict(rows("""select p.code, st.status from step_target st join party p on p.id = st.party_id
                        join step s on s.id = st.step_id join operation o on o.id = s.operation_id
                        where o.code = :op and s.code = :step""", op=operation, step=step))


def answer(party: str, value: str) -> None:
    execute("""insert into answer (operation_id, party_id, question_id, value)
               select o.id, p.id, q.id, :value from operation o, party p, question q
               where o.code = 'OP' and p.code = :party and q.code = 'CAT'""", party=party, value=value)


def set_status(step: str, party: str, status: str, operation: str = "OP") -> None:
    execute("""update step_target st set status = :status, processed_at = now()
               from step s, operation o, party p where s.id = st.step_id and o.id = s.operation_id
               and p.id = st.party_id and o.code = :op and s.code = :step and p.code = :party""",
            op=operation, step=step, party=party, status=status)


def run(**kwargs):
    from flows.run_operation import run_operation

    return {r["code"]: r for r in run_operation("OP", **kwargs)}


class TestRun:
    def test_first_run_enters_targets_and_waits_for_people(self, operation):
        reports = run()
        assert in_step("A") == {c: "to_process" for c in ("P1", "P2", "P3", "C1", "C2")}
        assert reports["A"]["entered"] == 5
        assert "5 parties wait for people" in reports["A"]["reason"]
        assert reports["B"]["state"] == "Skipped"
        assert reports["B"]["reason"] == "no party has reached this step"
        assert scalar("select state from operation where code = 'OP'") == "in_progress"
        assert scalar("select count(*) from step_target_contact") == 3

    def test_branching(self, operation):
        run()
        execute("""insert into step_target (step_id, party_id, operation_id, status)
                   select s.id, p.id, s.operation_id, 'ok_continue' from step s join operation o
                   on o.id = s.operation_id, party p where o.code = 'PREV' and p.code = 'P3'""")
        answer("C1", "OUI")  # a client who wants the catalogue: C1 true
        answer("C2", "non")
        for party, status in (("P1", "ok_continue"), ("P2", "ok_continue"), ("P3", "ok_continue"),
                              ("C1", "ok_continue"), ("C2", "failed")):
            set_status("A", party, status)
        reports = run()
        # B: C1 or (prospect and not ok in PREV/S6): P1, P2 (prospects), C1 (answer); P3 excluded by C3
        assert set(in_step("B")) == {"P1", "P2", "C1"}
        # C: only failed parties; D: Lyon, ok_continue, and the step's where (Commerce): P3
        assert set(in_step("C")) == {"C2"}
        assert set(in_step("D")) == {"P3"}
        routed = {r["target"]: r["routed"] for r in reports["A"]["routes"]}
        assert routed == {"B": 3, "C": 1, "D": 1}

    def test_contacts_follow_the_party_and_events_are_recorded_once(self, operation):
        run()
        set_status("A", "P1", "ok_continue")
        run()
        assert rows("""select c.code, stc.status from step_target_contact stc join contact c on c.id = stc.contact_id
                       join step s on s.id = stc.step_id where s.code = 'A' and stc.party_id =
                       (select id from party where code = 'P1') order by 1""") == [
            ("A", "ok_continue"), ("B", "ok_continue")]
        assert rows("select code, array_length(contact_ids, 1) from event") == [("CALLED", 2)]
        run()
        assert scalar("select count(*) from event") == 1
        assert scalar("select count(*) from step_target where step_id = (select id from step where code = 'B' "
                      "and operation_id = (select id from operation where code = 'OP'))") == 1

    def test_party_takes_the_status_its_contacts_agree_on(self, operation):
        run()
        execute("""update step_target_contact set status = 'failed' where party_id =
                   (select id from party where code = 'P1')""")
        run()
        assert in_step("A")["P1"] == "failed"
        assert in_step("C") == {"P1": "to_process"}

    def test_dry_run_changes_nothing(self, operation):
        def state():
            return [rows(f"select * from {t} order by 1, 2") for t in
                    ("step_target", "step_target_contact", "event")] + [
                scalar("select state from operation where code = 'OP'")]

        before = state()
        reports = run(dry_run=True)
        assert reports["A"]["entered"] == 5  # what would happen
        assert state() == before

    def test_a_second_run_at_once_is_refused(self, operation):
        from campflow.store.run_lock import LOCK_RUN

        op_id = scalar("select id from operation where code = 'OP'")
        with db.engine().connect() as other:
            other.execute(text("select pg_advisory_lock(:ns, :op)"), {"ns": LOCK_RUN, "op": op_id})
            with pytest.raises(CampflowError, match="OP is being run by another run"):
                run()
            other.execute(text("select pg_advisory_unlock(:ns, :op)"), {"ns": LOCK_RUN, "op": op_id})
        assert scalar("select count(*) from step_target") == 0
        run()
        assert scalar("select count(*) from step_target") == 5

    def test_only_some_steps_and_unknown_step(self, operation):
        reports = run(steps=["A"])
        assert list(reports) == ["A"]
        with pytest.raises(CampflowError, match="no action step Z"):
            run(steps=["Z"])


class TestCommands:
    def test_run_prints_the_funnel(self, operation, cli):
        result = cli("run", "OP")
        assert result.code == 0, result.err
        assert "OP: funnel" in result.out and "Skipped" in result.out

    def test_dry_run_prints_the_plan(self, operation, cli):
        result = cli("run", "OP", "--dry-run")
        assert "-> B if C1 or C2 and not C3" in result.out
        assert "dry run: nothing was changed" in result.out
        assert scalar("select count(*) from step_target") == 0

    def test_distribute_by_hand(self, operation, cli):
        run()
        set_status("A", "C2", "failed")
        result = cli("distribute", "OP", "--step", "A", "--json")
        assert result.code == 0, result.err
        assert in_step("C") == {"C2": "to_process"}
        assert '"target": "C"' in result.out and '"routed": 1' in result.out


class TestRetries:
    def test_a_failing_step_retries_with_its_kind_settings(self, operation, monkeypatch):
        from campflow.core.kinds import REGISTRY, StepKind, StepOutcome, step_kind

        step_kind("other")  # load the built-in kinds first
        calls = []

        def flaky(session, context):
            calls.append(context.step_code)
            if len(calls) == 1:
                raise ConnectionError("channel down")
            return StepOutcome()

        monkeypatch.setitem(REGISTRY, "phoning", StepKind("phoning", flaky, automated=True, retries=1))
        reports = run(steps=["A"])
        assert calls == ["A", "A"]
        assert reports["A"]["state"] == "Completed"

    def test_a_step_that_keeps_failing_fails_the_run(self, operation, monkeypatch):
        from campflow.core.kinds import REGISTRY, StepKind, step_kind

        step_kind("other")

        def broken(session, context):
            raise ConnectionError("smtp.example.org:25 refused the connection")

        monkeypatch.setitem(REGISTRY, "phoning", StepKind("phoning", broken, automated=True, retries=0))
        with pytest.raises(CampflowError, match="step A of OP failed: ConnectionError: smtp.example.org:25 refused"):
            run()
        assert scalar("select count(*) from step_target") == 0  # the step's work was rolled back

    @pytest.mark.parametrize("error, runs", [
        (CampflowError("step OP/A: no channel named 'nope'; campflow channels list shows the saved ones"), 1),
        (KeyError("template field"), 1),
        (TimeoutError("timed out"), 3),
    ])
    def test_only_errors_that_may_heal_are_retried(self, operation, monkeypatch, error, runs):
        """A configuration error fails at once; a timeout is retried as the kind declares; either way
        the run's error names the step and the error's message."""
        from campflow.core.kinds import REGISTRY, StepKind, step_kind

        step_kind("other")
        calls = []

        def failing(session, context):
            calls.append(context.step_code)
            raise error

        monkeypatch.setitem(REGISTRY, "phoning", StepKind("phoning", failing, automated=True, retries=2))
        with pytest.raises(CampflowError, match=f"step A of OP failed: .*{re.escape(error.args[0][-15:])}"):
            run(steps=["A"])
        assert calls == ["A"] * runs

    def test_a_lost_database_connection_is_retried(self, operation, monkeypatch):
        from campflow.core.kinds import REGISTRY, StepKind, StepOutcome, step_kind

        step_kind("other")
        calls = []

        def cut_once(session, context):
            calls.append(context.step_code)
            if len(calls) == 1:  # the server ends this session's backend, as a restart would
                with db.engine().connect() as other:
                    pid = session.execute(text("select pg_backend_pid()")).scalar_one()
                    other.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid})
                session.execute(text("select 1"))
            return StepOutcome()

        monkeypatch.setitem(REGISTRY, "phoning", StepKind("phoning", cut_once, automated=True, retries=1))
        assert run(steps=["A"])["A"]["state"] == "Completed"
        assert calls == ["A", "A"]


class TestMayHeal:
    """The pure rule of tasks.retries: which errors are worth a retry."""

    @pytest.mark.parametrize("error, heals", [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (OSError(101, "Network is unreachable"), True),
        (socket.gaierror(-3, "Temporary failure in name resolution"), True),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (smtplib.SMTPResponseException(421, b"Service not available"), True),
        (smtplib.SMTPAuthenticationError(535, b"Authentication failed"), False),
        (smtplib.SMTPSenderRefused(550, b"Sender refused", "a@b.c"), False),
        (FileNotFoundError(2, "No such file or directory"), False),
        (CampflowError("no channel named 'nope'"), False),
        (ValueError("operation.state is not a party or contact field"), False),
        (KeyError("x"), False),
    ])
    def test_errors(self, error, heals):
        from tasks.retries import may_heal

        assert may_heal(error) is heals

    @pytest.mark.parametrize("cause, heals", [(ConnectionResetError(104, "reset"), True),
                                              (smtplib.SMTPAuthenticationError(535, b"no"), False)])
    def test_a_domain_error_raised_from_none_is_judged_by_its_context(self, cause, heals):
        from tasks.retries import may_heal

        try:
            try:
                raise cause
            except Exception:
                raise CampflowError("cannot reach SMTP server 127.0.0.1:25 of channel 'emailing'") from None
        except CampflowError as error:
            assert may_heal(error) is heals

    def test_an_exception_may_say_it_heals(self):
        from campflow.delivery.senders import MessageLost
        from tasks.retries import may_heal

        assert may_heal(MessageLost("the connection died while the server took a message"))


KILLED_SPEC = """kind: Operation
code: OPK
label: Killed mid-step
party_kinds: [prospect, client]
steps:
  - {code: E, label: Export, kind: spreadsheet_export, event: EXPORTED, columns: [party.code, party.name]}
  - {code: B, label: Next, kind: other, next: []}
"""
CHILD = """
import sys, time, pathlib
import campflow.store.routing as routing
real = routing.sync_contacts
def stall(session, step_id):
    real(session, step_id)
    pathlib.Path(sys.argv[1]).write_text("in the step")
    time.sleep(120)  # killed here: the step's transaction is open, nothing committed
routing.sync_contacts = stall
from flows.run_operation import run_operation
run_operation("OPK")
"""


class TestKilledRun:
    def test_a_run_killed_mid_step_resumes_without_repeating(self, operation, cli, tmp_path, monkeypatch):
        import os
        import signal
        import subprocess
        import sys
        import time

        from prefect.settings import PREFECT_API_URL

        (tmp_path / "opk.yaml").write_text(KILLED_SPEC, encoding="utf-8")
        assert cli("apply", tmp_path / "opk.yaml").code == 0
        assert cli("targets", "add", "OPK", "--where", "kind in (PRO, CLI)").code == 0
        marker = tmp_path / "marker"
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
               "CAMPFLOW_OUTPUT_DIR": str(tmp_path / "out")}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker)], env=env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while not marker.exists():
                assert child.poll() is None, "the run ended before reaching the step"
                assert time.monotonic() < deadline, "the run never reached the step"
                time.sleep(0.2)
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        assert in_step("E", "OPK") == {}  # the killed step's work was rolled back
        assert scalar("select count(*) from event") == 0
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        from flows.run_operation import run_operation

        run_operation("OPK")
        assert set(in_step("E", "OPK").values()) == {"ok_continue"}
        assert len(in_step("E", "OPK")) == 5
        assert scalar("select count(*) from event where code = 'EXPORTED'") == 5
        assert len(in_step("B", "OPK")) == 5
        run_operation("OPK")
        assert scalar("select count(*) from event where code = 'EXPORTED'") == 5
        assert len(in_step("B", "OPK")) == 5


DUE_SPEC = """kind: Operation
code: OPD
label: Due dates
timezone: Europe/Paris
steps:
  - {code: NOW, label: Now, kind: other}
  - {code: LATER, label: Later, kind: other, run_at: "2099-01-01T09:00", next: []}
"""


class TestDueDates:
    def test_scheduled_runs_leave_steps_alone_before_run_at(self, operation, cli, tmp_path):
        from flows.run_operation import run_operation

        (tmp_path / "opd.yaml").write_text(DUE_SPEC, encoding="utf-8")
        assert cli("apply", tmp_path / "opd.yaml").code == 0
        cli("targets", "add", "OPD", "--where", "kind in (PRO, CLI)")
        run_operation("OPD", scheduled=True)
        execute("""update step_target st set status = 'ok_continue' from step s
                   where s.id = st.step_id and s.code = 'NOW'""")
        reports = {r["code"]: r for r in run_operation("OPD", scheduled=True)}
        assert len(in_step("LATER", "OPD")) == 5  # routed in: routing never waits
        assert reports["LATER"]["state"] == "Skipped"
        assert reports["LATER"]["reason"] == "not due before 2099-01-01 09:00 CET"
        manual = {r["code"]: r for r in run_operation("OPD")}
        assert manual["LATER"]["reason"] != reports["LATER"]["reason"]  # manual runs are never blocked


class TestInspection:
    def test_task_runs_named_and_tagged_with_artifacts(self, operation):
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        from flows.run_operation import run_operation

        state = run_operation("OP", return_state=True)
        flow_run_id = state.state_details.flow_run_id
        task_runs = final_task_runs(flow_run_id)
        named = {run.name: set(run.tags) for run in task_runs}
        assert named["A phoning"] >= {"OP", "phoning"}
        assert named["D other"] >= {"OP", "other"}
        skipped = {run.name: run.state.name for run in task_runs}
        assert skipped["B other"] == "Skipped"
        with get_client(sync_client=True) as client:
            # earlier tests' runs wrote artifacts under the same keys: read this run's only
            artifacts = {a.key: a for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))}
        assert "| A | phoning | Completed | 5 |" in artifacts["op-funnel"].data
        assert artifacts["op-a"].type == "table"
        assert artifacts["op-a-progress"].data == 100.0
