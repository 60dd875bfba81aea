"""The `run-operation` flow: one task run per step, of its kind's task (`tasks.steps.kind_task`), wired as the
operation's DAG. The flow compiles the operation's plan once, holds the run lock, and passes
both to each step task as parameters."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from campflow.core.compiler import OperationPlan
from campflow.core.kinds import step_kind
from campflow.errors import CampflowError
from campflow.store import db
from campflow.store.run_lock import RunLock
from tasks.retries import error_of, may_heal
from tasks.run_failure import run_failure
from tasks.steps import StepReport, artifact_key, kind_task, load_plan, process_step

# names the CLI, the other flows and scripts import from here
__all__ = ["artifact_key", "funnel_markdown", "load_plan", "process_step", "run_operation"]


@flow(name="run-operation", flow_run_name="{operation}")
def run_operation(operation: str, steps: list[str] | None = None, dry_run: bool = False,
                  scheduled: bool = False, resend_unknown: bool = False) -> list[dict[str, Any]]:
    """Run an operation's steps in dependency order; returns one report per step.

    Args:
        operation: the operation code, e.g. SALON-ERP-2026.
        steps: only these steps (default: all).
        dry_run: show who would be processed and routed; change nothing.
        scheduled: a scheduled run leaves steps alone before their run_at.
        resend_unknown: send again the messages whose fate a crash left unknown.
    """
    plan, op_id = load_plan(operation)
    unknown = sorted(set(steps or ()) - {s.code for s in plan.steps})
    if unknown:
        raise CampflowError(f"operation {operation} has no action step {', '.join(unknown)}")
    with RunLock(operation, op_id) as lock:
        if not dry_run:
            _start(op_id)
        reports = _run_steps(plan, op_id, operation, steps, dry_run, scheduled, resend_unknown, lock)
        lost = "" if lock.held() else lock.lost
    create_markdown_artifact(key=artifact_key(operation, "funnel"), markdown=funnel_markdown(operation, reports),
                             description=f"Funnel of {operation}")
    if lost or any(r["state"] == "Failed" for r in reports):
        raise run_failure(plan, op_id, reports, lock.since, lost)
    return reports


def _start(op_id: int) -> None:
    with db.session() as session:
        session.execute(text("update operation set state = 'in_progress', updated_at = now() "
                             "where id = :op and state = 'in_preparation'"), {"op": op_id})


def _run_steps(plan: OperationPlan, op_id: int, operation: str, only: list[str] | None, dry_run: bool,
               scheduled: bool, resend_unknown: bool, lock: RunLock) -> list[dict[str, Any]]:
    def retry_while_locked(task, task_run, state) -> bool:
        """A step is retried only while the run holds its lock, and only for an error that may heal
        (a server down, a timeout): a spec or configuration error fails at once (Prefect asks)."""
        return lock.held() and may_heal(error_of(state))

    futures = {}
    for step in plan.steps:
        if only and step.code not in only:
            continue
        kind = step_kind(step.kind)
        name = f"{step.code} {step.kind}"
        options = kind_task(kind).with_options(task_run_name=name, tags=[operation, step.kind],
                                               retry_condition_fn=retry_while_locked)
        futures[step.code] = options.submit(operation, step.code, step.kind, dry_run, scheduled, resend_unknown,
                                            plan=plan, op_id=op_id, check_lock=lock.check,
                                            wait_for=[futures[s] for s in step.sources if s in futures])
    reports = []
    for code, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            report = state.result()
            if isinstance(report, StepReport):
                report.state = "Skipped" if state.name == "Skipped" else report.state
                reports.append(asdict(report))
                continue
        reports.append(asdict(StepReport(code, plan.step(code).kind, state="Failed" if state.is_failed()
                                         else state.name, reason=_failure_reason(state))))
    return reports


def _failure_reason(state) -> str:
    """Why a step task ended so, in one line: a domain error as it is, any other by its cause."""
    error = state.result(raise_on_failure=False) if state.is_failed() else None
    if isinstance(error, CampflowError):
        return str(error)
    if isinstance(error, DBAPIError):  # the SQL and a link to SQLAlchemy's docs are for the logs
        return f"database error: {_first_line(error.orig)}"
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {_first_line(error)}"
    return state.message or ""


def _first_line(error: BaseException | None) -> str:
    return next(iter(str(error).strip().splitlines()), "")


def funnel_markdown(operation: str, reports: list[dict[str, Any]]) -> str:
    lines = [f"# {operation}", "", "| step | kind | state | entered | processed | to process | done | routed |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in reports:
        after = r["after"]
        done = sum(v for k, v in after.items() if k != "to_process")
        routed = ", ".join(f"{x['target']} {x['routed']}" for x in r["routes"]) or "—"
        lines.append(f"| {r['code']} | {r['kind']} | {r['state']} | {r['entered']} | {r['processed']} | "
                     f"{after.get('to_process', 0)} | {done} | {routed} |")
    return "\n".join(lines)
