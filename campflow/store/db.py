"""Where campflow's PostgreSQL is, and sessions on it.

`CAMPFLOW_DATABASE_URL` selects the database; when unset, an embedded PostgreSQL
(pgserver) under `$CAMPFLOW_HOME` (default `./.campflow`) is started and left running,
so the next command finds it at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from campflow.errors import CampflowError

MIGRATIONS = Path(__file__).resolve().parents[2] / "models" / "migrations"


def campflow_home() -> Path:
    return Path(os.environ.get("CAMPFLOW_HOME", ".campflow")).resolve()


def normalise_url(url: str) -> str:
    """Use psycopg 3 whatever driver the URL names (or none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise CampflowError(
            f"CAMPFLOW_DATABASE_URL must be a PostgreSQL URL; got {parsed.drivername!r}"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _private_runtime_dir() -> None:
    runtime = campflow_home() / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)  # pgserver's platformdirs insists on a private runtime dir
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


def embedded_url() -> str:
    """Start (or find running) the embedded PostgreSQL and return its URL."""
    _private_runtime_dir()
    import pgserver  # imported here: starting it costs time only when it is used

    pgdata = campflow_home() / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return normalise_url(server.get_uri())


def stop_embedded() -> bool:
    """Stop the embedded PostgreSQL if it runs; False when there was nothing to stop."""
    pgdata = campflow_home() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    _private_runtime_dir()
    import pgserver

    reset_caches()
    pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
    return True


@functools.cache
def database_url() -> str:
    url = os.environ.get("CAMPFLOW_DATABASE_URL")
    return normalise_url(url) if url else embedded_url()


@functools.cache
def engine() -> Engine:
    return create_engine(database_url(), pool_pre_ping=True)


@functools.cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(engine(), expire_on_commit=False)


@contextlib.contextmanager
def session() -> Iterator[Session]:
    """A session in one transaction: committed at the end, rolled back on error."""
    with _session_factory().begin() as s:
        yield s


def reset_caches() -> None:
    """Forget the engine (tests switch databases)."""
    if engine.cache_info().currsize:
        engine().dispose()
    for cached in (database_url, engine, _session_factory):
        cached.cache_clear()


def alembic_config(url: str | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    return config


def upgrade(revision: str = "head", url: str | None = None) -> None:
    """Bring the schema to `revision` (Alembic)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision() -> str | None:
    with engine().connect() as conn:
        exists = conn.scalar(text("select to_regclass('alembic_version')"))
        return conn.scalar(text("select version_num from alembic_version")) if exists else None
