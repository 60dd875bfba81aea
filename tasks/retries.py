"""Which step errors are worth a retry: those that may heal by themselves.

A server down, a dropped connection, a lost or busy database, a timeout may be gone a few
seconds later; a spec, template or configuration error (an unknown channel, a refused login,
a refused sender) is still there on the next attempt, so its step fails at once instead of
failing three times. An exception may also say so itself with a `may_heal` class attribute.
"""

from __future__ import annotations

import errno
import smtplib
import socket

import psycopg
from sqlalchemy.exc import DBAPIError, OperationalError

# errnos of sockets whose peer or network may come back
_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                             errno.ETIMEDOUT, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET,
                             errno.EHOSTUNREACH, errno.EHOSTDOWN})


def may_heal(error: BaseException | None) -> bool:
    """Whether the error, or any error it was raised from or while handling, may heal.

    Domain errors are raised `from None` to keep their message short; their `__context__`
    still holds the socket or SMTP error they came from, and decides.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _heals(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _heals(error: BaseException) -> bool:
    declared = getattr(type(error), "may_heal", None)
    if declared is not None:
        return bool(declared)
    if isinstance(error, smtplib.SMTPResponseException):  # 4xx: try again later; 5xx: for good
        return 400 <= error.smtp_code < 500
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(error, OperationalError) or (isinstance(error, DBAPIError) and error.connection_invalidated):
        return True  # the server went away, restarts, or canceled a statement (lock or statement timeout)
    if isinstance(error, psycopg.OperationalError):
        return True
    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    return isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS


def error_of(state) -> BaseException | None:
    """The exception a failed Prefect state holds (None when it holds none)."""
    result = state.result(raise_on_failure=False)
    return result if isinstance(result, BaseException) else None
