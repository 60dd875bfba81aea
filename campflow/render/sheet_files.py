"""Opening a .csv or .xlsx file as a `Sheet`: a CSV's encoding and delimiter, a workbook's
worksheet, and the messages for files that are neither."""

from __future__ import annotations

import codecs
import csv
import warnings
from collections.abc import Mapping, Sequence
from contextlib import closing
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from campflow.errors import ImportRejected
from campflow.render.sheets import (
    ALLOWED_SUFFIXES,
    DELIMITERS,
    Records,
    Sheet,
    _clean,
    _columns,
    _lookup,
    _no_header,
    _rejected,
    _Scan,
    _scan_header,
)

_SIGNATURES = {
    b"PK\x03\x04": "a ZIP/xlsx archive",
    b"PK\x05\x06": "a ZIP/xlsx archive",
    b"%PDF": "a PDF document",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls file or a password-protected workbook",
    b"\x1f\x8b": "a gzip archive",
}
_CHUNK = 64 * 1024
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1a")  # \x1a: the end-of-file mark of old DOS files
_CP1252_UNDEFINED = (0x81, 0x8D, 0x8F, 0x90, 0x9D)


def open_sheet(
    path: str | Path, *, aliases: Mapping[str, Sequence[str]], required: Sequence[str],
    keep_other: bool = True, max_header_scan: int = 20, sheet: str | None = None,
) -> Sheet:
    """Open a .xlsx or .csv file and find its header row.

    Args:
        aliases: canonical key → accepted header names (the first one is shown in messages).
        required: keys whose columns must be in the header row.
        keep_other: keep columns not in `aliases`, keyed by `other_key(header)`.
        max_header_scan: how many rows at the top may hold the header row.
        sheet: the worksheet of an .xlsx to read (default: the first one).

    Raises:
        ImportRejected: the file cannot be read or has no usable header row.
    """
    path = Path(path)
    lookup = _lookup(aliases, required)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise _rejected(path, "old Excel .xls files cannot be read; open it in Excel and "
                              "save it as .xlsx")
    if suffix not in ALLOWED_SUFFIXES:
        raise _rejected(path, f"cannot read {suffix or 'files without extension'}; "
                              f"use one of {', '.join(ALLOWED_SUFFIXES)}")
    if not path.is_file():
        raise _rejected(path, "no such file; check the path")
    if suffix == ".xlsx":
        return _open_xlsx(path, lookup, required, aliases, keep_other, max_header_scan, sheet)
    return _open_csv(path, lookup, required, aliases, keep_other, max_header_scan)


# -- CSV ----------------------------------------------------------------------------------


def _open_csv(
    path: Path, lookup: Mapping[str, str], required: Sequence[str],
    aliases: Mapping[str, Sequence[str]], keep_other: bool, max_scan: int,
) -> Sheet:
    """Detect the encoding and delimiter of a CSV file, then its header row."""
    encoding, nul_line = _csv_encoding(path)
    scans: dict[str, _Scan] = {}
    for delimiter in DELIMITERS:
        with closing(_csv_records(path, encoding, delimiter)) as records:
            scans[delimiter] = _scan_header(records, lookup, required, max_scan)
    found = {d: scan for d, scan in scans.items() if scan.found}
    if not found:
        # Rows of delimiters only are blank for their own delimiter: the file is empty.
        blank = [scan for scan in scans.values() if scan.row == 0 and scan.ended]
        likeliest = blank[0] if blank else max(scans.values(), key=lambda scan: scan.score)
        raise _no_header(path, likeliest, aliases, required, max_scan)
    # The delimiter that splits the header line into the most cells (counted outside quotes).
    delimiter = min(found, key=lambda d: (found[d].row, -len(found[d].cells)))
    columns, headed = _columns(path, found[delimiter], lookup, keep_other)
    if nul_line is not None:
        raise _nul_byte(path, encoding, delimiter, nul_line)
    return Sheet(path, found[delimiter].row, columns, headed,
                 lambda: _csv_records(path, encoding, delimiter),
                 encoding=encoding, delimiter=delimiter)


def _csv_records(path: Path, encoding: str, delimiter: str) -> Records:
    """Yield (line where the record starts, cleaned cells) for each CSV record."""
    with path.open(encoding=encoding, newline="") as file:
        reader = csv.reader(file, delimiter=delimiter)
        start = 1
        try:
            for record in reader:
                yield start, [cell.strip() or None for cell in record]  # _clean, inlined: hot loop
                start = reader.line_num + 1
        except csv.Error as exc:
            raise _rejected(path, f"line {reader.line_num}: cannot split it into cells ({exc}); "
                                  "check the quotes around that line") from exc


def _csv_encoding(path: Path) -> tuple[str, int | None]:
    """Decide between UTF-8 and Windows-1252 by decoding the whole file, chunk by chunk; also
    the line of the first NUL byte, if any (PostgreSQL text cannot hold one)."""
    with path.open("rb") as file:
        head = file.read(8 * 1024)
        _refuse_binary(path, head)
        bom = head.startswith(codecs.BOM_UTF8)
        decoder = codecs.getincrementaldecoder("utf-8")()
        is_utf8, has_text, lines, undefined, nul_line = True, False, 1, None, None
        chunk = head[len(codecs.BOM_UTF8):] if bom else head
        while chunk:
            if is_utf8:
                is_utf8 = _decodes(decoder, chunk)
            has_text = has_text or bool(chunk.strip())
            if undefined is None:
                undefined = _cp1252_undefined(chunk, lines)
            if nul_line is None and (nul := chunk.find(b"\x00")) >= 0:
                nul_line = lines + chunk.count(b"\n", 0, nul)
            lines += chunk.count(b"\n")
            chunk = file.read(_CHUNK)
    if is_utf8 and _decodes(decoder, b"", final=True):
        encoding = "utf-8-sig" if bom else "utf-8"
    elif undefined is not None:
        line, byte = undefined
        raise _rejected(path, f"the file is neither UTF-8 nor Windows-1252 text (line {line} "
                              f"has the byte 0x{byte:02X}); save it as \"CSV UTF-8\"")
    else:
        encoding = "cp1252"
    if not has_text:
        raise _rejected(path, "the file is empty")
    return encoding, nul_line


def _nul_byte(path: Path, encoding: str, delimiter: str, line: int) -> ImportRejected:
    """The error naming the row (and cell) that holds the file's first NUL byte."""
    row, column = line, None
    with closing(_csv_records(path, encoding, delimiter)) as records:
        for number, cells in records:
            if number > line:
                break
            found = [i for i, cell in enumerate(cells) if cell is not None and "\x00" in cell]
            if found:
                row, column = number, get_column_letter(found[0] + 1)
                break
    where = f" in column {column}" if column else ""
    return _rejected(path, f"NUL byte (0x00){where}: no text may hold one; remove it (the export may be "
                           "damaged) or save the file again as \"CSV UTF-8\"", row=row)


def _decodes(decoder: codecs.IncrementalDecoder, chunk: bytes, final: bool = False) -> bool:
    """Whether the chunk continues valid text (the decoded text itself is not kept)."""
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


def _cp1252_undefined(chunk: bytes, first_line: int) -> tuple[int, int] | None:
    """The line and value of the first byte Windows-1252 leaves undefined, if any."""
    positions = [(chunk.find(bytes([byte])), byte) for byte in _CP1252_UNDEFINED]
    found = [(pos, byte) for pos, byte in positions if pos >= 0]
    if not found:
        return None
    pos, byte = min(found)
    return first_line + chunk.count(b"\n", 0, pos), byte


def _refuse_binary(path: Path, head: bytes) -> None:
    """Refuse a file given as CSV that is not text (an archive, a PDF, UTF-16…)."""
    if not head:
        raise _rejected(path, "the file is empty")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _rejected(path, "this is UTF-16 text (Excel's \"Unicode text\"); "
                              "save it as \"CSV UTF-8\" or .xlsx")
    kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)
    controls = sum(1 for byte in head if byte < 0x20 and byte not in _TEXT_CONTROLS)
    # a stray NUL in text is reported with its row (_nul_byte); many make it binary (UTF-16…)
    if kind is None and controls > len(head) // 10:
        kind = "binary data"
    if kind is not None:
        raise _rejected(path, f"this is not a text CSV file (looks like {kind}); "
                              "save it as .csv or .xlsx")


# -- XLSX ---------------------------------------------------------------------------------


def _open_xlsx(
    path: Path, lookup: Mapping[str, str], required: Sequence[str],
    aliases: Mapping[str, Sequence[str]], keep_other: bool, max_scan: int, sheet: str | None,
) -> Sheet:
    """Open a workbook read-only and find the header row of the chosen worksheet."""
    workbook = _load_workbook(path)
    try:
        worksheet = _worksheet(path, workbook, sheet)
        # Some producers write a wrong sheet size, which would cut read-only iteration short.
        worksheet.reset_dimensions()
        with closing(_xlsx_records(worksheet)) as records:
            scan = _scan_header(records, lookup, required, max_scan)
        if not scan.found:
            raise _no_header(path, scan, aliases, required, max_scan)
        columns, headed = _columns(path, scan, lookup, keep_other)
    except BaseException:
        workbook.close()
        raise
    return Sheet(path, scan.row, columns, headed, lambda: _xlsx_records(worksheet),
                 on_close=workbook.close)


def _load_workbook(path: Path) -> Any:
    """The workbook in read-only mode, or ImportRejected saying what the file looks like."""
    with path.open("rb") as file:
        head = file.read(8)
    if not head.startswith(b"PK"):
        kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), "text")
        raise _rejected(path, f"this is not an Excel .xlsx workbook (looks like {kind}); "
                              "save it as .xlsx from Excel, or as .csv")
    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it skips; they do not matter here.
            warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
            return load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        # A malformed archive surfaces as OSError, KeyError, BadZipFile, XML errors…
        raise _rejected(path, "this is not a valid Excel .xlsx workbook "
                              f"({type(exc).__name__}: {exc}); open it in Excel and save "
                              "it as .xlsx") from exc


def _worksheet(path: Path, workbook: Any, name: str | None) -> Any:
    """The named worksheet, or the first one."""
    names = [ws.title for ws in workbook.worksheets]
    if not names:
        raise _rejected(path, "the workbook has no worksheet")
    if name is None:
        return workbook.worksheets[0]
    if name not in names:
        raise _rejected(path, f"no sheet named {name!r}; the sheets are {', '.join(names)}")
    return workbook[name]


def _xlsx_records(worksheet: Any) -> Records:
    """Yield (Excel row number, cells as text) for each row of the worksheet."""
    for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
        yield number, [_cell_text(value) for value in values]


def _cell_text(value: object) -> str | None:
    """A cell value as the text the user typed: 12 not 12.0, dates in ISO form."""
    if value is None:
        return None
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, datetime):
        return _datetime_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S" if value.second else "%H:%M")
    if isinstance(value, timedelta):
        minutes, seconds = divmod(round(value.total_seconds()), 60)
        return f"{minutes // 60}:{minutes % 60:02}:{seconds:02}"
    return _clean(str(value))


def _number_text(value: float) -> str:
    """A float as Excel shows it: 15 significant digits, no exponent, no trailing .0."""
    if value.is_integer():
        return str(int(value))
    text = format(value, ".15g")
    return format(Decimal(text), "f") if "e" in text else text


def _datetime_text(value: datetime) -> str:
    """ISO date and time to the minute (seconds when set); a bare date when at midnight."""
    if value.microsecond:
        # openpyxl keeps milliseconds from float serials; Excel shows whole seconds.
        value = (value + timedelta(microseconds=500_000)).replace(microsecond=0)
    if value.time() == time(0, 0):
        # Excel stores dates as midnight datetimes; a date cell should read as a date.
        return value.date().isoformat()
    return value.strftime("%Y-%m-%dT%H:%M:%S" if value.second else "%Y-%m-%dT%H:%M")
