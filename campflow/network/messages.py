"""The values the network's notifications are rendered with, and the notices themselves.

Each notice is a template (`campflow.network.texts`: the package's own, or the default) given
plain values: the package, the entity, the order, with links to their pages in the portal.
Dates are written in the package's timezone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import text
from sqlalchemy.orm import Session

from campflow.network.accounts import portal_url
from campflow.network.packages import Notice, local_time
from campflow.network.texts import render_notice
from models import Entity, Order, Package


def link(*parts: str | int) -> str:
    """The portal's page at these path segments (each quoted)."""
    return portal_url("/".join(quote(str(part), safe="") for part in parts))


def package_values(package: Package) -> dict[str, Any]:
    dates = {name: local_time(package, getattr(package, name)) for name in (
        "visible_from", "visible_until", "registration_deadline", "personalization_deadline")}
    return {"code": package.code, "label": package.label, "description": (package.description or "").strip() or None,
            "timezone": package.timezone, "collaboration": package.collaboration, "approval": package.approval,
            "documents": [Path(d).name for d in package.documents], "link": link("packages", package.code), **dates}


def entity_values(entity: Entity) -> dict[str, Any]:
    return {"code": entity.code, "label": entity.label}


def order_values(package: Package, order: Order) -> dict[str, Any]:
    return {"id": order.id, "status": order.status, "comment": order.comment, "created_by": order.created_by,
            "decided_by": order.decided_by, "decided_at": local_time(package, order.decided_at),
            "fields": [{"code": code, "value": value} for code, value in order.values.items()],
            "link": link("orders", order.id)}


def form_values(package: Package) -> list[dict[str, Any]]:
    fields = []
    for f in package.form:
        kind = f.get("type", "text")
        what = f"one of {', '.join(repr(c) for c in f['choices'])}" if kind == "choice" else {
            "number": "a number", "date": "a date YYYY-MM-DD", "bool": "yes or no"}.get(kind, "text")
        fields.append({"code": f["code"], "label": f["label"], "kind": kind, "what": what,
                       "required": bool(f.get("required"))})
    return fields


def notice(of: Package, name: str, to: Sequence[str], tag: str, attachments: Sequence[Path] = (), /,
           **values: Any) -> Notice:
    """The e-mail `name` of package `of`, rendered from its template (else the default)."""
    subject, body = render_notice(name, of.notices, portal=portal_url(), **values)
    return Notice(tuple(to), subject, body, tuple(attachments), tag)


def operation_notices(session: Session, operation_id: int) -> dict[str, str]:
    """The templates of the package offering this operation (a by_target_approval one first):
    the lists and reports of its local_approval steps are that package's notifications."""
    found = session.execute(text("""
        select notices from package where operation_id = :op
        order by collaboration = 'by_target_approval' desc, published_at desc nulls last, id desc limit 1"""),
        {"op": operation_id}).scalar()
    return dict(found or {})


def render(name: str, overrides: dict[str, str] | None, **values: Any) -> tuple[str, str]:
    """(subject, body) of notice `name` with the portal's address given."""
    return render_notice(name, overrides, portal=portal_url(), **values)
