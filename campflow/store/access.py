"""Who may see, change and run what: the one access rule that the CLI (`--as`), the portal and
the flows' forms ask before they list or change an operation, a package, an order or a list.

Two walls, both here:
- the network: a local entity's operators see and change only what is their entity's (its child
  operations, its orders, its lists); the central entity's see everything of the network;
- confidentiality (Divalto's family groups): an operation names the collaborator groups that may
  see it (`groups:`), else its family's; an actor in none of them does not see it anywhere (nor
  the package offering it, nor that package's orders), central operators included. Only the
  `admin` role, or a CLI command that names nobody (the installation's administrator at its
  shell), sees past it.

What an actor may not see is said exactly as what does not exist ("no operation X", the portal's
404): a refusal never confirms that another entity's or a confidential thing exists. Refusals are
audited (`campflow.store.accounts.audit_now`). Nothing else filters by entity or group: see
docs/access.md."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import Text

from campflow.errors import CampflowError, NotFound, closest
from campflow.store import db, identity
from campflow.store.identity import AccessDenied, Actor
from models import (
    Account,
    AuditEvent,
    Entity,
    Family,
    Operation,
    OperationTarget,
    Order,
    Package,
    Step,
    StepTarget,
)

CHANGERS = frozenset({"admin", "central_operator", "local_operator"})  # accounts that change and run operations


class Hidden(NotFound, AccessDenied):
    """Something the actor may not see, said exactly as if it did not exist (the CLI's "no
    operation X", the portal's 404). Like every AccessDenied it is audited as a refusal where the
    request comes in: `campflow` (source "cli"), the portal ("portal"), a flow's form ("flow")."""


def denied(error: AccessDenied, who: Actor | None, subject: str) -> AccessDenied:
    """The refusal, carrying who was refused and what about (`login`, `entity_id`, `subject`), for
    the audit trail kept where the request came in (`audit_refusal`)."""
    error.login = who.login if who else None  # type: ignore[attr-defined]
    error.entity_id = who.entity_id if who else None  # type: ignore[attr-defined]
    error.subject = subject  # type: ignore[attr-defined]
    return error


def audit_refusal(error: CampflowError, source: str, login: str | None = None) -> None:
    """Keep a refusal in the audit trail, in its own transaction (the refused one rolls back):
    who (the error's, else `login`), what about, why (the message), and where it came in."""
    with db.session() as session:  # as `campflow.store.accounts.audit_now`, which reads this module
        session.add(AuditEvent(login=getattr(error, "login", None) or login, action="refused",
                               subject=getattr(error, "subject", None), outcome="refused",
                               entity_id=getattr(error, "entity_id", None), detail={"why": str(error)}, source=source))


# ---------------------------------------------------------------- who is acting


def cli_actor(session: Session, as_: str | None) -> Actor | None:
    """The actor a CLI command acts as: the login named (--as, else CAMPFLOW_OPERATOR), else None:
    the administrator at its shell, who sees everything, as before accounts existed. Without any
    entity nor account of that login (no network yet) a name changes nothing either."""
    named = as_ or os.environ.get("CAMPFLOW_OPERATOR")
    if not named:
        return None
    if not _network_exists(session) and not _is_account(session, named):
        return None
    return identity.actor(session, named)


def form_actor(session: Session, login: str, subject: str) -> Actor:
    """The actor a login typed in a Prefect form names; an empty, unknown or disabled login is
    refused (AccessDenied, carrying the login typed and `subject` for the audit)."""
    name = login.strip()
    if not name:
        raise denied(AccessDenied("the login is empty: give your own login"), None, subject)
    try:
        return identity.actor(session, name)
    except CampflowError as exc:
        error = denied(AccessDenied(str(exc)), None, subject)
        error.login = name  # type: ignore[attr-defined]
        raise error from None


def _network_exists(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(Entity.id.is_not(None)))))


def _is_account(session: Session, login: str) -> bool:
    return bool(session.scalar(select(exists().where(Account.login == login))))


# ---------------------------------------------------------------- the walls, as SQL


def effective_groups() -> ColumnElement[Any]:
    """The groups that may see an operation: its own `groups`, else its family's (SQL, per row)."""
    own = aliased(Family)  # not correlated with a query that joins `family` itself (the tree)
    family = select(own.groups).where(own.id == Operation.family_id).scalar_subquery()
    return func.coalesce(func.nullif(Operation.groups, literal([], ARRAY(Text))), family,
                         literal([], ARRAY(Text)))


def confidential_wall(who: Actor | None) -> ColumnElement[bool]:
    """The where-clause on `operation` of the confidentiality wall alone: no groups, or one of
    `who`'s (None, admin: everything)."""
    if who is None or who.admin:
        return true()
    groups = effective_groups()
    if not who.groups:
        return func.cardinality(groups) == 0
    return or_(func.cardinality(groups) == 0, groups.op("&&")(literal(sorted(who.groups), ARRAY(Text))))


def visible_operations(who: Actor | None) -> ColumnElement[bool]:
    """The where-clause on `operation` of what `who` sees as an operation (the tree, one
    operation, its targets, its export, its runs): confidentiality, then the network (a local
    actor sees its entity's operations only). None: the administrator at its shell."""
    if who is None:
        return true()
    wall = confidential_wall(who)
    if who.central or who.admin:
        return wall
    if who.entity_id is None:
        return false()
    return and_(wall, Operation.owner_entity_id == who.entity_id)


def involved_operations(who: Actor | None) -> ColumnElement[bool]:
    """The where-clause on `operation` of the operations whose lists, child operations and
    packages concern `who`: confidentiality, then a local actor's own operations or the central
    entity's (the lists and orders themselves are filtered by entity where they are read)."""
    if who is None:
        return true()
    wall = confidential_wall(who)
    if who.central or who.admin:
        return wall
    return and_(wall, or_(Operation.owner_entity_id.is_(None), Operation.owner_entity_id == who.entity_id))


def visible_packages(who: Actor | None) -> ColumnElement[bool]:
    """The where-clause on `package`: those whose reference operation `who` may see past the
    confidentiality wall (the audience, the network wall of packages, is `campflow.network.packages`')."""
    if who is None or who.admin:
        return true()
    return Package.operation_id.in_(select(Operation.id).where(confidential_wall(who)))


def visible_orders(who: Actor | None) -> ColumnElement[bool]:
    """The where-clause on `package_order`: the actor's entity's (a local actor), of a package it
    may see."""
    if who is None:
        return true()
    clause = Order.package_id.in_(select(Package.id).where(visible_packages(who)))
    if who.central or who.admin:
        return clause
    return and_(clause, Order.entity_id == who.entity_id)


# ---------------------------------------------------------------- one thing at a time


def may_see_operation(session: Session, who: Actor | None, code: str) -> bool:
    """Whether `who` sees operation `code` or takes part in it (its lists, its children, its
    package: `involved_operations`); True when there is no such operation, which the caller's own
    lookup then says. `find_visible_operation` is the strict one (a local actor: its own only)."""
    if who is None or not session.scalar(select(exists().where(Operation.code == code))):
        return True
    return bool(session.scalar(select(exists().where(Operation.code == code, involved_operations(who)))))


def find_visible_operation(session: Session, who: Actor | None, code: str, *, involved: bool = False) -> Operation:
    """The operation `code` when `who` may see it (`involved`: as the operation of its lists, its
    children, its package), else NotFound with exactly the message a code that does not exist
    gives ("no operation X; did you mean …" among what `who` sees): Hidden when it exists."""
    wall = involved_operations(who) if involved else visible_operations(who)
    operation = session.scalars(select(Operation).where(Operation.code == code, wall)).one_or_none()
    if operation is not None:
        return operation
    known = list(session.scalars(select(Operation.code).where(wall).order_by(Operation.code).limit(200)))
    message = f"no operation {code}{closest(code, known) if known else '; none you may see'}"
    if who is not None and session.scalar(select(exists().where(Operation.code == code))):
        raise denied(Hidden(message), who, f"operation {code}")
    raise NotFound(message)


def require_visible(session: Session, who: Actor | None, operation: Operation, *, involved: bool = False) -> Operation:
    """The operation, or NotFound as if it did not exist when `who` may not see it."""
    return find_visible_operation(session, who, operation.code, involved=involved)


def require_visible_package(session: Session, who: Actor | None, package: Package) -> None:
    """Refuse, as if it did not exist ("no package X"), a package whose operation `who` may not see."""
    if who is None or session.scalar(select(exists().where(Package.id == package.id, visible_packages(who)))):
        return
    known = session.scalars(select(Package.code).where(visible_packages(who)))
    raise denied(Hidden(f"no package {package.code}{closest(package.code, known)}"), who, f"package {package.code}")


def require_visible_order(session: Session, who: Actor | None, order: Order) -> None:
    """Refuse, as if it did not exist, an order of a package whose operation `who` may not see
    (the network wall of orders is `Actor.require`, which names both entities)."""
    if who is None or session.scalar(select(exists().where(Package.id == order.package_id, visible_packages(who)))):
        return
    raise denied(Hidden(f"no order {order.id}; see `campflow orders list`"), who, f"order {order.id}")


def may_see_order(session: Session, who: Actor | None, order: Order) -> bool:
    """Whether `who` sees the order: its entity's (or the central entity's), of a package it may see."""
    return bool(session.scalar(select(exists().where(Order.id == order.id, visible_orders(who)))))


def may_change(who: Actor, operation_owner: int | None) -> bool:
    """Whether `who`, who sees the operation, may change and run it: a local entity's operation
    by its operators and the central entity's; the central entity's by its operators (accounts:
    admin, central_operator; a reviewer or a collaborator reads only)."""
    if who.account_id is not None and not (who.roles & CHANGERS):
        return False
    if operation_owner is None:
        return who.may_change_network or who.admin
    return who.may_act_for(operation_owner)


def require_operation_access(session: Session, code: str, as_: str | None, doing: str) -> Operation:
    """The operation `code`, once the operator named by `as_` (--as, CAMPFLOW_OPERATOR) may
    `doing` it (read, change, run): see `require_access`."""
    who = cli_actor(session, as_)
    operation = find_visible_operation(session, who, code)
    _require_doing(session, who, operation.code, operation.owner_entity_id, as_, doing)
    return operation


def require_access(session: Session, code: str, owner_entity_id: int | None, as_: str | None, doing: str) -> None:
    """Refuse an operator who may not `doing` (read, report: statuses and answers, change, run)
    operation `code`, which may not exist yet (`campflow apply` creates it).

    The rule: an operation `who` may not see is "no operation X" (`find_visible_operation`). A
    local entity's operation is changed and run by its operators and the central entity's; the
    operator must be named (--as, CAMPFLOW_OPERATOR, else the system user). The central entity's
    operations are changed by its operators; a command naming nobody acts as the administrator
    (as before networks existed). A local operator creates no operation: the approval of an order
    creates its child operations.
    """
    who = cli_actor(session, as_)
    if session.scalar(select(exists().where(Operation.code == code))):
        find_visible_operation(session, who, code)
    _require_doing(session, who, code, owner_entity_id, as_, doing)


def _require_doing(session: Session, who: Actor | None, code: str, owner_entity_id: int | None, as_: str | None,
                   doing: str) -> None:
    if doing in ("read", "report") or not _network_exists(session):
        return
    if who is None:
        if owner_entity_id is None:
            return  # the administrator at its shell
        who = identity.actor(session, as_)  # a local entity's operation: the system user must be one of its operators
        if not who.may_act_for(owner_entity_id):
            raise denied(Hidden(f"no operation {code}"), who, f"operation {code}")
    if may_change(who, owner_entity_id):
        return
    if owner_entity_id is None and not who.central:
        why = (f"{who.login} acts for {who.entity_code} and may not {doing} operation {code}, an operation of the "
               "central entity; a local entity reads, changes and runs its own child operations "
               f"(campflow ops children REFERENCE --as {who.login})")
    else:
        why = (f"{who.login} may not {doing} operation {code}: only the central entity's operators and "
               "administrators (and a local entity's operators, their own child operations) change and run operations")
    raise denied(AccessDenied(why), who, f"operation {code}")


def require_decider(who: Actor, what: str) -> None:
    """Refuse an actor who may not approve or reject (reviewers and admins may)."""
    if not who.may_decide:
        raise denied(AccessDenied(f"{who.login} may not decide {what}; only the central entity's reviewers may"),
                     who, what)


# ---------------------------------------------------------------- child operations


def list_children(session: Session, reference: str, as_: str | None) -> list[dict[str, Any]]:
    """The child operations of a reference operation that the actor sees (a local operator: only
    its own), each with its entity, state, order and funnel (parties per status in each step)."""
    who = cli_actor(session, as_)
    return children_of(session, who, reference)


def children_of(session: Session, who: Actor | None, reference: str) -> list[dict[str, Any]]:
    """`list_children` for an actor already known (the portal's)."""
    parent = find_visible_operation(session, who, reference, involved=True)
    query = (select(Operation.id, Operation.code, Operation.label, Operation.state, Entity.code.label("entity"))
             .join(Entity, Entity.id == Operation.owner_entity_id)
             .where(Operation.parent_operation_id == parent.id, visible_operations(who))
             .order_by(Entity.code, Operation.code))
    children = session.execute(query).all()
    ids = [c.id for c in children]
    orders = {op: (order_id, status) for op, order_id, status in session.execute(
        select(Order.child_operation_id, Order.id, Order.status).where(Order.child_operation_id.in_(ids))
        .order_by(Order.child_operation_id, Order.id))}  # the latest order wins
    targets = dict(session.execute(select(OperationTarget.operation_id, func.count())
                                   .where(OperationTarget.operation_id.in_(ids)).group_by(OperationTarget.operation_id)).all())
    funnel = step_funnels(session, ids)
    return [{"code": c.code, "label": c.label, "entity": c.entity, "state": c.state,
             "order": orders.get(c.id, (None, None))[0], "order_status": orders.get(c.id, (None, None))[1],
             "targets": targets.get(c.id, 0), "funnel": funnel.get(c.id, {})} for c in children]


# ---------------------------------------------------------------- the audit log

AUDIT_READERS = frozenset({"admin", "central_operator", "reviewer"})


def may_read_audit(who: Actor) -> bool:
    """The audit log is read by the central entity's admins, operators and reviewers (not its
    collaborators, not local entities)."""
    return who.central and bool(who.roles & AUDIT_READERS)


# ---------------------------------------------------------------- what the portal lists


def visible_children(session: Session, who: Actor) -> list[dict[str, Any]]:
    """Every child operation `who` may see (a local operator: its entity's; the central entity's:
    all, confidential ones aside), each with its reference, entity, state and funnel (parties per
    status in each step), by reference then entity."""
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
    operation = find_visible_operation(session, who, code)
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
