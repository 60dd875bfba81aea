"""The network's flows: `publish-package`, and `approve-order`, which waits in the Prefect UI for a
central reviewer's decision (the same decision `campflow orders approve|reject` gives)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.input import RunInput
from prefect.states import Completed, State
from pydantic import Field

from campflow.errors import CampflowError
from campflow.network import orders, packages
from campflow.orchestration.waiting import earlier_refusal, record_refusal, wait_for_answer
from campflow.store import access, db
from campflow.store.identity import AccessDenied

POLL_SECONDS = 2  # how often a run paused in its process checks for its answer
MAX_ANSWERS = 5  # refused answers before the run gives up


class OrderDecision(RunInput):
    """The form behind "Resume" on a paused approve-order run."""

    decision: Literal["approve", "reject"] = Field(description="Approve or reject the order.")
    comment: str = Field(default="", description="Mailed to the local entity; needed to reject.")
    reviewer: str = Field(description="Your login: one of the central entity's reviewers.")


@flow(name="publish-package", flow_run_name="publish {package}")
def publish_package(package: str, as_operator: str | None = None) -> dict[str, Any]:
    """Publish a package to its audience: e-mails with its description, documents and how to order;
    in automatic approval mode every audience entity is registered with an approved order.

    Args:
        package: the package code, e.g. PKG-SOLDES.
        as_operator: the login publishing, one of the central entity's operators; default
            $CAMPFLOW_OPERATOR or the system user of the process running the flow.

    Returns:
        summary (one line), orders (the ids of the orders created) and warnings.

    Raises:
        CampflowError: the package cannot be published (why, and the fix); nothing changed. Or
            notifying failed: the publication itself is recorded.
    """
    outcome = packages.act(orders.publish, package, as_=as_operator)
    logger = get_run_logger()
    for warning in outcome.warnings:
        logger.warning(warning)
    logger.info(outcome.summary)
    return {"summary": outcome.summary, "orders": list(outcome.order_ids), "warnings": list(outcome.warnings)}


@flow(name="approve-order", flow_run_name="order {order}")
def approve_order(order: int, timeout_hours: float = 72) -> State:
    """Wait for a central reviewer to approve or reject a pending order, then apply the decision.

    The run waits (from a deployment it is suspended and holds no process; called directly it
    pauses); in the Prefect UI, "Resume" shows the order and a form: decision (approve or
    reject), comment (needed to reject, mailed to the local entity) and reviewer (your login, a
    central operator). The same decision can be given with `campflow orders approve ID` or
    `campflow orders reject ID --comment …`; then this run ends without deciding again.

    Args:
        order: the order id, as `campflow orders list` shows it.
        timeout_hours: how long to wait for the decision; after that the run fails and the
            order stays pending.

    Returns:
        A Completed state whose message says what was decided, or that the order had already
        been decided.

    An answer that cannot be taken (a reviewer who is not a central operator, a rejection
    without comment) asks again with the reason above the form.

    Raises:
        CampflowError: five answers were refused; the order stays pending.
    """
    logger = get_run_logger()
    error = ""
    for number in range(1, MAX_ANSWERS + 1):
        with db.session() as session:
            view = packages.order_view(session, packages.find_order(session, order), history=True)
        if view["status"] != "pending":
            return _already_decided(order)
        logger.info("order %s waits for a decision: press Resume on this flow run in the Prefect UI, or run "
                    "`campflow orders approve|reject %s`", order, order)
        answer = wait_for_answer(OrderDecision.with_initial_data(
            description=decision_markdown(view, error), decision="approve", comment=""),
            number, int(timeout_hours * 3600), POLL_SECONDS)
        if (earlier := earlier_refusal(number)) is not None:
            error = earlier  # refused in an earlier pass of this run: not applied again
            continue
        try:
            outcome = _decide(order, answer)
        except CampflowError as refused:
            error = str(refused)
            logger.warning("answer refused: %s", error)
            record_refusal(number, error)
            continue
        if outcome is None:
            return _already_decided(order)
        packages.deliver(outcome)
        logger.info(outcome.summary)
        return Completed(message=outcome.summary)
    raise CampflowError(f"{MAX_ANSWERS} answers refused for order {order}, which stays pending; last: {error}; "
                        f"decide it with `campflow orders approve|reject {order}`")


def _decide(order: int, answer: OrderDecision) -> packages.Outcome | None:
    """Apply a form answer in one transaction; None when the order was decided meanwhile.

    Raises:
        CampflowError: the reviewer may not decide it (unknown or disabled login, not the central
            entity's, not a reviewer, outside the groups of the order's operation: audited, source
            "flow"), or a rejection has no comment.
    """
    try:
        with db.session() as session:
            found = packages.find_order(session, order, lock=True)
            if found.status != "pending":
                return None
            reviewer = access.form_actor(session, answer.reviewer, f"order {order}")
            if not reviewer.central:
                raise access.denied(AccessDenied(
                    f"reviewer {answer.reviewer.strip()!r} acts for {reviewer.entity_code}; only the central "
                    "entity's operators decide orders: give your own login"), reviewer, f"order {order}")
            access.require_decider(reviewer, f"order {order}")
            if not access.may_see_order(session, reviewer, found):
                raise access.denied(AccessDenied(
                    f"reviewer {reviewer.login!r} is in none of the groups that may see this order's operation: "
                    "a reviewer of those groups (or an admin) decides it"), reviewer, f"order {order}")
            action = orders.approve_order if answer.decision == "approve" else orders.reject_order
            return action(session, order, reviewer, comment=answer.comment)
    except AccessDenied as refused:
        access.audit_refusal(refused, "flow", answer.reviewer.strip() or None)
        raise


def _already_decided(order: int) -> State:
    with db.session() as session:
        found = packages.find_order(session, order)
        message = f"order {order} was already {found.status}{orders.decided_text(found)}; nothing to decide"
    get_run_logger().info(message)
    return Completed(name="Skipped", message=message)


def decision_markdown(view: dict[str, Any], error: str = "") -> str:
    """The order as the reviewer reads it above the form: package, entity, values, history, and
    why the last answer was refused."""
    cell = lambda value: str(value).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [f"**Answer refused:** {cell(error)}", ""] if error else []
    lines += [f"## Order {view['id']}: {cell(view['entity_label'])} ({view['entity']})",
             f"orders **{cell(view['package_label'])}** ({view['package']}, {view['collaboration']}).", "",
             "| field | value |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in view["values"].items()] or ["| (no values) | |"]
    lines += ["", "### History", ""]
    lines += [f"- {e['at']:%Y-%m-%d %H:%M} **{cell(e['actor'])}** {e['action']}"
              + (f": {cell(e['comment'])}" if e["comment"] else "") for e in view["history"]]
    lines += ["", "Choose **approve** or **reject**; a rejection needs a comment (it is mailed to "
              f"{view['entity']}). **reviewer**: your login, one of the central entity's operators. "
              f"Same decision from a terminal: `campflow orders approve|reject {view['id']}`."]
    return "\n".join(lines)
