"""The `run-operation` flow: one task run per step, wired as the operation's DAG.

Each step task, in one transaction: entry steps take in the operation's targets, the
step's kind processes its `to_process` parties, contacts and parties agree on statuses,
events are recorded, and the step's finished parties are routed on. A crash rolls the step
back; running again resumes, and nothing is ever done twice for a party in a step.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.states import Completed
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from campflow import db
from campflow.catalog import load_field_catalog
from campflow.errors import CampflowError
from flows.compiler import OperationPlan, StepPlan, compile_operation, thaw
from flows.run_failure import run_failure
from flows.retries import error_of, may_heal
from flows.run_lock import RunLock, no_check
from tasks import routing
from tasks.registry import StepContext, StepKind, step_kind
from tasks.step_states import settle_step_states

# the plan of each operation being run in this process, compiled once by its flow run for
# all its step tasks (the advisory lock means one run per operation at a time)
_RUN_PLANS: dict[str, tuple[OperationPlan, int]] = {}
# the lock of each operation being run in this process: its steps check it before claiming work
_RUN_LOCKS: dict[str, RunLock] = {}


@dataclass
class StepReport:
    code: str
    kind: str
    state: str = "Completed"
    reason: str = ""
    entered: int = 0
    processed: int = 0
    events: int = 0
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    routes: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    step_state: str = ""  # the step's state once it ran: finished when nothing is left for it


def load_plan(operation: str) -> tuple[OperationPlan, int]:
    from campflow.apply import export_operation
    from campflow.operations import find_operation

    with db.session() as session:
        op_id = find_operation(session, operation).id
        return compile_operation(export_operation(session, operation)), op_id


def output_root() -> Path:
    return Path(os.environ.get("CAMPFLOW_OUTPUT_DIR", "out")).resolve()


def run_folder() -> str:
    """The folder of this flow run's outputs: `<UTC date-time it was created>-<first 8 of its id>`.

    Each step writes into its own subfolder of it, so no two runs nor two steps of one run
    share a file. The name comes from the flow run alone: a retry of the run (a UI Retry)
    writes into the same folder. Outside a flow run (scripts, tests) every call gets a new one.
    """
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None:
        return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    created = flow_run.created or flow_run.expected_start_time or dt.datetime.now(dt.timezone.utc)
    return f"{created.astimezone(dt.timezone.utc):%Y%m%d-%H%M%S}-{flow_run.id.hex[:8]}"


def artifact_key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def process_step(operation: str, step_code: str, *, dry_run: bool = False, scheduled: bool = False,
                 route_only: bool = False, resend_unknown: bool = False,
                 now: dt.datetime | None = None) -> StepReport:
    """Everything one step does, in one transaction (rolled back for a dry run).

    `route_only` is "répartir les tiers" by hand: no entry, no processing, only routing.
    """
    lock = _RUN_LOCKS.get(operation)
    check_lock = lock.check if lock else no_check
    check_lock()  # a run that lost its lock starts no step
    plan, op_id = _RUN_PLANS.get(operation) or load_plan(operation)
    step = plan.step(step_code)
    kind = step_kind(step.kind)
    report = StepReport(step.code, step.kind)
    now = now or dt.datetime.now(dt.timezone.utc)
    with db.session() as session:
        ids = routing.step_ids(session, op_id)
        step_id = ids[step.code]
        # plans were costed for whole tables: JIT compiling them costs more than it saves
        session.execute(text("set local jit = off"))
        catalog = load_field_catalog(session)
        report.before = routing.status_counts(session, step_id)
        if not route_only:
            if step.entry:
                report.entered = routing.enter_targets(session, plan, step, op_id, ids, catalog)
            if scheduled and not step.is_due(now):
                report.state, report.reason = "Skipped", f"not due before {step.run_at:%Y-%m-%d %H:%M %Z}"
            else:
                _run_kind(session, step, kind, op_id, step_id, operation, dry_run, report, resend_unknown,
                          check_lock)
        routing.sync_contacts(session, step_id)
        if step.event and not dry_run:
            report.events = routing.record_events(session, step_id, op_id, step.event)
        if report.state != "Skipped":
            report.routes = [asdict(r) for r in routing.route(session, plan, step, op_id, ids, catalog)]
        report.after = routing.status_counts(session, step_id)
        if not kind.automated and not route_only and report.state != "Skipped":
            report.reason = "; ".join(filter(None, (_waiting_reason(report.after.get("to_process", 0), kind),
                                                    report.reason)))
        if not (report.entered or report.processed or report.outputs or any(r["routed"] for r in report.routes)) \
                and report.state != "Skipped":
            report.state = "Skipped"
            report.reason = report.reason or _idle_reason(report)
        if dry_run:
            session.rollback()
    if not dry_run:  # in a short transaction of its own: steps running side by side settle in turn
        with db.session() as session:  # every step's: parties this one routed on may reopen a finished one
            ran = "" if route_only else step.code  # routing by hand takes in no target
            report.step_state = settle_step_states(session, plan, op_id, ran).get(step.code) or ""
    return report


def _run_kind(session, step: StepPlan, kind, op_id: int, step_id: int, operation: str,
              dry_run: bool, report: StepReport, resend_unknown: bool = False,
              check_lock: Callable[[], None] = no_check) -> None:
    waiting = report.before.get("to_process", 0) + report.entered
    if not kind.automated:  # process_step says how many still wait, once the kind ran
        if kind.run is None or dry_run or not waiting:
            return
    elif kind.run is None:
        return
    elif dry_run:
        report.processed = waiting
        report.reason = f"dry run: would process {waiting} parties"
        return
    context = StepContext(op_id, operation, step_id, step.code, step.kind, thaw(step.settings) or {},
                          output_root() / operation / run_folder() / step.code, resend_unknown=resend_unknown,
                          check_lock=check_lock)
    outcome = kind.run(session, context)
    report.processed = outcome.processed
    report.outputs = [str(p) for p in outcome.outputs]
    if outcome.message:
        report.reason = "; ".join(filter(None, (report.reason, outcome.message)))


def _waiting_reason(waiting: int, kind: StepKind) -> str:
    return f"{waiting} parties wait for {kind.waits_for}" if waiting else ""


def _idle_reason(report: StepReport) -> str:
    if not sum(report.after.values()):
        return "no party has reached this step"
    return "nothing to process and no party to route"


@task(task_run_name="{step_code} {kind}", cache_policy=NO_CACHE)  # state lives in PostgreSQL
def run_step(operation: str, step_code: str, kind: str, dry_run: bool = False,
             scheduled: bool = False, resend_unknown: bool = False) -> StepReport:
    """Run one step of an operation and route its finished parties."""
    progress = create_progress_artifact(0.0, key=artifact_key(operation, step_code, "progress"),
                                        description=f"{step_code} {kind} of {operation}")
    report = process_step(operation, step_code, dry_run=dry_run, scheduled=scheduled,
                          resend_unknown=resend_unknown)
    update_progress_artifact(progress, 100.0)
    _step_artifacts(operation, report)
    get_run_logger().info("%s %s: %s", step_code, report.state, report.reason or "done")
    if report.state == "Skipped":
        return Completed(name="Skipped", message=report.reason, data=report)  # type: ignore[return-value]
    return report


def _step_artifacts(operation: str, report: StepReport) -> None:
    statuses = sorted(set(report.before) | set(report.after))
    table = [{"status": s, "before": report.before.get(s, 0), "after": report.after.get(s, 0)} for s in statuses]
    table += [{"status": f"→ {r['target']} ({r['rule']})", "before": "", "after": r["routed"]}
              for r in report.routes]
    create_table_artifact(key=artifact_key(operation, report.code), table=table or [{"status": "none"}],
                          description=f"{report.code} {report.kind}: {report.state} {report.reason}")


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
        _RUN_PLANS[operation], _RUN_LOCKS[operation] = (plan, op_id), lock
        try:
            if not dry_run:
                _start(op_id)
            reports = _run_steps(plan, operation, steps, dry_run, scheduled, resend_unknown, lock)
        finally:
            _RUN_PLANS.pop(operation, None)
            _RUN_LOCKS.pop(operation, None)
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


def _run_steps(plan: OperationPlan, operation: str, only: list[str] | None, dry_run: bool,
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
        options = run_step.with_options(name=name, task_run_name=name, tags=[operation, step.kind],
                                        retries=kind.retries, retry_delay_seconds=kind.retry_delay_seconds,
                                        retry_condition_fn=retry_while_locked)
        futures[step.code] = options.submit(operation, step.code, step.kind, dry_run, scheduled, resend_unknown,
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
