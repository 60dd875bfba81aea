"""Publishing a package and the life of its orders: create, edit, cancel, approve, reject, and the
e-mails each calls for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError, NotFound
from campflow.network import collaboration, messages
from campflow.network.packages import (
    Notice,
    Outcome,
    _audience,
    _entity,
    _now,
    find_order,
    find_package,
    local_time,
    validate_values,
)
from campflow.paths import PathRefused, read_stored
from campflow.store import access
from campflow.store.identity import AccessDenied, Actor
from models import Entity, Operation, Order, OrderEvent, Package
from models.network import LIVE_ORDER_STATUSES

# ---------------------------------------------------------------- publishing


def publish(session: Session, code: str, actor: Actor, now: dt.datetime | None = None) -> Outcome:
    """Publish a package: notify its audience, and in automatic mode register every audience
    entity with an approved order.

    Raises:
        CampflowError: not a central operator, already published, no audience, incoherent or
            past dates, a missing reference operation or document; nothing is changed.
    """
    now = _now(now)
    if not actor.may_change_network:
        raise AccessDenied(f"only the central entity's operators publish packages; {actor.login} acts "
                            f"for {actor.entity_code}")
    package = find_package(session, code, lock=True)
    access.require_visible_package(session, actor, package)
    if package.published_at is not None:
        raise CampflowError(f"package {code} was already published on {local_time(package, package.published_at)} "
                            "and its audience notified; to offer another round, apply a Package with a new code")
    problems = publish_problems(package, session.get(Operation, package.operation_id) is not None, now)
    audience = _audience(session, package)
    if not audience and package.collaboration != "by_target_approval":
        problems.insert(0, "it has no audience: add `audience: [LOCAL, …]` to its spec and apply it "
                           "(only by_target_approval packages go without)")
    if problems:
        raise CampflowError(f"package {code} cannot be published: " + "; ".join(problems)
                            + "; fix the Package spec and `campflow apply` it, then publish again")
    package.published_at = now
    warnings, notices, order_ids = [], [], []
    for entity in audience:
        lines = []
        if package.approval == "automatic":
            order = _new_order(session, package, entity, actor.login, {}, now, "registered automatically at publishing")
            lines.append(_approve(session, order, actor.login, "automatic approval", now))
            order_ids.append(order.id)
        if not entity.emails:
            warnings.append(f"{entity.code} has no e-mails: it was not notified")
            continue
        order = session.get_one(Order, order_ids[-1]) if package.approval == "automatic" else None
        notices.append(messages.notice(
            package, "package_published", entity.emails, f"package-{package.code}-{entity.code}",
            [Path(d) for d in package.documents], package=messages.package_values(package),
            entity=messages.entity_values(entity), order=order and messages.order_values(package, order),
            form=messages.form_values(package), consequence="\n".join(line for line in lines if line) or None))
    registered = f"; {len(order_ids)} entities registered (approved)" if order_ids else ""
    return Outcome(f"package {code} published to {len(audience)} entities{registered}",
                   tuple(order_ids), tuple(warnings), tuple(notices))


def publish_problems(package: Package, operation_exists: bool, now: dt.datetime) -> list[str]:
    """What stops the package from being published, each with its fix."""
    problems = []
    if not operation_exists:
        problems.append("its reference operation is missing: apply the Operation spec it names")
    vf, vu = package.visible_from, package.visible_until
    rd, pd = package.registration_deadline, package.personalization_deadline
    show = lambda value: local_time(package, value)  # noqa: E731
    if vf and vu and vf > vu:
        problems.append(f"visible_from {show(vf)} is after visible_until {show(vu)}")
    if rd and vu and rd > vu:
        problems.append(f"registration_deadline {show(rd)} is after visible_until {show(vu)}: "
                        "entities could not see the package to order it")
    if rd and vf and rd < vf:
        problems.append(f"registration_deadline {show(rd)} is before visible_from {show(vf)}")
    if pd and rd and pd < rd:
        problems.append(f"personalization_deadline {show(pd)} is before registration_deadline {show(rd)}")
    if vu and vu < now:
        problems.append(f"visible_until {show(vu)} has passed")
    elif rd and rd < now and package.collaboration != "by_target_approval":
        problems.append(f"registration_deadline {show(rd)} has passed: nobody could order")
    for document in package.documents:
        if not Path(document).exists():
            problems.append(f"document {document} is missing: put it back or remove it from `documents:`")
            continue
        try:
            read_stored(document)  # still the file apply checked: no symlink swapped in since
        except PathRefused as exc:
            problems.append(f"document refused: {exc}")
    return problems


# ---------------------------------------------------------------- orders


def create_order(session: Session, package_code: str, actor: Actor, values: Mapping[str, Any] | None = None,
                 now: dt.datetime | None = None, entity: str | None = None) -> Outcome:
    """Order a package for the actor's entity (a central actor names the local `entity`).

    Raises:
        CampflowError: the package is not published, not visible, past its registration
            deadline or not offered to the entity; a live order exists; a bad form value.
    """
    now = _now(now)
    package = find_package(session, package_code, share=True)
    access.require_visible_package(session, actor, package)
    target = _ordering_entity(session, actor, entity)
    # one order at a time per package and entity (the second one then sees the first, and says
    # so); other entities' orders of the same package go on at the same time
    session.execute(text("select pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"campflow-order:{package.id}:{target.id}"})
    if package.collaboration == "by_target_approval":
        raise CampflowError(f"package {package.code} takes no orders (by_target_approval): each entity approves "
                            "its list of contacts with `campflow approvals`")
    if package.published_at is None:
        raise CampflowError(f"package {package.code} is not published yet; the central entity publishes it with "
                            f"`campflow packages publish {package.code}`")
    audience = _audience(session, package)
    if target.id not in {e.id for e in audience}:
        raise CampflowError(f"package {package.code} is not offered to {target.code} (its audience: "
                            f"{', '.join(e.code for e in audience)}); ask the central entity to add it")
    if package.visible_from is not None and now < package.visible_from:
        raise CampflowError(f"package {package.code} is visible from {local_time(package, package.visible_from)} "
                            f"({package.timezone}); order from then")
    if package.visible_until is not None and now > package.visible_until:
        raise CampflowError(f"package {package.code} was visible until {local_time(package, package.visible_until)} "
                            f"({package.timezone}); it can no longer be ordered")
    if package.registration_deadline is not None and now > package.registration_deadline:
        raise CampflowError(f"registration to package {package.code} closed on "
                            f"{local_time(package, package.registration_deadline)} ({package.timezone})")
    live = session.scalars(select(Order).where(Order.package_id == package.id, Order.entity_id == target.id,
                                               Order.status.in_(LIVE_ORDER_STATUSES))).first()
    if live is not None:
        raise CampflowError(_live_order_message(package, target, live))
    typed = validate_values(package, values or {})
    order = _new_order(session, package, target, actor.login, typed, now)
    owner = _entity(session, package.owner_id)
    if package.approval == "automatic":
        line = _approve(session, order, actor.login, "automatic approval", now)
        notices = [_decision_notice(package, target, order, line),
                   _reviewers_notice(package, owner, target, order, informative=True)]
        summary = f"order {order.id}: {target.code} registered to {package.code} (approved automatically)"
    else:
        notices = [_reviewers_notice(package, owner, target, order)]
        summary = f"order {order.id}: {target.code} ordered {package.code}; pending the central entity's approval"
    kept = tuple(n for n in notices if n.to)
    warnings = () if len(kept) == len(notices) else (f"{owner.code} has no reviewers nor e-mails: nobody was told",)
    return Outcome(summary, (order.id,), warnings, kept)


def _ordering_entity(session: Session, actor: Actor, code: str | None) -> Entity:
    if code is None:
        if actor.central:
            raise CampflowError(f"{actor.login} acts for the central entity {actor.entity_code}: to order on behalf "
                                "of a local entity, pass --entity CODE")
        return _entity(session, actor.entity_id)
    entity = session.scalars(select(Entity).where(Entity.code == code)).one_or_none()
    if entity is None:
        from campflow.errors import closest

        raise NotFound(f"no entity {code}{closest(code, session.scalars(select(Entity.code)))}")
    actor.require(entity.id, f"orders of {entity.code}")
    if entity.type != "local":
        raise CampflowError(f"{entity.code} is a central entity; orders are placed for local entities")
    return entity


def _live_order_message(package: Package, entity: Entity, live: Order) -> str:
    if live.status == "approved" and package.approval == "automatic":
        return (f"{entity.code} is already registered to {package.code} (order {live.id}, approved); change its "
                f"personalisation with `campflow orders edit {live.id} --value FIELD=VALUE`")
    return (f"{entity.code} already has order {live.id} ({live.status}) for {package.code}; change it with "
            f"`campflow orders edit {live.id} --value FIELD=VALUE` or cancel it with "
            f"`campflow orders cancel {live.id}`")


def _event(session: Session, order: Order, login: str, action: str, now: dt.datetime,
           comment: str | None = None, values: dict[str, Any] | None = None) -> None:
    session.add(OrderEvent(order_id=order.id, at=now, actor=login, action=action, comment=comment, values=values))


def _new_order(session: Session, package: Package, entity: Entity, login: str, values: dict[str, Any],
               now: dt.datetime, comment: str | None = None) -> Order:
    order = Order(package_id=package.id, entity_id=entity.id, status="pending", values=values, created_by=login,
                  created_at=now)
    session.add(order)
    session.flush()
    _event(session, order, login, "created", now, comment, dict(values))
    return order


def _approve(session: Session, order: Order, login: str, comment: str | None, now: dt.datetime) -> str | None:
    """Approve in this transaction and apply the collaboration's consequences (its mail line)."""
    order.status, order.comment, order.decided_by, order.decided_at = "approved", comment or None, login, now
    _event(session, order, login, "approved", now, comment or None)
    session.flush()
    return collaboration.on_approved(session, order, login)


def _subject_order(session: Session, order_id: int, actor: Actor) -> tuple[Order, Package, Entity]:
    order = find_order(session, order_id, lock=True)
    access.require_visible_order(session, actor, order)
    entity = _entity(session, order.entity_id)
    actor.require(order.entity_id, f"order {order.id} of {entity.code}")
    return order, session.get_one(Package, order.package_id), entity


def edit_order(session: Session, order_id: int, actor: Actor, values: Mapping[str, Any],
               now: dt.datetime | None = None) -> Outcome:
    """Change an order's form values (an empty value clears a field); all values are checked again.

    A pending order may change; an approved one only in automatic mode or for by_campaign
    packages (the personalisation changes without a new approval).
    """
    now = _now(now)
    order, package, entity = _subject_order(session, order_id, actor)
    if order.status == "approved" and package.approval != "automatic" and package.collaboration != "by_campaign":
        raise CampflowError(f"order {order.id} of {entity.code} for {package.code} is approved; its values can no "
                            "longer change; ask the central entity's reviewers")
    if order.status not in ("pending", "approved"):
        raise CampflowError(f"order {order.id} of {entity.code} is {order.status}; nothing to edit; order again with "
                            f"`campflow orders create {package.code}`")
    codes = {f["code"].upper(): f["code"] for f in package.form}
    merged = dict(order.values) | {codes.get(name.upper(), name): value for name, value in values.items()}
    typed = validate_values(package, merged)
    if typed == order.values:
        return Outcome(f"order {order.id}: values unchanged", (order.id,))
    order.values = typed
    _event(session, order, actor.login, "edited", now, values=dict(typed))
    return Outcome(f"order {order.id} of {entity.code} for {package.code}: values changed", (order.id,))


def cancel_order(session: Session, order_id: int, actor: Actor, comment: str | None = None,
                 now: dt.datetime | None = None) -> Outcome:
    """Cancel a pending order, or unsubscribe from an approved one in automatic mode.

    An approved order of a manually approved package is cancelled only by the central entity.
    """
    now = _now(now)
    order, package, entity = _subject_order(session, order_id, actor)
    if order.status not in ("pending", "approved"):
        raise CampflowError(f"order {order.id} of {entity.code} is already {order.status}; nothing to cancel")
    if order.status == "approved" and package.approval == "manual" and not actor.central:
        raise CampflowError(f"order {order.id} of {entity.code} for {package.code} is approved; an approved order "
                            "of a manually approved package can't be cancelled by the local entity; ask the central "
                            "entity's reviewers")
    unsubscribe = order.status == "approved"
    order.status = "cancelled"
    _event(session, order, actor.login, "unsubscribed" if unsubscribe else "cancelled", now, comment or None)
    owner = _entity(session, package.owner_id)
    what = f"order {order.id} of {entity.code} for {package.code} {'unsubscribed' if unsubscribe else 'cancelled'}"
    to = tuple(entity.emails) if actor.central else tuple(owner.reviewers or owner.emails)
    notices = (messages.notice(package, "order_cancelled", to, f"order-{order.id}",
                               package=messages.package_values(package), entity=messages.entity_values(entity),
                               order=messages.order_values(package, order), by=actor.login, comment=comment or None,
                               unsubscribed=unsubscribe),)
    return Outcome(what, (order.id,), (), tuple(n for n in notices if n.to))


def approve_order(session: Session, order_id: int, actor: Actor, comment: str = "",
                  now: dt.datetime | None = None) -> Outcome:
    """Approve a pending order (central operators only); the decision is mailed to the entity."""
    return _decide(session, order_id, actor, "approved", comment, _now(now))


def reject_order(session: Session, order_id: int, actor: Actor, comment: str = "",
                 now: dt.datetime | None = None) -> Outcome:
    """Reject a pending order with a comment saying why (central operators only)."""
    return _decide(session, order_id, actor, "rejected", comment, _now(now))


def _decide(session: Session, order_id: int, actor: Actor, decision: str, comment: str, now: dt.datetime) -> Outcome:
    if not actor.may_decide:
        raise AccessDenied(f"only the central entity's reviewers approve or reject orders; {actor.login} acts for "
                           f"{actor.entity_code}")
    order, package, entity = _subject_order(session, order_id, actor)
    if order.status != "pending":
        raise CampflowError(f"order {order.id} of {entity.code} is already {order.status}"
                            + decided_text(order) + "; nothing changed")
    comment = (comment or "").strip()
    if decision == "rejected" and not comment:
        raise CampflowError(f"rejecting order {order.id} needs a comment telling {entity.code} why: --comment \"…\"")
    if decision == "approved":
        line = _approve(session, order, actor.login, comment, now)
    else:
        order.status, order.comment, order.decided_by, order.decided_at = "rejected", comment, actor.login, now
        _event(session, order, actor.login, "rejected", now, comment)
        line = None
    notice = _decision_notice(package, entity, order, line)
    warnings = () if notice.to else (f"{entity.code} has no e-mails: the decision was not mailed",)
    return Outcome(f"order {order.id} of {entity.code} for {package.code} {decision}", (order.id,), warnings,
                   (notice,) if notice.to else ())


def decided_text(order: Order) -> str:
    by = f" by {order.decided_by}" if order.decided_by else ""
    on = f" on {order.decided_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC" if order.decided_at else ""
    return by + on


def _reviewers_notice(package: Package, owner: Entity, entity: Entity, order: Order,
                      informative: bool = False) -> Notice:
    """To the central reviewers: an order to decide on (or, informative, approved automatically)."""
    values = {"package": messages.package_values(package), "entity": messages.entity_values(entity),
              "order": messages.order_values(package, order)}
    if not informative:
        values["review_link"] = messages.link("central", "orders")
    return messages.notice(package, "order_registered" if informative else "order_to_review",
                           owner.reviewers or owner.emails, f"order-{order.id}", **values)


def _decision_notice(package: Package, entity: Entity, order: Order, line: str | None) -> Notice:
    """To the local entity: its order approved or rejected, the comment, what the approval did."""
    return messages.notice(package, "order_decided", entity.emails, f"order-{order.id}",
                           package=messages.package_values(package), entity=messages.entity_values(entity),
                           order=messages.order_values(package, order), consequence=line)


def order_actions(order: Mapping[str, Any], actor: Actor) -> frozenset[str]:
    """What `actor` may do now to an order (a view of `show_order`): `edit`, `cancel`, `decide`.
    The buttons a page shows; the actions above check again and say why when they refuse."""
    status, approval = order["status"], order["approval"]
    actions = set()
    if status == "pending" or (status == "approved" and (approval == "automatic"
                                                         or order["collaboration"] == "by_campaign")):
        actions.add("edit")
    if status == "pending" or (status == "approved" and (approval == "automatic" or actor.central)):
        actions.add("cancel")
    if status == "pending" and actor.may_decide:
        actions.add("decide")
    return frozenset(actions)
