"""campflow on a real Prefect server: `campflow server` (state in PostgreSQL), `campflow serve`,
schedules synced from the operations' dates, a scheduled run inside its window, a failed
run retried the way the UI's Retry button does it, without a second e-mail or event, and the
network's deployments: a package published, an order paused for the UI's form and resumed.

`campflow serve --limit 1` runs one flow run at a time: an approval waiting for its answer is
suspended and holds no place, so the served process takes other runs meanwhile."""

from __future__ import annotations

import datetime as dt
import email
import json
import zoneinfo
from pathlib import Path

import pytest
from sqlalchemy import text

from campflow.store import db
from tests.conftest import free_port, rows, scalar
from tests.served import drop_database, final_state, start_serve, start_server, wait_for

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
DEPLOYMENTS = ("run-operation/campflow", "apply-specs/campflow", "import-targets/campflow",
               "import-answers/campflow", "sync-schedules/campflow", "publish-package/campflow",
               "approve-order/campflow", "local-approval/campflow")
PARTIES = """FICHE;TIERS;NOM;VILLE;EMAIL
PRO;P1;Boulangerie Lefèvre;Paris;accueil@lefevre.fr
PRO;P2;Menuiserie Gaëlle;Lyon;contact@gaelle.fr
CLI;P3;Ébénisterie Noël;Nîmes;jean@noel.fr
"""
SCHEDULED = """kind: Operation
code: {code}
label: Scheduled operation
timezone: Europe/Paris
state: {state}
starts_at: {starts}
ends_at: {ends}
cadence: "{cadence}"
steps:
  - {{code: X1, label: Export, kind: spreadsheet_export, event: EXPORT, columns: [PCFIDX.CODE, PCFIDX.NOM]}}
  - {{code: X2, label: Later export, kind: spreadsheet_export, columns: [PCFIDX.CODE], run_at: 2030-01-07T09:00}}
"""
FAILING = """kind: Operation
code: {code}
label: Invitations
attach_messages_to_events: true
steps:
  - {{code: S1, label: Export, kind: spreadsheet_export, event: EXPORT, columns: [PCFIDX.CODE, PCFIDX.NOM]}}
  - code: S2
    label: Invitations
    kind: emailing
    event: EMAIL_INVIT
    email: {{subject: "Invitation [[PCFIDX.NOM]]", body: invite.html, channel: {channel}}}
    next: []
"""


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefect-server")
    server, name = start_server(database_url, folder, free_port())
    yield server
    server.process.stop()
    drop_database(database_url, name)


@pytest.fixture(scope="module")
def served(server, database_url, tmp_path_factory):
    process = start_serve(server, database_url, tmp_path_factory.mktemp("serve"), limit=1)
    yield process
    process.stop()


@pytest.fixture
def on_server(server, served, database):
    with server.settings():
        yield server


def apply(cli, folder, spec: str):
    path = folder / "op.yaml"
    path.write_text(spec, encoding="utf-8")
    result = cli("apply", path)
    assert result.code == 0, result.err
    return result


def load_parties(cli, folder) -> None:
    (folder / "parties.csv").write_text(PARTIES, encoding="utf-8")
    result = cli("parties", "import", folder / "parties.csv", "-q")
    assert result.code == 0, result.err


def operation_schedules(deployment: str = "run-operation/campflow"):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
    return {s.slug: s for s in found.schedules}


def scheduled_runs(code: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=["SCHEDULED"]))), limit=200)
    return [r for r in found if r.parameters.get("operation") == code]


def local(moment: dt.datetime) -> str:
    return moment.astimezone(PARIS).strftime("%Y-%m-%dT%H:%M")


class TestServer:
    def test_the_prefect_server_keeps_its_state_in_postgresql_with_pg_trgm(self, server, database_url):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        name = f"{make_url(database_url).database}_prefect"
        engine = create_engine(make_url(database_url).set(database=name))
        with engine.connect() as conn:
            assert conn.scalar(text("select count(*) from pg_extension where extname = 'pg_trgm'")) == 1
            assert conn.scalar(text("select to_regclass('flow_run')")) == "flow_run"
        engine.dispose()
        assert "state in postgresql+asyncpg://postgres@127.0.0.1:5432/" in server.process.output().replace("\n", "")

    def test_serve_registers_the_eight_deployments(self, on_server):
        from prefect import get_client

        with get_client(sync_client=True) as client:
            names = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
        assert set(DEPLOYMENTS) <= names
        assert operation_schedules("sync-schedules/campflow")["campflow-sync"].schedule.interval == \
            dt.timedelta(minutes=15)


class TestSync:
    def test_create_update_remove_and_idempotence(self, on_server, cli, tmp_path):
        spec = SCHEDULED.format(code="FAIR", state="in_preparation", starts="2027-01-04T09:00",
                                ends="2027-01-29T18:00", cadence="daily")
        result = apply(cli, tmp_path, spec)
        assert "FAIR: schedule created (daily from 2027-01-04 09:00 to 2027-01-29 18:00 Europe/Paris)" in result.out
        created = operation_schedules()["operation-FAIR"]
        assert created.schedule.rrule == "DTSTART:20270104T090000\nRRULE:FREQ=DAILY;UNTIL=20270129T180000"
        assert created.schedule.timezone == "Europe/Paris"
        assert created.parameters == {"operation": "FAIR", "scheduled": True}

        again = cli("schedules", "sync", "--json")
        assert again.code == 0, again.err
        assert '"action": "unchanged"' in again.out and '"created"' not in again.out
        assert operation_schedules()["operation-FAIR"].id == created.id  # nothing rewritten

        # the daily runs are planned first, so the update must replace runs already there
        assert wait_for(lambda: scheduled_runs("FAIR"), 60, "the scheduler to plan FAIR's daily runs")
        assert min(r.expected_start_time for r in scheduled_runs("FAIR")) == dt.datetime(2027, 1, 4, 9, 0,
                                                                                          tzinfo=PARIS)
        apply(cli, tmp_path, spec.replace('cadence: "daily"', 'cadence: "0 10 * * 1-5"'))
        updated = operation_schedules()["operation-FAIR"]
        assert updated.schedule.rrule == ("DTSTART:20270104T090000\nRRULE:FREQ=DAILY;BYMINUTE=0;BYHOUR=10;"
                                          "BYSECOND=0;BYDAY=MO,TU,WE,TH,FR;UNTIL=20270129T180000")

        weekdays_at_ten = lambda: (runs := scheduled_runs("FAIR")) and all(  # noqa: E731
            r.expected_start_time.astimezone(PARIS).hour == 10 for r in runs) and min(
            r.expected_start_time for r in runs) == dt.datetime(2027, 1, 4, 10, 0, tzinfo=PARIS)
        assert wait_for(weekdays_at_ten, 60, "the scheduler to replace FAIR's runs by the weekday 10:00 ones")

        finished = apply(cli, tmp_path, spec.replace("in_preparation", "finished"))
        assert "FAIR: schedule removed (state finished)" in finished.out
        assert "operation-FAIR" not in operation_schedules()
        assert scheduled_runs("FAIR") == []  # its planned runs went with it

    def test_a_full_sync_removes_deleted_operations_and_keeps_other_schedules(self, on_server, cli, tmp_path):
        from prefect import get_client
        from prefect.client.schemas.actions import DeploymentScheduleCreate
        from prefect.client.schemas.schedules import IntervalSchedule

        apply(cli, tmp_path, SCHEDULED.format(code="GONE", state="in_progress", starts="2027-02-01T09:00",
                                              ends="2027-02-26T18:00", cadence="weekly"))
        deployment = operation_schedules()["operation-GONE"].deployment_id
        with get_client(sync_client=True) as client:
            client.create_deployment_schedules(deployment, [DeploymentScheduleCreate(
                schedule=IntervalSchedule(interval=dt.timedelta(days=1)), active=False, slug="by-hand")])
        with db.engine().begin() as conn:
            conn.execute(text("delete from step where operation_id in (select id from operation where code = 'GONE')"))
            conn.execute(text("delete from operation where code = 'GONE'"))
        result = cli("schedules", "sync")
        assert result.code == 0, result.err
        assert "removed" in result.out and "operation deleted" in result.out
        left = operation_schedules()
        assert "operation-GONE" not in left
        assert "by-hand" in left and left["by-hand"].active is False

    def test_an_operation_ended_when_applied_gets_no_schedule_and_a_warning(self, on_server, cli, tmp_path):
        result = apply(cli, tmp_path, SCHEDULED.format(code="PAST", state="in_progress", starts="2025-03-02T09:00",
                                                       ends="2025-03-28T18:00", cadence="daily"))
        assert "warning: PAST ended 2025-03-28 18:00 Europe/Paris: no schedule" in result.err
        assert "operation-PAST" not in operation_schedules()

    def test_an_unreachable_server_is_named_and_nothing_changes(self, on_server, cli, tmp_path, monkeypatch):
        apply(cli, tmp_path, SCHEDULED.format(code="KEEP", state="in_progress", starts="2027-03-01T09:00",
                                              ends="2027-03-31T18:00", cadence="daily"))
        before = operation_schedules()["operation-KEEP"]
        dead = f"http://127.0.0.1:{free_port()}/api"
        from prefect.settings import PREFECT_API_URL, temporary_settings

        monkeypatch.setenv("PREFECT_API_URL", dead)
        with temporary_settings(updates={PREFECT_API_URL: dead}):
            result = cli("schedules", "sync")
            assert result.code == 1
            assert f"the Prefect server at {dead} is unreachable" in result.err
            assert "no schedule was changed" in result.err
            applied = apply(cli, tmp_path, SCHEDULED.format(code="KEEP", state="in_progress",
                                                            starts="2027-03-01T09:00", ends="2027-03-30T18:00",
                                                            cadence="hourly"))
            assert f"schedules not synced: the Prefect server at {dead} is unreachable" in applied.err
        monkeypatch.setenv("PREFECT_API_URL", on_server.api)
        assert operation_schedules()["operation-KEEP"].schedule.rrule == before.schedule.rrule
        assert scalar("select cadence from operation where code = 'KEEP'") == "hourly"  # the spec was applied


class TestScheduledRun:
    def test_a_served_deployment_runs_the_operation_on_its_schedule(self, on_server, cli, tmp_path):
        from prefect import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )

        load_parties(cli, tmp_path)
        now = dt.datetime.now(dt.timezone.utc)
        starts, ends = now - dt.timedelta(minutes=1), now + dt.timedelta(minutes=3)
        apply(cli, tmp_path, SCHEDULED.format(code="TICK", state="in_progress", starts=local(starts),
                                              ends=local(ends), cadence="* * * * *"))
        assert cli("targets", "add", "TICK", "--where", "kind in (PRO, CLI)").code == 0
        try:
            def completed_run():
                with get_client(sync_client=True) as client:
                    found = client.read_flow_runs(
                        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["campflow"])),
                        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=["COMPLETED", "FAILED", "CRASHED"]))))
                return [r for r in found if r.parameters.get("operation") == "TICK"]

            runs = wait_for(completed_run, 200, "a scheduled run of TICK", every=2)
            run = runs[0]
            assert run.state.type.value == "COMPLETED", run.state.message
            assert run.auto_scheduled and run.parameters == {"operation": "TICK", "scheduled": True}
            assert starts.replace(second=0, microsecond=0) <= run.expected_start_time <= ends
            assert scalar("""select count(*) from step_target st join step s on s.id = st.step_id
                             where s.code = 'X1' and st.status = 'ok_continue'""") == 3
            assert scalar("select count(*) from event") == 3
            # X2's run_at is in 2030: a scheduled run leaves it alone
            assert scalar("""select count(*) from step_target st join step s on s.id = st.step_id
                             where s.code = 'X2' and st.status <> 'to_process'""") == 0
        finally:
            with db.engine().begin() as conn:
                conn.execute(text("update operation set state = 'finished' where code = 'TICK'"))
            assert cli("schedules", "sync").code == 0
        assert "operation-TICK" not in operation_schedules()


def failing_operation(cli, folder, code: str, channel: str) -> int:
    """An operation whose S1 works and whose S2 sends through an SMTP channel with no server
    behind it yet; returns the channel's port."""
    port = free_port()
    load_parties(cli, folder)
    (folder / "invite.html").write_text("<p>Bonjour [[PCFIDX.NOM]]</p>", encoding="utf-8")
    result = cli("channels", "add-smtp", channel, "--host", "127.0.0.1", "--port", str(port), "--plain",
                 "--sender", "Salon <salon@example.com>")
    assert result.code == 0, result.err
    apply(cli, folder, FAILING.format(code=code, channel=channel))
    assert cli("targets", "add", code, "--where", "kind in (PRO, CLI)").code == 0
    return port


def start_deployment_run(code: str):
    from prefect.deployments import run_deployment

    return run_deployment("run-operation/campflow", parameters={"operation": code}, timeout=0)


@pytest.fixture
def smtp_on():
    """Starts the SMTP server on a given port (the cause of the failure fixed)."""
    from aiosmtpd.controller import Controller

    from campflow.delivery.smtp_pool import close_connections
    from tests.conftest import Sink

    controllers = []

    def start(port: int) -> Sink:
        sink = Sink()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return sink

    yield start
    close_connections()
    for controller in controllers:
        controller.stop()


def delete_channel(name: str) -> None:
    from blocks.channels import SmtpChannel

    SmtpChannel.delete(name)


def counts(code: str) -> dict[str, int]:
    return dict(rows("""select e.code, count(*) from event e join operation o on o.id = e.operation_id
                        where o.code = :code group by 1""", code=code))


class TestRetry:
    def test_retry_as_the_ui_does_it_finishes_without_duplicates(self, on_server, cli, tmp_path, smtp_on):
        from prefect import get_client

        port = failing_operation(cli, tmp_path, "RETRY", "retry-smtp")
        try:
            failed = final_state(on_server, start_deployment_run("RETRY").id)
            assert failed.state.type.value == "FAILED"
            assert "S2" in failed.state.message
            assert counts("RETRY") == {"EXPORT": 3}
            assert scalar("select count(*) from outbox where state = 'sent'") == 0

            sink = smtp_on(port)  # the SMTP server is back
            ui_retry(on_server.api, failed.id)
            retried = final_state(on_server, failed.id)
            assert retried.state.type.value == "COMPLETED", retried.state.message
            assert retried.run_count == 2
            assert sorted(to for _, tos, _ in sink.received for to in tos) == [
                "accueil@lefevre.fr", "contact@gaelle.fr", "jean@noel.fr"]  # one message each
            assert counts("RETRY") == {"EXPORT": 3, "EMAIL_INVIT": 3}
            with get_client(sync_client=True) as client:
                tasks = client.read_task_runs(flow_run_filter=_runs(failed.id))
            assert {t.name for t in tasks} >= {"S1 spreadsheet_export", "S2 emailing"}
            assert all({"RETRY"} <= set(t.tags) for t in tasks if t.name.startswith("S"))
        finally:
            delete_channel("retry-smtp")


def ui_retry(api: str, flow_run_id) -> None:
    """The request the UI's Retry button sends (recorded from the Prefect 3.8 UI)."""
    import httpx

    body = {"state": {"name": "AwaitingRetry", "message": "Retry from the UI", "type": "SCHEDULED"}, "force": False}
    answer = httpx.post(f"{api}/flow_runs/{flow_run_id}/set_state", json=body, timeout=30)
    assert answer.status_code == 201 and answer.json()["status"] == "ACCEPT", answer.text


def _runs(flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))


class TestNetwork:
    """publish-package and approve-order run by the served process; the reviewer answers with the
    request the UI's Resume form sends."""

    def test_publish_then_an_order_approved_through_the_resume_form(self, on_server, cli, tmp_path, output_dir):
        import httpx
        from prefect import get_client
        from prefect.deployments import run_deployment
        from prefect.input.run_input import keyset_from_paused_state

        from campflow.network import orders, packages
        from tests.test_orders import VALUES
        from tests.test_packages import BRIEF, NETWORK

        (tmp_path / "brief.txt").write_text(BRIEF, encoding="utf-8")
        apply(cli, tmp_path, NETWORK)
        mailed = output_dir / "notifications"  # no `notifications` channel: .eml files
        before = set(mailed.glob("*.eml"))

        run = run_deployment("publish-package/campflow", parameters={"package": "PKG-FORM",
                                                                     "as_operator": "marketing"}, timeout=0)
        published = final_state(on_server, run.id)
        assert published.state.type.value == "COMPLETED", published.state.message
        assert published.name == "publish PKG-FORM"
        assert scalar("select published_at is not null from package where code = 'PKG-FORM'")
        to = {email.message_from_bytes(path.read_bytes())["To"] for path in set(mailed.glob("*.eml")) - before}
        assert {"lyon@store.test", "paris@store.test"} <= to

        outcome = packages.act(orders.create_order, "PKG-FORM", as_="lyon", values=VALUES)
        order_id, = outcome.order_ids
        review = run_deployment("approve-order/campflow", parameters={"order": order_id}, timeout=0)

        def paused():
            with get_client(sync_client=True) as client:
                found = client.read_flow_run(review.id)
            return found if found.state.type.value == "PAUSED" else None

        paused_run = wait_for(paused, 120, "approve-order to pause", every=1)
        with get_client(sync_client=True) as client:
            keyset = keyset_from_paused_state(paused_run.state)
            assert client.read_flow_run_input(paused_run.id, keyset["schema"])  # the form the UI draws
            assert f"## Order {order_id}" in client.read_flow_run_input(paused_run.id, keyset["description"])
        answer = httpx.post(f"{on_server.api}/flow_runs/{review.id}/resume", timeout=30, json={
            "run_input": {"decision": "approve", "comment": "Belle vitrine", "reviewer": "marketing"}})
        assert answer.status_code == 201 and answer.json()["status"] == "ACCEPT", answer.text
        decided = final_state(on_server, review.id)
        assert decided.state.type.value == "COMPLETED", decided.state.message
        assert decided.state.message == f"order {order_id} of LYON for PKG-FORM approved"
        assert rows("select status, comment, decided_by from package_order where id = :id", id=order_id) == [
            ("approved", "Belle vitrine", "marketing")]

    def test_a_waiting_approval_holds_no_place_and_resumes_in_a_new_process(self, on_server, cli, tmp_path,
                                                                           output_dir):
        """Served with --limit 1: while order A waits, order B's run starts and waits too; A's refused
        answer asks again with the reason, A's second answer decides it (the refused one is not
        applied again), B is decided through resume_flow_run as the CLI does."""
        from prefect import get_client
        from prefect.flow_runs import resume_flow_run

        from campflow.network import orders, packages
        from tests.test_orders import VALUES
        from tests.test_packages import BRIEF, NETWORK

        (tmp_path / "brief.txt").write_text(BRIEF, encoding="utf-8")
        apply(cli, tmp_path, NETWORK)
        packages.act(orders.publish, "PKG-FORM", as_="marketing")
        first = order_for("lyon", VALUES)
        second = order_for("paris", {"MAGASIN": "Paris Opéra", "REMISE": "10 %"})

        waiting = review_run(first)
        suspended(on_server, waiting.id)
        other = review_run(second)  # one place only: it starts because the first run released it
        suspended(on_server, other.id)

        answer_in_ui(on_server, waiting.id, {"decision": "approve", "comment": "", "reviewer": "lyon"})
        again = wait_for(lambda: suspended(on_server, waiting.id, refused=True), 120, "the form asked again",
                         every=1)
        assert again.startswith("**Answer refused:** reviewer 'lyon' acts for LYON")
        assert rows("select status from package_order where id = :id", id=first) == [("pending",)]
        answer_in_ui(on_server, waiting.id, {"decision": "approve", "comment": "Bien", "reviewer": "marketing"})
        decided = final_state(on_server, waiting.id)
        assert decided.state.type.value == "COMPLETED", decided.state.message
        assert decided.state.message == f"order {first} of LYON for PKG-FORM approved"
        with get_client(sync_client=True) as client:
            names = [state.name for state in sorted(client.read_flow_run_states(waiting.id), key=lambda s: s.timestamp)]
        assert names.count("Suspended") == 2 and names.count("Resuming") == 2  # three passes, three processes
        assert rows("select action, actor from order_event where order_id = :id order by id", id=first) == [
            ("created", "lyon"), ("approved", "marketing")]

        resume_flow_run(other.id, run_input={"decision": "reject", "comment": "Non", "reviewer": "marketing"})
        rejected = final_state(on_server, other.id)
        assert rejected.state.type.value == "COMPLETED", rejected.state.message
        assert rows("select status, comment, decided_by from package_order where id = :id", id=second) == [
            ("rejected", "Non", "marketing")]

    def test_an_approval_not_answered_in_time_fails_and_the_order_stays_pending(self, on_server, cli, tmp_path,
                                                                               output_dir):
        from campflow.network import orders, packages
        from tests.test_orders import VALUES
        from tests.test_packages import BRIEF, NETWORK

        (tmp_path / "brief.txt").write_text(BRIEF, encoding="utf-8")
        apply(cli, tmp_path, NETWORK)
        packages.act(orders.publish, "PKG-FORM", as_="marketing")
        order_id = order_for("lyon", VALUES)
        run = review_run(order_id, timeout_hours=0.001)  # 3 seconds
        failed = final_state(on_server, run.id)
        assert failed.state.type.value == "FAILED"
        assert failed.state.message == "The flow was paused and never resumed."
        assert rows("select status from package_order where id = :id", id=order_id) == [("pending",)]

    def test_a_list_answered_through_the_resume_form_after_a_refusal(self, on_server, cli, tmp_path, output_dir):
        """local-approval from its deployment: suspended, a refused answer, then NANTES's own."""
        from flows.run_operation import process_step
        from tests.test_local_approval import CONTACTS, NETWORK, OPERATION, PARTIES, approvals, removed_flags

        # the served process reads the real clock: the lists' deadline is moved far ahead
        spec = OPERATION.format(distribution="STORES").replace("2027-01-10T18:00", "2099-01-10T18:00")
        for name, content in (("parties.csv", PARTIES), ("contacts.csv", CONTACTS), ("network.yaml", NETWORK),
                              ("op.yaml", spec)):
            (tmp_path / name).write_text(content, encoding="utf-8")
        for args in (("parties", "import", tmp_path / "parties.csv", "-q"),
                     ("contacts", "import", tmp_path / "contacts.csv", "-q"),
                     ("apply", tmp_path / "network.yaml"), ("apply", tmp_path / "op.yaml"),
                     ("targets", "add", "LOCAL", "--where", "kind in (PRO, CLI)")):
            assert cli(*args).code == 0, args
        assert process_step("LOCAL", "A1").state == "Completed"
        run = run_deployment_of("local-approval/campflow", operation="LOCAL", step="A1", entity="NANTES")
        shown = suspended(on_server, run.id)
        assert "NANTES's list in LOCAL/A1" in shown and "**Deadline: 2099-01-10 18:00 (Europe/Paris)**" in shown
        answer_in_ui(on_server, run.id, {"remove": ["P09"], "approve": True, "operator": "lyon1"})
        again = wait_for(lambda: suspended(on_server, run.id, refused=True), 120, "the form asked again", every=1)
        assert again.startswith("**Answer refused:** lyon1 acts for LYON and may not")
        assert approvals()["NANTES"] == ("pending", 0) and removed_flags()["P09"] == (False, None)
        answer_in_ui(on_server, run.id, {"remove": ["P09"], "approve": True, "operator": "nantes1"})
        done = final_state(on_server, run.id)
        assert done.state.type.value == "COMPLETED", done.state.message
        assert approvals()["NANTES"][0] == "approved" and removed_flags()["P09"] == (True, "nantes1")


def run_deployment_of(name: str, **parameters):
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters, timeout=0)


def order_for(operator: str, values: dict) -> int:
    from campflow.network import orders, packages
    order_id, = packages.act(orders.create_order, "PKG-FORM", as_=operator, values=values).order_ids
    return order_id


def review_run(order_id: int, **parameters):
    from prefect.deployments import run_deployment

    return run_deployment("approve-order/campflow", parameters={"order": order_id, **parameters}, timeout=0)


def suspended(server, flow_run_id, refused: bool = False, timeout: float = 120):
    """The form's description once the run is suspended (its process gone); with `refused`, only
    when the description starts with a refused answer's reason, else None."""
    from prefect import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.input.run_input import keyset_from_paused_state

    def check():
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            if run.state.type.value != "PAUSED" or run.state.name != "Suspended":
                return None
            try:
                return json.loads(client.read_flow_run_input(run.id, keyset_from_paused_state(run.state)["description"]))
            except PrefectHTTPStatusError:  # suspended a moment before the form is saved
                return None

    if refused:
        found = check()
        return found if found and "Answer refused" in found else None
    return wait_for(check, timeout, f"flow run {flow_run_id} to be suspended", every=1)


def answer_in_ui(server, flow_run_id, run_input: dict) -> None:
    """The request the UI's Resume form sends."""
    import httpx

    answer = httpx.post(f"{server.api}/flow_runs/{flow_run_id}/resume", timeout=30, json={"run_input": run_input})
    assert answer.status_code == 201 and answer.json()["status"] == "ACCEPT", answer.text


SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"


class TestBrowser:
    """The Prefect UI in Debian's Chromium (headless), as an operator uses it."""

    def test_the_ui_shows_steps_and_funnel_and_its_retry_finishes_the_operation(self, on_server, cli, tmp_path,
                                                                                 smtp_on):
        from tests import browser

        port = failing_operation(cli, tmp_path, "UI-RETRY", "ui-smtp")
        try:
            failed = final_state(on_server, start_deployment_run("UI-RETRY").id)
            assert failed.state.type.value == "FAILED"
            with browser.launch() as page:
                browser.open_flow_run(page, on_server.url, failed.id)
                assert browser.flow_run_state(page) == "Failed"
                assert browser.graph_visible(page)
                browser.shot(page, SCREENSHOTS / "1-failed-run.png")
                assert sorted(browser.task_run_names(page)) == ["S1 spreadsheet_export", "S2 emailing"]
                browser.shot(page, SCREENSHOTS / "2-task-runs.png")
                assert "ui-retry-funnel" in browser.open_artifacts(page)
                funnel = browser.artifact_text(page, "ui-retry-funnel")
                assert "S1" in funnel and "S2" in funnel and "Failed" in funnel
                browser.shot(page, SCREENSHOTS / "3-funnel.png")

                sink = smtp_on(port)  # the cause fixed, the operator clicks Retry
                browser.open_flow_run(page, on_server.url, failed.id)
                request = browser.retry(page)
                assert (request["method"], request["path"], request["result"]) == (
                    "POST", f"/api/flow_runs/{failed.id}/set_state", "ACCEPT")
                assert request["body"]["state"]["name"] == "AwaitingRetry"

                retried = final_state(on_server, failed.id)
                assert retried.state.type.value == "COMPLETED", retried.state.message
                browser.open_flow_run(page, on_server.url, failed.id)
                assert browser.flow_run_state(page) == "Completed"
                browser.shot(page, SCREENSHOTS / "4-retried-run.png")
            assert len(sink.received) == 3
            assert counts("UI-RETRY") == {"EXPORT": 3, "EMAIL_INVIT": 3}
        finally:
            delete_channel("ui-smtp")
