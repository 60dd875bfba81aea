"""Who may see, change and run what: the one access rule that the CLI (`--as`), the portal and
the flows' forms ask before they list or change an operation, an order or a list.

Two walls, both here:
- the network: a local entity's operators see and change only what is their entity's; the
  central entity's see everything of the network;
- confidentiality (Divalto's family groups): an operation names the collaborator groups that may
  see it (`groups:`), else its family's; an actor in none of them does not see it anywhere,
  central operators included. Only the `admin` role, or a CLI command that names nobody (the
  installation's administrator at its shell), sees past it.
Nothing else filters by entity or group: see docs/access.md."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import Text

from campflow.errors import CampflowError, NotFound
from campflow.store import identity
from campflow.store.identity import AccessDenied, Actor
from models import (
    Entity,
    Family,
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
    named = as_ or os.environ.get("CAMPFLOW_OPERATOR")
    if named:
        who = identity.actor(session, named) if session.scalar(select(func.count()).select_from(Entity)) \
            or _is_account(session, named) else None
        if who is not None and not may_see_operation(session, who, code):
            raise NotFound(f"no operation {code}")  # as if it did not exist: confidential
    if not session.scalar(select(func.count()).select_from(Entity)):
        return
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


# ---------------------------------------------------------------- the audit log

AUDIT_READERS = frozenset({"admin", "central_operator", "reviewer"})


def may_read_audit(who: Actor) -> bool:
    """The audit log is read by the central entity's admins, operators and reviewers (not its
    collaborators, not local entities)."""
    return who.central and bool(who.roles & AUDIT_READERS)


# ---------------------------------------------------------------- confidentiality and visibility


def _is_account(session: Session, login: str) -> bool:
    from models import Account

    return session.scalar(select(func.count()).select_from(Account).where(Account.login == login)) > 0


def effective_groups() -> ColumnElement[Any]:
    """The groups that may see an operation: its own `groups`, else its family's (SQL, per row)."""
    family = select(Family.groups).where(Family.id == Operation.family_id).scalar_subquery()
    return func.coalesce(func.nullif(Operation.groups, literal([], ARRAY(Text))), family,
                         literal([], ARRAY(Text)))


def visible_operations(who: Actor | None) -> ColumnElement[bool]:
    """The where-clause on `operation` of what `who` may see (None: the administrator at its shell).

    Confidential (groups) first, then the network: a local actor sees its entity's operations only.
    """
    if who is None or who.admin:
        return true()
    groups = effective_groups()
    allowed = or_(func.cardinality(groups) == 0, groups.op("&&")(literal(sorted(who.groups), ARRAY(Text))))
    if who.central:
        return allowed
    return and_(allowed, Operation.owner_entity_id == who.entity_id)


def may_see_operation(session: Session, who: Actor | None, code: str) -> bool:
    """Whether `who` may see operation `code` (confidentiality, then the network)."""
    if who is None or who.admin:
        return True
    groups = session.scalar(select(effective_groups()).where(Operation.code == code))
    if groups is None:  # no such operation: the caller says so
        return True
    return not groups or bool(set(groups) & who.groups)


def cli_actor(session: Session, as_: str | None) -> Actor | None:
    """The actor a CLI command acts as: the named one (--as, CAMPFLOW_OPERATOR), else None (the
    administrator at its shell, who sees everything, as before accounts existed)."""
    named = as_ or os.environ.get("CAMPFLOW_OPERATOR")
    return identity.actor(session, named) if named else None


def require_visible(session: Session, who: Actor | None, operation: Operation) -> Operation:
    """The operation, or NotFound as if it did not exist when `who` may not see it."""
    if who is None:
        return operation
    if not may_see_operation(session, who, operation.code) or (
            not who.central and operation.owner_entity_id != who.entity_id):
        raise NotFound(f"no operation {operation.code}")
    return operation


def require_decider(who: Actor, what: str) -> None:
    """Refuse an actor who may not approve or reject (reviewers and admins may)."""
    if not who.may_decide:
        raise AccessDenied(f"{who.login} may not decide {what}; only the central entity's reviewers may")


# ---------------------------------------------------------------- what the portal lists


def visible_children(session: Session, who: Actor) -> list[dict[str, Any]]:
    """Every child operation `who` may see (a local operator: its entity's; the central entity's:
    all, confidential ones aside), each with its reference, entity, state and funnel (parties per
    status in each step), by reference then entity."""
    from sqlalchemy.orm import aliased

    reference = aliased(Operation)
    children = session.execute(
        select(Operation.id, Operation.code, Operation.label, Operation.state, Entity.code.label("entity"),
               reference.code.label("reference"), reference.label.label("reference_label"))
        .join(Entity, Entity.id == Operation.owner_entity_id)
        .join(reference, reference.id == Operation.parent_operation_id)
        .where(visible_operations(who)).order_by(reference.code, Entity.code, Operation.code)).all()
    funnel = step_funnels(session, [c.id for c in children])
    return [{"code": c.code, "label": c.label, "state": c.state, "entity": c.entity, "reference": c.reference,
             "reference_label": c.reference_label, "funnel": funnel.get(c.id, {})} for c in children]


def step_funnels(session: Session, operation_ids: list[int]) -> dict[int, dict[str, dict[str, int]]]:
    """Parties per status in each step of those operations: operation id → step code → status → count."""
    funnel: dict[int, dict[str, dict[str, int]]] = {}
    for op, step, status, count in session.execute(
            select(Step.operation_id, Step.code, StepTarget.status, func.count())
            .join(StepTarget, StepTarget.step_id == Step.id).where(Step.operation_id.in_(operation_ids))
            .group_by(Step.operation_id, Step.position, Step.code, StepTarget.status)
            .order_by(Step.operation_id, Step.position, StepTarget.status)):
        funnel.setdefault(op, {}).setdefault(step, {})[status] = count
    return funnel


def operation_view(session: Session, who: Actor, code: str) -> dict[str, Any]:
    """An operation `who` may see (NotFound as if it did not exist otherwise): its steps, each
    with its parties per status, and its owner and reference."""
    from campflow.store.operations import find_operation

    operation = require_visible(session, who, find_operation(session, code))
    funnel = step_funnels(session, [operation.id]).get(operation.id, {})
    steps = [{"code": s.code, "label": s.label, "kind": s.kind, "state": s.state, "funnel": funnel.get(s.code, {})}
             for s in session.execute(select(Step.code, Step.label, Step.kind, Step.state)
                                      .where(Step.operation_id == operation.id).order_by(Step.position))]
    owner = session.scalar(select(Entity.code).where(Entity.id == operation.owner_entity_id)) \
        if operation.owner_entity_id else None
    reference = session.scalar(select(Operation.code).where(Operation.id == operation.parent_operation_id)) \
        if operation.parent_operation_id else None
    return {"code": operation.code, "label": operation.label, "state": operation.state,
            "timezone": operation.timezone, "entity": owner, "reference": reference, "steps": steps}
