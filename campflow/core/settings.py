"""The shapes every spec shares and the settings of each step kind (e-mail, document, labels,
local approval), as pydantic models: pure data, checked without I/O. The documents that hold
them are in `campflow.specs.schema`."""

from __future__ import annotations

import codecs
import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from campflow.core.kinds import kind_names

CODE_PATTERN = r"^[A-Za-z0-9_-]+$"
Code = Annotated[str, Field(pattern=CODE_PATTERN, max_length=64)]
# Bounds on what a spec may hold (docs/spec-safety.md): a 5 MB label is a mistake or an attack.
TEXT_MAX = 4_000  # any text field without a bound of its own (subjects, formulas, paths…)
LABEL_MAX = 500  # labels and names shown in lists (a child operation joins two)
DESCRIPTION_MAX = 20_000
INLINE_BODY_MAX = 200_000  # an e-mail's inline `text:` or `html:`
FREE_FORM_NODES = 1_000  # values, lists and keys under `options:` or a condition's `value:`
FREE_FORM_DEPTH = 8
TEMPLATE_SUFFIXES = (".html", ".htm", ".txt", ".rtf", ".j2")
Label = Annotated[str, Field(max_length=LABEL_MAX)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX)]
PartyKind = Literal["client", "prospect", "supplier", "sales_rep", "other"]
Operator = Literal[
    "equals", "not_equals", "in", "not_in", "matches", "lt", "le", "gt", "ge", "is_set", "is_not_set"
]
# the built-in kinds, in the order messages list them; a step's kind is any registered kind
STEP_KINDS = (
    "emailing", "mass_emailing", "document_mailing", "label_mailing", "faxing",
    "phoning", "phoning_contact", "spreadsheet_export", "local_approval", "other",
)


def registered_kind(value: str) -> str:
    """`value` when a kind of that name is registered (campflow.core.kinds), else the message a
    Literal of the names gives."""
    names = kind_names()
    if value not in names:
        ordered = sorted(names, key=lambda n: (STEP_KINDS.index(n) if n in STEP_KINDS else len(STEP_KINDS), n))
        expected = ", ".join(repr(n) for n in ordered[:-1]) + f" or {ordered[-1]!r}" if len(ordered) > 1 else \
            repr(ordered[0]) if ordered else "a registered step kind"
        raise ValueError(f"Input should be {expected}")
    return value


StepKind = Annotated[str, AfterValidator(registered_kind)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, str_max_length=TEXT_MAX)


def bounded_free_form(value: Any, what: str) -> Any:
    """`value` when it holds at most FREE_FORM_NODES values nested FREE_FORM_DEPTH deep, with texts
    of at most TEXT_MAX characters; ValueError otherwise (free-form keys have no schema to bound them)."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > FREE_FORM_NODES:
            raise ValueError(f"{what} holds more than {FREE_FORM_NODES:,} values; keep it small")
        if depth > FREE_FORM_DEPTH:
            raise ValueError(f"{what} is nested more than {FREE_FORM_DEPTH} levels deep")
        if isinstance(node, str) and len(node) > TEXT_MAX:
            raise ValueError(f"{what} holds a text of {len(node):,} characters; at most {TEXT_MAX:,} are allowed")
        if isinstance(node, dict):
            stack += [(item, depth + 1) for pair in node.items() for item in pair]
        elif isinstance(node, list | tuple):
            stack += [(item, depth + 1) for item in node]
    return value


class StatusCondition(Strict):
    step: Code
    operation: Code | None = None
    in_: list[str] = Field(alias="in", min_length=1)


class ConditionSpec(Strict):
    """One named condition: an answer, a field, the party's kind or a step status."""

    answer: str | None = None
    field: str | None = None
    op: Operator | None = None
    value: Any = None
    party_kind: list[PartyKind] | None = None
    status: StatusCondition | None = None
    # whose fields a condition on MANIF.* or step.* reads: `step` names the step (step.ETAT),
    # `operation` another operation (default: this one)
    step: Code | None = None
    operation: Code | None = None

    @field_validator("value")
    @classmethod
    def _bounded_value(cls, value: Any) -> Any:
        return bounded_free_form(value, "value")

    @model_validator(mode="after")
    def _one_subject(self) -> ConditionSpec:
        given = [k for k in ("answer", "field", "party_kind", "status") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a condition needs exactly one of answer, field, party_kind, status; "
                f"got {', '.join(given) or 'none'}"
            )
        if given[0] in ("answer", "field"):
            if self.op is None:
                raise ValueError(f"a condition on {given[0]} needs `op` (equals, in, matches…)")
            if self.op in ("in", "not_in") and not isinstance(self.value, list):
                raise ValueError(f"op {self.op} needs a list as value, e.g. [a, b]")
            if self.op not in ("is_set", "is_not_set") and self.value is None:
                raise ValueError(f"op {self.op} needs a value")
        elif self.op is not None or self.value is not None:
            raise ValueError(f"op and value belong to answer and field conditions, not {given[0]}")
        if given[0] != "field" and (self.step or self.operation):
            raise ValueError("step and operation name whose state a field condition reads "
                             f"(field: step.ETAT, step: S2); a {given[0]} condition has its own")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("answer", "field", "party_kind", "status") if getattr(self, k) is not None)


class ConditionsSpec(Strict):
    conditions: dict[Code, ConditionSpec] = Field(default_factory=dict)
    formula: str | None = None


class RouteSpec(ConditionsSpec):
    to: Code
    when_status: list[str] = Field(default_factory=lambda: ["ok_continue"], min_length=1)


class EmailSettings(Strict):
    """The message: `body:` a template file, or inline `text:` (plain) or `html:`; exactly one."""

    subject: str
    body: str | None = None  # a template file relative to the spec: .html, .htm, .txt, .rtf or .j2
    text: str | None = Field(default=None, max_length=INLINE_BODY_MAX)  # inline plain text
    html: str | None = Field(default=None, max_length=INLINE_BODY_MAX)  # inline HTML
    text_body: str | None = None  # a template file for the plain-text part (else derived)
    attachments: list[str] = Field(default_factory=list, max_length=50)
    contacts: dict[str, list[str]] | None = None  # {functions: [...]}
    channel: str | None = None
    encoding: str | None = None  # of the body files, e.g. iso-8859-1 (campflow.render.charsets: else declared, UTF-8…)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        try:
            if value is not None:
                codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; write e.g. utf-8, iso-8859-1 or windows-1252") from None
        return value

    @field_validator("body", "text_body")
    @classmethod
    def _template_file(cls, value: str | None) -> str | None:
        # a path without a template suffix used to become the message text: `body: ../../etc/passwd`
        if value is not None and ("\n" in value or not value.lower().endswith(TEMPLATE_SUFFIXES)):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(f"{shown!r} is not a template file ({', '.join(TEMPLATE_SUFFIXES)}); "
                             "inline text goes under `text:` (plain) or `html:` (HTML) instead of `body:`")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> EmailSettings:
        given = [k for k in ("body", "text", "html") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("email needs exactly one of body (a template file), text (inline plain text) "
                             f"or html (inline HTML); got {', '.join(given) or 'none'}")
        return self


class DocumentSettings(Strict):
    template: str
    fields: dict[str, str] = Field(default_factory=dict)  # template's own name -> TABLE.FIELD
    per_party: bool = False
    channel: str | None = None


class LocalApprovalSettings(Strict):
    """A `local_approval` step: each local entity approves its part of the target."""

    distribution: Code  # splits the step's parties between local entities
    deadline: dt.datetime  # in the operation's timezone; what is not approved then is dropped
    remind_before_hours: list[int] = Field(default_factory=lambda: [24])  # reminders before it
    report: bool = False  # true: send each entity a report on its parties' statuses instead


class LabelSettings(Strict):
    sheet: str | None = None
    rows: int | None = Field(default=None, ge=1)
    columns: int | None = Field(default=None, ge=1)
    width_mm: float | None = Field(default=None, gt=0)
    height_mm: float | None = Field(default=None, gt=0)
    margin_top_mm: float | None = Field(default=None, ge=0)
    margin_left_mm: float | None = Field(default=None, ge=0)
    font_size: float | None = Field(default=None, gt=0)
    per_contact: bool = False
    format: Literal["docx", "pdf"] = "docx"
