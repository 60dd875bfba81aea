"""What the database already knows, as plain data: the context specs are checked against."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campflow.core.field_catalog import FieldCatalog
from models import (
    Answer,
    Collaborator,
    CustomField,
    Distribution,
    Entity,
    EntityType,
    Family,
    FieldAlias,
    Operation,
    Question,
    Questionnaire,
    State,
    Step,
    StepTarget,
)
from models.base import BUILTIN_OPERATION_STATES, BUILTIN_TARGET_STATUSES


@dataclass(frozen=True)
class QuestionInfo:
    type: str
    choices: tuple[str, ...]


@dataclass
class Known:
    """Codes known to the database, overlaid with the documents being applied."""

    families: set[str] = field(default_factory=set)
    collaborators: set[str] = field(default_factory=set)
    entity_types: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    states: dict[str, set[str]] = field(default_factory=dict)  # applies_to -> codes
    questionnaires: dict[str, dict[str, QuestionInfo]] = field(default_factory=dict)
    operations: dict[str, set[str]] = field(default_factory=dict)  # code -> step codes
    steps_with_targets: dict[str, dict[str, int]] = field(default_factory=dict)
    answered_questions: dict[str, set[str]] = field(default_factory=dict)
    custom_fields: dict[str, dict[str, bool]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    entities: dict[str, str] = field(default_factory=dict)  # code -> central | local
    distributions: set[str] = field(default_factory=set)

    def states_for(self, applies_to: str) -> set[str]:
        builtin = {
            "operation": set(BUILTIN_OPERATION_STATES),
            "step": set(BUILTIN_OPERATION_STATES),
            "target": set(BUILTIN_TARGET_STATUSES),
        }.get(applies_to, set())
        return builtin | self.states.get(applies_to, set())

    def field_catalog(self) -> FieldCatalog:
        return FieldCatalog(
            custom=self.custom_fields,
            aliases=self.aliases,
            questions={q: tuple(qs) for q, qs in self.questionnaires.items()},
        )


def load_known(session: Session) -> Known:
    """Read every code a spec may refer to, in a handful of queries."""
    known = Known()
    known.families = set(session.scalars(select(Family.code)))
    known.entities = {code: kind for code, kind in session.execute(select(Entity.code, Entity.type))}
    known.distributions = set(session.scalars(select(Distribution.code)))
    known.collaborators = set(session.scalars(select(Collaborator.code)))
    for code, applies_to, requirements in session.execute(
        select(EntityType.code, EntityType.applies_to, EntityType.field_requirements)
    ):
        known.entity_types[code] = (applies_to, dict(requirements))
    for code, applies_to in session.execute(select(State.code, State.applies_to)):
        known.states.setdefault(applies_to, set()).add(code)
    for q_code, code, qtype, choices in session.execute(
        select(Questionnaire.code, Question.code, Question.type, Question.choices)
        .join(Question.questionnaire).order_by(Question.position)
    ):
        known.questionnaires.setdefault(q_code, {})[code] = QuestionInfo(qtype, tuple(choices))
    for op_code, step_code in session.execute(
        select(Operation.code, Step.code).outerjoin(Step, Step.operation_id == Operation.id)
    ):
        steps = known.operations.setdefault(op_code, set())
        if step_code:
            steps.add(step_code)
    for op_code, step_code, count in session.execute(
        select(Operation.code, Step.code, func.count())
        .join(Step, Step.operation_id == Operation.id)
        .join(StepTarget, StepTarget.step_id == Step.id)
        .group_by(Operation.code, Step.code)
    ):
        known.steps_with_targets.setdefault(op_code, {})[step_code] = count
    for table, name, indexed in session.execute(
        select(CustomField.table_name, CustomField.name, CustomField.indexed)
    ):
        known.custom_fields.setdefault(table, {})[name] = indexed
    for q_code, code in session.execute(
        select(Questionnaire.code, Question.code).join(Question.questionnaire)
        .where(select(Answer.id).where(Answer.question_id == Question.id).exists())
    ):
        known.answered_questions.setdefault(q_code, set()).add(code)
    known.aliases = dict(session.execute(select(FieldAlias.alias, FieldAlias.target)).all())
    return known


def load_field_catalog(session: Session) -> FieldCatalog:
    """Only what field names need (custom fields, aliases, questions): cheap at run time."""
    known = Known()
    for table, name, indexed in session.execute(
        select(CustomField.table_name, CustomField.name, CustomField.indexed)
    ):
        known.custom_fields.setdefault(table, {})[name] = indexed
    known.aliases = dict(session.execute(select(FieldAlias.alias, FieldAlias.target)).all())
    for q_code, code, qtype, choices in session.execute(
        select(Questionnaire.code, Question.code, Question.type, Question.choices)
        .join(Question.questionnaire).order_by(Question.position)
    ):
        known.questionnaires.setdefault(q_code, {})[code] = QuestionInfo(qtype, tuple(choices))
    return known.field_catalog()
