"""Sending through a channel: the file and SMTP senders and one message's SMTP delivery.

SMTP connections come from the pool of `campflow.delivery.smtp_pool`; a connection the server dropped
between two messages is replaced without losing the message (nothing is accepted before DATA). `deliver` speaks MAIL / RCPT / DATA itself instead of
`sendmail` so that it knows, when the connection dies, whether the message could have been
accepted: only a drop after the DATA payload went out leaves a message of unknown fate.
"""

from __future__ import annotations

import re
import smtplib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import NamedTuple

from campflow.delivery.smtp_pool import SmtpChannelLike, _close, _give_back, _rate_limit, _server_key, _take
from campflow.errors import CampflowError

# messages claimed and not yet settled per SMTP connection (SmtpSender.window): the one on the
# wire and those claimed ahead, so that a connection never waits for the outbox's commit (about
# a millisecond); the bound on messages of unknown fate after a crash (docs/sending.md)
IN_FLIGHT_PER_CONNECTION = 4
FILE_WINDOW = 500  # messages claimed together for a file channel (writing a file risks no duplicate)

SENT, FAILED, DEFERRED, UNKNOWN = "sent", "failed", "deferred", "unknown"


class ChannelError(CampflowError):
    """The channel cannot send at all (server down, login or sender refused); nothing more is sent."""


def sender_address(sender: str) -> str:
    """The bare address of `Name <address>` (or of a bare address); ValueError when there is none."""
    name, address = parseaddr(sender)
    if "@" not in address or any(c.isspace() for c in address):
        raise ValueError(f"must be an address, display name allowed, e.g. 'Salon ERP <salon@example.com>'; "
                         f"got {sender!r}")
    return address


# --- sending ---------------------------------------------------------------------------------


class Outgoing(NamedTuple):
    """A message ready to go: envelope recipient, whole message (CRLF lines), its .eml name."""

    recipient: str
    data: bytes
    filename: str


@dataclass(slots=True)
class Delivery:
    """What became of one message: sent, failed (for good), deferred (try later) or unknown."""

    state: str
    reply: str | None = None
    path: str | None = None


Take = Callable[[], "tuple[object, Outgoing] | None"]  # the next message to send and its key; None: stop
Done = Callable[[object, "Delivery | None"], None]  # a message's outcome, by its key


class FileSender:
    """Writes each message to `<folder>/<filename>`."""

    writes_files = True
    workers = 1
    window = FILE_WINDOW

    def __init__(self, folder: Path, label: str) -> None:
        self.folder = folder
        self.label = label

    def check(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def submit(self, messages: Sequence[Outgoing], results: list[Delivery | None],
               stop: threading.Event) -> Callable[[], None]:
        """Write the messages now; the returned wait has nothing left to do."""
        for i, message in enumerate(messages):
            if stop.is_set():
                break
            path = self.folder / message.filename
            results[i] = Delivery(UNKNOWN)  # a crash while writing: the file may be half there
            path.write_bytes(message.data)
            results[i] = Delivery(SENT, None, str(path))
        return lambda: None

    def serve(self, take: Take, done: Done, stop: threading.Event) -> None:
        """Write the messages `take` gives until it gives None, each outcome to `done` (see SmtpSender.serve)."""
        self.check()
        while (item := take()) is not None:
            key, message = item
            if stop.is_set():
                done(key, None)
                continue
            path = self.folder / message.filename
            try:
                path.write_bytes(message.data)
            except BaseException:
                stop.set()
                done(key, Delivery(UNKNOWN))  # the file may be half there
                raise
            done(key, Delivery(SENT, None, str(path)))

    def send(self, messages: Sequence[Outgoing], results: list[Delivery | None]) -> None:
        self.submit(messages, results, threading.Event())()

    def close(self) -> None:
        pass


class SmtpSender:
    """Sends through one SMTP channel, on `concurrency` pooled connections in threads.

    `submit` returns at once: the caller prepares the next batch while this one is on the wire.
    `serve` is one connection's loop, for a caller that hands out messages one at a time.
    """

    writes_files = False

    def __init__(self, channel: SmtpChannelLike) -> None:
        self.channel = channel
        self.label = channel.label()
        self.envelope_from = sender_address(channel.sender)
        self.key = _server_key(channel)
        self.rate = _rate_limit(self.key, channel.rate)
        self.workers = channel.concurrency
        # at most this many messages claimed and not yet settled (campflow.store.sending keeps to it)
        self.window = channel.concurrency * IN_FLIGHT_PER_CONNECTION
        self.executor: ThreadPoolExecutor | None = ThreadPoolExecutor(self.workers, thread_name_prefix="smtp")

    def check(self) -> None:
        """Reach the server before anything is claimed: a server down fails the step at once."""
        _give_back(self.key, _take(self.channel))

    def submit(self, messages: Sequence[Outgoing], results: list[Delivery | None],
               stop: threading.Event) -> Callable[[], None]:
        """Start sending, filling `results` in place (left None: never attempted).

        The returned wait blocks until every connection is done, then raises ChannelError when
        the server went away (the other connections finish their message in hand and stop).
        """
        if self.executor is None:
            raise RuntimeError("this sender is closed")
        count = len(messages)
        shares = [[*((i, messages[i]) for i in range(k, count, self.workers)), None]
                  for k in range(min(self.workers, count))]  # a share per connection, each used at once
        futures = [self.executor.submit(self.serve, iter(share).__next__, results.__setitem__, stop)
                   for share in shares]

        def wait() -> None:
            errors = [f.exception() for f in futures]
            first = next((e for e in errors if isinstance(e, ChannelError)), None) or next(
                (e for e in errors if e is not None), None)
            if first is not None:
                raise first

        return wait

    def send(self, messages: Sequence[Outgoing], results: list[Delivery | None]) -> None:
        self.submit(messages, results, threading.Event())()

    def serve(self, take: Take, done: Done, stop: threading.Event) -> None:
        """Send the messages `take` gives, one at a time on one pooled connection, until it gives None.

        Each outcome goes to `done(key, delivery)` as soon as the server answered: None when
        the message was never attempted (after `stop` was set), UNKNOWN when the connection
        died after its payload went out. An error sets `stop` and is raised; the messages still
        to take are then left to the other connections (which give them back unattempted).
        """
        try:
            connection = _take(self.channel)
        except BaseException:
            stop.set()
            raise
        try:
            while (item := take()) is not None:
                key, message = item
                if stop.is_set():
                    done(key, None)
                    continue
                self.rate.wait()
                outcome: list[Delivery | None] = [None]
                try:
                    connection = self._deliver(connection, message, outcome, 0)
                finally:
                    done(key, outcome[0])
        except BaseException:
            stop.set()
            _close(connection)
            raise
        _give_back(self.key, connection)

    def _deliver(self, connection: smtplib.SMTP, message: Outgoing, results: list[Delivery | None],
                 i: int) -> smtplib.SMTP:
        """One message; returns the connection to go on with (a new one after a drop)."""
        try:
            results[i] = deliver(connection, self.envelope_from, message, results, i)
            return connection
        except SenderRefused as refused:
            raise self._refuses_sender(refused) from None
        except _Dropped:
            _close(connection)  # dropped before anything was accepted (idle timeout, 421): once more
        connection = self.channel.connect()
        try:
            results[i] = deliver(connection, self.envelope_from, message, results, i)
            return connection
        except BaseException as exc:
            _close(connection)
            if isinstance(exc, _Dropped):
                raise self._down(exc.reason) from None
            if isinstance(exc, SenderRefused):
                raise self._refuses_sender(exc) from None
            raise

    def _refuses_sender(self, refused: SenderRefused) -> ChannelError:
        host, port, _ = self.channel.server()
        return ChannelError(f"SMTP server {host}:{port} of channel '{self.channel.name}' refuses the sender "
                            f"<{self.envelope_from}>: {refused}; fix the channel's sender")

    def _down(self, reason: str) -> ChannelError:
        host, port, _ = self.channel.server()
        return ChannelError(f"SMTP server {host}:{port} of channel '{self.channel.name}' dropped the "
                            f"connection ({reason})")

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


class _Dropped(Exception):
    """The connection died before the message could have been accepted."""

    may_heal = True  # the step is retried (tasks.retries): a server that dropped us may be back

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SenderRefused(Exception):
    """The server refuses the channel's sender: every message would be refused."""


class MessageLost(ChannelError):
    """The connection died after the message went out: its fate is unknown."""

    may_heal = True  # a retry sends the others; the unknown one only with --resend-unknown


_LEADING_DOT = re.compile(rb"(?m)^\.")


def deliver(connection: smtplib.SMTP, envelope_from: str, message: Outgoing,
            results: list[Delivery | None], i: int) -> Delivery:
    """MAIL, RCPT, DATA for one recipient.

    Raises _Dropped when the connection died before DATA's payload (nothing accepted),
    MessageLost after it (results[i] then says UNKNOWN), SenderRefused when the server refuses
    the sender (every message would be refused).
    """
    try:
        code, reply = connection.docmd("MAIL", f"FROM:<{envelope_from}>")
        if code == 421:
            raise _Dropped(_reply(code, reply))
        if code != 250:
            connection.docmd("RSET")
            raise SenderRefused(_reply(code, reply))
        code, reply = connection.docmd("RCPT", f"TO:<{message.recipient}>")
        if code not in (250, 251):
            if code == 421:
                raise _Dropped(_reply(code, reply))
            connection.docmd("RSET")
            return _refused(code, reply)
        code, reply = connection.docmd("DATA")
        if code != 354:
            if code == 421:
                raise _Dropped(_reply(code, reply))
            connection.docmd("RSET")
            return _refused(code, reply)
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise _Dropped(str(exc) or type(exc).__name__) from None
    data = message.data
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    results[i] = Delivery(UNKNOWN)  # from here a dead connection may have delivered it
    try:
        connection.send(data + b".\r\n")
        code, reply = connection.getreply()
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise MessageLost(f"the connection died while the server took a message to {message.recipient} "
                          f"({exc or type(exc).__name__}); its fate is unknown") from None
    if code == 250:
        return Delivery(SENT, _reply(code, reply))
    return _refused(code, reply)


def _refused(code: int, reply: bytes | str) -> Delivery:
    text = _reply(code, reply)
    if 400 <= code < 500:
        return Delivery(DEFERRED, f"deferred by smtp: {text}")
    return Delivery(FAILED, f"refused by smtp: {text}")


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:500]
