"""Faults during a real `campflow run`: the run's database backends terminated mid-send, the SMTP
server stopping mid-run. Real PostgreSQL, a real SMTP server (aiosmtpd), the CLI in its own
process (what an operator's terminal shows); each ends with the funnel and one `error:` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Sink, free_port, scalar
from tests.test_emailing import add_smtp

ROOT = Path(__file__).resolve().parent.parent
PARTIES = 240
APP = "campflow-run-under-test"  # the application_name of the run's connections (libpq's PGAPPNAME)
SPEC = """kind: Operation
code: MAIL
label: Invitations
party_kinds: [prospect]
steps:
  - code: S1
    label: Invitations
    kind: emailing
    email:
      subject: Invitation
      body: invite.html
    next: []
"""
# batches of 20: a run claims many times, so a claim made after the lock was lost would show;
# retries without their 10 s delay, as the kind declares them otherwise
CHILD = """
import dataclasses, sys
from tasks.kinds import emailing
from campflow.core.kinds import REGISTRY, step_kind
emailing.BATCH = 20
REGISTRY["emailing"] = dataclasses.replace(step_kind("emailing"), retry_delay_seconds=0)
from campflow.cli import main
sys.argv = ["campflow", "run", "MAIL", *sys.argv[1:]]
main()
"""


@pytest.fixture
def mailing(database, cli, tmp_path, prefect, channels, monkeypatch):
    """MAIL: one emailing step to 240 parties' own addresses."""
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    rows = "".join(f"PRO;P{i:03};Société {i};Lyon;p{i:03}@example.com\n" for i in range(1, PARTIES + 1))
    (tmp_path / "parties.csv").write_text("FICHE;TIERS;NOM;VILLE;EMAIL\n" + rows, encoding="utf-8")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "invite.html").write_text("<p>Bonjour [[PCFIDX.NOM]]</p>", encoding="utf-8")
    (specs / "op.yaml").write_text(SPEC, encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv", "-q"), ("apply", specs),
                 ("targets", "add", "MAIL", "--where", "kind in (PRO)")):
        result = cli(*args)
        assert result.code == 0, result.err
    return tmp_path


def start_run(folder: Path, *args: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PGAPPNAME": APP, "COLUMNS": "200",
           "CAMPFLOW_OUTPUT_DIR": str(folder / "out")}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(child: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    try:
        return child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def wait_until(condition, what: str, child: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            out, err = child.communicate()
            raise AssertionError(f"the run ended before {what}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def terminate(which: str):
    """pg_terminate_backend the run's backends (all, or the lock's only); the database's clock then."""
    chosen = {"all": "application_name = :app",
              "lock": "pid in (select pid from pg_locks where locktype = 'advisory' and classid = 2 and granted)"}
    killed = scalar(f"""select count(pg_terminate_backend(pid)) from pg_stat_activity
                        where datname = current_database() and pid <> pg_backend_pid() and {chosen[which]}""",
                    app=APP)
    assert killed >= 1
    return scalar("select clock_timestamp()")


def error_line(out: str, err: str) -> str:
    """The one `error:` line, after checking that no traceback reached the terminal."""
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def received(sink: Sink) -> list[str]:
    recipients = [to[0] for _, to, _ in sink.received]
    assert len(recipients) == len(set(recipients)), "a message was sent twice"
    return recipients


def sent_count() -> int:
    return scalar("select count(*) from outbox where state = 'sent'")


class TestRunLock:
    def test_a_terminated_lock_is_noticed_and_released_quietly(self, database):
        from campflow.store.run_lock import RunBusy, RunLock, RunLockLost

        op_id = 7
        with RunLock("OP", op_id) as lock:
            lock.check()
            with pytest.raises(RunBusy, match="operation OP is being run by another run"):
                RunLock("OP", op_id).__enter__()
            terminate("lock")
            with pytest.raises(RunLockLost, match="the run lost its lock on operation OP: its database "
                                                  "connection was lost .terminating connection"):
                lock.check()
            assert not lock.held()
        with RunLock("OP", op_id) as again:  # the dead connection was released without an error
            assert again.held()

    def test_a_lock_released_by_its_own_session_is_noticed(self, database):
        from sqlalchemy import text

        from campflow.store.run_lock import RunLock, RunLockLost

        with RunLock("OP", 7) as lock:
            lock.connection.execute(text("select pg_advisory_unlock_all()"))
            with pytest.raises(RunLockLost, match="its database session no longer holds the lock"):
                lock.check()


class TestLostConnection:
    @pytest.mark.parametrize("which", ["all", "lock"])
    def test_a_run_that_loses_its_lock_stops_claiming_and_says_so(self, mailing, smtp, cli, which):
        add_smtp(cli, "emailing", smtp.port, "Salon <salon@example.com>", "--concurrency", "1", "--rate", "40")
        child = start_run(mailing)
        wait_until(lambda: len(smtp.received) >= 40, "40 messages were sent", child)
        lost_at = terminate(which)
        out, err = finish(child)
        assert child.returncode == 1, err
        line = error_line(out, err)
        assert line.startswith("error: the run lost its lock on operation MAIL: "), line
        assert "it stopped claiming work" in line and "Run again to finish (no message is sent twice)" in line
        assert "MAIL: funnel" in out
        # nothing was claimed once the lock was gone: no other run could have sent the same
        assert scalar("select count(*) from outbox where claimed_at > :t", t=lost_at) == 0
        sent = received(smtp)
        assert PARTIES > len(sent) >= 40
        # every message that went out is recorded as sent (none left of unknown fate), and said so
        assert sent_count() == len(sent)
        assert f"S1: {len(sent)} messages sent and recorded in this run, {PARTIES - len(sent)} parties wait" in line
        result = cli("run", "MAIL", "--json")
        assert result.code == 0, result.err
        assert sorted(received(smtp)) == [f"p{i:03}@example.com" for i in range(1, PARTIES + 1)]
        [report] = json.loads(result.out)
        assert report["reason"].startswith(f"{PARTIES - len(sent)} messages sent through SMTP channel 'emailing'")
        assert f"{len(sent)} already sent by an earlier run, not sent again" in report["reason"]
        assert scalar("select count(*) from step_target where status = 'ok_continue'") == PARTIES


class TestSmtpOutage:
    def test_a_server_stopping_mid_run_says_what_was_sent_and_what_waits(self, mailing, cli):
        from aiosmtpd.controller import Controller

        sink, port = Sink(), free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        add_smtp(cli, "emailing", port, "Salon <salon@example.com>", "--concurrency", "1", "--rate", "40")
        child = start_run(mailing)
        try:
            wait_until(lambda: len(sink.received) >= 40, "40 messages were sent", child)
        finally:
            controller.stop()
        out, err = finish(child)
        assert child.returncode == 1, err
        line = error_line(out, err)
        sent = received(sink)
        unknown = scalar("select count(*) from outbox where state = 'sending'")
        assert unknown <= 1  # at most the message on the wire when the server went
        assert line.startswith(f"error: step S1 of MAIL failed: cannot reach SMTP server 127.0.0.1:{port} "
                               "of channel 'emailing'"), line
        assert "nothing was sent" not in line
        # counted over the step's three attempts: the last one sent nothing
        assert f"S1: {sent_count()} messages sent and recorded in this run" in line
        assert f"{PARTIES - sent_count()} parties wait" in line
        first_sent = sent_count()
        assert first_sent >= len(sent) - 1
        assert "MAIL: funnel" in out

        restarted = Controller(sink, hostname="127.0.0.1", port=port)
        restarted.start()
        try:
            result = cli("run", "MAIL")
        finally:
            restarted.stop()
        assert result.code == 0, result.err
        first = len(sent)
        assert len(received(sink)) == first + PARTIES - first_sent - unknown  # each message at most once
        assert sent_count() == PARTIES - unknown

    def test_debug_shows_the_traceback(self, mailing, cli):
        add_smtp(cli, "emailing", free_port())  # nobody listens there
        out, err = finish(start_run(mailing, "--debug"))
        assert "Traceback" in err
        assert "error: step S1 of MAIL failed: cannot reach SMTP server" in err


class TestImports:
    def test_a_file_too_wide_is_one_clear_error(self, database, cli, tmp_path):
        header = ";".join(["FICHE", "TIERS", "NOM", *(f"X{i}" for i in range(4_997))])
        (tmp_path / "wide.csv").write_text(f"{header}\nPRO;P1;Un\n", encoding="utf-8")
        result = cli("parties", "import", tmp_path / "wide.csv")
        assert result.code == 1
        assert "Traceback" not in result.err
        assert result.err.startswith("error: wide.csv: the file has 5,000 columns (its header is row 1); "
                                     "at most 1,000 are allowed")
        assert scalar("select count(*) from party") == 0
