"""How each spec kind other than Operation is written: reference kinds (families, states, entity types,
collaborators, field dictionaries, questionnaires) and the network (entities, distributions, packages)."""

from __future__ import annotations

import zoneinfo
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from campflow.specs.documents import Document
from campflow.specs.export import _resolved
from campflow.specs.validate import notice_text
from models import (
    Collaborator,
    CustomField,
    Distribution,
    DistributionRule,
    Entity,
    EntityType,
    Family,
    FieldAlias,
    Operation,
    Package,
    PackageAudience,
    Question,
    Questionnaire,
    State,
)

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
        "documents": [_resolved(d, base) for d in s.documents],
        "notices": {name: notice_text(doc, value)[1] for name, value in sorted(s.notices.items())}})
    session.flush()
    package_id = session.scalar(select(Package.id).where(Package.code == s.code))
    wanted = {_entity_id(session, code) for code in s.audience}
    have = set(session.scalars(select(PackageAudience.entity_id).where(PackageAudience.package_id == package_id)))
    if have != wanted:
        session.execute(delete(PackageAudience).where(PackageAudience.package_id == package_id))
        session.add_all(PackageAudience(package_id=package_id, entity_id=e) for e in sorted(wanted))
        outcome = "updated" if outcome == "unchanged" else outcome
    return outcome
