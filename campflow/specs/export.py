"""An operation written back as its spec: what `campflow export` prints, what applying again
compares with, and what the step engine compiles (campflow.core.compiler). It only reads."""

from __future__ import annotations

import datetime as dt
import os
import re
import zoneinfo
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from campflow.core.dates import local_text
from campflow.errors import NotFound
from campflow.specs.schema import TEMPLATE_SUFFIXES, OperationSpec
from campflow.store.operations import folder_path
from models import (
    Collaborator,
    Condition,
    EntityType,
    Family,
    Operation,
    Questionnaire,
    Route,
    Step,
)

DATE_KEYS = ("starts_at", "ends_at", "run_at")


def canonical_operation(spec: OperationSpec, base: Path | None) -> dict[str, Any]:
    """The operation as plain data: defaults dropped, local dates, absolute paths.

    `base`: the folder relative paths start from, each path then resolved; None keeps the
    paths as stored (an export: resolving a stored path again would follow a symlink put
    in its place since apply, and a run would read whatever it points to).
    """
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    zone = zoneinfo.ZoneInfo(spec.timezone)
    _normalise(data, zone, base)
    return data


def _normalise(node: Any, zone: zoneinfo.ZoneInfo, base: Path | None) -> None:
    if isinstance(node, list):
        for item in node:
            _normalise(item, zone, base)
        return
    if not isinstance(node, dict):
        return
    for key in DATE_KEYS:
        if node.get(key):
            node[key] = local_text(dt.datetime.fromisoformat(node[key]), zone)
    # a run reads exactly the file apply checked (campflow.paths): stored resolved
    for key in ("email", "document"):
        block = node.get(key)
        if not block:
            continue
        for name in ("body", "text_body", "template"):
            if block.get(name):
                block[name] = _resolved(block[name], base)
        if block.get("attachments"):
            block["attachments"] = [_resolved(a, base) for a in block["attachments"]]
    for child in node.get("steps") or ():
        _normalise(child, zone, base)


def _resolved(value: str, base: Path | None) -> str:
    return value if base is None else str((base / Path(value).expanduser()).resolve())


def export_operation(session: Session, code: str) -> dict[str, Any]:
    """The operation as the canonical spec data (what `apply` compares against)."""
    op = session.scalars(select(Operation).where(Operation.code == code)).one_or_none()
    if op is None:
        raise NotFound(f"no operation {code}")
    zone = zoneinfo.ZoneInfo(op.timezone)
    data: dict[str, Any] = {"kind": "Operation", "code": op.code, "label": op.label,
                            "folder": folder_path(session, op.folder_id)}
    data["family"] = _code_of(session, Family, op.family_id)
    data["groups"] = list(op.groups)
    data["type"] = _code_of(session, EntityType, op.type_id)
    data["state"] = op.state
    data["starts_at"] = local_text(op.starts_at, zone) if op.starts_at else None
    data["ends_at"] = local_text(op.ends_at, zone) if op.ends_at else None
    data.update(timezone=op.timezone, cadence=op.cadence,
                responsible=_code_of(session, Collaborator, op.responsible_id),
                location=op.location, description=op.description, progress=op.progress,
                party_kinds=list(op.party_kinds), template=op.is_template,
                attach_messages_to_events=op.attach_messages_to_events,
                steps=export_steps(session, op.id, zone))
    spec = OperationSpec.model_validate({k: v for k, v in data.items() if v is not None})
    return canonical_operation(spec, None)


def export_steps(session: Session, operation_id: int, zone: zoneinfo.ZoneInfo) -> list[dict[str, Any]]:
    steps = list(session.scalars(select(Step).where(Step.operation_id == operation_id).order_by(Step.position)))
    codes = {s.id: s.code for s in steps}
    routes: dict[int, list[Route]] = {}
    for route in session.scalars(select(Route).where(Route.step_id.in_(codes)).order_by(Route.position)):
        routes.setdefault(route.step_id, []).append(route)
    conditions: dict[tuple[str, int], list[Condition]] = {}
    for c in session.scalars(select(Condition).where(
            (Condition.route_id.in_([r.id for rs in routes.values() for r in rs]))
            | Condition.where_step_id.in_(codes)).order_by(Condition.position)):
        key = ("route", c.route_id) if c.route_id else ("where", c.where_step_id)
        conditions.setdefault(key, []).append(c)  # type: ignore[arg-type]
    children: dict[int | None, list[dict[str, Any]]] = {}
    for step in steps:
        data: dict[str, Any] = {"code": step.code, "label": step.label, "kind": step.kind,
                                "type": _code_of(session, EntityType, step.type_id),
                                "state": step.state, "event": step.event_code,
                                "questionnaire": _code_of(session, Questionnaire, step.questionnaire_id),
                                "run_at": local_text(step.run_at, zone) if step.run_at else None,
                                "template": step.is_template, **_inline_body_as_text(step.settings)}
        if not step.default_route:
            data["next"] = [{"to": codes[r.to_step_id], "formula": r.formula, "when_status": r.when_status,
                             "conditions": {c.code: c.definition for c in conditions.get(("route", r.id), [])}}
                            for r in routes.get(step.id, [])]
        where = conditions.get(("where", step.id))
        if where or step.where_formula:
            data["where"] = {"formula": step.where_formula,
                             "conditions": {c.code: c.definition for c in where or []}}
        data = _drop_none(data)
        data["steps"] = children.setdefault(step.id, [])
        children.setdefault(step.parent_id, []).append(data)
    for data in (d for ds in children.values() for d in ds):
        if not data["steps"] or data.get("kind"):
            data.pop("steps")
    return children.get(None, [])


_TAG = re.compile(r"<[A-Za-z!/][^>]*>")


def _inline_body_as_text(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings stored when `body:` also took inline text: that text as `html:` or `text:`
    (as it was sent then), so such operations still export and run. An inline `text_body:`
    of those days is dropped: the plain part is then derived from the HTML."""
    email = settings.get("email")
    if not isinstance(email, dict) or all(_is_file(email.get(k)) for k in ("body", "text_body")):
        return settings
    inline = {k: v for k, v in email.items() if _is_file(v) or k not in ("body", "text_body")}
    body = email.get("body")
    if isinstance(body, str) and not _is_file(body):
        inline["html" if _TAG.search(body) else "text"] = body
    return {**settings, "email": inline}


def _is_file(value: Any) -> bool:
    return not isinstance(value, str) or ("\n" not in value and value.lower().endswith(TEMPLATE_SUFFIXES))


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data


def _code_of(session: Session, model: type, row_id: int | None) -> str | None:
    return session.scalar(select(model.code).where(model.id == row_id)) if row_id else None


def spec_file_of(session: Session, code: str) -> str | None:
    """The spec file an operation's paths lie beside: its own, or that of the operation it
    was made from (a local entity's child operation)."""
    op = session.scalars(select(Operation).where(Operation.code == code)).one_or_none()
    seen: set[int] = set()
    while op is not None and op.source_file is None and op.parent_operation_id and op.id not in seen:
        seen.add(op.id)
        op = session.get(Operation, op.parent_operation_id)
    return op.source_file if op is not None else None


def relative_paths(data: Any, base: Path) -> Any:
    """Write absolute template paths relative to the folder an export is saved in."""
    if isinstance(data, list):
        return [relative_paths(v, base) for v in data]
    if not isinstance(data, dict):
        return data
    result = {}
    for key, value in data.items():
        if key in ("body", "text_body", "template") and isinstance(value, str) and os.path.isabs(value):
            value = os.path.relpath(value, base)
        elif key == "attachments":
            value = [os.path.relpath(v, base) for v in value]
        result[key] = relative_paths(value, base)
    return result


def paths_outside(data: Any) -> list[str]:
    """The file paths of exported data that leave its folder (`..`): apply refuses them there
    unless their folder is in CAMPFLOW_ALLOWED_DIRS."""
    if isinstance(data, list):
        return [p for v in data for p in paths_outside(v)]
    if not isinstance(data, dict):
        return []
    found = []
    for key, value in data.items():
        if key in ("body", "text_body", "template", "attachments"):
            found += [v for v in ([value] if isinstance(value, str) else value) if v.startswith("..")]
        else:
            found += paths_outside(value)
    return found
