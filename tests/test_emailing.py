"""The emailing and mass_emailing kinds against a real SMTP server (aiosmtpd) and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import types
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import text

from campflow.delivery.senders import IN_FLIGHT_PER_CONNECTION
from campflow.errors import CampflowError
from campflow.store import db
from tests.conftest import final_task_runs, free_port, rows, scalar

ROOT = Path(__file__).resolve().parent.parent
PARTIES = """FICHE;TIERS;NOM;VILLE;EMAIL
PRO;P1;Boulangerie Lefèvre & fils;Paris;accueil@lefevre.fr
PRO;P2;Menuiserie Gaëlle;Lyon;contact@gaelle.fr
CLI;P3;Ébénisterie Noël;Nîmes;jean@noel.fr
CLI;P4;Sans Contact;Lille;
PRO;P5;Pas d'adresse;Brest;pas@adresse.fr
"""
CONTACTS = """TIERS;CONTACT;NOM;PRENOM;FONCTION;EMAIL
P1;C1;Lefèvre;Hélène;DIRECTION;helene@lefevre.fr
P1;C2;Gérard;Loïc;achats;loic@lefevre.fr
P1;C3;Martin;Paul;TECHNIQUE;paul@lefevre.fr
P2;C1;Noël;Gaëlle;Direction;refused@gaelle.fr
P3;C1;Dupont;Jean;DIRECTION;jean@noel.fr
P4;C1;Durand;Marc;TECHNIQUE;marc@contact.fr
P5;C1;Petit;Anne;DIRECTION;
"""
HTML = """<html><body>
<p>Bonjour [[T2.PRENOM]] [[T2.NOM]],</p>
<p>La société <b>[[PCFIDX.NOM]]</b> ([[VILLE]]) est invitée au <a href="https://salon.example.com">Salon</a>.</p>
</body></html>
"""
J2 = """Bonjour {{ contact.first_name }},
{% if party.city %}Nous vous attendons depuis {{ party.city }}.{% endif %}
Société : {{ party.name }}
"""
PDF = b"%PDF-1.4 " + bytes(range(256)) * 8
SPEC = """kind: Operation
code: MAIL
label: Invitations
party_kinds: [prospect, client]
attach_messages_to_events: true
steps:
  - code: S1
    label: Invitations
    kind: {kind}
    event: EMAIL_INVIT
    email:
      subject: "Invitation — [[PCFIDX.NOM]]"
      body: {body}
      attachments: [plan salon.pdf]
{extra}    next: []
"""
CONTACTS_OPTION = "      contacts: {functions: [direction, ACHATS]}\n"


def add_smtp(cli, name: str, port: int, sender: str = "Salon ERP <salon@example.com>", *extra: str) -> None:
    result = cli("channels", "add-smtp", name, "--host", "127.0.0.1", "--port", str(port), "--plain",
                 "--sender", sender, *extra)
    assert result.code == 0, result.err


def execute(sql: str, **params) -> None:
    with db.engine().begin() as conn:
        conn.execute(text(sql), params)


def setup_operation(cli, tmp_path, *, kind="emailing", body="invite.html", extra=CONTACTS_OPTION,
                    files: dict[str, str] | None = None) -> None:
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "invite.html").write_text(HTML, encoding="utf-8")
    (specs / "confirm.j2").write_text(J2, encoding="utf-8")
    (specs / "plan salon.pdf").write_bytes(PDF)
    for name, content in (files or {}).items():
        (specs / name).write_text(content, encoding="utf-8")
    (specs / "op.yaml").write_text(SPEC.format(kind=kind, body=body, extra=extra), encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv", "-q"),
                 ("contacts", "import", tmp_path / "contacts.csv", "-q"),
                 ("apply", specs), ("targets", "add", "MAIL", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, result.err
    # imports refuse such addresses; older data (or another tool) may still hold them
    execute("update party set email = 'jean.dupont.fr' where code = 'P3'")
    execute("update contact set email = 'jean.dupont.fr' where email = 'jean@noel.fr'")


@pytest.fixture
def operation(database, cli, tmp_path, prefect, channels, monkeypatch):
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    setup_operation(cli, tmp_path)
    return tmp_path


def run(**kwargs) -> dict:
    from flows.run_operation import run_operation

    return {r["code"]: r for r in run_operation("MAIL", **kwargs)}


def statuses(step: str = "S1") -> dict[str, tuple[str, str | None]]:
    return {code: (status, reason) for code, status, reason in rows(
        """select p.code, st.status, st.reason from step_target st join party p on p.id = st.party_id
           join step s on s.id = st.step_id where s.code = :step order by 1""", step=step)}


def enter_all() -> None:
    """Put every party in S1 (as the flow's entry would, but committed before a failing run)."""
    execute("""insert into step_target (step_id, party_id, operation_id)
               select s.id, p.id, s.operation_id from step s, party p on conflict do nothing""")


def outbox_states() -> dict[str, int]:
    return dict(rows("select state, count(*) from outbox group by state"))


class TestSmtpDelivery:
    def test_messages_are_personalised_per_contact(self, operation, smtp, cli):
        add_smtp(cli, "emailing", smtp.port)
        report = run()["S1"]
        received = smtp.messages()
        assert sorted(received) == ["helene@lefevre.fr", "loic@lefevre.fr"]  # P1's DIRECTION and ACHATS
        helene = received["helene@lefevre.fr"]
        assert str(helene["From"]) == "Salon ERP <salon@example.com>"
        assert helene["To"].addresses[0].display_name == "Hélène Lefèvre"
        assert helene["To"].addresses[0].addr_spec == "helene@lefevre.fr"
        assert b"=?utf-8?" in next(c for _, to, c in smtp.received if to == ["helene@lefevre.fr"])
        assert str(helene["Subject"]) == "Invitation — Boulangerie Lefèvre & fils"
        party_id = scalar("select id from party where code = 'P1'")
        assert helene["Message-ID"].startswith(f"<campflow.MAIL.S1.{party_id}.")
        assert helene["Date"] is not None
        assert (helene["X-Campflow-Operation"], helene["X-Campflow-Step"], helene["X-Campflow-Party"]) == (
            "MAIL", "S1", "P1")
        html = helene.get_body(("html",)).get_content()
        assert "Bonjour Hélène Lefèvre," in html
        assert "<b>Boulangerie Lefèvre &amp; fils</b> (Paris)" in html  # values HTML-escaped
        plain = helene.get_body(("plain",)).get_content()
        assert "La société Boulangerie Lefèvre & fils (Paris) est invitée au Salon (https://salon.example.com)" \
            in plain
        attachment = next(helene.iter_attachments())
        assert attachment.get_filename() == "plan salon.pdf"
        assert attachment.get_content_type() == "application/pdf"
        assert attachment.get_content() == PDF
        loic = received["loic@lefevre.fr"]
        assert "Bonjour Loïc Gérard," in loic.get_body(("html",)).get_content()  # the recipient's own fields
        assert report["processed"] == 5
        assert "2 messages sent through SMTP channel 'emailing'" in report["reason"]

    def test_statuses_and_reasons(self, operation, smtp, cli):
        add_smtp(cli, "emailing", smtp.port)
        run()
        assert statuses() == {
            "P1": ("ok_continue", None),
            "P2": ("failed", "contact C1: refused by smtp: 550 5.1.1 <refused@gaelle.fr>: user unknown"),
            "P3": ("failed", "contact C1: invalid address 'jean.dupont.fr': no @"),
            "P4": ("failed", "no contact with function DIRECTION, ACHATS"),
            "P5": ("failed", "contact C1: no e-mail address"),
        }
        contacts = rows("""select p.code || '/' || c.code, stc.status from step_target_contact stc
                           join contact c on c.id = stc.contact_id join party p on p.id = c.party_id order by 1""")
        assert contacts == [("P1/C1", "ok_continue"), ("P1/C2", "ok_continue"), ("P2/C1", "failed"),
                            ("P3/C1", "failed"), ("P5/C1", "failed")]
        assert outbox_states() == {"sent": 2, "failed": 4}

    def test_events_keep_the_sent_message(self, operation, smtp, cli):
        add_smtp(cli, "emailing", smtp.port)
        run()
        (path, contacts), = rows("select message_path, contact_ids from event where code = 'EMAIL_INVIT'")
        assert Path(path).is_file() and path.endswith("P1-C1.eml")
        kept = email.message_from_bytes(Path(path).read_bytes(), policy=policy.default)
        assert kept["To"].addresses[0].addr_spec == "helene@lefevre.fr"
        assert contacts == [r[0] for r in rows("select c.id from contact c join party p on p.id = c.party_id "
                                               "where p.code = 'P1' and c.code in ('C1', 'C2') order by 1")]

    def test_running_again_sends_nothing_new(self, operation, smtp, cli):
        add_smtp(cli, "emailing", smtp.port)
        run()
        assert len(smtp.received) == 2
        assert cli("status", "set", "MAIL", "S1", "P1", "to_process").code == 0  # by hand, by mistake
        report = run()["S1"]
        assert len(smtp.received) == 2
        assert "2 already sent by an earlier run, not sent again" in report["reason"]
        assert statuses()["P1"] == ("ok_continue", None)
        assert scalar("select count(*) from event") == 1

    def test_only_the_targeted_contacts_receive(self, operation, smtp, cli):
        execute("""insert into operation_target_contact (operation_id, contact_id, party_id)
                   select o.id, c.id, c.party_id from operation o, contact c join party p on p.id = c.party_id
                   where o.code = 'MAIL' and p.code = 'P1' and c.code in ('C2', 'C3')""")
        add_smtp(cli, "emailing", smtp.port)
        run()
        assert sorted(smtp.messages()) == ["loic@lefevre.fr"]  # C1 is not targeted, C3 not a buyer
        assert rows("""select c.code, stc.status from step_target_contact stc join contact c on c.id = stc.contact_id
                       join party p on p.id = c.party_id where p.code = 'P1' order by 1""") == [
            ("C2", "ok_continue"), ("C3", "not_processed_continue")]

    def test_deferred_recipient_waits_for_the_next_run(self, operation, smtp, cli):
        smtp.refuse["loic@lefevre.fr"] = "451 4.7.1 greylisted, try later"
        add_smtp(cli, "emailing", smtp.port)
        smtp.refuse["helene@lefevre.fr"] = "451 4.7.1 greylisted, try later"
        run()
        assert smtp.received == []
        status, reason = statuses()["P1"]
        assert status == "to_process" and "deferred by smtp: 451 4.7.1 greylisted" in reason
        smtp.refuse.clear()
        run()
        assert sorted(smtp.messages()) == ["helene@lefevre.fr", "loic@lefevre.fr"]
        assert statuses()["P1"] == ("ok_continue", None)


class TestChannels:
    def test_without_a_channel_messages_are_written_as_eml(self, operation):
        report = run()["S1"]
        folder = Path(report["outputs"][0])
        assert folder.name == "messages"
        # written, not sent: no server refuses P2's contact
        assert sorted(p.name for p in folder.iterdir()) == ["P1-C1.eml", "P1-C2.eml", "P2-C1.eml"]
        parsed = email.message_from_bytes((folder / "P1-C1.eml").read_bytes(), policy=policy.default)
        assert parsed["To"].addresses[0].display_name == "Hélène Lefèvre"
        assert "Boulangerie Lefèvre &amp; fils" in parsed.get_body(("html",)).get_content()
        assert "no channel block 'emailing': messages written as .eml files" in report["reason"]
        assert statuses()["P1"] == ("ok_continue", None)
        path = scalar("select message_path from event")
        assert path == str(folder / "P1-C1.eml")

    def test_a_saved_file_channel(self, operation, cli, tmp_path):
        result = cli("channels", "add-file", "emailing", "--folder", tmp_path / "outgoing",
                     "--sender", "Équipe Salon <salon@example.com>")
        assert result.code == 0, result.err
        run()
        parsed = email.message_from_bytes((tmp_path / "outgoing" / "P1-C2.eml").read_bytes(), policy=policy.default)
        assert str(parsed["From"]) == "Équipe Salon <salon@example.com>"

    def test_mass_emailing_uses_its_own_block(self, database, cli, tmp_path, prefect, channels, smtp, monkeypatch):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup_operation(cli, tmp_path, kind="mass_emailing")
        add_smtp(cli, "emailing", free_port(), "Wrong <wrong@example.com>")  # nobody listens there
        add_smtp(cli, "mass-emailing", smtp.port, "Relais <relay@example.com>")
        run()
        assert {frm for frm, _, _ in smtp.received} == {"relay@example.com"}
        assert len(smtp.received) == 2

    def test_an_unknown_channel_fails_the_step_clearly(self, database, cli, tmp_path, prefect, channels, monkeypatch):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        no_retry(monkeypatch)
        setup_operation(cli, tmp_path, extra="      channel: nope\n")
        enter_all()
        message = failed_step_message(runs=1)  # a configuration error: retrying cannot heal it
        assert "no channel named 'nope'" in message and "campflow channels list" in message
        assert statuses()["P1"] == ("to_process", None)


TWO_STEPS = """kind: Operation
code: MAIL
label: Two mailings at once
party_kinds: [prospect, client]
attach_messages_to_events: true
steps:
  - code: S1
    label: Invitation
    kind: emailing
    event: EMAIL_S1
    email: {subject: "Invitation S1 — [[PCFIDX.NOM]]", body: confirm.j2}
    next: []
  - code: S2
    label: Catalogue
    kind: emailing
    event: EMAIL_S2
    email: {subject: "Catalogue S2 — [[PCFIDX.NOM]]", body: confirm.j2}
    next: []
"""


class FrozenClock(dt.datetime):
    """Every step of the run starts in the same second."""

    @classmethod
    def now(cls, tz=None):
        return dt.datetime(2026, 3, 1, 9, 0, 0, tzinfo=dt.timezone.utc).astimezone(tz)


class TestOutputFolders:
    def test_two_steps_starting_together_keep_their_own_messages(self, database, cli, tmp_path, prefect,
                                                                  channels, smtp, monkeypatch):
        """Two entry steps of one run, started in the same second: each event's message is its step's."""
        import flows.run_operation as module
        import tasks.steps as steps  # the step task names its output folder

        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup_operation(cli, tmp_path, body="confirm.j2", extra="")
        (tmp_path / "specs" / "op.yaml").write_text(TWO_STEPS, encoding="utf-8")
        assert cli("apply", tmp_path / "specs").code == 0
        add_smtp(cli, "emailing", smtp.port)
        monkeypatch.setattr(steps, "dt", types.SimpleNamespace(datetime=FrozenClock, timezone=dt.timezone,
                                                                  timedelta=dt.timedelta, date=dt.date))
        state = module.run_operation("MAIL", return_state=True)
        reports = {r["code"]: r for r in state.result()}
        assert [reports[s]["state"] for s in ("S1", "S2")] == ["Completed", "Completed"]
        assert len(smtp.received) == 6  # P1, P2, P5 in each step
        events = rows("select code, message_path from event order by code, message_path")
        assert len(events) == 6
        for code, path in events:
            kept = email.message_from_bytes(Path(path).read_bytes(), policy=policy.default)
            assert str(kept["Subject"]).startswith(f"{'Invitation' if code == 'EMAIL_S1' else 'Catalogue'} "
                                                   f"{code[-2:]} — ")
        folders = {code: {Path(path).parent for c, path in events if c == code} for code in ("EMAIL_S1", "EMAIL_S2")}
        (s1,), (s2,) = folders["EMAIL_S1"], folders["EMAIL_S2"]
        assert (s1.parent.name, s2.parent.name) == ("S1", "S2")
        run_dir = s1.parent.parent
        assert run_dir == s2.parent.parent and run_dir.parent == tmp_path / "out" / "MAIL"
        assert run_dir.name.endswith("-" + state.state_details.flow_run_id.hex[:8])
        assert sorted(p.name for p in s1.iterdir()) == sorted(p.name for p in s2.iterdir())
        assert all((s1 / name).read_bytes() != (s2 / name).read_bytes() for name in os.listdir(s1))


def no_retry(monkeypatch) -> None:
    from campflow.core.kinds import REGISTRY, step_kind

    for name in ("emailing", "mass_emailing"):
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(step_kind(name), retry_delay_seconds=0))


def failed_step_message(runs: int = 3, **kwargs) -> str:
    """Run MAIL (which fails) and return the failed S1 task run's message, checking its retries:
    3 runs for an error that may heal (retried twice, as the kind is registered), 1 for any other."""
    from flows.run_operation import run_operation

    state = run_operation("MAIL", return_state=True, **kwargs)
    assert state.is_failed()
    with pytest.raises(CampflowError, match="step S1 of MAIL failed: "):
        state.result()
    task_run, = final_task_runs(state.state_details.flow_run_id)
    assert task_run.run_count == runs
    return task_run.state.message


class TestFailures:
    def test_server_down_retries_then_fails_sending_nothing(self, operation, cli, monkeypatch):
        port = free_port()  # nobody listens there
        add_smtp(cli, "emailing", port)
        no_retry(monkeypatch)
        enter_all()
        message = failed_step_message()
        assert f"cannot reach SMTP server 127.0.0.1:{port} of channel 'emailing'" in message
        assert scalar("select count(*) from outbox where state = 'sent'") == 0
        assert {s for s, _ in statuses().values()} == {"to_process"}
        assert len(statuses()) == 5

    def test_server_dropping_mid_batch_releases_what_was_not_sent(self, operation, smtp, cli, monkeypatch):
        from blocks import channels
        from campflow.delivery import senders

        add_smtp(cli, "emailing", smtp.port, "Salon <salon@example.com>", "--concurrency", "1")
        no_retry(monkeypatch)
        enter_all()
        real, connect = senders.deliver, channels.SmtpChannel.connect
        calls = []

        def drop_after_first(connection, *args):
            calls.append(1)
            if len(calls) > 1:
                connection.close()  # the server went away between two messages, and stays away
                monkeypatch.setattr(channels.SmtpChannel, "connect", _refuse)
            return real(connection, *args)

        monkeypatch.setattr(senders, "deliver", drop_after_first)
        message = failed_step_message()
        assert f"SMTP server 127.0.0.1:{smtp.port}" in message
        assert len(smtp.received) == 1
        # helene sent; loic and P2's contact never attempted: pending; 3 refused before sending
        assert outbox_states() == {"sent": 1, "pending": 2, "failed": 3}
        assert statuses()["P1"][0] == "to_process"  # the step's transaction rolled back
        monkeypatch.setattr(senders, "deliver", real)
        monkeypatch.setattr(channels.SmtpChannel, "connect", connect)
        add_smtp(cli, "emailing", smtp.port, "Salon <salon@example.com>", "--overwrite")
        run()
        assert sorted(to[0] for _, to, _ in smtp.received) == ["helene@lefevre.fr", "loic@lefevre.fr"]
        assert statuses()["P1"] == ("ok_continue", None)

    def test_a_killed_run_leaves_unknown_messages_that_are_not_sent_again(self, database, cli, tmp_path, prefect,
                                                                          channels, smtp, monkeypatch):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup_operation(cli, tmp_path, body="confirm.j2", extra="")
        execute("update party set email = lower(code) || '@example.com'")
        add_smtp(cli, "emailing", smtp.port)
        enter_all()
        kill_while_sending(smtp.port, tmp_path / "out", after=3, batch=2)
        assert len(smtp.received) == 3  # the third was sent when the process died
        # one connection: at most its window claimed and unsettled (the one on the wire and a few ahead)
        states = outbox_states()
        # the last batch may not be in the outbox yet: it is built while the one before is on the wire
        assert 1 <= states.get("sending", 0) <= IN_FLIGHT_PER_CONNECTION and sum(states.values()) <= 5, states
        unsent = 5 - states.get("sent", 0) - states.get("sending", 0)  # pending or not yet built: never sent
        unknown = scalar("select array_agg(p.code order by p.code) from outbox o join party p on p.id = o.party_id "
                         "where o.state = 'sending'")
        report = run()["S1"]
        assert f"{len(unknown)} of unknown fate after an interrupted run, not sent again" in report["reason"]
        assert "campflow run MAIL --resend-unknown" in report["reason"]
        assert len(smtp.received) == 3 + unsent  # only the pending ones were sent
        assert [code for code, (status, _) in statuses().items() if status == "to_process"] == unknown
        assert "--resend-unknown" in statuses()[unknown[0]][1]
        run(resend_unknown=True)
        assert len(smtp.received) == 3 + unsent + len(unknown)
        assert {to[0] for _, to, _ in smtp.received} == {f"{c.lower()}@example.com" for c in statuses()}
        assert {s for s, _ in statuses().values()} == {"ok_continue"}
        assert outbox_states() == {"sent": 5}

    @pytest.mark.parametrize("concurrency", [2, 4])
    def test_a_run_killed_mid_send_leaves_at_most_its_window_unknown(self, database, cli, tmp_path, prefect,
                                                                     channels, smtp, monkeypatch, concurrency):
        """kill -9 after 120 of 400 messages reached the server: at most the window (a few per connection)
        is of unknown fate; a plain run sends the rest, --resend-unknown the unknown ones, every
        recipient gets one."""
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup_operation(cli, tmp_path, body="hello.j2", extra="", files={"hello.j2": "Bonjour {{ party.name }}\n"})
        many = "FICHE;TIERS;NOM;VILLE;EMAIL\n" + "".join(
            f"PRO;K{n:03};Client {n};Paris;k{n:03}@example.com\n" for n in range(395))
        (tmp_path / "many.csv").write_text(many, encoding="utf-8")
        assert cli("parties", "import", tmp_path / "many.csv", "-q").code == 0
        execute("update party set email = lower(code) || '@example.com'")
        add_smtp(cli, "emailing", smtp.port)
        enter_all()
        targets = {f"{code.lower()}@example.com" for code in statuses()}
        assert len(targets) == 400
        at_kill = sigkill_while_sending(smtp, tmp_path / "out", after=120, concurrency=concurrency)
        states = outbox_states()
        unknown = states.get("sending", 0)
        assert unknown <= IN_FLIGHT_PER_CONNECTION * concurrency, states
        run()
        run(resend_unknown=True)
        received = [to[0] for _, to, _ in smtp.received]
        assert set(received) == targets
        duplicates = len(received) - len(targets)
        assert duplicates <= unknown
        assert outbox_states() == {"sent": 400}
        print(f"kill trial: concurrency {concurrency}, {at_kill} received at the kill, {unknown} of unknown "
              f"fate, {duplicates} sent twice by --resend-unknown")


def kill_while_sending(port: int, out: Path, after: int, batch: int) -> None:
    """Run S1 in another process that dies (os._exit, no cleanup) after `after` messages went out."""
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from prefect_email import EmailServerCredentials
        from blocks import channels
        from campflow.delivery import senders
        from campflow.store import db
        from sqlalchemy import text
        from tasks.kinds import emailing
        from campflow.core.kinds import StepContext

        real, sent = senders.deliver, []
        def dying(*args):
            result = real(*args)
            sent.append(1)
            if len(sent) == {after}:
                os._exit(9)
            return result
        senders.deliver = dying
        emailing.BATCH = {batch}
        channel = channels.SmtpChannel(credentials=EmailServerCredentials(
            smtp_server="127.0.0.1", smtp_port={port}, smtp_type="INSECURE"), sender="s@example.com",
            concurrency=1)
        with db.session() as session:
            op, step, settings = session.execute(text(
                "select o.id, s.id, s.settings from step s join operation o on o.id = s.operation_id")).one()
            ctx = StepContext(op, "MAIL", step, "S1", "emailing", settings, Path({str(out)!r}))
            emailing.send_step(session, ctx, channel=channel)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=os.environ.copy(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 9, done.stderr


def sigkill_while_sending(smtp, out: Path, after: int, concurrency: int) -> int:
    """Run S1 in another process and kill it (SIGKILL) once the server received `after` messages;
    how many it had received then."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from prefect_email import EmailServerCredentials
        from blocks import channels
        from campflow.store import db
        from sqlalchemy import text
        from tasks.kinds import emailing
        from campflow.core.kinds import StepContext

        channel = channels.SmtpChannel(credentials=EmailServerCredentials(
            smtp_server="127.0.0.1", smtp_port={smtp.port}, smtp_type="INSECURE"), sender="s@example.com",
            concurrency={concurrency})
        with db.session() as session:
            op, step, settings = session.execute(text(
                "select o.id, s.id, s.settings from step s join operation o on o.id = s.operation_id")).one()
            ctx = StepContext(op, "MAIL", step, "S1", "emailing", settings, Path({str(out)!r}))
            emailing.send_step(session, ctx, channel=channel)
        """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=os.environ.copy(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(smtp.received) < after:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the run sent too little"
            time.sleep(0.001)
        process.kill()
        at_kill = len(smtp.received)
    finally:
        process.kill()
        process.wait(30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.5)  # the server finishes reading what was already on the wire
    return at_kill


def _refuse(self):
    """SmtpChannel.connect to a server that went away: a ChannelError raised on a refused socket."""
    from campflow.delivery.senders import ChannelError

    host, port, _ = self.server()
    try:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    except ConnectionRefusedError as exc:
        raise ChannelError(f"cannot reach SMTP server {host}:{port} of channel '{self.name}': {exc}") from None


UNSAFE = [
    ("{{ ''.__class__.__mro__ }}", "'__class__' is a private attribute"),
    ("{{ party.name|attr('__class__') }}", "'__class__' is a private attribute"),
    ("{{ cycler.__init__.__globals__ }}", "'__init__' is a private attribute"),
    ("{{ secret }}", "'secret' is not a table"),
]


class TestTemplates:
    def test_jinja_body_to_the_party_address(self, database, cli, tmp_path, prefect, channels, smtp, monkeypatch):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup_operation(cli, tmp_path, body="confirm.j2", extra="")
        add_smtp(cli, "emailing", smtp.port)
        run()
        received = smtp.messages()
        assert sorted(received) == ["accueil@lefevre.fr", "contact@gaelle.fr", "pas@adresse.fr"]
        assert received["accueil@lefevre.fr"]["To"].addresses[0].display_name == "Boulangerie Lefèvre & fils"
        body = received["accueil@lefevre.fr"].get_body(("plain",)).get_content().replace("\r\n", "\n")
        # a text template: no escaping; contact is the party's first contact
        assert body == ("Bonjour Hélène,\nNous vous attendons depuis Paris.\n"
                        "Société : Boulangerie Lefèvre & fils\n")
        assert statuses()["P3"] == ("failed", "invalid address 'jean.dupont.fr': no @")
        assert statuses()["P4"] == ("failed", "no e-mail address")

    def test_unknown_fields_are_refused_at_apply(self, database, cli, tmp_path):
        specs = tmp_path / "specs"
        specs.mkdir()
        (specs / "bad.j2").write_text("{{ party.inconnu }}", encoding="utf-8")
        (specs / "op.yaml").write_text(SPEC.format(kind="emailing", body="bad.j2", extra="").replace(
            "[[PCFIDX.NOM]]", "[[PCFIDX.NOMM]]"), encoding="utf-8")
        (specs / "plan salon.pdf").write_bytes(PDF)
        result = cli("apply", specs)
        assert result.code == 1
        assert "field [[PCFIDX.NOMM]]: unknown field 'NOMM' in table party" in result.err
        assert "bad.j2: line 1: party.inconnu" in result.err

    @pytest.mark.parametrize("template, refused", UNSAFE)
    def test_unsafe_templates_are_refused_at_apply(self, database, cli, tmp_path, template, refused):
        with pytest.raises(AssertionError, match="evil.j2: .*" + re.escape(refused)):
            setup_operation(cli, tmp_path, body="evil.j2", extra="", files={"evil.j2": template})
        assert scalar("select count(*) from operation") == 0

    @pytest.mark.parametrize("template, refused", UNSAFE)
    def test_unsafe_templates_fail_the_step_before_sending(self, database, cli, tmp_path, prefect, channels,
                                                           smtp, monkeypatch, template, refused):
        """A template changed on disk after apply is still refused before anything is sent."""
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        no_retry(monkeypatch)
        setup_operation(cli, tmp_path, body="evil.j2", extra="", files={"evil.j2": "{{ party.name }}"})
        (tmp_path / "specs" / "evil.j2").write_text(template, encoding="utf-8")
        add_smtp(cli, "emailing", smtp.port)
        message = failed_step_message(runs=1)
        assert refused in message and "nothing was sent" in message
        assert smtp.received == []
        assert scalar("select count(*) from outbox") == 0


RTF = (r"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Arial;}}\f0 Bonjour [T2.PRENOM],\par "
       r"La soci\'e9t\'e9 [PCFIDX.NOM] est invit\'e9e.\par}")


class TestRtfBody:
    def test_rtf_is_attached_personalised_with_a_text_body(self, database, cli, tmp_path, prefect, channels, smtp,
                                                            monkeypatch):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup_operation(cli, tmp_path, body="invite.rtf", files={"invite.rtf": RTF})
        add_smtp(cli, "emailing", smtp.port)
        run()
        helene = smtp.messages()["helene@lefevre.fr"]
        text_body = helene.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert text_body == "Bonjour Hélène,\nLa société Boulangerie Lefèvre & fils est invitée.\n"
        rtf, pdf = helene.iter_attachments()
        assert (rtf.get_filename(), rtf.get_content_type()) == ("invite.rtf", "application/rtf")
        assert rtf.get_content() == (r"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Arial;}}\f0 Bonjour H\u233?l\u232?ne,\par "
                                     r"La soci\'e9t\'e9 Boulangerie Lef\u232?vre & fils est invit\'e9e.\par}").encode()
        assert pdf.get_content() == PDF


class TestMessageParts:
    """The pure helpers of campflow.render (mail, bodies, headers, plain_text): no database, no server."""

    @pytest.mark.parametrize("subject", [
        "Invitation", "Invitation au Salon ERP — Boulangerie Lefèvre & fils",
        "Très long sujet " * 12 + "😀 fin", "A" * 120, "=?utf-8?q?not_an_encoded_word?=",
    ])
    def test_subjects_round_trip(self, subject):
        from campflow.render.headers import header_text

        encoded = header_text(subject, "Subject")
        limit = 78 if " " in subject else 998  # a word longer than a line cannot be folded
        assert all(len(line) <= limit for line in f"Subject: {encoded}".split("\r\n"))
        parsed = email.message_from_bytes(f"Subject: {encoded}\r\n\r\n".encode("ascii"), policy=policy.default)
        assert str(parsed["Subject"]) == " ".join(subject.split())

    @pytest.mark.parametrize("name", ["Hélène Lefèvre", "Dupont, Jean", 'Jean "Jo" Dupont', "Trần Océane " * 6,
                                      "Plain Name"])
    def test_display_names_round_trip(self, name):
        from campflow.render.headers import format_address

        header = f"To: {format_address(name, 'x@example.com')}\r\n\r\n".encode("ascii")
        address = email.message_from_bytes(header, policy=policy.default)["To"].addresses[0]
        assert (address.display_name, address.addr_spec) == (" ".join(name.split()), "x@example.com")

    @pytest.mark.parametrize("raw, expected", [
        (" jean@dupont.fr ", ("jean@dupont.fr", None)),
        (None, (None, "no e-mail address")),
        ("", (None, "no e-mail address")),
        ("jean.dupont.fr", (None, "invalid address 'jean.dupont.fr': no @")),
        ("jean@", (None, "invalid address 'jean@': bad domain ''")),
        ("a@b@c.fr", (None, "invalid address 'a@b@c.fr': more than one @")),
        ("jean dupont@x.fr", (None, "invalid address 'jean dupont@x.fr': contains ' '")),
        ("x@y.fr\r\nBcc: z@evil.com", (None, "invalid address 'x@y.fr\\r\\nBcc: z@evil.com': contains '\\r'")),
        ("hélène@x.fr", (None, "invalid address 'hélène@x.fr': accented letters before the @ need SMTPUTF8")),
        ("jean@exämple.fr", ("jean@xn--exmple-cua.fr", None)),
    ])
    def test_addresses(self, raw, expected):
        from campflow.render.headers import check_address

        assert check_address(raw) == expected

    def test_rtf_values_are_escaped(self):
        from campflow.render.bodies import rtf_escape
        from campflow.render.plain_text import rtf_to_text

        escaped = rtf_escape("Lefèvre {SA} \\ 😀\nligne 2")
        assert escaped == "Lef\\u232?vre \\{SA\\} \\\\ \\u-10179?\\u-8704?\\line ligne 2"
        assert rtf_to_text("{\\rtf1 " + escaped + "}") == "Lefèvre {SA} \\ 😀\nligne 2\n"

    def test_html_text_alternative(self):
        from campflow.render.plain_text import html_to_text

        source = ("<html><head><title>t</title><style>p {}</style></head><body><h1>Salon</h1><p>Bonjour&nbsp;"
                  "<b>vous</b>,<br>venez</p><ul><li>un</li><li>deux</li></ul>"
                  "<p><a href='https://x.fr/i'>inscription</a></p></body></html>")
        assert html_to_text(source) == "Salon\n\nBonjour vous,\nvenez\n\n- un\n- deux\n\ninscription (https://x.fr/i)\n"

    def test_jinja_problems_for_apply_time_checks(self):
        from campflow.render.bodies import jinja_problems

        assert jinja_problems("{{ party.name }} {% for i in range(2) %}{{ i }}{% endfor %}") == []
        assert [p.split(";")[0] for p in jinja_problems("{{ ''.__class__ }}{{ os }}")] == [
            "line 1: '__class__' is a private attribute", "'os' is not a table"]

    def test_jinja_html_escapes_and_never_prints_a_blank(self):
        from jinja2.exceptions import UndefinedError

        from campflow.render.bodies import JinjaBody, TemplateRefused

        body = JinjaBody("<p>{{ party.name }}</p>{% if party.city %}{{ party.city }}{% endif %}", "b.html.j2",
                         as_html=True)
        body.bind({"party.name": 0, "party.city": 1})
        assert body.render(["A & <B>", None]) == "<p>A &amp; &lt;B&gt;</p>"
        strict = JinjaBody("{{ party.name.nope }}", "s.j2", as_html=False)
        strict.bind({"party.name": 0})
        with pytest.raises(UndefinedError):
            strict.render(["x"])
        mutating = JinjaBody("{% set d = {} %}{{ d.update({'a': 1}) }}", "m.j2", as_html=False)
        with pytest.raises(TemplateRefused, match="the sandbox refused the template"):
            mutating.render([])
