"""Who may read, change and run an operation of the network: the one rule every command (and the
portal) asks before it lists or changes an operation."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campflow.errors import CampflowError
from campflow.store import identity
from models import (
    Entity,
    Operation,
    OperationTarget,
    Order,
    Step,
    StepTarget,
)


def require_access(session: Session, code: str, owner_entity_id: int | None, as_: str | None, doing: str) -> None:
    """Refuse an operator who may not `doing` (read, change, run) the operation.

    The rule: without any entity nothing is checked (no network yet). An operation of a local
    entity is the business of its operators and the central entity's: the operator must be
    named (--as, CAMPFLOW_OPERATOR, else the system user) and be one of them. An operation of
    the central entity (no owner) may be handled by the central entity's operators; a command
    naming nobody acts as before networks existed (the administrator).
    """
    if not session.scalar(select(func.count()).select_from(Entity)):
        return
    named = as_ or os.environ.get("CAMPFLOW_OPERATOR")
    if owner_entity_id is None and not named:
        return
    who = identity.actor(session, named)
    if owner_entity_id is None:
        if not who.central:
            raise CampflowError(f"{who.login} acts for {who.entity_code} and may not {doing} operation {code}, an "
                                "operation of the central entity; a local entity reads, changes and runs its own child "
                                f"operations (campflow ops children REFERENCE --as {who.login})")
        return
    if not who.may_act_for(owner_entity_id):
        owner = session.scalar(select(Entity.code).where(Entity.id == owner_entity_id))
        raise CampflowError(f"{who.login} acts for {who.entity_code} and may not {doing} operation {code}, which "
                            f"belongs to {owner}; only {owner}'s operators or the central entity's may (--as LOGIN)")


def require_operation_access(session: Session, code: str, as_: str | None, doing: str) -> Operation:
    """The operation `code`, once the operator may `doing` it (see require_access)."""
    from campflow.store.operations import find_operation

    operation = find_operation(session, code)
    require_access(session, operation.code, operation.owner_entity_id, as_, doing)
    return operation


def list_children(session: Session, reference: str, as_: str | None) -> list[dict[str, Any]]:
    """The child operations of a reference operation (a local operator: only its own), each with
    its entity, state, order and funnel (parties per status in each step)."""
    from campflow.store.operations import find_operation

    who = identity.actor(session, as_)
    parent = find_operation(session, reference)
    query = (select(Operation.id, Operation.code, Operation.label, Operation.state, Entity.code.label("entity"))
             .join(Entity, Entity.id == Operation.owner_entity_id)
             .where(Operation.parent_operation_id == parent.id).order_by(Entity.code, Operation.code))
    if not who.central:
        query = query.where(Operation.owner_entity_id == who.entity_id)
    children = session.execute(query).all()
    ids = [c.id for c in children]
    orders = {op: (order_id, status) for op, order_id, status in session.execute(
        select(Order.child_operation_id, Order.id, Order.status).where(Order.child_operation_id.in_(ids))
        .order_by(Order.child_operation_id, Order.id))}  # the latest order wins
    targets = dict(session.execute(select(OperationTarget.operation_id, func.count())
                                   .where(OperationTarget.operation_id.in_(ids)).group_by(OperationTarget.operation_id)).all())
    funnel: dict[int, dict[str, dict[str, int]]] = {}
    for op, step, status, count in session.execute(
            select(Step.operation_id, Step.code, StepTarget.status, func.count())
            .join(StepTarget, StepTarget.step_id == Step.id).where(Step.operation_id.in_(ids))
            .group_by(Step.operation_id, Step.position, Step.code, StepTarget.status)
            .order_by(Step.operation_id, Step.position, StepTarget.status)):
        funnel.setdefault(op, {}).setdefault(step, {})[status] = count
    return [{"code": c.code, "label": c.label, "entity": c.entity, "state": c.state,
             "order": orders.get(c.id, (None, None))[0], "order_status": orders.get(c.id, (None, None))[1],
             "targets": targets.get(c.id, 0), "funnel": funnel.get(c.id, {})} for c in children]
