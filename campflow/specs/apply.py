"""Write checked spec documents to the database, and read operations back as specs.

Applying is idempotent: each document is compared with what the database holds in the
same canonical form, and only a difference is written.
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
from campflow.specs.export import (  # noqa: F401
    _drop_none,
    _resolved,
    canonical_operation,
    export_operation,
    export_steps,
    paths_outside,
    relative_paths,
    spec_file_of,
)
from campflow.specs.schema import OperationSpec
from campflow.specs.source import SourceDocument
from campflow.specs.validate import check_batch
from campflow.store.access import require_access
from campflow.store.catalog import load_known
from models import (
    Collaborator,
    Condition,
    CustomField,
    Distribution,
    DistributionRule,
    Entity,
    EntityType,
    EventCode,
    Family,
    FieldAlias,
    Folder,
    Operation,
    Package,
    PackageAudience,
    Question,
    Questionnaire,
    Route,
    State,
    Step,
)

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


# ---------------------------------------------------------------- reference kinds


def _upsert(session: Session, model: type, keys: dict[str, Any], values: dict[str, Any]) -> str:
    row = session.scalars(select(model).filter_by(**keys)).one_or_none()
    if row is None:
        session.add(model(**keys, **values))
        return "created"
    changed = {k: v for k, v in values.items() if getattr(row, k) != v}
    for key, value in changed.items():
        setattr(row, key, value)
    return "updated" if changed else "unchanged"


def write_family(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    return _upsert(session, Family, {"code": s.code}, {"label": s.label, "groups": list(s.groups)})


def write_state(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    return _upsert(session, State, {"code": s.code, "applies_to": s.applies_to},
                   {"label": s.label, "final": s.final, "position": s.position})


def write_entity_type(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    return _upsert(session, EntityType, {"code": s.code}, {
        "label": s.label, "applies_to": s.applies_to, "field_requirements": dict(s.fields)})


def write_collaborator(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    return _upsert(session, Collaborator, {"code": s.code},
                   {"name": s.name, "email": s.email, "groups": list(s.groups)})


def write_field_dictionary(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    outcomes = set()
    kept = set()
    for alias, target in s.aliases.items():
        kept.add(alias.lower())
        outcomes.add(_upsert(session, FieldAlias, {"alias_key": alias.lower()},
                             {"dictionary": s.code, "alias": alias, "target": target}))
    stale = session.execute(delete(FieldAlias).where(
        FieldAlias.dictionary == s.code, FieldAlias.alias_key.not_in(kept)))
    for table, fields in s.custom_fields.items():
        for name, custom in fields.items():
            outcomes.add(_upsert(session, CustomField, {"table_name": table, "name": name.lower()}, {
                "indexed": bool(custom and custom.indexed), "label": custom.label if custom else None}))
    if stale.rowcount:
        outcomes.add("updated")
    return _combine(outcomes)


def _combine(outcomes: set[str]) -> str:
    if outcomes <= {"unchanged"}:
        return "unchanged"
    return "created" if outcomes == {"created"} else "updated"


def write_questionnaire(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    outcome = _upsert(session, Questionnaire, {"code": s.code}, {"label": s.label})
    session.flush()
    questionnaire_id = session.scalar(select(Questionnaire.id).where(Questionnaire.code == s.code))
    outcomes = {outcome}
    for position, q in enumerate(s.questions):
        outcomes.add(_upsert(session, Question, {"questionnaire_id": questionnaire_id, "code": q.code}, {
            "label": q.label, "type": q.type, "choices": list(q.choices), "required": q.required,
            "position": position}))
    removed = session.execute(delete(Question).where(
        Question.questionnaire_id == questionnaire_id,
        Question.code.not_in([q.code for q in s.questions])))
    if outcome == "created":
        return outcome
    return "updated" if removed.rowcount or outcomes - {"unchanged"} else "unchanged"


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



# ---------------------------------------------------------------- distributed marketing


def _entity_id(session: Session, code: str | None) -> int | None:
    return session.scalar(select(Entity.id).where(Entity.code == code)) if code else None


def write_entity(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    return _upsert(session, Entity, {"code": s.code}, {
        "label": s.label, "type": s.type, "parent_id": _entity_id(session, s.parent),
        "operators": list(s.operators), "reviewers": list(s.reviewers), "emails": list(s.emails)})


def write_distribution(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    outcome = _upsert(session, Distribution, {"code": s.code}, {"label": s.label, "field": s.field})
    session.flush()
    distribution = session.scalars(select(Distribution).where(Distribution.code == s.code)).one()
    wanted = [(i, r.value, _entity_id(session, r.entity), *_limit(r.limit)) for i, r in enumerate(s.rules)]
    have = [tuple(row) for row in session.execute(
        select(DistributionRule.position, DistributionRule.value, DistributionRule.entity_id,
               DistributionRule.limit_count, DistributionRule.limit_percent)
        .where(DistributionRule.distribution_id == distribution.id).order_by(DistributionRule.position))]
    if have != wanted:
        session.execute(delete(DistributionRule).where(DistributionRule.distribution_id == distribution.id))
        session.add_all(DistributionRule(distribution_id=distribution.id, position=i, value=value, entity_id=entity,
                                         limit_count=count, limit_percent=percent)
                        for i, value, entity, count, percent in wanted)
        outcome = "updated" if outcome == "unchanged" else outcome
    return outcome


def _limit(limit: int | str | None) -> tuple[int | None, float | None]:
    if isinstance(limit, str):
        return None, float(limit.strip().removesuffix("%"))
    return limit, None


def write_package(session: Session, doc: Document) -> str:
    s: Any = doc.spec
    zone = zoneinfo.ZoneInfo(s.timezone)
    local = lambda value: value and (value if value.tzinfo else value.replace(tzinfo=zone))  # noqa: E731
    base = doc.source.base
    outcome = _upsert(session, Package, {"code": s.code}, {
        "label": s.label, "operation_id": session.scalar(select(Operation.id).where(Operation.code == s.operation)),
        "owner_id": _entity_id(session, s.owner), "collaboration": s.collaboration, "approval": s.approval,
        "timezone": s.timezone, "visible_from": local(s.visible_from), "visible_until": local(s.visible_until),
        "registration_deadline": local(s.registration_deadline),
        "personalization_deadline": local(s.personalization_deadline),
        "distribution_id": session.scalar(select(Distribution.id).where(Distribution.code == s.distribution))
        if s.distribution else None,
        "form": [f.model_dump() for f in s.form], "description": s.description,
        "documents": [_resolved(d, base) for d in s.documents]})
    session.flush()
    package_id = session.scalar(select(Package.id).where(Package.code == s.code))
    wanted = {_entity_id(session, code) for code in s.audience}
    have = set(session.scalars(select(PackageAudience.entity_id).where(PackageAudience.package_id == package_id)))
    if have != wanted:
        session.execute(delete(PackageAudience).where(PackageAudience.package_id == package_id))
        session.add_all(PackageAudience(package_id=package_id, entity_id=e) for e in sorted(wanted))
        outcome = "updated" if outcome == "unchanged" else outcome
    return outcome


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
