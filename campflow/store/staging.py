"""Bulk loads through a temporary staging table: COPY in, check in SQL, then one INSERT … SELECT.

Rows are streamed from the file into `COPY`, so memory does not grow with the file; checks
that need the database (unknown codes, duplicates) are set-based queries on the staging
table; nothing reaches the real tables until every check passed (or bad rows were skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import text
from sqlalchemy.orm import Session

from campflow.errors import ImportRejected, Problem

MAX_SHOWN = 50


@dataclass
class Rejections:
    """Rejected rows of one file, by row number."""

    path: Path
    rows: dict[int, str] = field(default_factory=dict)
    # rows left out on purpose (not errors): they neither reject the file nor are imported
    left_out: dict[int, str] = field(default_factory=dict)

    def add(self, row: int, reason: str) -> None:
        self.rows.setdefault(row, reason)

    def __len__(self) -> int:
        return len(self.rows)

    def problems(self) -> list[Problem]:
        return [Problem(f"{self.path.name} row {row}", reason) for row, reason in sorted(self.rows.items())]

    def raise_if_any(self, total: int) -> None:
        if self.rows:
            shown = self.problems()
            summary = (f"{len(shown)} of {total} row(s) rejected; nothing was imported. "
                       "Fix them, or pass --skip-bad-rows to import the good rows only.")
            if len(shown) > MAX_SHOWN:
                summary = f"… and {len(shown) - MAX_SHOWN} more (see --report)\n" + summary
            raise ImportRejected(shown[:MAX_SHOWN], summary)

    def write_report(self, report: Path) -> None:
        import csv

        with report.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, delimiter=";")
            writer.writerow(["row", "reason"])
            writer.writerows(sorted({**self.left_out, **self.rows}.items()))


@contextmanager
def progress(description: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress line counting rows (files are streamed, so the total is unknown)."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
                  transient=True, disable=not enabled) as bar:
        task = bar.add_task(description, total=None)
        yield lambda n: bar.update(task, advance=n)


def prefer_bulk_plans(session: Session) -> None:
    """Plans for whole-table statements, for the rest of this transaction.

    Stale statistics (a table analysed while empty) make the planner choose nested loops
    that re-scan a table once per row: quadratic on a million rows. Hash joins are linear
    whatever the statistics say; more work_mem keeps their hashes and sorts in memory.
    """
    session.execute(text("set local enable_nestloop = off"))
    session.execute(text("set local work_mem = '64MB'"))


def create_stage(session: Session, name: str, columns: Sequence[tuple[str, str]]) -> None:
    """A temporary table dropped at commit; `row_no` is the file's row number."""
    prefer_bulk_plans(session)
    cols = ", ".join(f"{col} {sql_type}" for col, sql_type in (("row_no", "integer"), *columns))
    session.execute(text(f"create temporary table {name} ({cols}) on commit drop"))


def copy_rows(session: Session, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              advance: Callable[[int], None] = lambda n: None, batch: int = 10_000) -> int:
    """COPY rows into the staging table; returns how many."""
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    count = 0
    with cursor.copy(f"copy {name} ({', '.join(('row_no', *columns))}) from stdin") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
            if count % batch == 0:
                advance(batch)
    advance(count % batch)
    session.execute(text(f"analyze {name}"))
    return count


def reject_where(session: Session, rejections: Rejections, sql: str, **params: Any) -> None:
    """Record (row_no, reason) pairs a query finds."""
    for row_no, reason in session.execute(text(sql), params):
        rejections.add(row_no, reason)


def drop_rejected(session: Session, name: str, rejections: Rejections) -> None:
    if rejections.rows:
        session.execute(text(f"delete from {name} where row_no = any(:rows)"),
                        {"rows": list(rejections.rows)})
