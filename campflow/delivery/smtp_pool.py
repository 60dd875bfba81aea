"""SMTP connections kept per server and login, and the rate limits the steps of a process share.

Connections are kept in a module-level pool keyed by server and login, so the steps of a worker
process reuse them; a pooled connection answers NOOP before it is used again.
"""

from __future__ import annotations

import atexit
import smtplib
import threading
import time
from typing import Any, Protocol

from prefect_email.credentials import SMTPType

POOLED_PER_SERVER = 32  # idle connections kept per server


class SmtpChannelLike(Protocol):
    """What the senders and the pool read of an SMTP channel (`blocks.channels.SmtpChannel`,
    which imports them: they do not import it)."""

    name: str
    sender: str
    concurrency: int
    rate: float | None
    credentials: Any

    def label(self) -> str: ...

    def server(self) -> tuple[str, int, SMTPType]: ...

    def connect(self) -> smtplib.SMTP: ...


# --- the connection pool and the rate limits -------------------------------------------------

_POOL: dict[tuple, list[smtplib.SMTP]] = {}
_RATES: dict[tuple, RateLimit] = {}
_LOCK = threading.Lock()


def _server_key(channel: SmtpChannelLike) -> tuple:
    host, port, kind = channel.server()
    return host, port, kind.name, channel.credentials.username


def _take(channel: SmtpChannelLike) -> smtplib.SMTP:
    """A pooled connection that still answers, else a new one."""
    key = _server_key(channel)
    while True:
        with _LOCK:
            idle = _POOL.get(key)
            connection = idle.pop() if idle else None
        if connection is None:
            return channel.connect()
        try:
            if connection.noop()[0] == 250:
                return connection
        except (smtplib.SMTPException, OSError):
            pass
        _close(connection)


def _give_back(key: tuple, connection: smtplib.SMTP) -> None:
    with _LOCK:
        idle = _POOL.setdefault(key, [])
        if len(idle) < POOLED_PER_SERVER:
            idle.append(connection)
            return
    _close(connection, polite=True)


def _close(connection: smtplib.SMTP | None, polite: bool = False) -> None:
    if connection is None:
        return
    try:
        if polite:
            connection.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        connection.close()


def close_connections() -> int:
    """QUIT and close every pooled connection (at exit, and in tests); how many there were."""
    with _LOCK:
        pooled = [c for idle in _POOL.values() for c in idle]
        _POOL.clear()
    for connection in pooled:
        _close(connection, polite=True)
    return len(pooled)


atexit.register(close_connections)


class RateLimit:
    """A token bucket: on average `rate` messages per second, bursts of one second's worth at most."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate or 0.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= 1  # taken now, or reserved: the caller sleeps until it is there
            delay = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if delay:
            time.sleep(delay)


def _rate_limit(key: tuple, rate: float | None) -> RateLimit:
    with _LOCK:
        limit = _RATES.get(key)
        if limit is None or limit.rate != rate:
            limit = _RATES[key] = RateLimit(rate)
        return limit
