"""`campflow channels` and the SMTP senders: blocks on the Prefect API, pooled connections, rates."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from prefect_email import EmailServerCredentials

from blocks.channels import FileChannel, SmtpChannel, load_channel
from campflow.delivery import smtp_pool
from campflow.delivery.senders import SENT, ChannelError, Outgoing
from campflow.delivery.smtp_pool import RateLimit
from tests.conftest import free_port


@pytest.fixture
def saved(prefect, monkeypatch):
    """Channels saved by the test are deleted after it."""
    from campflow.cli.channels import saved_channels

    monkeypatch.setenv("SMTP_SECRET", "s3cr3t-Pa55")
    yield
    for name, channel in saved_channels():
        type(channel).delete(name)


def channel(port: int, concurrency: int = 1, rate: float | None = None) -> SmtpChannel:
    return SmtpChannel(credentials=EmailServerCredentials(smtp_server="127.0.0.1", smtp_port=port,
                                                          smtp_type="INSECURE"),
                       sender="Salon <salon@example.com>", concurrency=concurrency, rate=rate)


def messages(count: int) -> list[Outgoing]:
    return [Outgoing(f"r{i}@example.com", f"Subject: {i}\r\n\r\nbody {i}\r\n.leading dot\r\n".encode(), f"{i}.eml")
            for i in range(count)]


def send(sender, outgoing):
    results = [None] * len(outgoing)
    sender.send(outgoing, results)
    return results


class TestCli:
    def test_add_smtp_keeps_the_secret_out_of_sight(self, cli, saved):
        result = cli("channels", "add-smtp", "emailing", "--host", "smtp.example.com", "--port", "2525",
                     "--starttls", "--username", "salon@example.com", "--password-env", "SMTP_SECRET",
                     "--sender", "Salon ERP <salon@example.com>", "--concurrency", "4", "--rate", "50")
        assert result.code == 0, result.err
        assert "s3cr3t" not in result.out + result.err
        assert "SMTP channel emailing saved: smtp.example.com:2525 (starttls)" in result.out
        loaded = load_channel("emailing")
        assert isinstance(loaded, SmtpChannel)
        assert loaded.credentials.password.get_secret_value() == "s3cr3t-Pa55"
        assert (loaded.concurrency, loaded.rate, loaded.sender) == (4, 50.0, "Salon ERP <salon@example.com>")
        listed = cli("channels", "list", "--json")
        assert "s3cr3t" not in listed.out
        assert json.loads(listed.out) == [{
            "name": "emailing", "type": "smtp", "server": "smtp.example.com:2525", "security": "starttls",
            "username": "salon@example.com", "sender": "Salon ERP <salon@example.com>", "concurrency": 4,
            "rate": 50.0, "timeout": 30.0}]
        table = cli("channels", "list")
        assert "emailing" in table.out and "smtp.example.com:2525" in table.out

    @pytest.mark.parametrize("args, message", [
        (("Bad_Name", "--host", "h", "--sender", "a@b.fr"), "use lower-case letters, digits and dashes"),
        (("x", "--host", "h", "--sender", "a@b.fr", "--username", "u", "--password-env", "NOPE_UNSET"),
         "--password-env NOPE_UNSET: that environment variable is not set"),
        (("x", "--host", "h", "--sender", "a@b.fr", "--ssl", "--plain"),
         "choose one of --ssl, --starttls and --plain; got --ssl --plain"),
        (("x", "--host", "h", "--sender", "nobody"), "sender: must be an address"),
    ])
    def test_add_smtp_refuses_bad_arguments(self, cli, saved, args, message):
        result = cli("channels", "add-smtp", *args)
        assert result.code == 1
        assert message in " ".join(result.err.split())
        assert cli("channels", "list", "--json").out.strip() == "[]"

    def test_a_name_holds_one_channel(self, cli, saved, tmp_path):
        assert cli("channels", "add-file", "mass-emailing", "--folder", tmp_path).code == 0
        again = cli("channels", "add-smtp", "mass-emailing", "--host", "h", "--plain", "--sender", "a@b.fr")
        assert again.code == 1 and "exists already; add --overwrite" in again.err
        replaced = cli("channels", "add-smtp", "mass-emailing", "--host", "relay.example.com", "--plain",
                       "--sender", "a@b.fr", "--overwrite")
        assert replaced.code == 0, replaced.err
        assert [(c["name"], c["type"], c["server"]) for c in json.loads(cli("channels", "list", "--json").out)] == [
            ("mass-emailing", "smtp", "relay.example.com:25")]

    def test_add_file_and_list(self, cli, saved, tmp_path):
        assert cli("channels", "list").out.startswith("no channel saved")
        result = cli("channels", "add-file", "emailing", "--folder", tmp_path, "--sender", "Équipe <e@example.com>")
        assert result.code == 0, result.err
        loaded = load_channel("emailing")
        assert isinstance(loaded, FileChannel) and loaded.folder == str(tmp_path)
        assert json.loads(cli("channels", "list", "--json").out) == [
            {"name": "emailing", "type": "file", "sender": "Équipe <e@example.com>", "folder": str(tmp_path)}]

    def test_check_reaches_the_server_or_names_it(self, cli, saved, smtp):
        cli("channels", "add-smtp", "emailing", "--host", "127.0.0.1", "--port", str(smtp.port), "--plain",
            "--sender", "a@b.fr")
        result = cli("channels", "check", "emailing")
        assert result.code == 0 and "answers" in result.out
        dead = free_port()
        cli("channels", "add-smtp", "emailing", "--host", "127.0.0.1", "--port", str(dead), "--plain",
            "--sender", "a@b.fr", "--overwrite")
        result = cli("channels", "check", "emailing")
        assert result.code == 1
        assert f"cannot reach SMTP server 127.0.0.1:{dead} of channel 'emailing'" in result.err
        assert "no channel named 'other'" in cli("channels", "check", "other").err


class TestSmtpSender:
    def test_connections_are_reused_across_batches_and_steps(self, smtp):
        for _ in range(3):  # three steps, each with its sender, one connection in all
            sender = channel(smtp.port).open_sender()
            try:
                assert {r.state for r in send(sender, messages(5))} == {SENT}
            finally:
                sender.close()
        assert smtp.connections == 1
        assert len(smtp.received) == 15
        assert smtp.received[0][2].endswith(b"\r\n.leading dot\r\n")  # dot-stuffing undone by the server

    def test_a_connection_dropped_while_idle_is_replaced(self, smtp):
        sender = channel(smtp.port).open_sender()
        try:
            send(sender, messages(1))
            for idle in smtp_pool._POOL.values():  # the server closed it while it waited in the pool
                for connection in idle:
                    connection.sock.shutdown(socket.SHUT_RDWR)
            assert [r.state for r in send(sender, messages(2))] == [SENT, SENT]
        finally:
            sender.close()
        assert len(smtp.received) == 3 and smtp.connections == 2

    def test_parallel_connections(self, smtp):
        sender = channel(smtp.port, concurrency=3).open_sender()
        try:
            results = send(sender, messages(30))
        finally:
            sender.close()
        assert [r.state for r in results] == [SENT] * 30
        assert sorted(to[0] for _, to, _ in smtp.received) == sorted(f"r{i}@example.com" for i in range(30))
        assert smtp.connections == 3

    def test_refused_recipient_and_refused_sender(self, smtp):
        smtp.refuse["r1@example.com"] = "550 5.1.1 no such user"
        sender = channel(smtp.port).open_sender()
        try:
            results = send(sender, messages(3))
            assert [(r.state, r.reply) for r in results][1] == ("failed", "refused by smtp: 550 5.1.1 no such user")
            smtp.refuse_sender = "553 5.7.1 sender not allowed"
            with pytest.raises(ChannelError, match="refuses the sender <salon@example.com>: 553 5.7.1"):
                send(sender, messages(2))
        finally:
            sender.close()

    def test_rate_limit(self):
        limit = RateLimit(20)
        started = time.monotonic()
        threads = [threading.Thread(target=lambda: [limit.wait() for _ in range(10)]) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # 20 at once (a second's worth), then 10 more at 20 per second
        assert 0.45 <= time.monotonic() - started < 1.5
