"""Which party belongs to which local entity (a distribution's rules), and where the
`ORDER.FIELD` values of an operation's parties come from (their entity's approved order).

A party belongs to the local entity of the distribution rule whose value its field equals
(trimmed, any case; the first rule when two match), as in `campflow.store.approvals`; a rule's
limit keeps its first parties by party code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true, union, update
from sqlalchemy.orm import Session

from campflow.core.field_catalog import FieldCatalog
from campflow.core.fields import FieldRef
from campflow.errors import CampflowError, FormulaError
from campflow.store.catalog import load_field_catalog
from models import Distribution, DistributionRule, Operation, OperationTarget, Order, Package, Party, Step

# ---------------------------------------------------------------- which party belongs to which entity


def party_field(distribution: Distribution, catalog: FieldCatalog) -> tuple[ColumnElement[Any], ColumnElement[bool]]:
    """The SQL of the distribution's party field, and the condition a party kind table adds."""
    from campflow.store.conditions import value_sql

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
