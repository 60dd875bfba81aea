"""Streaming reading of user spreadsheets (.xlsx and .csv) for the import commands.

`open_sheet` (`campflow.render.sheet_files`) finds the header row by keyword, maps headers to
the caller's canonical keys and returns a `Sheet` whose `rows()` yields one row at a time:
memory stays bounded whatever the file's size (only openpyxl's shared-strings table of an .xlsx is held whole).

Row dicts hold stripped strings or None. A row with non-empty cells under no header also
carries `EXTRA` ("__extra__"): a ready-to-show text such as `F="x", G="y"` naming those
cells, so that callers can reject the row.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from openpyxl.utils import get_column_letter

from campflow.errors import ImportRejected, Problem

EXTRA = "__extra__"
CSV_SUFFIXES = (".csv", ".txt", ".tsv")
ALLOWED_SUFFIXES = (".xlsx", *CSV_SUFFIXES)
DELIMITERS = (";", "\t", ",")
# PostgreSQL tables hold at most 1,600 columns, and the imports stage a file's columns in one;
# no real party or answer file comes near 1,000
MAX_COLUMNS = 1_000

Cells = list[str | None]
Records = Iterator[tuple[int, Cells]]  # (1-based row number in the file, cleaned cells)


@dataclass(frozen=True)
class Column:
    """A headed column: its 0-based position, its header as written, and its key in rows."""

    index: int
    header: str
    key: str

    @property
    def letter(self) -> str:
        """The column's letter as Excel shows it (A, B, …, AA)."""
        return get_column_letter(self.index + 1)


class Sheet:
    """An opened spreadsheet whose header row is known; `rows()` streams the data rows."""

    def __init__(
        self, path: Path, header_row: int, columns: tuple[Column, ...], headed: frozenset[int],
        records: Callable[[], Records], *, encoding: str | None = None,
        delimiter: str | None = None, on_close: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.header_row = header_row
        self.columns = columns
        self.encoding = encoding
        self.delimiter = delimiter
        self._headed = headed  # every non-blank header cell, kept or not
        self._records = records
        self._on_close = on_close
        # rows are hot loops over millions of rows: precompute where each key and stray cell is
        self._keys = tuple(c.key for c in columns)
        self._indexes = tuple(c.index for c in columns)
        self._width = max(headed, default=-1) + 1
        self._unheaded = tuple(i for i in range(self._width) if i not in headed)

    def rows(self) -> Iterator[tuple[int, dict[str, str | None]]]:
        """Yield (row number as the user sees it, {key: value}) for each non-blank data row."""
        with closing(self._records()) as records:
            for number, cells in records:
                if number <= self.header_row or not any(cells):
                    continue
                yield number, self._row(cells)

    def _row(self, cells: Cells) -> dict[str, str | None]:
        width = len(cells)
        if width >= self._width:
            row = dict(zip(self._keys, [cells[i] for i in self._indexes], strict=True))
        else:
            row = {key: cells[i] if i < width else None for key, i in zip(self._keys, self._indexes)}
        if (width > self._width and any(cells[self._width:])) or any(
                cells[i] is not None for i in self._unheaded if i < width):
            row[EXTRA] = ", ".join(
                f'{get_column_letter(i + 1)}="{value}"'
                for i, value in enumerate(cells) if value is not None and i not in self._headed
            )
        return row

    def close(self) -> None:
        """Release the workbook (nothing to do for CSV files)."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> Sheet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def fold_header(text: str) -> str:
    """The form headers are compared in: upper case, no accents, `_`/`-`/spaces alike."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.replace("_", " ").replace("-", " ").split()).upper()


def other_key(header: str) -> str:
    """The key of a column the caller did not name: its header upper-cased, spaces squeezed."""
    return " ".join(header.split()).upper()


# -- header row ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scan:
    """What the top of a file says about its header row."""

    found: bool
    row: int  # the header row, or else the most likely one (0: no non-blank row)
    cells: Cells
    score: tuple[int, int, int]  # required keys, known keys, non-empty cells
    ended: bool  # the file ended within the scanned rows


def _lookup(aliases: Mapping[str, Sequence[str]], required: Sequence[str]) -> dict[str, str]:
    """Folded header name → canonical key; refuses ambiguous or incomplete aliases."""
    lookup: dict[str, str] = {}
    for key, names in aliases.items():
        for name in names:
            folded = fold_header(name)
            if lookup.setdefault(folded, key) != key:
                raise ValueError(f"header {name!r} is an alias of both {lookup[folded]!r} "
                                 f"and {key!r}")
    missing = [key for key in required if not aliases.get(key)]
    if missing:
        raise ValueError(f"required keys without aliases: {missing}")
    return lookup


def _scan_header(
    records: Records, lookup: Mapping[str, str], required: Sequence[str], max_scan: int,
) -> _Scan:
    """Find the first row, among the first `max_scan`, holding all required keys."""
    best = _Scan(False, 0, [], (-1, -1, -1), ended=True)
    for number, cells in records:
        if number > max_scan:
            return _Scan(False, best.row, best.cells, best.score, ended=False)
        if not any(cells):
            continue
        keys = {lookup.get(fold_header(cell)) for cell in cells if cell is not None}
        score = (sum(key in keys for key in required), len(keys - {None}),
                 sum(cell is not None for cell in cells))
        if score[0] == len(required) and (score[1] or not lookup):
            return _Scan(True, number, cells, score, ended=False)
        if score > best.score:
            best = _Scan(False, number, cells, score, ended=True)
    return best


def _columns(
    path: Path, scan: _Scan, lookup: Mapping[str, str], keep_other: bool,
) -> tuple[tuple[Column, ...], frozenset[int]]:
    """The kept columns of the header row, and the positions of all its non-blank cells."""
    width = sum(cell is not None for cell in scan.cells)
    if width > MAX_COLUMNS:
        raise _rejected(path, f"the file has {width:,} columns (its header is row {scan.row}); at most "
                              f"{MAX_COLUMNS:,} are allowed: delete the columns you do not import")
    kept: dict[str, Column] = {}
    headed = []
    for index, header in enumerate(scan.cells):
        if header is None:
            continue
        headed.append(index)
        key = lookup.get(fold_header(header))
        if key is None and not keep_other:
            continue
        column = Column(index, header, key or other_key(header))
        first = kept.setdefault(column.key, column)
        if first is not column:
            raise _rejected(path, f"columns {first.letter} ({first.header}) and {column.letter} "
                                  f"({column.header}) are the same column; keep only one",
                            row=scan.row)
    return tuple(kept.values()), frozenset(headed)


def _no_header(
    path: Path, scan: _Scan, aliases: Mapping[str, Sequence[str]], required: Sequence[str],
    max_scan: int,
) -> ImportRejected:
    """The error for a file whose header row was not found, showing the likeliest row."""
    if scan.row == 0 and scan.ended:
        return _rejected(path, "the file is empty")
    names = [aliases[key][0] for key in required]
    wanted = (f"the column {names[0]}" if len(names) == 1
              else f"the columns {', '.join(names[:-1])} and {names[-1]}")
    if scan.row == 0:
        seen = f"the first {max_scan} rows are empty"
    else:
        headers = [cell for cell in scan.cells if cell is not None]
        shown = ", ".join(headers[:12]) + (", …" if len(headers) > 12 else "")
        seen = f"row {scan.row} has: {shown}"
    fix = "add it" if len(names) == 1 else "add them"
    return _rejected(path, f"no header row with {wanted} in the first {max_scan} rows "
                           f"({seen}); {fix}")


def _rejected(path: Path, message: str, *, row: int | None = None) -> ImportRejected:
    place = path.name if row is None else f"{path.name} row {row}"
    return ImportRejected([Problem(place, message)], "nothing was imported")


def _clean(text: str) -> str | None:
    """A cell's text stripped; None when empty."""
    return text.strip() or None
