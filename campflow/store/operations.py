"""Read models of the operation tree and of one operation, for the CLI and JSON."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from campflow.core.dates import local_text
from campflow.store.access import find_visible_operation, visible_operations
from campflow.store.identity import Actor
from models import (
    Collaborator,
    Condition,
    EntityType,
    Family,
    Folder,
    Operation,
    OperationTarget,
    Questionnaire,
    Route,
    Step,
    StepTarget,
)


def find_operation(session: Session, code: str) -> Operation:
    """The operation `code`, for the administrator at its shell and the flows; what an actor asks
    for goes through `campflow.store.access.find_visible_operation`."""
    return find_visible_operation(session, None, code)


def load_tree(session: Session, *, find: str | None = None, family: str | None = None,
              state: str | None = None, who: Actor | None = None) -> list[dict[str, Any]]:
    """Folders and the operations that pass the filters, as nested dicts.

    `who`: only the operations that actor sees (`campflow.store.access.visible_operations`), and
    only the folders that hold one of them; None: everything (the administrator at its shell)."""
    query = (
        select(Operation, Family.code, func.count(OperationTarget.party_id))
        .outerjoin(Family, Family.id == Operation.family_id)
        .outerjoin(OperationTarget, OperationTarget.operation_id == Operation.id)
        .group_by(Operation.id, Family.code)
        .where(visible_operations(who))
        .order_by(Operation.code)
    )
    if find:
        pattern = f"%{find}%"
        query = query.where(or_(Operation.code.ilike(pattern), Operation.label.ilike(pattern)))
    if family:
        query = query.where(Family.code == family)
    if state:
        query = query.where(Operation.state == state)
    folders = {f.id: f for f in session.scalars(select(Folder).order_by(Folder.position, Folder.label))}
    nodes: dict[int | None, dict[str, Any]] = {None: {"children": []}}

    def folder_node(folder_id: int | None) -> dict[str, Any]:
        if folder_id not in nodes:
            folder = folders[folder_id]
            node = {"type": "folder", "label": folder.label, "kind": folder.kind, "children": []}
            nodes[folder_id] = node
            folder_node(folder.parent_id)["children"].append(node)
        return nodes[folder_id]

    filtered = bool(find or family or state) or who is not None
    if not filtered:
        for folder_id in folders:
            folder_node(folder_id)
    for op, family_code, targets in session.execute(query):
        folder_node(op.folder_id)["children"].append({
            "type": "operation", "code": op.code, "label": op.label, "state": op.state,
            "family": family_code, "template": op.is_template, "progress": op.progress,
            "starts_at": op.starts_at.isoformat() if op.starts_at else None,
            "ends_at": op.ends_at.isoformat() if op.ends_at else None, "targets": targets,
        })
    return nodes[None]["children"]


@dataclass
class OperationView:
    header: dict[str, Any]
    steps: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {**self.header, "steps": self.steps}


def load_view(session: Session, code: str, who: Actor | None = None) -> OperationView:
    """One operation: its header, its steps in document order with routes and counts.

    `who`: an operation that actor may not see is "no operation X", as one that does not exist
    (`campflow.store.access.find_visible_operation`); None: the administrator at its shell."""
    op = find_visible_operation(session, who, code)
    header = {
        "code": op.code, "label": op.label, "folder": " / ".join(folder_path(session, op.folder_id)),
        "family": _code(session, Family, op.family_id), "type": _code(session, EntityType, op.type_id),
        "state": op.state, "starts_at": _local(op.starts_at, op.timezone),
        "ends_at": _local(op.ends_at, op.timezone), "timezone": op.timezone,
        "cadence": op.cadence, "responsible": _code(session, Collaborator, op.responsible_id),
        "location": op.location, "progress": op.progress, "party_kinds": ", ".join(op.party_kinds),
        "template": op.is_template, "groups": ", ".join(op.groups),
        "targets": session.scalar(select(func.count()).where(OperationTarget.operation_id == op.id)),
    }
    steps = list(session.scalars(select(Step).where(Step.operation_id == op.id).order_by(Step.position)))
    by_id = {s.id: s for s in steps}
    counts: dict[int, dict[str, int]] = {}
    for step_id, status, count in session.execute(
        select(StepTarget.step_id, StepTarget.status, func.count())
        .where(StepTarget.operation_id == op.id).group_by(StepTarget.step_id, StepTarget.status)
        .order_by(StepTarget.step_id, StepTarget.status)
    ):
        counts.setdefault(step_id, {})[status] = count
    routes: dict[int, list[dict[str, Any]]] = {}
    for route in session.scalars(select(Route).where(Route.step_id.in_(by_id)).order_by(Route.position)):
        conditions = list(session.scalars(select(Condition.code).where(Condition.route_id == route.id)
                                          .order_by(Condition.position)))
        rule = route.formula or " and ".join(conditions) or "always"
        if route.when_status != ["ok_continue"]:
            rule += f" (status in {', '.join(route.when_status)})"
        routes.setdefault(route.step_id, []).append({"to": by_id[route.to_step_id].code, "rule": rule})
    questionnaires = dict(session.execute(select(Questionnaire.id, Questionnaire.code)).all())
    rows = [{
        "code": s.code, "label": s.label, "kind": s.kind, "state": s.state,
        "parent": by_id[s.parent_id].code if s.parent_id else None,
        "event": s.event_code, "questionnaire": questionnaires.get(s.questionnaire_id),
        "run_at": _local(s.run_at, op.timezone), "template": s.is_template,
        "counts": counts.get(s.id, {}), "routes": routes.get(s.id, []),
    } for s in steps]
    _add_default_routes(rows, {s.code for s in steps if s.default_route})
    return OperationView(header, rows)


def _add_default_routes(rows: list[dict[str, Any]], defaults: set[str]) -> None:
    """Show the implicit route of steps without `next:` (not of those with `next: []`)."""
    actions = [r for r in rows if r["kind"]]
    for this, following in zip(actions, actions[1:] + [None], strict=True):
        if this["code"] in defaults and following is not None:
            this["routes"] = [{"to": following["code"], "rule": "ok_continue (next step)"}]


def _code(session: Session, model: type, row_id: int | None) -> str | None:
    return session.scalar(select(model.code).where(model.id == row_id)) if row_id else None


def _local(value, zone: str) -> str | None:
    """A date as the operation's users read it: in its timezone, without offset."""
    return local_text(value, zoneinfo.ZoneInfo(zone)) if value else None


def folder_path(session: Session, folder_id: int | None) -> list[str]:
    path: list[str] = []
    while folder_id is not None:
        label, folder_id = session.execute(
            select(Folder.label, Folder.parent_id).where(Folder.id == folder_id)).one()
        path.insert(0, label)
    return path
