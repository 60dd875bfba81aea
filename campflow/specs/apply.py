"""Write checked spec documents to the database, and read operations back as specs.

Applying is idempotent: each document is compared with what the database holds in the
same canonical form, and only a difference is written. Operations are written here, the other
kinds in `campflow.specs.writers`.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from campflow.core.dates import aware
from campflow.errors import CampflowError, Problem, SpecError
from campflow.specs.documents import Document, read_specs
from campflow.specs.export import (
    canonical_operation,
    export_operation,
)
from campflow.specs.schema import OperationSpec
from campflow.specs.source import SourceDocument
from campflow.specs.validate import check_batch
from campflow.specs.writers import (
    write_collaborator,
    write_distribution,
    write_entity,
    write_entity_type,
    write_family,
    write_field_dictionary,
    write_package,
    write_questionnaire,
    write_state,
)
from campflow.store.access import audit_refusal, require_access
from campflow.store.catalog import load_known
from campflow.store.identity import AccessDenied
from models import Collaborator, Condition, EntityType, EventCode, Family, Folder, Operation, Questionnaire, Route, Step

APPLY_ORDER = ("Family", "State", "EntityType", "Collaborator", "FieldDictionary",
               "Questionnaire", "Entity", "Distribution", "Operation", "Package")


@dataclass(frozen=True)
class Applied:
    kind: str
    code: str
    outcome: str  # created | updated | unchanged
    place: str
    warnings: tuple[str, ...] = ()  # "file:line: what may go wrong and the fix"; written anyway


def apply_path(session: Session, target: Path, *, check_only: bool = False,
               operator: str | None = None) -> list[Applied]:
    """Check every document under `target`, then write them all or nothing.

    `operator` is the login acting (`campflow apply --as`): a local entity's operator may
    change only its own operations (`campflow.store.access.require_access`).
    """
    documents, problems = read_specs(target)
    return apply_documents(session, documents, problems, check_only=check_only, operator=operator)


def apply_documents(session: Session, documents: Sequence[Document], problems: list[Problem],
                    *, check_only: bool = False, operator: str | None = None) -> list[Applied]:
    known = load_known(session)
    problems = problems + check_batch(documents, known)
    if check_only:  # what `apply` would refuse, `--check` refuses too
        problems += [p for doc in documents if doc.kind == "Operation" for p in owner_problems(session, doc, operator)]
    if problems:
        raise SpecError(problems, f"{len(problems)} problem(s); nothing was written")
    ordered = sorted(documents, key=lambda d: (APPLY_ORDER.index(d.kind), _depth(d, documents)))
    results = []
    for doc in ordered:
        if check_only:
            outcome = "checked"
        elif doc.kind == "Operation":
            outcome = write_operation(session, doc, operator=operator)
        else:
            outcome = WRITERS[doc.kind](session, doc)
        warnings = tuple(str(w) for w in doc.warnings)
        results.append(Applied(doc.kind, doc.spec.code, outcome, doc.place(), warnings))  # type: ignore[attr-defined]
        session.flush()
    return results


def _depth(doc: Document, documents: Sequence[Document]) -> int:
    """An entity after its parent when both are in the batch (other kinds: 0)."""
    if doc.kind != "Entity":
        return 0
    parents = {d.spec.code: d.spec.parent for d in documents if d.kind == "Entity"}  # type: ignore[attr-defined]
    depth, code, seen = 0, doc.spec.code, set()  # type: ignore[attr-defined]
    while parents.get(code) in parents and code not in seen:
        seen.add(code)
        code, depth = parents[code], depth + 1
    return depth


# ---------------------------------------------------------------- operations


def write_operation(session: Session, doc: Document, *, check_owner: bool = True,
                    operator: str | None = None) -> str:
    """Create or update the operation; `check_owner`: refuse an `operator` who may not change it
    (`campflow.store.access.require_access`; the login `campflow apply --as` names)."""
    spec: OperationSpec = doc.spec  # type: ignore[assignment]
    wanted = canonical_operation(spec, doc.source.base)
    existing = session.scalars(select(Operation).where(Operation.code == spec.code)).one_or_none()
    if check_owner and (problems := owner_problems(session, doc, operator)):
        raise SpecError(problems, "nothing was written")
    state = spec.state
    if existing is not None and existing.state != "in_preparation" and spec.state == "in_preparation":
        # runs moved it on: `in_preparation` in a spec is where an operation starts, not a reset
        state = wanted["state"] = existing.state
    if existing is not None and export_operation(session, spec.code) == wanted:
        return "unchanged"
    operation = existing or Operation(code=spec.code)
    zone = zoneinfo.ZoneInfo(spec.timezone)
    operation.label = spec.label
    operation.folder_id = ensure_folder(session, spec.folder)
    operation.family_id = _id_of(session, Family, spec.family)
    operation.groups = list(spec.groups)
    operation.type_id = _id_of(session, EntityType, spec.type)
    operation.responsible_id = _id_of(session, Collaborator, spec.responsible)
    operation.state = state
    operation.starts_at = aware(wanted.get("starts_at"), zone)
    operation.ends_at = aware(wanted.get("ends_at"), zone)
    operation.timezone = spec.timezone
    operation.cadence = spec.cadence
    operation.location = spec.location
    operation.description = spec.description
    operation.progress = spec.progress
    operation.party_kinds = list(spec.party_kinds)
    operation.is_template = spec.template
    operation.attach_messages_to_events = spec.attach_messages_to_events
    spec_file = doc.source.spec_file
    operation.source_file = str(spec_file) if spec_file is not None else None
    session.add(operation)
    session.flush()
    write_steps(session, operation, wanted.get("steps", []), zone)
    return "updated" if existing is not None else "created"


def owner_problems(session: Session, doc: Document, operator: str | None) -> list[Problem]:
    """The operator (`campflow apply --as`) may not change this operation."""
    code = doc.spec.code  # type: ignore[attr-defined]
    owner = session.scalar(select(Operation.owner_entity_id).where(Operation.code == code))
    try:
        require_access(session, code, owner, operator, "change")
    except CampflowError as exc:
        if isinstance(exc, AccessDenied):
            audit_refusal(exc, "cli", operator)
        return [Problem(doc.place(), str(exc))]
    return []


def _id_of(session: Session, model: type, code: str | None) -> int | None:
    return session.scalar(select(model.id).where(model.code == code)) if code else None


def ensure_folder(session: Session, path: Sequence[str]) -> int | None:
    """The folder at `path` (labels from the root), created when missing."""
    parent_id = None
    for label in path:
        found = session.scalar(select(Folder.id).where(
            Folder.parent_id.is_(None) if parent_id is None else Folder.parent_id == parent_id,
            Folder.label == label))
        if found is None:
            folder = Folder(parent_id=parent_id, label=label)
            session.add(folder)
            session.flush()
            found = folder.id
        parent_id = found
    return parent_id


SETTING_KEYS = ("email", "document", "labels", "columns", "local_approval", "options")


def write_steps(session: Session, operation: Operation, steps: list[dict[str, Any]],
                zone: zoneinfo.ZoneInfo) -> None:
    """Upsert steps by code (keeping their targets), then rewrite routes and conditions."""
    rows = {s.code: s for s in session.scalars(select(Step).where(Step.operation_id == operation.id))}
    flat = list(_flatten(steps, None))
    wanted_codes = {data["code"] for data, _ in flat}
    for code, row in rows.items():
        if code not in wanted_codes:
            session.delete(row)
    session.execute(delete(Route).where(Route.step_id.in_([r.id for r in rows.values()])))
    session.execute(delete(Condition).where(Condition.where_step_id.in_([r.id for r in rows.values()])))
    session.flush()
    # park positions out of the way so reordering never collides
    by_code: dict[str, Step] = {}
    for position, (data, parent_code) in enumerate(flat):
        row = rows.get(data["code"]) or Step(operation_id=operation.id, code=data["code"])
        row.parent_id = by_code[parent_code].id if parent_code else None
        row.position = position
        row.label = data["label"]
        row.kind = data.get("kind")
        row.state = data.get("state")
        row.type_id = _id_of(session, EntityType, data.get("type"))
        row.event_code = data.get("event")
        row.questionnaire_id = _id_of(session, Questionnaire, data.get("questionnaire"))
        row.run_at = aware(data.get("run_at"), zone)
        row.is_template = data.get("template", False)
        row.default_route = "next" not in data
        row.where_formula = (data.get("where") or {}).get("formula")
        row.settings = {k: data[k] for k in SETTING_KEYS if k in data}
        session.add(row)
        session.flush()
        by_code[row.code] = row
        if row.event_code:
            session.execute(insert(EventCode).values(code=row.event_code).on_conflict_do_nothing())
    for data, _ in flat:
        step = by_code[data["code"]]
        for position, route in enumerate(data.get("next", [])):
            row = Route(step_id=step.id, to_step_id=by_code[route["to"]].id, position=position,
                        formula=route.get("formula"), when_status=route.get("when_status", ["ok_continue"]))
            row.conditions = _conditions(route.get("conditions", {}))
            session.add(row)
        for condition in _conditions((data.get("where") or {}).get("conditions", {})):
            condition.where_step_id = step.id
            session.add(condition)


def _flatten(steps: list[dict[str, Any]], parent: str | None):
    for data in steps:
        yield data, parent
        yield from _flatten(data.get("steps", []), data["code"])


def _conditions(conditions: dict[str, dict[str, Any]]) -> list[Condition]:
    return [Condition(code=code, position=i, definition=definition,
                      kind=next(k for k in ("answer", "field", "party_kind", "status") if k in definition))
            for i, (code, definition) in enumerate(conditions.items())]


def document_from_data(data: dict[str, Any], origin: str, copied_from: str | None = None,
                       also_in: Sequence[str | None] = ()) -> Document:
    """A document built in code (ops new, steps load-template), checked like a file's.

    `copied_from`: the spec file of the operation it copies (`spec_file_of`); its files must
    still lie in that file's folder, in the folder of one of `also_in` (spec files of templates
    it copies steps from) or in CAMPFLOW_ALLOWED_DIRS.
    """
    from campflow.specs.documents import parse_document

    source = SourceDocument(Path(origin), 0, data, 0, Path(copied_from) if copied_from else None,
                            tuple(Path(f).parent for f in also_in if f))
    doc, problems = parse_document(source)
    if doc is None:
        raise SpecError(problems, "nothing was written")
    return doc


WRITERS = {
    "Family": write_family,
    "State": write_state,
    "EntityType": write_entity_type,
    "Collaborator": write_collaborator,
    "FieldDictionary": write_field_dictionary,
    "Questionnaire": write_questionnaire,
    "Operation": write_operation,
    "Entity": write_entity,
    "Distribution": write_distribution,
    "Package": write_package,
}
