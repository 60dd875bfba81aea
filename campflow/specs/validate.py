"""Check a batch of spec documents as a whole; every problem is listed with its line.

Reading the files is `campflow.specs.documents`; the checks of one Operation are
`campflow.specs.checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from campflow.core.field_catalog import FieldCatalog
from campflow.errors import FormulaError, Problem, closest
from campflow.paths import PathRefused, spec_path
from campflow.render.notice_texts import MAX_TEMPLATE, check_template
from campflow.specs.checks import OperationCheck, walk_steps
from campflow.specs.documents import Document, Loc
from campflow.specs.schema import OperationSpec, QuestionnaireSpec
from campflow.store.catalog import Known, QuestionInfo

# ---------------------------------------------------------------- whole-batch checks


def check_batch(documents: Sequence[Document], known: Known) -> list[Problem]:
    """Checks that need the other documents or the database; also overlays `known`."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], Document] = {}
    for doc in documents:
        key = (doc.kind, getattr(doc.spec, "code", ""))
        if key in seen:
            problems.append(Problem(doc.place(("code",)), f"duplicate {doc.kind} code {key[1]} "
                                    f"(also at {seen[key].place(('code',))})"))
        seen[key] = doc
    overlay(documents, known)
    for doc in documents:
        if isinstance(doc.spec, QuestionnaireSpec):
            problems += check_questionnaire(doc, known)
        elif isinstance(doc.spec, OperationSpec):
            problems += OperationCheck(doc, known).run()
        elif doc.kind in ("Entity", "Distribution", "Package"):
            problems += check_network(doc, known)
        elif doc.kind == "FieldDictionary":
            warn_hidden_fields(doc, known.field_catalog())
    return problems


def warn_hidden_fields(doc: Document, catalog: FieldCatalog) -> None:
    """Warn where a dictionary name hides a standard (or custom) field: dictionary names are read first."""
    for alias, target in doc.spec.aliases.items():  # type: ignore[attr-defined]
        for ref in catalog.hidden_fields(alias):
            what = "custom" if ref.custom else "standard"
            doc.warnings.append(Problem(doc.place(("aliases", alias)), (
                f"dictionary name {alias} hides the {what} field {ref}: field names are read in the "
                f"dictionary first, so {alias} now means {target}; rename {alias} in the dictionary "
                f"to keep {ref} under that name")))


def check_network(doc: Document, known: Known) -> list[Problem]:
    """The codes an Entity, Distribution or Package refers to exist and have the right type."""
    spec: Any = doc.spec
    problems: list[Problem] = []

    def entity(code: str | None, loc: Loc, wanted: str | None = None) -> None:
        if code is None:
            return
        found = known.entities.get(code)
        if found is None:
            problems.append(Problem(doc.place(loc), f"unknown entity {code}{closest(code, known.entities)}"))
        elif wanted and found != wanted:
            problems.append(Problem(doc.place(loc), f"entity {code} is {found}; a {wanted} entity is needed here"))

    match doc.kind:
        case "Entity":
            entity(spec.parent, ("parent",))
            if spec.parent == spec.code:
                problems.append(Problem(doc.place(("parent",)), "an entity cannot be its own parent"))
        case "Distribution":
            for i, rule in enumerate(spec.rules):
                entity(rule.entity, ("rules", i, "entity"), "local")
            try:
                known.field_catalog().resolve(spec.field)
            except FormulaError as exc:
                problems.append(Problem(doc.place(("field",)), f"field: {exc}"))
        case "Package":
            if spec.operation not in known.operations:
                problems.append(Problem(doc.place(("operation",)),
                                        f"unknown operation {spec.operation}{closest(spec.operation, known.operations)}"))
            entity(spec.owner, ("owner",), "central")
            for i, code in enumerate(spec.audience):
                entity(code, ("audience", i), "local")
            if spec.distribution and spec.distribution not in known.distributions:
                problems.append(Problem(doc.place(("distribution",)), f"unknown distribution {spec.distribution}"
                                        f"{closest(spec.distribution, known.distributions)}"))
            for i, document in enumerate(spec.documents):
                try:
                    spec_path(document, doc.source.base, doc.source.also_in)
                except PathRefused as exc:
                    problems.append(Problem(doc.place(("documents", i)), f"document {exc}"))
            for name, value in spec.notices.items():
                try:
                    path, text = notice_text(doc, value)
                except PathRefused as exc:
                    problems.append(Problem(doc.place(("notices", name)), f"notice {name}: {exc}"))
                    continue
                problems += [Problem(doc.place(("notices", name)), f"notice {name}: {p}")
                             for p in check_template(name, text, str(path))]
    return problems


def notice_text(doc: Document, value: str) -> tuple[Path, str]:
    """A package's notification template: the file inside the spec's folder, bounded, as text.

    Raises:
        PathRefused: outside the folder, missing, too large, or not UTF-8 text.
    """
    path = spec_path(value, doc.source.base, doc.source.also_in)
    if path.stat().st_size > 4 * MAX_TEMPLATE:
        raise PathRefused(f"{value} is too large for a notification template (at most {MAX_TEMPLATE} characters)")
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PathRefused(f"{value} is not UTF-8 text") from None
    except OSError as exc:
        raise PathRefused(f"cannot read {value}: {exc.strerror}") from None


def overlay(documents: Sequence[Document], known: Known) -> None:
    """Make the batch's own codes known, as if already applied."""
    for doc in documents:
        spec: Any = doc.spec
        match doc.kind:
            case "Family":
                known.families.add(spec.code)
            case "Collaborator":
                known.collaborators.add(spec.code)
            case "EntityType":
                known.entity_types[spec.code] = (spec.applies_to, dict(spec.fields))
            case "State":
                known.states.setdefault(spec.applies_to, set()).add(spec.code)
            case "Questionnaire":
                known.questionnaires[spec.code] = {
                    q.code: QuestionInfo(q.type, tuple(q.choices)) for q in spec.questions
                }
            case "FieldDictionary":
                for table, fields in spec.custom_fields.items():
                    for name, custom in fields.items():
                        known.custom_fields.setdefault(table, {})[name.lower()] = bool(
                            custom and custom.indexed
                        )
                known.aliases.update(spec.aliases)
            case "Operation":
                known.operations[spec.code] = {s.code for s, _ in walk_steps(spec.steps)}
            case "Entity":
                known.entities[spec.code] = spec.type
            case "Distribution":
                known.distributions.add(spec.code)


def check_questionnaire(doc: Document, known: Known) -> list[Problem]:
    spec: Any = doc.spec
    problems: list[Problem] = []
    codes = [q.code for q in spec.questions]
    for i, code in enumerate(codes):
        if code in codes[:i]:
            problems.append(Problem(doc.place(("questions", i, "code")), f"duplicate question {code}"))
    removed = known.answered_questions.get(spec.code, set()) - set(codes)
    for code in sorted(removed):
        problems.append(Problem(doc.place(("questions",)),
                                f"question {code} has answers; keep it in the questionnaire"))
    return problems
