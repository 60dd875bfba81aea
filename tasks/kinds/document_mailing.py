"""`document_mailing`: a Word mail merge of the step's `.docx` master (SPEC section 4).

The template's merge fields map to campflow fields (`TABLE__FIELD` names, or the template's
own names through `document.fields`); one SELECT over the claimed parties yields every value
(`campflow.store.records.RecordQuery`: a contact field shows the party's first targeted contact). The
rows stream through a server-side cursor into one merged `.docx`, a section (new page) per
party; with `per_party: true` each party also gets its own `.docx`, named after its code.
Everything is written under a temporary folder and renamed into the run folder at the end,
so a failure leaves no file behind; then the files go to the output storage block, if any.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from blocks.storage import publish
from campflow.core.fields import FieldRef
from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.core.template_fields import split_default
from campflow.errors import CampflowError, Problem, SpecError
from campflow.paths import PathRefused, read_stored
from campflow.render.bodies import DEFAULT_EXAMPLE, EmptyField, is_empty
from campflow.render.word_mapping import check_template, map_fields
from campflow.render.wordmerge import TemplateError, WordTemplate
from campflow.store.catalog import load_field_catalog
from campflow.store.records import FieldColumn, RecordQuery, claim_parties, mark_processed, question_ids, resolve_fields

FETCH_ROWS = 1_000  # rows per round trip of the server-side cursor
FIX = "nothing was merged; fix the step's document settings or its template and apply it again"
# names Windows reserves whatever the extension
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r"[^\w.-]+")
PARTY_CODE = FieldColumn("party.code", FieldRef("party", "code"))


@dataclass(frozen=True)
class MergePlan:
    """A step's template and the fields its merge fields show, resolved once per run."""

    template: WordTemplate
    columns: tuple[FieldColumn, ...]  # each field once, in the order of a RecordQuery row
    sources: tuple[tuple[str, int], ...]  # (merge field name, index of its column)
    # (merge field name, the field it shows as written, its default or None): `NOM: "PRO.NOM|Madame"`
    defaults: tuple[tuple[str, str, str | None], ...] = ()

    def values(self, row: Sequence[Any]) -> dict[str, Any]:
        """A RecordQuery row (of `columns`) as merge field name → value."""
        return {name: row[index] for name, index in self.sources}

    def filled(self, values: dict[str, Any], blanks: Counter[str] | None = None) -> dict[str, Any]:
        """`values` with each NULL or blank field's default; EmptyField for a field without one
        (a fax), or, given `blanks`, that field counted there and merged blank (a document)."""
        for name, target, default in self.defaults:
            value = values.get(name)
            if value is None or isinstance(value, str) and is_empty(value):
                if default is not None:
                    values[name] = default
                elif blanks is not None:
                    blanks[name] += 1
                else:
                    raise EmptyField(f"merge field {name}", self.fix(name))
        return values

    def fix(self, name: str) -> str:
        target = next(target for field, target, _ in self.defaults if field == name)
        return f'document.fields: {{{name}: "{target}|{DEFAULT_EXAMPLE}"}}'


def plan_merge(session: Session, ctx: StepContext) -> MergePlan:
    """The step's `document:` read and checked against the database's fields.

    Raises CampflowError or SpecError naming the step (a template changed since apply, a
    field no longer known) before any party is claimed.
    """
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    settings = ctx.settings.get("document") or {}
    written = settings.get("template")
    if not written:
        raise CampflowError(f"{place}: a {ctx.kind} step needs `document: {{template: FILE.docx}}`")
    path = Path(written)
    try:
        raw = read_stored(path)  # the file apply checked, unless a symlink was swapped in since
    except PathRefused as exc:
        raise CampflowError(f"{place}: template refused: {exc}; nothing was merged") from None
    try:
        template = WordTemplate(path, raw)
    except TemplateError as error:
        raise SpecError([Problem(f"{place} document.template", str(error))], FIX) from None
    catalog = load_field_catalog(session)
    mapping, problems = map_fields(template.fields, settings.get("fields") or {}, catalog,
                                   f"template {path.name}")
    if problems:
        raise SpecError([Problem(f"{place} document.template", p) for p in problems], FIX)
    defaults = tuple((name, *split_default(target)) for name, target in mapping.items())
    mapping = {name: target for name, target, _ in defaults}
    targets = list(dict.fromkeys(mapping.values()))
    columns: list[FieldColumn] = []
    index: dict[FieldRef, int] = {}  # PCFIDX.NOM and party.name are one column
    where: dict[str, int] = {}
    for column in resolve_fields(session, targets, place, "merge field", FIX):
        where[column.text] = index.setdefault(column.ref, len(columns))
        if len(index) > len(columns):
            columns.append(column)
    return MergePlan(template, tuple(columns), tuple((name, where[t]) for name, t in mapping.items()), defaults)


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Merge the step's `to_process` parties into Word documents, then mark them `ok_continue`."""
    plan = plan_merge(session, ctx)
    claim = claim_parties(session, ctx.step_id)
    if not claim:
        return StepOutcome(message="no party to process")
    query = RecordQuery(ctx, question_ids(session, plan.columns, claim.orders)).select((PARTY_CODE, *plan.columns))
    result = session.execute(query.execution_options(yield_per=FETCH_ROWS, stream_results=True))
    stem = f"{ctx.operation_code}-{ctx.step_code}"
    per_party = bool((ctx.settings.get("document") or {}).get("per_party"))
    blanks: Counter[str] = Counter()
    with result:
        files, merged = write_documents(plan, result, ctx.output_dir, stem, per_party, blanks)
    done = mark_processed(session, ctx.step_id)
    outputs = publish(ctx.output_dir, files)
    each = f", and one file per party in {stem}/" if per_party else ""
    message = f"{merged} part{'y' if merged == 1 else 'ies'} merged into {stem}.docx{each}"
    return StepOutcome(processed=done, statuses={"ok_continue": done}, outputs=outputs,
                       message=message + _blank_note(plan, blanks))


def _blank_note(plan: MergePlan, blanks: Counter[str]) -> str:
    """Printed letters are read before they are posted: their holes are reported, not refused."""
    if not blanks:
        return ""
    first = min(blanks)
    counts = ", ".join(f"{name} ({count})" for name, count in sorted(blanks.items()))
    return (f"; merged blank where empty, by merge field (parties): {counts}; give a default in "
            f"document.fields, e.g. {plan.fix(first).removeprefix('document.fields: ')}")


def write_documents(plan: MergePlan, rows: Iterable[Sequence[Any]], folder: Path, stem: str,
                    per_party: bool, blanks: Counter[str] | None = None) -> tuple[list[Path], int]:
    """Write `<stem>.docx` (a section per row) and, per party, `<stem>/<code>.docx`.

    Each row is (party code, *plan.columns). Files appear whole, all at once, or not at all.
    Returns the files written and the number of parties merged; `blanks` counts, per merge
    field, the parties it is empty for (without a default).
    """
    staging = folder / f".{stem}.{uuid.uuid4().hex}.tmp"
    staging.mkdir(parents=True)
    try:
        parties = staging / stem
        written: list[Path] = []
        merged = staging / f"{stem}.docx"
        with merged.open("wb") as out:
            records = _records(plan, rows, parties if per_party else None, written,
                               Counter() if blanks is None else blanks)
            count = plan.template.write(out, records)
            out.flush()
            os.fsync(out.fileno())  # the data is on disk before the name points to it
        final = folder / merged.name
        os.replace(merged, final)
        moved = [_move(path, folder / stem / path.name) for path in written]
        return [final, *moved], count
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _records(plan: MergePlan, rows: Iterable[Sequence[Any]], parties: Path | None,
             written: list[Path], blanks: Counter[str]) -> Iterator[dict[str, Any]]:
    """Each row's merge values; with a folder, also writes the party's own document there."""
    used: set[str] = set()
    for code, *row in rows:
        values = plan.filled(plan.values(row), blanks)
        if parties is not None:
            path = parties / file_name(code, used)
            parties.mkdir(exist_ok=True)
            path.write_bytes(plan.template.render(values))
            written.append(path)
        yield values


def _move(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return target


def file_name(code: str, used: set[str]) -> str:
    """A `.docx` name made from a party code, safe on every file system and unique in `used`."""
    stem = _UNSAFE.sub("_", code).strip("._") or "party"
    stem = stem[:100]
    if stem.upper().split(".")[0] in _RESERVED:
        stem = f"_{stem}"
    name, number = f"{stem}.docx", 1
    while name.casefold() in used:  # `A/B` and `A_B`, or `ab` and `AB` on Windows
        number += 1
        name = f"{stem}~{number}.docx"
    used.add(name.casefold())
    return name


def check_document(step: Any, loc: tuple, checker: Any) -> None:
    """Apply-time checks of `document:` (document_mailing, faxing): the Word template inside the
    spec's folder and its merge fields, the fields it maps (`checker`: OperationCheck)."""
    document = step.document
    path = checker.allowed_file(document.template, loc + ("document", "template"), "template")
    if path is not None:
        for message in check_template(path, document.fields, checker.catalog):
            checker.problem(loc + ("document", "template"), message)
    for name, target in document.fields.items():
        checker.check_field(split_default(target)[0], loc + ("document", "fields", name))
    checker.warn_document_fields(step, path, loc)


register(StepKind(name="document_mailing", run=run, automated=True, retries=2,
                  retry_delay_seconds=5, settings={"document": check_document}))
