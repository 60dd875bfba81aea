"""Each test run gets its own PostgreSQL database on the machine's server."""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from campflow import db

ADMIN_URL = os.environ.get(
    "CAMPFLOW_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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
