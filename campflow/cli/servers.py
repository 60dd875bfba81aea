"""`campflow server`, `serve`, `worker`, `deploy` and `schedules`: campflow on a Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer

from campflow.cli.common import console, escape, print_json, print_table
from campflow.errors import CampflowError

schedules_app = typer.Typer(help="Schedules on the operations' dates (Prefect RRules).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("deploy")(deploy)
    app.add_typer(schedules_app, name="schedules")


def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the UI and API.")] = 4200,
    database: Annotated[str, typer.Option(help="Name of the Prefect server's own PostgreSQL database, "
                                               "beside campflow's (ignored when embedded).")] = "prefect",
) -> None:
    """Start the Prefect server (UI and API) with its state in PostgreSQL beside campflow's.

    With CAMPFLOW_DATABASE_URL set, the server keeps its state in the database `prefect` on the
    same PostgreSQL (created with pg_trgm when missing); with the embedded PostgreSQL it uses
    SQLite under $CAMPFLOW_HOME. Point the other commands at it with
    `export PREFECT_API_URL=http://127.0.0.1:4200/api` (the default of serve, worker, schedules).

    Example: campflow server --port 4200
    """
    from campflow.serving import prefect_bin, server_env

    env = server_env(host, port, database)
    shown = env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    from sqlalchemy.engine import make_url

    console.print(f"Prefect UI on [bold]http://{host}:{port}[/], state in "
                  f"{escape(make_url(shown).render_as_string(hide_password=True))}")
    console.print(f"[dim]export PREFECT_API_URL=http://{host}:{port}/api[/]")
    _exec([prefect_bin(), "server", "start", "--host", host, "--port", str(port)], env)


def serve(
    limit: Annotated[int | None, typer.Option(help="Most flow runs at once (default: no limit).")] = None,
) -> None:
    """Run the deployments' flows in this process: scheduled operation runs, the UI's Custom
    runs and Retries (one machine; for several, use `campflow deploy` and `campflow worker`).

    Registers run-operation, apply-specs, import-targets, import-answers, sync-schedules,
    publish-package, approve-order and local-approval (deployment name `campflow`), syncs the
    operations' schedules, then waits for work.

    Example: PREFECT_API_URL=http://127.0.0.1:4200/api campflow serve
    """
    from campflow.serving import serve as run

    def ready(url: str, changes) -> None:
        console.print("serving run-operation, apply-specs, import-targets, import-answers, sync-schedules, "
                      "publish-package, approve-order and local-approval (deployments [bold]*/campflow[/])")
        console.print(f"on {escape(url)}; Ctrl-C stops")
        _print_changes(changes, as_json=False)

    run(limit, ready)


def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take runs from.")] = "campflow",
    limit: Annotated[int | None, typer.Option(help="Most flow runs at once on this machine.")] = None,
) -> None:
    """Start a worker on the `campflow` process work pool (one per machine; see `campflow deploy`).

    Each flow run starts as a process in this project's directory (CAMPFLOW_PROJECT_DIR), with
    this machine's CAMPFLOW_DATABASE_URL and channels.

    Example: campflow worker --limit 4
    """
    from campflow.serving import prefect_bin, worker_env

    command = [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"]
    if limit:
        command += ["--limit", str(limit)]
    _exec(command, worker_env())


def deploy() -> None:
    """Create the work pool and the deployments of prefect.yaml, then sync the schedules.

    Example: PREFECT_API_URL=http://server:4200/api campflow deploy
    """
    from campflow.orchestration import schedules
    from campflow.serving import PROJECT_DIR, WORK_POOL, prefect_bin, worker_env

    env = worker_env()
    pools = subprocess.run([prefect_bin(), "work-pool", "inspect", WORK_POOL], env=env, capture_output=True)
    if pools.returncode != 0:
        _run([prefect_bin(), "work-pool", "create", WORK_POOL, "--type", "process"], env)
    _run([prefect_bin(), "--no-prompt", "deploy", "--all"], env, cwd=str(PROJECT_DIR))
    os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"]
    _print_changes(schedules.sync(), as_json=False)


@schedules_app.command("sync")
def sync(
    operations: Annotated[list[str] | None, typer.Argument(help="Only these operation codes.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Show what would change; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make the run-operation deployment's schedules match the operations' dates and cadences:
    create, update, and remove those of finished, deleted or past operations.

    Example: campflow schedules sync --check
    """
    from campflow.orchestration import schedules
    _print_changes(schedules.sync(operations or None, check_only=check), as_json)


@schedules_app.command("show")
def show(
    operations: Annotated[list[str] | None, typer.Argument(help="Only these operation codes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the RRule each operation calls for (reads only the database).

    Example: campflow schedules show SALON-ERP-2026
    """
    from campflow.orchestration import schedules
    wanted = schedules.wanted_schedules(operations or None)
    if as_json:
        print_json([{"operation": w.operation, "rrule": w.rrule, "timezone": w.timezone, "detail": w.reason}
                    for w in wanted])
        return
    print_table("Operation schedules", ["operation", "schedule", "rrule"],
                [(w.operation, w.reason, w.rrule or "—") for w in wanted])


def _print_changes(changes, as_json: bool) -> None:
    if as_json:
        print_json([c.__dict__ for c in changes])
        return
    print_table("Schedules", ["operation", "action", "detail"], [(c.operation, c.action, c.detail) for c in changes])


def _exec(command: list[str], env: dict[str, str]) -> None:
    sys.stdout.flush()
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        raise CampflowError(f"cannot start {command[0]}: {exc}") from None


def _run(command: list[str], env: dict[str, str], cwd: str | None = None) -> None:
    done = subprocess.run(command, env=env, cwd=cwd)
    if done.returncode != 0:
        raise CampflowError(f"`{' '.join(command[1:])}` failed (exit {done.returncode})")
