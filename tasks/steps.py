"""The step task: everything one step of an operation does, in one transaction.

Entry steps take in the operation's targets, the step's kind (`campflow.core.kinds`) processes
its `to_process` parties, contacts and parties agree on statuses, events are recorded, and the
step's finished parties are routed on. A crash rolls the step back; running again resumes, and
nothing is ever done twice for a party in a step. The `run-operation` flow (flows/) submits one
task run per step, named after its kind.
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

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Completed
from sqlalchemy import text

from campflow.core.compiler import OperationPlan, StepPlan, compile_operation, thaw
from campflow.core.kinds import StepContext, StepKind, step_kind
from campflow.specs.export import export_operation
from campflow.store import db, routing
from campflow.store.catalog import load_field_catalog
from campflow.store.operations import find_operation
from campflow.store.run_lock import no_check
from campflow.store.step_states import settle_step_states


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
                 now: dt.datetime | None = None, plan: OperationPlan | None = None, op_id: int | None = None,
                 check_lock: Callable[[], None] = no_check) -> StepReport:
    """Everything one step does, in one transaction (rolled back for a dry run).

    `route_only` is "répartir les tiers" by hand: no entry, no processing, only routing.
    `plan` and `op_id` are the operation's frozen plan, compiled once by the flow run (loaded
    here when not given); `check_lock` raises once the run lost its lock on the operation.
    """
    check_lock()  # a run that lost its lock starts no step
    plan, op_id = (plan, op_id) if plan is not None and op_id is not None else load_plan(operation)
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
             scheduled: bool = False, resend_unknown: bool = False, plan: OperationPlan | None = None,
             op_id: int | None = None, check_lock: Callable[[], None] = no_check) -> StepReport:
    """Run one step of an operation and route its finished parties.

    The flow passes its frozen `plan` and the `check_lock` of the lock it holds: the task reads
    no hidden state (the plan is loaded from the database when it is not given).
    """
    progress = create_progress_artifact(0.0, key=artifact_key(operation, step_code, "progress"),
                                        description=f"{step_code} {kind} of {operation}")
    report = process_step(operation, step_code, dry_run=dry_run, scheduled=scheduled,
                          resend_unknown=resend_unknown, plan=plan, op_id=op_id, check_lock=check_lock)
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


def kind_task(kind: StepKind) -> Any:
    """The Prefect task of a step kind: the step task under the kind's name, with the kind's retries.

    Each step of an operation is a task run of its kind's task (`S1 emailing`), so the UI and the
    API group step runs by kind.
    """
    return run_step.with_options(name=kind.name, retries=kind.retries, retry_delay_seconds=kind.retry_delay_seconds)
