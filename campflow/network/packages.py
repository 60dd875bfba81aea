"""Packages the central entity publishes, the local entities' orders, and their approval
(SPEC section 9).

Every action takes a session and an `Actor`, changes rows in that one transaction and returns an
`Outcome`: what it did, and the e-mails it calls for. The e-mails are sent by `deliver` only after
the transaction is committed (`act` does both), so a failed notification never undoes nor half-does
an action: the error says the action itself was recorded and who was not told.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campflow.errors import CampflowError, NotFound
from campflow.network import collaboration
from campflow.network.notify import notify
from campflow.paths import PathRefused, read_stored
from campflow.store import db, identity
from campflow.store.identity import Actor
from models import Entity, Operation, Order, OrderEvent, Package, PackageAudience
from models.network import LIVE_ORDER_STATUSES, ORDER_STATUSES

YES = ("yes", "y", "true", "1", "oui", "o", "on")
NO = ("no", "n", "false", "0", "non", "off")


@dataclass(frozen=True)
class Notice:
    """One e-mail to send once the action is committed."""

    to: tuple[str, ...]
    subject: str
    body: str
    attachments: tuple[Path, ...] = ()
    tag: str = "notice"


@dataclass(frozen=True)
class Outcome:
    """What an action did (one line), its orders, warnings, and the e-mails it calls for."""

    summary: str
    order_ids: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    notices: tuple[Notice, ...] = field(default=(), repr=False)


# ---------------------------------------------------------------- running an action


def deliver(outcome: Outcome) -> list[str]:
    """Send the outcome's e-mails; returns where they went.

    Raises:
        CampflowError: some e-mails failed; the message says the action was recorded anyway.
    """
    sent: list[str] = []
    failed: list[str] = []
    for notice in outcome.notices:
        try:
            sent += notify(notice.to, notice.subject, notice.body, notice.attachments, notice.tag)
        except (CampflowError, OSError) as exc:
            failed.append(f"{', '.join(notice.to)} ({exc})")
    if failed:
        raise CampflowError(f"{outcome.summary} — this is recorded, but notifying failed for "
                            f"{'; '.join(failed)}; tell them yourself, and check the channel with "
                            "`campflow channels check notifications`")
    return sent


def act(action: Callable[..., Outcome], subject: str | int, as_: str | None = None, **kwargs: Any) -> Outcome:
    """Run one action as operator `as_` in its own transaction, then send its e-mails."""
    with db.session() as session:
        outcome = action(session, subject, identity.actor(session, as_), **kwargs)
    deliver(outcome)
    return outcome


# ---------------------------------------------------------------- reading


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def find_package(session: Session, code: str, *, lock: bool = False) -> Package:
    query = select(Package).where(Package.code == code)
    package = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if package is None:
        from campflow.errors import closest

        raise NotFound(f"no package {code}{closest(code, session.scalars(select(Package.code)))}")
    return package


def find_order(session: Session, order_id: int, *, lock: bool = False) -> Order:
    query = select(Order).where(Order.id == order_id)
    order = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if order is None:
        raise NotFound(f"no order {order_id}; see `campflow orders list`")
    return order


def _entity(session: Session, entity_id: int) -> Entity:
    return session.get_one(Entity, entity_id)


def _audience(session: Session, package: Package) -> list[Entity]:
    return list(session.scalars(select(Entity).join(PackageAudience, PackageAudience.entity_id == Entity.id)
                                .where(PackageAudience.package_id == package.id).order_by(Entity.code)))


def local_time(package: Package, value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(zoneinfo.ZoneInfo(package.timezone)).strftime("%Y-%m-%d %H:%M")


def is_visible(package: Package, now: dt.datetime) -> bool:
    return (package.published_at is not None
            and (package.visible_from is None or package.visible_from <= now)
            and (package.visible_until is None or now <= package.visible_until))


def package_state(package: Package, now: dt.datetime) -> str:
    """draft, announced (published, not visible yet), open, closed (deadline passed) or ended."""
    if package.published_at is None:
        return "draft"
    if package.visible_until is not None and now > package.visible_until:
        return "ended"
    if package.visible_from is not None and now < package.visible_from:
        return "announced"
    if package.registration_deadline is not None and now > package.registration_deadline:
        return "closed"
    return "open"


# ---------------------------------------------------------------- form values


def validate_values(package: Package, values: Mapping[str, Any]) -> dict[str, Any]:
    """The form values typed and checked against the package's form, by field code.

    Raises:
        CampflowError: every bad value, naming the field and what it expects.
    """
    fields = {f["code"].upper(): f for f in package.form}
    problems: list[str] = []
    typed: dict[str, Any] = {}
    for name, raw in values.items():
        spec = fields.get(name.upper())
        if spec is None:
            known = ", ".join(f["code"] for f in package.form)
            problems.append(f"package {package.code} has no field {name!r}"
                            + (f"; its fields: {known}" if known else "; it has no form: order without --value"))
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            typed[spec["code"]] = _typed(spec, raw)
        except ValueError as exc:
            problems.append(f"field {spec['code']} ({spec['label']}): {exc}")
    for spec in package.form:
        if spec.get("required") and spec["code"] not in typed and not any(
                problem.startswith(f"field {spec['code']} ") for problem in problems):
            problems.append(f"field {spec['code']} ({spec['label']}) is required: add --value {spec['code']}=…")
    if problems:
        raise CampflowError(f"package {package.code}: " + "; ".join(problems))
    return typed


def _typed(spec: Mapping[str, Any], raw: Any) -> Any:
    kind = spec.get("type", "text")
    text = str(raw).strip()
    if kind == "choice":
        choices = list(spec.get("choices", []))
        match = next((c for c in choices if c == text), None) or next(
            (c for c in choices if c.casefold() == text.casefold()), None)
        if match is None:
            raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}; got {text!r}")
        return match
    if kind == "number":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return raw
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            raise ValueError(f"must be a number such as 12 or 12.5; got {text!r}") from None
        return int(number) if number.is_integer() and "." not in text and "," not in text else number
    if kind == "date":
        if isinstance(raw, dt.date):
            return raw.isoformat()
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError(f"must be a date YYYY-MM-DD such as 2027-03-15; got {text!r}") from None
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if text.lower() in YES + NO:
            return text.lower() in YES
        raise ValueError(f"must be yes or no; got {text!r}")
    return text


def order_line(package: Package, login: str) -> str:
    """The exact command that orders the package, listing its form fields."""
    parts = ["campflow", "orders", "create", package.code, "--as", login]
    parts += [f"--value {f['code']}=…" for f in package.form if f.get("required")]
    parts += [f"[--value {f['code']}=…]" for f in package.form if not f.get("required")]
    return " ".join(parts)


def form_lines(package: Package) -> list[str]:
    lines = []
    for f in package.form:
        kind = f.get("type", "text")
        what = f"one of {', '.join(repr(c) for c in f['choices'])}" if kind == "choice" else {
            "number": "a number", "date": "a date YYYY-MM-DD", "bool": "yes or no"}.get(kind, "text")
        lines.append(f"  {f['code']}: {f['label']} — {what}{', required' if f.get('required') else ''}")
    return lines


# ---------------------------------------------------------------- publishing


def publish(session: Session, code: str, actor: Actor, now: dt.datetime | None = None) -> Outcome:
    """Publish a package: notify its audience, and in automatic mode register every audience
    entity with an approved order.

    Raises:
        CampflowError: not a central operator, already published, no audience, incoherent or
            past dates, a missing reference operation or document; nothing is changed.
    """
    now = _now(now)
    if not actor.central:
        raise CampflowError(f"only the central entity's operators publish packages; {actor.login} acts "
                            f"for {actor.entity_code}")
    package = find_package(session, code, lock=True)
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
        notices.append(Notice(tuple(entity.emails), f"Package {package.code} — {package.label}",
                              publish_body(package, entity, order_ids[-1] if package.approval == "automatic" else None,
                                           [line for line in lines if line]),
                              tuple(Path(d) for d in package.documents), f"package-{package.code}-{entity.code}"))
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


def publish_body(package: Package, entity: Entity, order_id: int | None, collaboration_lines: list[str]) -> str:
    login = entity.operators[0] if entity.operators else "LOGIN"
    dates = [(label, getattr(package, name)) for label, name in (
        ("visible from", "visible_from"), ("visible until", "visible_until"),
        ("registration deadline", "registration_deadline"),
        ("personalisation deadline (informative)", "personalization_deadline"))]
    lines = [f"{package.label} ({package.code}) is offered to {entity.label} ({entity.code}).", ""]
    if package.description:
        lines += [package.description.strip(), ""]
    lines += [f"Dates ({package.timezone}):"] + [f"  {label}: {local_time(package, value)}"
                                                 for label, value in dates if value] + [""]
    if package.documents:
        lines += ["Documents (attached): " + ", ".join(Path(d).name for d in package.documents), ""]
    if order_id is not None:
        lines += [f"{entity.code} is registered: order {order_id}, approved.",
                  f"Change its personalisation: campflow orders edit {order_id} --as {login} --value FIELD=VALUE",
                  f"Unsubscribe: campflow orders cancel {order_id} --as {login}"]
    elif package.collaboration == "by_target_approval":
        lines += ["Nothing to order: each entity will receive its list of contacts to approve "
                  "(`campflow approvals`)."]
    else:
        lines += ["How to order:", f"  {order_line(package, login)}"]
    if package.form:
        lines += ["", "Form fields:", *form_lines(package)]
    if collaboration_lines:
        lines += ["", *collaboration_lines]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- orders


def create_order(session: Session, package_code: str, actor: Actor, values: Mapping[str, Any] | None = None,
                 now: dt.datetime | None = None, entity: str | None = None) -> Outcome:
    """Order a package for the actor's entity (a central actor names the local `entity`).

    Raises:
        CampflowError: the package is not published, not visible, past its registration
            deadline or not offered to the entity; a live order exists; a bad form value.
    """
    now = _now(now)
    package = find_package(session, package_code, lock=True)
    target = _ordering_entity(session, actor, entity)
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
    body = f"{what.capitalize()} by {actor.login}.\n" + (f"Comment: {comment}\n" if comment else "")
    to = tuple(entity.emails) if actor.central else tuple(owner.reviewers or owner.emails)
    notices = (Notice(to, f"Order {order.id} for {package.code}: cancelled", body, tag=f"order-{order.id}"),)
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
    if not actor.central:
        raise CampflowError(f"only the central entity's operators approve or reject orders; {actor.login} acts for "
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


def _values_lines(values: Mapping[str, Any]) -> list[str]:
    return [f"  {k}: {v}" for k, v in values.items()] or ["  (no values)"]


def _reviewers_notice(package: Package, owner: Entity, entity: Entity, order: Order,
                      informative: bool = False) -> Notice:
    login = owner.operators[0] if owner.operators else "LOGIN"
    lines = [f"{entity.label} ({entity.code}) ordered package {package.label} ({package.code}): order {order.id}, "
             f"by {order.created_by}.", "", "Values:", *_values_lines(order.values), ""]
    if informative:
        lines += ["It was approved automatically (the package's approval is automatic); nothing to decide."]
    else:
        lines += ["Decide with:",
                  f"  campflow orders approve {order.id} --as {login} [--comment \"…\"]",
                  f"  campflow orders reject {order.id} --as {login} --comment \"why\"",
                  f"or in the Prefect UI: `campflow orders review {order.id}` starts an approve-order flow run; "
                  "answer the form behind its Resume button."]
    subject = f"Order {order.id}: {entity.code} orders {package.code}" + (" (approved)" if informative else "")
    return Notice(tuple(owner.reviewers or owner.emails), subject, "\n".join(lines) + "\n", tag=f"order-{order.id}")


def _decision_notice(package: Package, entity: Entity, order: Order, line: str | None) -> Notice:
    lines = [f"Your order {order.id} of package {package.label} ({package.code}) is {order.status}"
             f"{' by ' + order.decided_by if order.decided_by else ''}.", ""]
    if order.comment:
        lines += [f"Comment: {order.comment}", ""]
    lines += ["Values:", *_values_lines(order.values)]
    if line:
        lines += ["", line]
    return Notice(tuple(entity.emails), f"Order {order.id} for {package.code}: {order.status}",
                  "\n".join(lines) + "\n", tag=f"order-{order.id}")


# ---------------------------------------------------------------- views


def order_view(session: Session, order: Order, history: bool = False) -> dict[str, Any]:
    package = session.get_one(Package, order.package_id)
    entity = _entity(session, order.entity_id)
    view = {"id": order.id, "package": package.code, "package_label": package.label, "entity": entity.code,
            "entity_label": entity.label, "status": order.status, "values": dict(order.values),
            "comment": order.comment, "created_by": order.created_by, "created_at": order.created_at,
            "decided_by": order.decided_by, "decided_at": order.decided_at,
            "collaboration": package.collaboration, "approval": package.approval, "timezone": package.timezone}
    if history:
        view["history"] = [{"at": e.at, "actor": e.actor, "action": e.action, "comment": e.comment,
                            "values": e.values}
                           for e in session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id)
                                                    .order_by(OrderEvent.at, OrderEvent.id))]
    return view


def show_order(session: Session, order_id: int, actor: Actor) -> dict[str, Any]:
    """One order with its history (a local actor sees only its own entity's)."""
    order = find_order(session, order_id)
    actor.require(order.entity_id, f"order {order.id} of {_entity(session, order.entity_id).code}")
    return order_view(session, order, history=True)


def list_orders(session: Session, actor: Actor, package: str | None = None,
                status: str | None = None) -> list[dict[str, Any]]:
    """Orders, newest last; a local actor sees only its own entity's."""
    query = select(Order).order_by(Order.id)
    if status is not None:
        if status not in ORDER_STATUSES:
            raise CampflowError(f"--status must be one of {', '.join(ORDER_STATUSES)}; got {status!r}")
        query = query.where(Order.status == status)
    if package is not None:
        query = query.where(Order.package_id == find_package(session, package).id)
    if not actor.central:
        query = query.where(Order.entity_id == actor.entity_id)
    return [order_view(session, order) for order in session.scalars(query)]


def package_view(session: Session, package: Package, actor: Actor, now: dt.datetime) -> dict[str, Any]:
    counts = dict(session.execute(select(Order.status, func.count()).where(Order.package_id == package.id)
                                  .group_by(Order.status)).tuples().all())
    mine = session.scalars(select(Order).where(Order.package_id == package.id, Order.entity_id == actor.entity_id)
                           .order_by(Order.id.desc())).first()
    return {"code": package.code, "label": package.label, "state": package_state(package, now),
            "collaboration": package.collaboration, "approval": package.approval,
            "operation": session.scalar(select(Operation.code).where(Operation.id == package.operation_id)),
            "owner": _entity(session, package.owner_id).code, "timezone": package.timezone,
            "visible_from": package.visible_from, "visible_until": package.visible_until,
            "registration_deadline": package.registration_deadline,
            "personalization_deadline": package.personalization_deadline, "published_at": package.published_at,
            "audience": [e.code for e in _audience(session, package)], "form": list(package.form),
            "description": package.description, "documents": list(package.documents),
            "orders": counts if actor.central else None,
            "my_order": None if actor.central or mine is None else {"id": mine.id, "status": mine.status}}


def list_packages(session: Session, actor: Actor, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """All packages with their state for a central actor; for a local one, those published,
    visible now and offered to its entity."""
    now = _now(now)
    query = select(Package).order_by(Package.code)
    if not actor.central:
        query = query.join(PackageAudience, PackageAudience.package_id == Package.id).where(
            PackageAudience.entity_id == actor.entity_id)
    return [package_view(session, p, actor, now) for p in session.scalars(query)
            if actor.central or is_visible(p, now)]


def show_package(session: Session, code: str, actor: Actor, now: dt.datetime | None = None) -> dict[str, Any]:
    """One package; a local actor sees it only when it is published, visible and offered to it."""
    now = _now(now)
    package = find_package(session, code)
    if not actor.central and not (is_visible(package, now) and session.get(
            PackageAudience, (package.id, actor.entity_id))):
        raise CampflowError(f"package {code} is not offered to {actor.entity_code} now; "
                            "see `campflow packages list`")
    return package_view(session, package, actor, now)
