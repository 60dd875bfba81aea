"""Schemas of the YAML spec documents (SPEC section 3), one pydantic model per kind.

These check the shape of one document; `campflow.specs` checks what needs the other
documents or the database (unknown steps, questions, fields, cycles…).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from campflow.core.cadence import cadence_rules
from campflow.core.settings import (  # noqa: F401  (re-exported: the shapes of every spec)
    CODE_PATTERN,
    DESCRIPTION_MAX,
    FREE_FORM_DEPTH,
    FREE_FORM_NODES,
    INLINE_BODY_MAX,
    LABEL_MAX,
    STEP_KINDS,
    TEMPLATE_SUFFIXES,
    TEXT_MAX,
    Code,
    ConditionSpec,
    ConditionsSpec,
    Description,
    DocumentSettings,
    EmailSettings,
    Label,
    LabelSettings,
    LocalApprovalSettings,
    Operator,
    PartyKind,
    RouteSpec,
    StatusCondition,
    StepKind,
    Strict,
    bounded_free_form,
)
from models.base import BUILTIN_TARGET_STATUSES, PARTY_KINDS


class StepSpec(Strict):
    code: Code
    label: Label
    kind: StepKind | None = None
    type: Code | None = None
    state: str | None = None
    event: Code | None = None
    questionnaire: Code | None = None
    run_at: dt.datetime | None = None
    template: bool = False
    next: list[RouteSpec] | None = None
    where: ConditionsSpec | None = None
    steps: list[StepSpec] | None = None
    email: EmailSettings | None = None
    document: DocumentSettings | None = None
    labels: LabelSettings | None = None
    columns: list[str] | None = None
    local_approval: LocalApprovalSettings | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _bounded_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_free_form(value, "options")

    @model_validator(mode="after")
    def _group_or_action(self) -> StepSpec:
        if self.steps is not None:
            acting = [k for k in ("kind", "next", "where", "email", "document", "labels", "columns", "local_approval")
                      if getattr(self, k) is not None]
            if acting:
                raise ValueError(f"a group (a step with steps:) does not act; remove {', '.join(acting)}")
            if not self.steps:
                raise ValueError("steps: is empty; a group needs sub-steps")
        elif self.kind is None:
            raise ValueError(f"an action step needs a kind: one of {', '.join(STEP_KINDS)}")
        needed = {"emailing": "email", "mass_emailing": "email", "document_mailing": "document",
                  "faxing": "document", "spreadsheet_export": "columns",
                  "local_approval": "local_approval"}.get(self.kind or "")
        if needed and getattr(self, needed) is None:
            raise ValueError(f"a {self.kind} step needs `{needed}:`")
        return self


class OperationSpec(Strict):
    kind: Literal["Operation"]
    code: Code
    label: Label
    folder: list[str] = Field(default_factory=list)
    family: Code | None = None
    # the collaborator groups that may see it; none: its family's (campflow.store.access)
    groups: list[str] = Field(default_factory=list)
    type: Code | None = None
    state: str = "in_preparation"
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    timezone: str = "UTC"
    cadence: str | None = None
    responsible: Code | None = None
    location: str | None = None
    description: Description | None = None
    progress: int = Field(default=0, ge=0, le=100)
    party_kinds: list[PartyKind] = Field(default_factory=lambda: list(PARTY_KINDS))
    template: bool = False
    attach_messages_to_events: bool = False
    steps: list[StepSpec] = Field(default_factory=list)

    @field_validator("folder", mode="before")
    @classmethod
    def _folder_path(cls, value: Any) -> Any:
        return [part.strip() for part in value.split("/")] if isinstance(value, str) else value

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        names = [name.strip() for name in value]
        if any(not name for name in names):
            raise ValueError("a group name is empty; write groups: [DIRECTION, …]")
        return list(dict.fromkeys(names))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name like Europe/Paris") from None
        return value

    @field_validator("cadence")
    @classmethod
    def _cadence(cls, value: str | None) -> str | None:
        if value is not None:
            cadence_rules(value)  # raises ValueError naming the token and the fix
        return value

    @model_validator(mode="after")
    def _dates(self) -> OperationSpec:
        if self.starts_at and self.ends_at and self.ends_at < self.starts_at:
            raise ValueError(f"ends_at {self.ends_at:%Y-%m-%d %H:%M} is before starts_at "
                             f"{self.starts_at:%Y-%m-%d %H:%M}")
        return self


class QuestionSpec(Strict):
    code: Code
    label: Label
    type: Literal["text", "choice", "multi_choice", "number", "date", "bool"] = "text"
    choices: list[str] = Field(default_factory=list)
    required: bool = False

    @field_validator("choices", mode="before")
    @classmethod
    def _choices_text(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _choices_for_choice(self) -> QuestionSpec:
        if self.type in ("choice", "multi_choice") and not self.choices:
            raise ValueError(f"a {self.type} question needs choices")
        if self.type not in ("choice", "multi_choice") and self.choices:
            raise ValueError(f"choices belong to choice questions, not {self.type}")
        return self


class QuestionnaireSpec(Strict):
    kind: Literal["Questionnaire"]
    code: Code
    label: Label
    questions: list[QuestionSpec] = Field(min_length=1)


class FamilySpec(Strict):
    kind: Literal["Family"]
    code: Code
    label: Label
    groups: list[str] = Field(default_factory=list)


Requirement = Literal["unused", "optional", "mandatory"]
OPERATION_TYPED_FIELDS = ("family", "state", "starts_at", "ends_at", "timezone", "cadence",
                          "responsible", "location", "description", "progress", "folder")
STEP_TYPED_FIELDS = ("event", "questionnaire", "run_at", "where", "next", "state")


class EntityTypeSpec(Strict):
    kind: Literal["EntityType"]
    code: Code
    label: Label
    applies_to: Literal["operation", "step"] = "operation"
    fields: dict[str, Requirement] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_fields(self) -> EntityTypeSpec:
        allowed = OPERATION_TYPED_FIELDS if self.applies_to == "operation" else STEP_TYPED_FIELDS
        unknown = sorted(set(self.fields) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {self.applies_to} field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(allowed)}")
        return self


class StateSpec(Strict):
    kind: Literal["State"]
    code: Code
    label: Label
    applies_to: Literal["operation", "step", "target", "operation_type"]
    final: bool = False
    position: int = 0

    @model_validator(mode="after")
    def _not_builtin(self) -> StateSpec:
        if self.applies_to == "target" and self.code in BUILTIN_TARGET_STATUSES:
            raise ValueError(f"{self.code} is a built-in status; choose another code")
        return self


class CustomFieldSpec(Strict):
    label: Label | None = None
    indexed: bool = False


class FieldDictionarySpec(Strict):
    kind: Literal["FieldDictionary"]
    code: Code
    aliases: dict[str, str] = Field(default_factory=dict)
    custom_fields: dict[Literal["party", "contact"], dict[str, CustomFieldSpec | None]] = Field(
        default_factory=dict
    )


class CollaboratorSpec(Strict):
    kind: Literal["Collaborator"]
    code: Code
    name: Label
    email: str | None = None
    groups: list[str] = Field(default_factory=list)



# ---------------------------------------------------------------- distributed marketing


class EntitySpec(Strict):
    """A node of the network: `central` (the head office) or `local` (a store, an agency)."""

    kind: Literal["Entity"]
    code: Code
    label: Label
    type: Literal["central", "local"] = "local"
    parent: Code | None = None
    operators: list[str] = Field(default_factory=list)  # logins acting for it (--as)
    reviewers: list[str] = Field(default_factory=list)  # e-mails of who approves orders (central)
    emails: list[str] = Field(default_factory=list)  # where its notifications go

    @model_validator(mode="after")
    def _tree(self) -> EntitySpec:
        if self.type == "local" and not self.parent:
            raise ValueError("a local entity needs `parent:` (its central or regional entity)")
        for address in self.reviewers + self.emails:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an e-mail address")
        return self


class DistributionRuleSpec(Strict):
    value: str
    entity: Code
    limit: int | str | None = None  # a count (120) or a percentage ("30%")

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("limit must be a count ≥ 0 or a percentage like '30%'")
        if isinstance(value, str):
            number = value.strip().removesuffix("%")
            if not value.strip().endswith("%") or not number.replace(".", "", 1).isdigit() \
                    or not 0 < float(number) <= 100:
                raise ValueError(f"limit {value!r} must be a count (120) or a percentage ('30%', up to 100%)")
        return value


class DistributionSpec(Strict):
    """Splits a target between local entities by a party field's value."""

    kind: Literal["Distribution"]
    code: Code
    label: Label
    field: str  # TABLE.FIELD, e.g. PCFIDX.VILLE
    rules: list[DistributionRuleSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_values(self) -> DistributionSpec:
        values = [r.value for r in self.rules]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"value(s) {', '.join(twice)} given twice; each value goes to one entity")
        return self


class FormFieldSpec(Strict):
    code: Code
    label: Label
    type: Literal["text", "choice", "number", "date", "bool"] = "text"
    required: bool = False
    choices: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _choices(self) -> FormFieldSpec:
        if (self.type == "choice") != bool(self.choices):
            raise ValueError("a choice field needs choices; other types take none")
        return self


class PackageSpec(Strict):
    """A reference operation the central entity offers to local entities."""

    kind: Literal["Package"]
    code: Code
    label: Label
    operation: Code  # the reference operation
    owner: Code  # the central entity offering it
    collaboration: Literal["simple", "by_form", "by_campaign", "by_target_approval"]
    approval: Literal["manual", "automatic"] = "manual"
    timezone: str = "UTC"
    visible_from: dt.datetime | None = None
    visible_until: dt.datetime | None = None
    registration_deadline: dt.datetime | None = None
    personalization_deadline: dt.datetime | None = None
    audience: list[Code] = Field(default_factory=list)
    distribution: Code | None = None  # which parties belong to which entity (simple, by_form)
    form: list[FormFieldSpec] = Field(default_factory=list)
    description: Description | None = None
    documents: list[str] = Field(default_factory=list)  # paths relative to the spec
    # the package's own notification texts: {notice name: template file relative to the spec}
    notices: dict[str, str] = Field(default_factory=dict)

    _known_zone = field_validator("timezone")(OperationSpec._known_zone.__func__)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _coherent(self) -> PackageSpec:
        if self.form and self.collaboration not in ("by_form", "by_campaign"):
            raise ValueError(f"form: belongs to by_form and by_campaign packages, not {self.collaboration}")
        return self


SPEC_KINDS: dict[str, type[Strict]] = {
    "Family": FamilySpec,
    "State": StateSpec,
    "EntityType": EntityTypeSpec,
    "Collaborator": CollaboratorSpec,
    "FieldDictionary": FieldDictionarySpec,
    "Questionnaire": QuestionnaireSpec,
    "Operation": OperationSpec,
    "Entity": EntitySpec,
    "Distribution": DistributionSpec,
    "Package": PackageSpec,
}
