"""The Prefect side of a campflow installation: its server, its deployments, its workers.

Three setups share these pieces:
- one laptop: `campflow server` and `campflow serve` (the deployments' flows run in that process);
- one server: the same two as services, the UI on 127.0.0.1:4200;
- several machines: `campflow deploy` once (prefect.yaml on the `campflow` process work pool),
  then `campflow worker` on each machine.

prefect.yaml is the one definition of the deployments: `prefect deploy` reads it, and `campflow
serve` builds its deployments from it (`definitions()`, `deployments()`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from campflow.errors import CampflowError
from campflow.orchestration.local_server import prefect_bin  # noqa: F401  (used by the CLI too)
from campflow.store import db

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_DIR / "prefect.yaml"
WORK_POOL = "campflow"  # the work pool prefect.yaml's deployments use; `campflow deploy` creates it
PREFECT_DATABASE = "prefect"


def prefect_database_url(name: str = PREFECT_DATABASE) -> str:
    """The Prefect server's own database: `name` beside campflow's, or SQLite when embedded.

    The embedded PostgreSQL (pgserver) lacks the `pg_trgm` extension the Prefect server needs,
    so with no CAMPFLOW_DATABASE_URL the server keeps its state in SQLite under $CAMPFLOW_HOME.
    """
    if not os.environ.get("CAMPFLOW_DATABASE_URL"):
        home = db.campflow_home()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    campflow_url = make_url(db.database_url())
    ensure_database(campflow_url.render_as_string(hide_password=False), name)
    return campflow_url.set(drivername="postgresql+asyncpg", database=name, query={}).render_as_string(
        hide_password=False)


def ensure_database(url: str, name: str) -> None:
    """Create database `name` on campflow's PostgreSQL server if missing, with `pg_trgm` in it."""
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.scalar(text("select 1 from pg_database where datname = :n"), {"n": name}):
                conn.execute(text(f'create database "{_identifier(name)}"'))
        admin.dispose()
        prefect_db = create_engine(make_url(url).set(database=name), isolation_level="AUTOCOMMIT")
        with prefect_db.connect() as conn:
            conn.execute(text("create extension if not exists pg_trgm"))
        prefect_db.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one clear message
        shown = make_url(url).render_as_string(hide_password=True)
        raise CampflowError(f"cannot prepare the Prefect database {name!r} on {shown}: "
                            f"{str(exc).splitlines()[0]}") from None


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise CampflowError(f"database name {name!r} must be letters, digits and _")
    return name


def server_env(host: str, port: int, database: str = PREFECT_DATABASE) -> dict[str, str]:
    """The environment `prefect server start` needs for campflow's setup."""
    env = dict(os.environ)
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_database_url(database),
        PREFECT_SERVER_API_HOST=host,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://{host}:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
    )
    env.pop("PREFECT_API_URL", None)  # the server must not talk to another one
    return env


def worker_env() -> dict[str, str]:
    """The environment for workers and deploys: the project directory and the API URL."""
    from campflow.orchestration.schedules import api_url

    env = dict(os.environ)
    env.setdefault("CAMPFLOW_PROJECT_DIR", str(PROJECT_DIR))
    env["PREFECT_API_URL"] = api_url()
    return env


@dataclass(frozen=True)
class Definition:
    """One deployment of prefect.yaml, as both `prefect deploy` and `campflow serve` use it."""

    name: str
    entrypoint: str  # flows/run_operation.py:run_operation
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    schedules: tuple[dict[str, Any], ...]  # empty: the deployment's schedules are left as they are
    work_pool: str
    work_queue: str

    def load_flow(self) -> Any:
        """The flow the entrypoint names, imported as a module of this project."""
        path, _, attribute = self.entrypoint.partition(":")
        return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)


def definitions(path: Path = PREFECT_YAML) -> list[Definition]:
    """The deployments prefect.yaml defines, in its order."""
    found = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Definition(
        name=entry["name"], entrypoint=entry["entrypoint"], description=entry.get("description") or "",
        tags=tuple(entry.get("tags") or ()), parameters=dict(entry.get("parameters") or {}),
        schedules=tuple(entry.get("schedules") or ()), work_pool=entry["work_pool"]["name"],
        work_queue=entry["work_pool"].get("work_queue_name") or "default")
        for entry in found["deployments"]]


def deployments(path: Path = PREFECT_YAML) -> list[Any]:
    """prefect.yaml's deployments for `campflow serve`: same names, descriptions, tags,
    parameters and schedules, run in the serving process instead of a work pool.

    A deployment with no schedules in the file sends none, as `prefect deploy` does, so the
    server keeps the ones it has: the operations' schedules on run-operation (a deployment
    registered with an empty list loses all its schedules when one of them has no slug). One with
    schedules sends them by slug: the server updates those and keeps the others.
    """
    built = []
    for definition in definitions(path):
        deployment = definition.load_flow().to_deployment(
            name=definition.name, description=definition.description, tags=list(definition.tags),
            parameters=definition.parameters, schedules=[_schedule(s) for s in definition.schedules])
        if not definition.schedules:
            deployment.model_fields_set.discard("schedules")  # not sent: the server's stay
        built.append(deployment)
    return built


def _schedule(config: dict[str, Any]) -> Any:
    """A prefect.yaml schedule (interval, cron or rrule, with slug, timezone, active, parameters)."""
    from prefect.schedules import Cron, Interval, RRule

    kinds = {"interval": Interval, "cron": Cron, "rrule": RRule}
    allowed = set(kinds) | {"slug", "timezone", "active", "parameters"}
    given = [kind for kind in kinds if kind in config]
    if len(given) != 1 or set(config) - allowed:
        raise CampflowError(f"prefect.yaml: a schedule needs one of {sorted(kinds)} and only "
                            f"{sorted(allowed - set(kinds))} beside it; got {config!r}")
    return kinds[given[0]](config[given[0]], timezone=config.get("timezone"), active=config.get("active", True),
                           parameters=config.get("parameters") or {}, slug=config.get("slug"))


def serve(limit: int | None = None, on_ready: Callable[[str, list[Any]], None] | None = None) -> None:
    """Register the deployments, sync the operations' schedules, then run what they schedule."""
    import asyncio

    from prefect.runner import Runner

    from campflow.orchestration.schedules import api_url, sync

    url = api_url()
    _check_reachable(url)
    os.environ["PREFECT_API_URL"] = url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        runner = Runner(name="campflow-serve", pause_on_shutdown=False, limit=limit)
        for deployment in deployments():
            runner.add_deployment(deployment)  # leaves the operations' schedules in place
        changes = sync()  # creates them on a new server, and catches up with changes made meanwhile
        if on_ready:
            on_ready(url, changes)
        asyncio.run(runner.start())


def _check_reachable(url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise CampflowError(f"the Prefect server at {url} is unreachable; start it with `campflow server` "
                            "or set PREFECT_API_URL")
