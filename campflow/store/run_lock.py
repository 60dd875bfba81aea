"""One run per operation: a session-level advisory lock, held on a connection of its own.

PostgreSQL drops a session-level lock with its session: a terminated backend, a restarted
server or a cut network frees the operation for another run without a word to the run that
held it. So the run checks, before each step and before each batch a kind claims, that its
lock connection is alive and still holds the lock (one cheap `select` on pg_locks). Once the
lock is lost the run claims no new work: the check raises `RunLockLost`, and the run fails
saying what it did. Releasing a lock whose connection died never raises.
"""

from __future__ import annotations

import datetime as dt
import threading
from types import TracebackType
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from campflow.errors import CampflowError
from campflow.store import db

LOCK_RUN = 2  # advisory lock namespace: one run of an operation at a time

_HELD = text("""
    select exists (select from pg_locks where pid = pg_backend_pid() and locktype = 'advisory'
                   and classid = :ns and objid = :op and objsubid = 2 and granted)""")


class RunLockLost(CampflowError):
    """The run no longer holds its operation's lock: it must claim no new work."""


class RunBusy(CampflowError):
    """Another run holds the operation's lock."""


def no_check() -> None:
    """The lock check of a step run outside a locked run (tests, scripts): nothing to check."""


class RunLock:
    """The lock of one run of an operation, on its own autocommit connection.

    `check` may be called from the step tasks' threads at once: the connection is used by one
    of them at a time.
    """

    def __init__(self, operation: str, operation_id: int) -> None:
        self.operation = operation
        self.params = {"ns": LOCK_RUN, "op": operation_id}
        self.connection: Any = None
        self.lost = ""  # why the lock was lost; empty while it is held
        self.since: dt.datetime | None = None  # the database's clock when the lock was taken
        self.mutex = threading.Lock()

    def acquire(self) -> bool:
        """Take the lock now, or False when another run holds it."""
        # autocommit: no transaction stays open for the whole run on this connection
        self.connection = db.engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        taken, self.since = self.connection.execute(
            text("select pg_try_advisory_lock(:ns, :op), clock_timestamp()"), self.params).one()
        if taken:
            return True
        self.connection.close()
        self.connection = None
        return False

    def check(self) -> None:
        """Raise RunLockLost unless the lock connection is alive and still holds the lock."""
        with self.mutex:
            if not self.lost:
                try:
                    held = self.connection.scalar(_HELD, self.params)
                except SQLAlchemyError as exc:
                    held = False
                    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                    self.lost = f"its database connection was lost ({reason})"
                if not held and not self.lost:
                    self.lost = "its database session no longer holds the lock"
        if self.lost:
            raise RunLockLost(f"the run lost its lock on operation {self.operation}: {self.lost}; "
                              "it stopped claiming work so that no other run could do the same work twice")

    def held(self) -> bool:
        """Whether the lock is still held (checked now)."""
        try:
            self.check()
        except RunLockLost:
            return False
        return True

    def release(self) -> None:
        """Unlock and close; a dead connection is only discarded (its session, and lock, ended)."""
        if self.connection is None:
            return
        connection, self.connection = self.connection, None
        with self.mutex:
            try:
                unlocked = connection.scalar(text("select pg_advisory_unlock(:ns, :op)"), self.params)
            except SQLAlchemyError:
                unlocked = False
            if not unlocked:
                # never give the pool a connection that may still hold the lock, nor a dead one
                connection.invalidate()
            connection.close()

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise RunBusy(f"operation {self.operation} is being run by another run; try again when it ends")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
