"""`campflow run` and `campflow distribute`: run an operation now, or route one step by hand."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from campflow.cli.common import JSON_OPTION_HELP, console, print_json, print_table
from campflow.errors import CampflowError


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("distribute")(distribute)


def print_funnel(operation: str, reports: list[dict[str, Any]]) -> None:
    rows = []
    for r in reports:
        after = r["after"]
        rows.append((r["code"], r["kind"], r["state"], r["entered"], r["processed"], after.get("to_process", 0),
                     sum(v for k, v in after.items() if k != "to_process"),
                     ", ".join(f"{x['target']} {x['routed']}" for x in r["routes"]) or "—", r["reason"]))
    print_table(f"{operation}: funnel", ("step", "kind", "state", "entered", "processed", "to process", "done",
                                         "routed", "note"), rows)


def run(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    step: Annotated[list[str] | None, typer.Option("--step", help="Only this step (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and who would be processed "
                                          "and routed; change nothing.")] = False,
    resend_unknown: Annotated[bool, typer.Option(
        "--resend-unknown", help="Send again the messages a crash left with an unknown fate "
        "(they may have been sent already; by default they are only reported).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
    as_: Annotated[str | None, typer.Option("--as", help="The operator acting (default: CAMPFLOW_OPERATOR): "
                   "a local entity's operator may run only its own operations (its child operations).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Also print Prefect's log, tracebacks included "
                     "(they always go to the flow run's log in the Prefect UI).")] = False,
) -> None:
    """Run an operation now as a Prefect flow run (`run-operation`) and print its funnel.
    Exits 1 when a step failed, after the funnel and one `error:` line saying what was done.

    Example: campflow run SALON-ERP-2026 --step S1 --dry-run;  campflow run SOLDES-LYON --as marie
    """
    from campflow.store import db
    from campflow.store.access import require_operation_access

    with db.session() as session:
        require_operation_access(session, operation, as_, "run")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the funnel says what matters; Prefect's own log (tracebacks) goes to its API, and here with --debug
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if debug else "WARNING")
    from campflow.orchestration.local_server import use_local_server

    use_local_server()
    from sqlalchemy.exc import DBAPIError

    from flows.run_operation import load_plan, run_operation
    from tasks.run_failure import RunFailed

    if dry_run and not as_json:
        console.print(str(load_plan(operation)[0]), highlight=False)
    try:
        with prefect_console(debug):
            reports = run_operation(operation, steps=step or None, dry_run=dry_run, resend_unknown=resend_unknown)
    except RunFailed as failed:
        show_reports(operation, failed.reports, as_json, dry_run)
        raise
    except DBAPIError as exc:  # the database went away outside any step (a step's failure is a RunFailed)
        raise CampflowError(f"the database connection failed while running {operation} "
                            f"({str(exc.orig).strip().splitlines()[0]}); what was done is recorded: "
                            "run again to finish") from exc
    show_reports(operation, reports, as_json, dry_run)


def show_reports(operation: str, reports: list[dict[str, Any]], as_json: bool, dry_run: bool) -> None:
    if as_json:
        print_json(reports)
    else:
        print_funnel(operation, reports)
        if dry_run:
            console.print("dry run: nothing was changed")


@contextlib.contextmanager
def prefect_console(debug: bool) -> Iterator[None]:
    """Prefect's log records stay off the terminal (they still reach the Prefect API) unless --debug."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [] if debug else [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)


def distribute(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    step: Annotated[str, typer.Option("--step", help="The step whose finished parties move on.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Route a step's finished parties along its routes now ("répartir les tiers").

    Example: campflow distribute SALON-ERP-2026 --step S2
    """
    from dataclasses import asdict

    from campflow.store.run_lock import RunLock
    from flows.run_operation import load_plan, process_step

    _, op_id = load_plan(operation)
    lock = RunLock(operation, op_id)
    if not lock.acquire():
        raise CampflowError(f"operation {operation} is being run; distribute when the run ends")
    try:
        report = process_step(operation, step, route_only=True, dry_run=dry_run)
    finally:
        lock.release()
    if as_json:
        print_json(asdict(report))
        return
    print_table(f"{operation} {step}: parties routed", ("to", "rule", "routed"),
                [(r["target"], r["rule"], r["routed"]) for r in report.routes])
