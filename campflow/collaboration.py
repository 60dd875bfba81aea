"""What an approved order means for each collaboration type (SPEC section 9), and who may
read, change and run an operation of the network.

`on_approved` is called in the transaction that approves an order (a reviewer's decision, the
CLI, the approval flow, or automatic registration at publishing):
- by_campaign: the local entity gets a child operation, a copy of the reference operation it
  owns, changes (`campflow apply --as`) and runs (`campflow run --as`);
- simple, by_form: the entity's parties (by the package's distribution) enter the reference
  operation's entry steps (`tasks.routing.enter_targets`), and by_form values personalise
  its part of it through the `ORDER.FIELD` fields (`tasks.records`).

A party belongs to the local entity of the distribution rule whose value its field equals
(trimmed, any case; the first rule when two match), as in `tasks.local_approval`; a rule's
limit keeps its first parties by party code.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select, true, union, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from campflow import identity
from campflow.catalog import load_field_catalog
from campflow.errors import CampflowError, FormulaError, SpecError
from flows.fields import FieldCatalog, FieldRef
from models import Distribution, DistributionRule, Entity, Operation, OperationTarget, Order, Package, Party, Step
from models import StepTarget

# session.info key: the login `campflow apply --as` names, for write_operation's owner check
OPERATOR_KEY = "campflow.operator"
# session.info key: the OrderSource of the parties `tasks.records.claim_parties` claimed
ORDER_SOURCE_KEY = "campflow.order_source"
CODE_MAX = 64  # models.specs.Code


# ---------------------------------------------------------------- approval


def on_approved(session: Session, order: Order, login: str) -> str | None:
    """Apply the consequences of an approval; returns a line for the decision e-mail, or None."""
    package = session.get_one(Package, order.package_id)
    entity = session.get_one(Entity, order.entity_id)
    if package.collaboration == "by_campaign":
        return create_child(session, order, package, entity)
    if package.collaboration in ("simple", "by_form"):
        reference = session.get_one(Operation, package.operation_id)
        what = "its form values personalise its part; " if package.collaboration == "by_form" else ""
        return (f"{entity.code} takes part in {reference.code}: its parties (distribution "
                f"{_distribution_code(session, package) or '— none: add one to the package'}) enter its next run; "
                f"{what}campflow ops show {reference.code}")
    return None


def create_child(session: Session, order: Order, package: Package, entity: Entity) -> str:
    """The entity's copy of the reference operation, owned by it, with its parties as targets.

    Raises:
        CampflowError: the child's code is taken by another operation, or too long.
        SpecError: the reference operation no longer passes the checks of `campflow apply`.
    """
    from campflow.apply import document_from_data, export_operation, spec_file_of, write_operation
    from campflow.catalog import load_known
    from campflow.validate import check_batch

    reference = session.get_one(Operation, package.operation_id)
    code = f"{reference.code}-{entity.code}"
    linked = session.get(Operation, order.child_operation_id) if order.child_operation_id else None
    existing = linked or session.scalars(select(Operation).where(Operation.code == code)).one_or_none()
    if existing is not None:
        if existing.parent_operation_id == reference.id and existing.owner_entity_id == entity.id:
            order.child_operation_id = existing.id  # ordered again after a cancellation: its child is kept
            return f"child operation {existing.code} kept (created by an earlier order): campflow ops show {existing.code}"
        raise CampflowError(f"cannot create {entity.code}'s child operation of {reference.code}: operation {code} exists "
                            "already and is not its child; rename or delete that operation, then approve order "
                            f"{order.id} again (nothing was changed)")
    if len(code) > CODE_MAX:
        raise CampflowError(f"cannot create {entity.code}'s child operation of {reference.code}: its code {code} is "
                            f"longer than {CODE_MAX} characters; shorten the operation's or the entity's code")
    data = copy.deepcopy(export_operation(session, reference.code))
    data.update(code=code, label=f"{reference.label} — {entity.label}", template=False, state="in_preparation",
                progress=0)
    for step in _walk(data.get("steps", [])):
        step.pop("template", None)
    doc = document_from_data(data, f"<child of {reference.code} for {entity.code}>",
                             spec_file_of(session, reference.code))
    problems = check_batch([doc], load_known(session))
    if problems:
        raise SpecError(problems, f"{entity.code}'s child operation of {reference.code} was not created; fix "
                        f"{reference.code}'s spec, apply it, then approve order {order.id} again")
    write_operation(session, doc, check_owner=False)  # the approval creates it, on the central's behalf
    child = session.scalars(select(Operation).where(Operation.code == code)).one()
    child.owner_entity_id, child.parent_operation_id, child.source_file = entity.id, reference.id, None
    order.child_operation_id = child.id
    session.flush()
    return _child_line(session, package, entity, child)


def _walk(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for step in steps:
        yield step
        yield from _walk(step.get("steps", []))


def _child_line(session: Session, package: Package, entity: Entity, child: Operation) -> str:
    """Target the child with the entity's parties; the decision e-mail's line."""
    show = f"campflow ops show {child.code}"
    add = f"campflow targets add {child.code} --where \"…\" --as LOGIN"
    if package.distribution_id is None:
        return (f"child operation {child.code} created with no target (package {package.code} has no distribution): "
                f"{entity.code} targets its own parties ({add}); {show}")
    distribution = session.get_one(Distribution, package.distribution_id)
    members = distribution_members(distribution, load_field_catalog(session), kinds=child.party_kinds)
    mine = members.subquery("mine")
    session.execute(insert(OperationTarget).from_select(
        ["operation_id", "party_id", "source"],
        select(literal(child.id), mine.c.party_id, literal(f"distribution:{distribution.code}"))
        .where(mine.c.entity_id == entity.id).order_by(mine.c.party_id)).on_conflict_do_nothing())
    targeted = session.scalar(select(func.count()).where(OperationTarget.operation_id == child.id)) or 0
    if not targeted:
        values = ", ".join(session.scalars(select(DistributionRule.value).where(
            DistributionRule.distribution_id == distribution.id, DistributionRule.entity_id == entity.id)
            .order_by(DistributionRule.position))) or "none"
        return (f"child operation {child.code} created with no target: no party has {distribution.field} = {values} "
                f"(distribution {distribution.code}'s values for {entity.code}); fix the distribution or target "
                f"parties yourself ({add}); {show}")
    return f"child operation {child.code} created with {targeted} targets (distribution {distribution.code}): {show}"


def _distribution_code(session: Session, package: Package) -> str | None:
    if package.distribution_id is None:
        return None
    return session.scalar(select(Distribution.code).where(Distribution.id == package.distribution_id))


# ---------------------------------------------------------------- which party belongs to which entity


def party_field(distribution: Distribution, catalog: FieldCatalog) -> tuple[ColumnElement[Any], ColumnElement[bool]]:
    """The SQL of the distribution's party field, and the condition a party kind table adds."""
    from tasks.conditions import value_sql

    place = f"distribution {distribution.code} field {distribution.field}"
    try:
        ref = catalog.resolve(distribution.field)
    except FormulaError as exc:
        raise CampflowError(f"{place}: {exc.message}; fix the Distribution spec and apply it again") from None
    if ref.table != "party":
        raise CampflowError(f"{place} is a {ref.table} field; a distribution splits parties by one of their own "
                            "fields (e.g. PCFIDX.VILLE); fix the Distribution spec and apply it again")
    return value_sql(ref, Party), (Party.kind == ref.party_kind) if ref.party_kind else true()


def distribution_members(distribution: Distribution, catalog: FieldCatalog, *, population: Select | None = None,
                         kinds: Iterable[str] = (), limits: bool = True) -> Select:
    """(party_id, entity_id) of the parties the distribution gives to a local entity.

    Args:
        population: a SELECT of party ids the parties are taken from (default: all parties);
            percent limits count the parties of the population having the rule's value.
        kinds: only parties of these kinds (none: every kind).
        limits: apply the rules' limits (False: only say whose each party is).
    """
    value, kind_guard = party_field(distribution, catalog)
    matches = func.lower(func.btrim(value)) == func.lower(func.btrim(DistributionRule.value))
    first = (select(Party.id.label("party_id"), Party.code.label("code"), DistributionRule.id.label("rule_id"),
                    DistributionRule.entity_id.label("entity_id"), DistributionRule.limit_count.label("limit_count"),
                    DistributionRule.limit_percent.label("limit_percent"))
             .select_from(Party)
             .join(DistributionRule, and_(DistributionRule.distribution_id == distribution.id, matches))
             .where(kind_guard)
             .distinct(Party.id).order_by(Party.id, DistributionRule.position))
    if population is not None:
        first = first.where(Party.id.in_(population))
    kinds = list(kinds)
    if kinds:
        first = first.where(Party.kind.in_(kinds))
    if not limits:
        chosen = first.subquery("first_rule")
        return select(chosen.c.party_id, chosen.c.entity_id)
    chosen = first.subquery("first_rule")
    ranked = select(chosen.c.party_id, chosen.c.entity_id, chosen.c.limit_count, chosen.c.limit_percent,
                    func.row_number().over(partition_by=chosen.c.rule_id, order_by=chosen.c.code).label("rank"),
                    func.count().over(partition_by=chosen.c.rule_id).label("having_value")).subquery("ranked")
    return select(ranked.c.party_id, ranked.c.entity_id).where(
        or_(ranked.c.limit_count.is_(None), ranked.c.rank <= ranked.c.limit_count),
        or_(ranked.c.limit_percent.is_(None),
            ranked.c.rank <= func.floor(ranked.c.having_value * ranked.c.limit_percent / 100.0)))


def collaborating_parties(session: Session, operation_id: int, catalog: FieldCatalog) -> Select | None:
    """The operation's targets that belong to an entity with an approved order of one of its
    simple or by_form packages; None when it is the reference of no such package.

    Raises:
        CampflowError: such a package has no distribution (whose parties are whose is unknown).
    """
    packages = session.scalars(select(Package).where(
        Package.operation_id == operation_id, Package.collaboration.in_(("simple", "by_form")))
        .order_by(Package.code)).all()
    if not packages:
        return None
    targets = select(OperationTarget.party_id).where(OperationTarget.operation_id == operation_id)
    parts = []
    for package in packages:
        if package.distribution_id is None:
            raise CampflowError(f"package {package.code} ({package.collaboration}) has no distribution: which targets "
                                f"belong to which local entity is unknown, so none may enter; add `distribution: CODE` "
                                f"to package {package.code}'s spec and apply it")
        members = distribution_members(session.get_one(Distribution, package.distribution_id), catalog,
                                       population=targets).subquery(f"members_{package.id}")
        parts.append(select(members.c.party_id).join(Order, and_(
            Order.entity_id == members.c.entity_id, Order.package_id == package.id, Order.status == "approved")))
    return parts[0] if len(parts) == 1 else union(*parts)


# ---------------------------------------------------------------- ORDER.FIELD values


@dataclass(frozen=True)
class OrderSource:
    """Where the `ORDER.FIELD` values of an operation's parties come from."""

    operation: str
    packages: tuple[str, ...] = ()  # the packages whose orders personalise it
    form: tuple[str, ...] = ()  # their form field codes
    child: bool = False  # a by_campaign child: its own order, the same for every party


def attach_orders(session: Session, step_id: int, claimed: Any) -> OrderSource:
    """Set each claimed party's `order_id`: the child operation's order, or the approved order of
    the entity the party belongs to (reference operation of packages with a distribution).

    `claimed` is the temporary table of claimed parties (party_id, order_id).
    """
    operation_id, code = session.execute(select(Operation.id, Operation.code).join(Step, Step.operation_id == Operation.id)
                                         .where(Step.id == step_id)).one()
    own = session.execute(select(Order.id, Order.package_id).where(Order.child_operation_id == operation_id)
                          .order_by(Order.id.desc()).limit(1)).one_or_none()
    if own is not None:
        session.execute(update(claimed).values(order_id=own.id))
        package = session.get_one(Package, own.package_id)
        return OrderSource(code, (package.code,), tuple(f["code"] for f in package.form), child=True)
    packages = session.scalars(select(Package).where(Package.operation_id == operation_id).order_by(Package.code)).all()
    catalog = load_field_catalog(session) if any(p.distribution_id for p in packages) else None
    for package in packages:
        if package.distribution_id is None or catalog is None:
            continue
        members = distribution_members(session.get_one(Distribution, package.distribution_id), catalog,
                                       population=select(claimed.c.party_id), limits=False).subquery("member")
        chosen = (select(members.c.party_id, Order.id.label("order_id"))
                  .join(Order, and_(Order.entity_id == members.c.entity_id, Order.package_id == package.id,
                                    Order.status == "approved")).subquery("chosen"))
        session.execute(update(claimed).values(order_id=chosen.c.order_id)
                        .where(claimed.c.party_id == chosen.c.party_id, claimed.c.order_id.is_(None)))
    form = tuple(dict.fromkeys(f["code"] for p in packages for f in p.form))
    return OrderSource(code, tuple(p.code for p in packages), form)


def check_order_fields(source: OrderSource | None, refs: Iterable[FieldRef]) -> None:
    """Refuse `ORDER.FIELD` references no order of the operation can fill."""
    wanted = list(dict.fromkeys(str(r) for r in refs if r.table == "order"))
    if not wanted or source is None:
        return
    names = ", ".join(wanted)
    if not source.packages:
        raise CampflowError(f"operation {source.operation} reads {names}, but it is neither the reference operation of "
                            "a package nor a local entity's child operation: no order fills these fields; remove them "
                            "from its templates and columns, and apply it again (nothing was done)")
    known = {code.lower() for code in source.form}
    unknown = [r for r in wanted if r.split(".", 1)[1].lower() not in known]
    if unknown:
        fields = ", ".join(source.form) or "none"
        raise CampflowError(f"operation {source.operation} reads {', '.join(unknown)}, which the form of package "
                            f"{', '.join(source.packages)} does not have (its fields: {fields}); fix the template or "
                            "columns, or add the field to the package's form, and apply it again (nothing was done)")


# ---------------------------------------------------------------- who may read, change, run


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
    from campflow.operations import find_operation

    operation = find_operation(session, code)
    require_access(session, operation.code, operation.owner_entity_id, as_, doing)
    return operation


def list_children(session: Session, reference: str, as_: str | None) -> list[dict[str, Any]]:
    """The child operations of a reference operation (a local operator: only its own), each with
    its entity, state, order and funnel (parties per status in each step)."""
    from campflow.operations import find_operation

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
