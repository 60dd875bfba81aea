"""`spreadsheet_export`: an `.xlsx` of a step's parties with the spec's `columns` (SPEC section 4).

One SELECT yields every column; it streams through a server-side cursor into an openpyxl
write-only workbook (rows go to a temporary file, strings are written inline), so memory
does not grow with the number of parties. Past Excel's row limit the rows go on to a new
sheet with the header again. The parties are claimed first (`campflow.store.records`): the export
and the status update cover exactly the same parties.

Text cells that a spreadsheet could take for a formula (`=`, `+`, `-`, `@`, TAB, CR first)
are prefixed with `'` (OWASP "CSV injection"): the cell then shows `'=…` as plain text. openpyxl
alone would even store a string starting with `=` as a live formula.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy.orm import Session

from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.errors import CampflowError
from campflow.store.records import (
    FieldColumn,
    RecordQuery,
    claim_parties,
    mark_processed,
    question_ids,
    resolve_fields,
)

ROWS_PER_SHEET = 1_048_575  # Excel's 1,048,576 rows minus the header; tests patch it small
SHEET_TITLE = "Export"
FETCH_ROWS = 5_000  # rows per round trip of the server-side cursor
MAX_CELL_TEXT = 32_767  # Excel refuses longer cells ("repairs" the file)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Write the step's `to_process` parties to a workbook, then mark them `ok_continue`."""
    columns = resolve_columns(session, ctx)
    claim = claim_parties(session, ctx.step_id)
    if not claim:
        return StepOutcome(message="no party to process")
    path = ctx.output_dir / f"{ctx.operation_code}-{ctx.step_code}.xlsx"
    query = RecordQuery(ctx, question_ids(session, columns, claim.orders)).select(columns)
    result = session.execute(query.execution_options(yield_per=FETCH_ROWS, stream_results=True))
    with result:
        written = write_workbook(path, [c.text for c in columns], result)
    done = mark_processed(session, ctx.step_id)
    return StepOutcome(processed=done, statuses={"ok_continue": done}, outputs=(path,),
                       message=f"{written} part{'y' if written == 1 else 'ies'} exported to {path.name}")


def resolve_columns(session: Session, ctx: StepContext) -> tuple[FieldColumn, ...]:
    """The step's `columns:` resolved with the database's catalog; every bad one reported."""
    texts = ctx.settings.get("columns")
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise CampflowError(f"{place}: a spreadsheet_export step needs `columns:`, a list of "
                            f"fields such as [CLI.NOM, party.stat(2)]; got {texts!r}")
    return resolve_fields(session, texts, place, "column",
                          "nothing was exported; fix the step's columns and apply it again")


# --- the workbook ----------------------------------------------------------------------------


def write_workbook(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write the rows under the header, sheet after sheet; the file appears whole or not at all.

    Returns the number of data rows written.
    """
    with saved_atomically(path) as book:
        return _fill(book, [cell_value(h) for h in header], rows)


@contextlib.contextmanager
def saved_atomically(path: Path) -> Iterator[Workbook]:
    """A write-only workbook, saved to `path` when the block ends without an error.

    It is saved under a temporary name, synced, then renamed: `path` appears whole or not at
    all; on an error nothing is left behind, not even openpyxl's temporary sheet files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook(write_only=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield book
        book.save(partial)
        with partial.open("rb+") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points to it
        os.replace(partial, path)
    except BaseException:
        discard_workbook(book)
        raise
    finally:
        partial.unlink(missing_ok=True)


def discard_workbook(book: Workbook) -> None:
    """Close an unsaved workbook's sheet streams and delete their temporary files."""
    # openpyxl deletes them only when saving or at exit, and a worker process lives long
    for sheet in book.worksheets:
        writer = sheet._writer
        if writer is None:
            continue
        with contextlib.suppress(Exception):  # already failing: the first error is the one to see
            if not sheet.closed:
                sheet.close()
        with contextlib.suppress(OSError, ValueError):
            writer.cleanup()


def _fill(book: Workbook, header: list[Any], rows: Iterable[Sequence[Any]]) -> int:
    """Append the rows, opening `Export`, `Export (2)`… every ROWS_PER_SHEET rows."""
    limit = ROWS_PER_SHEET  # read at call time, so tests can patch it
    sheet, on_sheet, count = None, limit, 0
    for row in rows:
        if on_sheet == limit:
            sheet, on_sheet = _new_sheet(book, header), 0
        sheet.append([cell_value(v) for v in row])  # type: ignore[union-attr]
        on_sheet += 1
        count += 1
    if sheet is None:
        _new_sheet(book, header)  # a workbook needs a sheet
    return count


def _new_sheet(book: Workbook, header: list[Any]) -> Any:
    number = len(book.worksheets) + 1
    sheet = book.create_sheet(SHEET_TITLE if number == 1 else f"{SHEET_TITLE} ({number})")
    sheet.append(header)
    return sheet


def cell_value(value: Any) -> Any:
    """What a cell holds: text made inert and valid for Excel; numbers and dates unchanged."""
    if not isinstance(value, str):
        return value
    value = ILLEGAL_CHARACTERS_RE.sub("", value)  # control characters make openpyxl raise
    if value.startswith(FORMULA_STARTS):
        value = "'" + value
    return value[:MAX_CELL_TEXT]


def check_columns(step: Any, loc: tuple, checker: Any) -> None:
    """Apply-time checks of `columns:` (exports, call sheets, approval lists): known fields."""
    for i, column in enumerate(step.columns):
        checker.check_field(column, loc + ("columns", i))


register(StepKind(name="spreadsheet_export", run=run, automated=True, retries=2,
                  retry_delay_seconds=5, settings={"columns": check_columns}))
