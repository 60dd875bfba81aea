"""Each test run gets its own PostgreSQL database on the machine's server."""

from __future__ import annotations

import email
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from campflow.store import db

ADMIN_URL = os.environ.get(
    "CAMPFLOW_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# commands run here use the `prefect` harness below, or Prefect's ephemeral server: never a local
# server left running in the background (tests/test_local_prefect.py starts one on purpose)
os.environ.setdefault("CAMPFLOW_PREFECT_SERVER", "ephemeral")
# the portal signs sessions and links with it (else a Prefect Secret block is created)
os.environ.setdefault("CAMPFLOW_SECRET_KEY", "test-key-" + "x" * 40)


@pytest.fixture(scope="session", autouse=True)
def output_dir(tmp_path_factory) -> Path:
    """Step outputs of the whole run go to a temporary folder, never to ./out."""
    folder = tmp_path_factory.mktemp("out")
    previous = os.environ.get("CAMPFLOW_OUTPUT_DIR")
    os.environ["CAMPFLOW_OUTPUT_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CAMPFLOW_OUTPUT_DIR", None)
    else:
        os.environ["CAMPFLOW_OUTPUT_DIR"] = previous


@pytest.fixture(scope="session")
def database_url() -> str:
    """A fresh database for this run, migrated to head, dropped at the end."""
    name = f"campflow_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    previous = os.environ.get("CAMPFLOW_DATABASE_URL")
    os.environ["CAMPFLOW_DATABASE_URL"] = url
    db.reset_caches()
    db.upgrade(url=url)
    yield url
    db.reset_caches()
    if previous is None:
        os.environ.pop("CAMPFLOW_DATABASE_URL", None)
    else:
        os.environ["CAMPFLOW_DATABASE_URL"] = previous
    with admin.connect() as conn:
        conn.execute(text(f'drop database "{name}" with (force)'))
    admin.dispose()


@pytest.fixture
def database(database_url: str):
    """The test database, emptied after the test (CLI commands commit for real)."""
    yield database_url
    with db.engine().begin() as conn:
        tables = conn.execute(text(
            "select string_agg(quote_ident(tablename), ', ') from pg_tables "
            "where schemaname = 'public' and tablename <> 'alembic_version'")).scalar()
        conn.execute(text(f"truncate {tables} restart identity cascade"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `campflow ARGS…` in this process, as the console script does."""
    from campflow.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["campflow", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def load_files(cli, folder: Path, parties: str, contacts: str, spec: str) -> None:
    """Write a party file, a contact file and a spec into `folder`, then import and apply them."""
    for name, content in (("parties.csv", parties), ("contacts.csv", contacts), ("op.yaml", spec)):
        (folder / name).write_text(content, encoding="utf-8")
    for args in (("parties", "import", folder / "parties.csv"), ("contacts", "import", folder / "contacts.csv"),
                 ("apply", folder / "op.yaml")):
        result = cli(*args)
        assert result.code == 0, result.err


def target_everyone(contact: tuple[str, str] | None = None) -> None:
    """Every party targeted by every operation and in every step; `contact` (party code,
    contact code) also targeted."""
    with db.engine().begin() as conn:
        conn.exec_driver_sql("""
            insert into operation_target (operation_id, party_id) select o.id, p.id from operation o, party p;
            insert into step_target (step_id, party_id, operation_id)
            select s.id, p.id, s.operation_id from step s, party p""")
        if contact:
            conn.execute(text("""
                insert into operation_target_contact (operation_id, contact_id, party_id)
                select o.id, c.id, c.party_id from operation o, contact c join party p on p.id = c.party_id
                where p.code = :party and c.code = :contact"""), {"party": contact[0], "contact": contact[1]})


@pytest.fixture
def examples_applied(database, cli):
    """The example specs applied."""
    result = cli("apply", EXAMPLES / "specs")
    assert result.code == 0, result.err
    return database


def scalar(sql: str, **params):
    with db.engine().connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(sql: str, **params):
    with db.engine().connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture(scope="session")
def prefect():
    """One Prefect test server for the whole run (it costs ~12 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class Sink:
    """An SMTP handler keeping what it accepted: some recipients (or the sender) are refused with
    a given reply; it knows which connection (client port) each message came on."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.refuse: dict[str, str] = {"refused@gaelle.fr": "550 5.1.1 <refused@gaelle.fr>: user unknown"}
        self.refuse_sender: str | None = None
        self.peers: set[tuple] = set()
        self.lock = threading.Lock()

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refuse_sender:
            return self.refuse_sender
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.peers.add(tuple(session.peer))
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"

    def messages(self) -> dict[str, email.message.EmailMessage]:
        """Each received message parsed back, by recipient."""
        return {to[0]: email.message_from_bytes(content, policy=policy.default)
                for _, to, content in self.received}


def final_task_runs(flow_run_id, timeout: float = 30) -> list:
    """A flow run's task runs, once the API holds each one's final state: a task run's last
    state reaches the API a moment after its flow run has returned."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if runs and all(run.state and run.state.is_final() for run in runs):
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {flow_run_id}: task runs not final after {timeout:.0f} s: "
                                     f"{[(r.name, r.state_name) for r in runs]}")
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on a free local port."""
    from aiosmtpd.controller import Controller

    from campflow.delivery.smtp_pool import close_connections

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.port = controller.port
    yield sink
    close_connections()
    controller.stop()


@pytest.fixture
def channels(prefect):
    """Channel and fax gateway blocks saved by a test are deleted after it (the Prefect server
    lives all session)."""
    from campflow.cli.channels import saved_channels

    yield
    for name, channel in saved_channels():
        type(channel).delete(name)
