"""The `local-approval` flow: a local entity answers its list in the Prefect UI.

The flow run waits with a typed form (`ListApproval`) the UI renders behind "Resume": the
party codes (or PARTY/CONTACT for one contact) to remove, whether to approve, and the operator's login. The answer goes through
the same functions as `campflow approvals remove/approve`, so the same refusals apply; a
refused answer asks again with the reason shown above the form. A run from a deployment
suspends while it waits and holds no process (`campflow.orchestration.waiting`).
"""

from __future__ import annotations

import datetime as dt
import math

from prefect import flow, get_run_logger
from prefect.input import RunInput
from pydantic import Field

from campflow.errors import CampflowError
from campflow.orchestration.waiting import earlier_refusal, record_refusal, wait_for_answer
from campflow.store import access, approval_lists, approvals, db
from campflow.store.identity import AccessDenied

POLL_SECONDS = 10  # how often a run paused in its process checks for an answer (tests make it short)
MAX_ANSWERS = 5  # refused answers before the run gives up
SHOWN_PARTIES = 500  # parties listed in the form's description; the rest are counted


class ListApproval(RunInput):
    """A local entity's answer on its list."""

    remove: list[str] = Field(default_factory=list, description="Party codes (TIERS) to remove from the list; "
                              "PARTY/CONTACT (e.g. P001/C2) removes one contact and keeps the party.")
    approve: bool = Field(default=True, description="Approve the list (after the removals).")
    operator: str = Field(default="", description="Your login: an operator of the entity (or of the central one).")


def describe(step: approvals.ApprovalStep, entity: str, rows: list[tuple], error: str = "") -> str:
    """The form's markdown: the list with codes and names, the deadline, a refused answer's reason."""
    lines = [f"**Answer refused:** {error}", ""] if error else []
    kept = sum(1 for r in rows if not r[4])
    lines += [f"## {entity}'s list in {step.place}", "",
              f"{step.operation_label} — {step.step_label}. **Deadline: {step.local(step.deadline)}**; "
              f"parties not approved by then are not contacted.", "",
              f"{len(rows)} parties, {kept} kept. Put the codes of the parties not to contact in *remove* "
              "(PARTY/CONTACT for one of a party's contacts: the party stays), tick *approve*, give your "
              "login in *operator*.", "",
              "| TIERS | NOM | VILLE | CONTACTS | kept |", "|---|---|---|---|---|"]
    for _, code, name, city, removed, removed_by, _, contacts in rows[:SHOWN_PARTIES]:
        labels = [(f"{c} {who}" if who else c, gone) for c, who, _, gone in contacts]
        shown = ", ".join(f"~~{label}~~" if gone else label for label, gone in labels)
        cells = (code, name or "", city or "", shown, f"no (removed by {removed_by})" if removed else "yes")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if len(rows) > SHOWN_PARTIES:
        lines.append(f"\n… and {len(rows) - SHOWN_PARTIES} more: `campflow approvals show` lists them all.")
    return "\n".join(lines)


def apply_answer(operation: str, step: str, entity: str, answer: ListApproval) -> dict:
    """Apply a form answer in one transaction: removals, then the approval; all or nothing."""
    if not answer.operator.strip():
        raise CampflowError("operator is empty: give your login (an operator of the entity)")
    try:
        return _apply(operation, step, entity, answer)
    except AccessDenied as refused:
        access.audit_refusal(refused, "flow", answer.operator.strip())
        raise


def _apply(operation: str, step: str, entity: str, answer: ListApproval) -> dict:
    with db.session() as session:
        who = access.form_actor(session, answer.operator, f"list {operation}/{step} of {entity}")
        access.find_visible_operation(session, who, operation, involved=True)
        found = approvals.find_step(session, operation, step)
        chosen = approval_lists.chosen_list(session, found, who, entity)  # refuses another entity's list
        removed = [c.strip() for c in answer.remove if c.strip()]
        if removed:
            approval_lists.change_parties(session, found, who, removed, removed=True, entity=chosen.entity_code)
        if answer.approve:
            change = approval_lists.approve(session, found, who, chosen.entity_code)
        else:
            approval_lists.require_open(found, chosen, approvals.clock())
            change = approvals.entity_lists(session, found.step_id, chosen.entity_id)[0]
        return {"entity": chosen.entity_code, "removed": removed, "approved": answer.approve,
                "parties": change.parties, "kept": change.parties - change.removed, "operator": who.login}


def _read_list(operation: str, step: str, entity: str) -> tuple[approvals.ApprovalStep, list[tuple], dt.datetime]:
    """The step, the entity's parties (shown to whoever answers: the answer is what is checked) and
    its deadline; refused when the list can no longer change."""
    with db.session() as session:
        found = approvals.find_step(session, operation, step)
        lists = approvals.entity_lists(session, found.step_id, approval_lists.entity_id_of(session, entity))
        if not lists:
            raise CampflowError(f"{entity} has no list in {found.place}; run the operation first")
        approval_lists.require_open(found, lists[0], approvals.clock())
        return found, approval_lists.list_rows(session, found, None, entity), lists[0].deadline


@flow(name="local-approval", flow_run_name="{operation}-{step}-{entity}")
def local_approval(operation: str, step: str, entity: str, timeout_hours: float = 72) -> dict:
    """Wait for a local entity's answer on its list in the Prefect UI, then apply it.

    Args:
        operation: the operation code, e.g. SALON-ERP-2026.
        step: the local_approval step's code.
        entity: the local entity whose list this is, e.g. LYON.
        timeout_hours: how long to wait for the answer (never past the list's deadline).
    """
    logger = get_run_logger()
    error = ""
    for number in range(1, MAX_ANSWERS + 1):
        found, rows, deadline = _read_list(operation, step, entity)
        left = (deadline - approvals.clock()).total_seconds()
        timeout = max(1, math.ceil(min(timeout_hours * 3600, left)))
        form = ListApproval.with_initial_data(description=describe(found, entity, rows, error),
                                              remove=[], approve=True, operator="")
        answer = wait_for_answer(form, number, timeout, POLL_SECONDS)
        if (earlier := earlier_refusal(number)) is not None:
            error = earlier  # refused in an earlier pass of this run: not applied again
            continue
        try:
            result = apply_answer(operation, step, entity, answer)
        except CampflowError as refused:
            error = str(refused)
            logger.warning("answer refused: %s", error)
            record_refusal(number, error)
            continue
        logger.info("%s's list in %s: %s", entity, found.place, result)
        return result
    raise CampflowError(f"{MAX_ANSWERS} answers refused for {entity}'s list in {found.place}; last: {error}")
