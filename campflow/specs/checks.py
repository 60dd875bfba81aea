"""The checks of one Operation document: header, steps, conditions, settings, templates, graph."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from campflow.core.field_catalog import FieldCatalog
from campflow.core.fields import FieldRef, unsupported_condition_field
from campflow.core.formula import check_names, parse_formula
from campflow.core.graph import CycleError, StepNode, topological_order
from campflow.core.kinds import settings_checks, step_kind
from campflow.core.template_fields import TemplateField, split_default, template_fields
from campflow.errors import FormulaError, Problem, closest
from campflow.paths import PathRefused, spec_path
from campflow.render.charsets import UndecodableTemplate, decode_template
from campflow.specs.documents import Document, Loc
from campflow.specs.schema import ConditionSpec, ConditionsSpec, OperationSpec, StepSpec
from campflow.store.catalog import Known

# the step settings, each checked by the kind that owns it (campflow.core.kinds), in this order
SETTING_KEYS = ("email", "document", "labels", "columns", "local_approval")


def walk_steps(steps: Sequence[StepSpec], loc: Loc = ("steps",)) -> Iterable[tuple[StepSpec, Loc]]:
    """Steps in document order (pre-order), each with its location in the document."""
    for i, step in enumerate(steps):
        yield step, loc + (i,)
        if step.steps:
            yield from walk_steps(step.steps, loc + (i, "steps"))


class OperationCheck:
    """Every check of one Operation document."""

    def __init__(self, doc: Document, known: Known) -> None:
        self.doc = doc
        self.spec: OperationSpec = doc.spec  # type: ignore[assignment]
        self.known = known
        self.catalog: FieldCatalog = known.field_catalog()
        self.problems: list[Problem] = []
        self.steps = list(walk_steps(self.spec.steps))
        self.actions = {s.code: s for s, _ in self.steps if s.kind}
        self.all_steps = {s.code for s, _ in self.steps}  # groups have a state too
        self.base = doc.source.base

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.doc.place(loc), message))

    def run(self) -> list[Problem]:
        self.check_header()
        self.check_step_codes()
        for step, loc in self.steps:
            self.check_step(step, loc)
        self.check_graph()
        return self.problems

    def check_header(self) -> None:
        spec, known = self.spec, self.known
        if spec.family and spec.family not in known.families:
            self.problem(("family",), f"unknown family {spec.family}{closest(spec.family, known.families)}")
        if spec.responsible and spec.responsible not in known.collaborators:
            self.problem(("responsible",), f"unknown collaborator {spec.responsible}"
                         f"{closest(spec.responsible, known.collaborators)}")
        if spec.state not in known.states_for("operation"):
            self.problem(("state",), f"unknown operation state {spec.state}"
                         f"{closest(spec.state, known.states_for('operation'))}")
        if any(not part for part in spec.folder):
            self.problem(("folder",), "a folder name is empty")
        self.check_type(spec, (), "operation")

    def check_type(self, spec: OperationSpec | StepSpec, loc: Loc, applies_to: str) -> None:
        if not spec.type:
            return
        found = self.known.entity_types.get(spec.type)
        if found is None or found[0] != applies_to:
            names = [c for c, (a, _) in self.known.entity_types.items() if a == applies_to]
            self.problem(loc + ("type",), f"unknown {applies_to} type {spec.type}{closest(spec.type, names)}")
            return
        data = self.doc.source.data
        node = data
        for part in loc:
            node = node[part]
        given = node if isinstance(node, dict) else {}
        for name, requirement in found[1].items():
            present = given.get(name) not in (None, [], "")
            if requirement == "mandatory" and not present:
                self.problem(loc or ("type",), f"{name} is mandatory for {applies_to}s of type {spec.type}")
            if requirement == "unused" and present:
                self.problem(loc + (name,), f"{name} is unused for {applies_to}s of type {spec.type}; remove it")

    def check_step_codes(self) -> None:
        seen: dict[str, Loc] = {}
        for step, loc in self.steps:
            if step.code in seen:
                self.problem(loc + ("code",), f"duplicate step code {step.code} "
                             f"(also at line {self.doc.place(seen[step.code] + ('code',)).rsplit(':', 1)[1]})")
            seen.setdefault(step.code, loc)
        removed = set(self.known.steps_with_targets.get(self.spec.code, {})) - set(seen)
        for code in sorted(removed):
            count = self.known.steps_with_targets[self.spec.code][code]
            self.problem(("steps",), f"step {code} has {count} targeted parties and cannot be removed; "
                         "keep it in the spec")

    def check_step(self, step: StepSpec, loc: Loc) -> None:
        self.check_type(step, loc, "step")
        if step.state and step.state not in self.known.states_for("step"):
            self.problem(loc + ("state",), f"unknown step state {step.state}"
                         f"{closest(step.state, self.known.states_for('step'))}")
        if step.kind and (kind := step_kind(step.kind)).check is not None:
            kind.check(step, loc, self)  # what the kind itself requires (campflow.core.kinds)
        if step.questionnaire and step.questionnaire not in self.known.questionnaires:
            self.problem(loc + ("questionnaire",), f"unknown questionnaire {step.questionnaire}"
                         f"{closest(step.questionnaire, self.known.questionnaires)}")
        for i, route in enumerate(step.next or ()):
            rloc = loc + ("next", i)
            if route.to not in self.actions:
                groups = {s.code for s, _ in self.steps if not s.kind}
                why = "is a group; route to one of its steps" if route.to in groups else \
                    f"is not a step of this operation{closest(route.to, self.actions)}"
                self.problem(rloc + ("to",), f"route to {route.to}: {route.to} {why}")
            elif route.to == step.code:
                self.problem(rloc + ("to",), f"step {step.code} routes to itself")
            for status in route.when_status:
                self.check_status_code(status, rloc + ("when_status",))
            self.check_conditions(route, rloc)
        if step.where:
            self.check_conditions(step.where, loc + ("where",))
        self.check_settings(step, loc)

    def check_status_code(self, status: str, loc: Loc) -> None:
        statuses = self.known.states_for("target")
        if status not in statuses:
            self.problem(loc, f"unknown status {status}{closest(status, statuses)}")

    def check_conditions(self, spec: ConditionsSpec, loc: Loc) -> None:
        for code, condition in spec.conditions.items():
            self.check_condition(condition, loc + ("conditions", code))
        if spec.formula is not None:
            try:
                check_names(parse_formula(spec.formula), spec.conditions)
            except FormulaError as exc:
                self.problem(loc + ("formula",), f"formula: {exc}")

    def check_condition(self, condition: ConditionSpec, loc: Loc) -> None:
        if condition.answer is not None:
            self.check_answer(condition, loc + ("answer",))
        elif condition.field is not None:
            try:
                ref = self.catalog.resolve(condition.field)
            except FormulaError as exc:
                self.problem(loc + ("field",), f"field: {exc}")
            else:
                self.check_field_condition(condition, ref, loc)
        elif condition.status is not None:
            status = condition.status
            operation = status.operation or self.spec.code
            steps = set(self.actions) if operation == self.spec.code else self.known.operations.get(operation)
            if steps is None:
                self.problem(loc + ("status", "operation"),
                             f"unknown operation {operation}{closest(operation, self.known.operations)}")
            elif status.step not in steps:
                self.problem(loc + ("status", "step"),
                             f"operation {operation} has no step {status.step}{closest(status.step, steps)}")
            for status_code in status.in_:
                self.check_status_code(status_code, loc + ("status", "in"))

    def check_field_condition(self, condition: ConditionSpec, ref: FieldRef, loc: Loc) -> None:
        """What routing can read: party and contact fields, and an operation's or a step's own columns."""
        unsupported = unsupported_condition_field(ref)
        if unsupported:
            self.problem(loc + ("field",), f"field: {unsupported}")
            return
        if ref.table in ("party", "contact"):
            if condition.step or condition.operation:
                self.problem(loc + ("step" if condition.step else "operation",), f"{ref} is a {ref.table} field: "
                             "step and operation name whose MANIF.* or step.* field is read; remove them")
            return
        operation = condition.operation or self.spec.code
        steps = self.all_steps if operation == self.spec.code else self.known.operations.get(operation)
        if steps is None:
            self.problem(loc + ("operation",), f"unknown operation {operation}{closest(operation, self.known.operations)}")
            return
        if ref.table == "operation" and condition.step:
            self.problem(loc + ("step",), f"{ref} is the operation's; step belongs to step.* fields: "
                         f"write field: step.{ref.field} to read step {condition.step}'s")
        elif ref.table == "step" and not condition.step:
            self.problem(loc + ("field",), f"field: {condition.field} reads a step's {ref.field}: name the step, "
                         f"e.g. {{field: {condition.field}, step: {next(iter(sorted(steps)), 'S1')}, op: …}}")
        elif ref.table == "step" and condition.step not in steps:
            self.problem(loc + ("step",), f"operation {operation} has no step {condition.step}"
                         f"{closest(condition.step or '', steps)}")
        if ref.field == "state" and condition.op in ("equals", "not_equals", "in", "not_in"):
            states = self.known.states_for(ref.table)
            values = condition.value if isinstance(condition.value, list) else [condition.value]
            for value in values:
                if str(value).casefold() not in {state.casefold() for state in states}:
                    self.problem(loc + ("value",), f"{value!r} is not a state of {ref.table}s{closest(str(value), states)}")

    def check_answer(self, condition: ConditionSpec, loc: Loc) -> None:
        questionnaire, _, question = (condition.answer or "").partition(".")
        questions = self.known.questionnaires.get(questionnaire)
        if questions is None or not question:
            self.problem(loc, f"answer {condition.answer}: write QUESTIONNAIRE.QUESTION with a known "
                         f"questionnaire{closest(questionnaire, self.known.questionnaires)}")
            return
        info = questions.get(question)
        if info is None:
            self.problem(loc, f"unknown question {question} in questionnaire {questionnaire}"
                         f"{closest(question, questions)}")
            return
        if info.type == "choice" and condition.op in ("equals", "not_equals", "in", "not_in"):
            values = condition.value if isinstance(condition.value, list) else [condition.value]
            allowed = {c.casefold() for c in info.choices}
            for value in values:
                if str(value).casefold() not in allowed:
                    self.problem(loc[:-1] + ("value",), f"{value!r} is not a choice of "
                                 f"{condition.answer} ({', '.join(info.choices)})")

    def check_settings(self, step: StepSpec, loc: Loc) -> None:
        """Each setting the step has, checked by the kind that owns it (campflow.core.kinds)."""
        checks = settings_checks()
        for key in SETTING_KEYS:
            if key in checks and getattr(step, key, None):
                checks[key](step, loc, self)

    def check_field(self, text: str, loc: Loc) -> None:
        try:
            self.catalog.resolve(text)
        except FormulaError as exc:
            self.problem(loc, f"field: {exc}")

    def check_fields_in(self, text: str, syntax: str, loc: Loc) -> None:
        for found in template_fields(text, syntax):
            try:
                ref = self.catalog.resolve(found.reference, found.start)
            except FormulaError as exc:
                self.problem(loc, f"field [[{found.reference}]]: {exc.message}")
            else:
                self.warn_kind_table(ref, found, syntax, self.doc.place(loc))

    def allowed_file(self, value: str, loc: Loc, what: str) -> Path | None:
        """The resolved file, or None after noting why the spec may not read it."""
        try:
            return spec_path(value, self.base, self.doc.source.also_in)
        except PathRefused as exc:
            self.problem(loc, f"{what} {exc}")
            return None

    def check_template_file(self, value: str, loc: Loc, encoding: str | None = None) -> None:
        path = self.allowed_file(value, loc, "template")
        if path is None:
            return
        text = self.template_text(path, loc, encoding)
        if text is None:
            return
        if path.suffix == ".j2":
            from campflow.render.bodies import jinja_problems  # what the sandbox refuses at render time
            from campflow.render.templates import check_jinja

            for message in check_jinja(text, self.catalog) + jinja_problems(text):
                self.problem(loc, f"{path.name}: {message}")
            return
        syntax = "rtf" if path.suffix == ".rtf" else "html"
        for found in template_fields(text, syntax):
            line = text.count("\n", 0, found.start) + 1
            try:
                ref = self.catalog.resolve(found.reference)
            except FormulaError as exc:
                self.problem(loc, f"{path}:{line}: field {found.reference}: {exc.message}")
            else:
                self.warn_kind_table(ref, found, syntax, f"{path}:{line}")

    def template_text(self, path: Path, loc: Loc, encoding: str | None) -> str | None:
        """A body file's text as a run will read it (campflow.render.charsets); None after saying why not.
        Read as Windows-1252 for want of a declaration: a warning, the fix being to declare it."""
        if path.suffix.lower() == ".rtf":  # RTF keeps its own code page, byte for byte
            return path.read_bytes().decode("latin-1")
        try:
            decoded = decode_template(path.read_bytes(), str(path), encoding,
                                      html=path.suffix.lower() in (".html", ".htm", ".j2"))
        except UndecodableTemplate as exc:
            self.problem(loc, f"template {exc}")
            return None
        if decoded.guessed:
            self.doc.warnings.append(Problem(self.doc.place(loc), (
                f"{path} is not UTF-8: read as Windows-1252 (ISO-8859-1); if that is its encoding, say so "
                "with <meta charset=\"iso-8859-1\"> in the HTML or `encoding: iso-8859-1` under email:, "
                "else save it as UTF-8")))
        elif decoded.utf8_too:  # "Ã©" in every message: the usual mistake of a file saved again as UTF-8
            self.doc.warnings.append(Problem(self.doc.place(loc), (
                f"{path} is valid UTF-8 but its {decoded.source} says ISO-8859-1 (Windows-1252): read so, "
                "accents will show as Ã©; if the file is UTF-8, correct the declaration")))
        return decoded.text

    def warn_kind_table(self, ref: FieldRef, found: TemplateField, syntax: str, place: str) -> None:
        """A kind's table (`PRO.NOM`) without a default, in an operation targeting other kinds too:
        empty for those parties, whose messages then fail at send time. A warning, not a refusal."""
        if found.default is None:
            opening, closing = ("[", "]") if syntax == "rtf" else ("[[", "]]")
            marker = f"{opening}{found.reference}{closing}"
            self.warn_kind(ref, marker, f"{opening}{found.reference}|Madame, Monsieur{closing}", "messages will fail",
                           place)

    def warn_document_fields(self, step: StepSpec, path: Path | None, loc: Loc) -> None:
        """The same warning for the merge fields of a Word template (`PRO__NOM`, or mapped to PRO.NOM)."""
        from campflow.render.word_mapping import map_fields, template_fields  # lxml: loaded when needed
        from campflow.render.wordmerge import TemplateError

        assert step.document is not None
        try:
            names = template_fields(path) if path is not None else ()
        except TemplateError:
            return  # check_template said why
        mapping, _ = map_fields(names, step.document.fields, self.catalog)
        outcome = "faxes will fail" if step.kind == "faxing" else "documents will show a blank"
        for name, target in mapping.items():
            reference, default = split_default(target)
            if default is not None:
                continue
            try:
                ref = self.catalog.resolve(reference)
            except FormulaError:
                continue  # check_field or check_template said why
            given = name in step.document.fields
            place = self.doc.place(loc + (("document", "fields", name) if given else ("document", "template")))
            fix = f'document.fields: {{{name}: "{reference}|Madame, Monsieur"}}'
            self.warn_kind(ref, f"merge field {name} ({reference})", fix, outcome, place)

    def warn_kind(self, ref: FieldRef, marker: str, fix: str, outcome: str, place: str) -> None:
        others = [kind for kind in self.spec.party_kinds if kind != ref.party_kind]
        if ref.party_kind is None or not others:
            return
        message = (f"{marker} has a value for {ref.party_kind} parties only; operation {self.spec.code} also "
                   f"targets {', '.join(others)}, whose {outcome} on it; give a default: {fix}")
        self.doc.warnings.append(Problem(place, message))

    def check_graph(self) -> None:
        nodes = [StepNode(s.code, None if s.next is None else tuple(r.to for r in s.next))
                 for s, _ in self.steps if s.kind]
        try:
            topological_order(nodes)
        except CycleError as exc:
            first = next(loc for s, loc in self.steps if s.code == exc.cycle[0])
            self.problem(first + ("next",), str(exc))
