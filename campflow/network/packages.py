"""Packages the central entity publishes, the local entities' orders, and their approval
(SPEC section 9).

Every action takes a session and an `Actor`, changes rows in that one transaction and returns an
`Outcome`: what it did, and the e-mails it calls for. The e-mails are sent by `deliver` only after
the transaction is committed (`act` does both), so a failed notification never undoes nor half-does
an action: the error says the action itself was recorded and who was not told. The actions
(publishing, the orders' life) are in `campflow.network.orders`; reading and the views are here.
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
from campflow.network.notify import notify
from campflow.store import access, db, identity
from campflow.store.identity import Actor
from models import Entity, Operation, Order, OrderEvent, Package, PackageAudience
from models.network import ORDER_STATUSES

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


def find_package(session: Session, code: str, *, lock: bool = False, share: bool = False) -> Package:
    """The package `code`; `lock`: locked for a change of it (publishing), `share`: kept from
    changing while orders are placed (many at once: they do not wait for each other)."""
    query = select(Package).where(Package.code == code)
    if lock or share:
        query = query.with_for_update(read=share and not lock)
    package = session.scalars(query).one_or_none()
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


class FormValuesRefused(CampflowError):
    """Bad form values: the message lists them all; `fields` maps each field's code (or the
    unknown name given) to what is wrong with its value, for a form to show beside the field."""

    def __init__(self, message: str, fields: dict[str, str]) -> None:
        super().__init__(message)
        self.fields = fields


def validate_values(package: Package, values: Mapping[str, Any]) -> dict[str, Any]:
    """The form values typed and checked against the package's form, by field code.

    Raises:
        FormValuesRefused: every bad value, naming the field and what it expects.
    """
    fields = {f["code"].upper(): f for f in package.form}
    problems: list[str] = []
    by_field: dict[str, str] = {}
    typed: dict[str, Any] = {}
    for name, raw in values.items():
        spec = fields.get(name.upper())
        if spec is None:
            known = ", ".join(f["code"] for f in package.form)
            problems.append(f"package {package.code} has no field {name!r}"
                            + (f"; its fields: {known}" if known else "; it has no form: order without --value"))
            by_field[name] = "this package has no such field"
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            typed[spec["code"]] = _typed(spec, raw)
        except ValueError as exc:
            problems.append(f"field {spec['code']} ({spec['label']}): {exc}")
            by_field[spec["code"]] = str(exc)
    for spec in package.form:
        if spec.get("required") and spec["code"] not in typed and spec["code"] not in by_field:
            problems.append(f"field {spec['code']} ({spec['label']}) is required: add --value {spec['code']}=…")
            by_field[spec["code"]] = "required: give a value"
    if problems:
        raise FormValuesRefused(f"package {package.code}: " + "; ".join(problems), by_field)
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
    """One order with its history (a local actor sees only its own entity's; nobody outside its
    operation's groups sees it: `campflow.store.access`)."""
    order = find_order(session, order_id)
    access.require_visible_order(session, actor, order)
    actor.require(order.entity_id, f"order {order.id} of {_entity(session, order.entity_id).code}")
    return order_view(session, order, history=True)


def list_orders(session: Session, actor: Actor, package: str | None = None,
                status: str | None = None) -> list[dict[str, Any]]:
    """Orders, newest last; a local actor sees only its own entity's, of packages it may see
    (`campflow.store.access.visible_orders`)."""
    query = select(Order).where(access.visible_orders(actor)).order_by(Order.id)
    if status is not None:
        if status not in ORDER_STATUSES:
            raise CampflowError(f"--status must be one of {', '.join(ORDER_STATUSES)}; got {status!r}")
        query = query.where(Order.status == status)
    if package is not None:
        found = find_package(session, package)
        access.require_visible_package(session, actor, found)
        query = query.where(Order.package_id == found.id)
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
    visible now and offered to its entity; neither sees a package whose operation is hidden from
    it (`campflow.store.access.visible_packages`)."""
    now = _now(now)
    query = select(Package).where(access.visible_packages(actor)).order_by(Package.code)
    if not actor.central:
        query = query.join(PackageAudience, PackageAudience.package_id == Package.id).where(
            PackageAudience.entity_id == actor.entity_id)
    return [package_view(session, p, actor, now) for p in session.scalars(query)
            if actor.central or is_visible(p, now)]


def show_package(session: Session, code: str, actor: Actor, now: dt.datetime | None = None) -> dict[str, Any]:
    """One package; a local actor sees it only when it is published, visible and offered to it."""
    now = _now(now)
    package = find_package(session, code)
    access.require_visible_package(session, actor, package)
    if not actor.central and not (is_visible(package, now) and session.get(
            PackageAudience, (package.id, actor.entity_id))):
        # AccessDenied: the portal answers 404, as for a package that does not exist
        raise identity.AccessDenied(f"package {code} is not offered to {actor.entity_code} now; "
                                    "see `campflow packages list`")
    return package_view(session, package, actor, now)


def package_document(session: Session, code: str, number: int, actor: Actor,
                     now: dt.datetime | None = None) -> tuple[str, bytes]:
    """Document `number` (1, 2, …) of a package: its file name and bytes, read as the publishing
    e-mail reads it; for the central entity, or a local entity the package is offered to now.

    Raises:
        AccessDenied: the package is not offered to the actor's entity now.
        NotFound: no such package or document.
        PathRefused: the file is missing or no longer the one the spec named.
    """
    from campflow.paths import read_stored

    documents = show_package(session, code, actor, now)["documents"]
    if not 1 <= number <= len(documents):
        raise NotFound(f"package {code} has no document {number}; it has {len(documents)}")
    return Path(documents[number - 1]).name, read_stored(documents[number - 1])
