"""What an approved order means for each collaboration type (SPEC section 9), and who may
read, change and run an operation of the network.

`on_approved` is called in the transaction that approves an order (a reviewer's decision, the
CLI, the approval flow, or automatic registration at publishing):
- by_campaign: the local entity gets a child operation, a copy of the reference operation it
  owns, changes (`campflow apply --as`) and runs (`campflow run --as`);
- simple, by_form: the entity's parties (by the package's distribution) enter the reference
  operation's entry steps (`campflow.store.routing.enter_targets`), and by_form values personalise
  its part of it through the `ORDER.FIELD` fields (`campflow.store.records`).

A party belongs to the local entity of the distribution rule whose value its field equals
(trimmed, any case; the first rule when two match), as in `campflow.store.approvals`; a rule's
limit keeps its first parties by party code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from campflow.errors import CampflowError, SpecError
from campflow.network.messages import link
from campflow.store.catalog import load_field_catalog
from campflow.store.distribution import distribution_members
from models import (
    Distribution,
    DistributionRule,
    Entity,
    Operation,
    OperationTarget,
    Order,
    Package,
)

CODE_MAX = 64  # campflow.specs.schema.Code


# ---------------------------------------------------------------- approval


def on_approved(session: Session, order: Order, login: str) -> str | None:
    """Apply the consequences of an approval; returns a line for the decision e-mail, or None."""
    package = session.get_one(Package, order.package_id)
    entity = session.get_one(Entity, order.entity_id)
    if package.collaboration == "by_campaign":
        return create_child(session, order, package, entity)
    if package.collaboration in ("simple", "by_form"):
        reference = session.get_one(Operation, package.operation_id)
        what = "; its form values personalise its part" if package.collaboration == "by_form" else ""
        return (f"{entity.code} takes part in {reference.code}: its parties (distribution "
                f"{_distribution_code(session, package) or '— none: add one to the package'}) enter its next run"
                f"{what}.")
    return None


def create_child(session: Session, order: Order, package: Package, entity: Entity) -> str:
    """The entity's copy of the reference operation, owned by it, with its parties as targets.

    Raises:
        CampflowError: the child's code is taken by another operation, or too long.
        SpecError: the reference operation no longer passes the checks of `campflow apply`.
    """
    from campflow.specs.apply import document_from_data, write_operation
    from campflow.specs.export import export_operation, spec_file_of
    from campflow.specs.validate import check_batch
    from campflow.store.catalog import load_known

    reference = session.get_one(Operation, package.operation_id)
    code = f"{reference.code}-{entity.code}"
    linked = session.get(Operation, order.child_operation_id) if order.child_operation_id else None
    existing = linked or session.scalars(select(Operation).where(Operation.code == code)).one_or_none()
    if existing is not None:
        if existing.parent_operation_id == reference.id and existing.owner_entity_id == entity.id:
            order.child_operation_id = existing.id  # ordered again after a cancellation: its child is kept
            return (f"child operation {existing.code} kept (created by an earlier order): "
                    f"{link('operations', existing.code)}")
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
    show = link("operations", child.code)
    add = "the head office targets them on request"
    if package.distribution_id is None:
        return (f"child operation {child.code} created with no target (package {package.code} has no distribution): "
                f"{entity.code}'s parties are not targeted yet ({add}); its page: {show}")
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
                f"(distribution {distribution.code}'s values for {entity.code}); the distribution needs fixing, or "
                f"parties targeting ({add}); its page: {show}")
    return f"child operation {child.code} created with {targeted} targets (distribution {distribution.code}): {show}"


def _distribution_code(session: Session, package: Package) -> str | None:
    if package.distribution_id is None:
        return None
    return session.scalar(select(Distribution.code).where(Distribution.id == package.distribution_id))
