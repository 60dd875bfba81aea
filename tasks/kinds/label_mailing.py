"""`label_mailing`: address labels for a step's parties, as a `.docx` (or `.pdf`) sheet.

The layout (`campflow.core.labels`) is a standard label sheet (`sheet: L7160`) or an explicit
one (`rows`, `columns`, `width_mm`, `height_mm`, margins), explicit values overriding the sheet's. The Word sheet is
one A4 table with a fixed layout: columns and rows exactly the labels' size in twips (narrow
spacer columns for the gaps between labels), no cell margins, the page margins the sheet's,
so labels print where the sheet has them; the table runs on over as many pages as needed.

One label per party (its name, the person — its first targeted contact, else its first
contact —, address, postal code and city, and the country when it is not the operator's),
or with `per_contact: true` one per contact: the party's contacts waiting in this step, or
all its contacts when none was targeted. One streamed SELECT feeds the labels; the rows go
straight into the package, so memory does not grow with the number of labels.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import and_, exists, join, or_, select
from sqlalchemy.orm import Session

from blocks.storage import publish
from campflow.core.fields import FieldRef
from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.core.labels import (
    PADDING_MM,
    PAGE_HEIGHT_MM,
    PAGE_WIDTH_MM,
    SPARE_MM,
    TWIPS_PER_MM,
    LabelSheet,
    LayoutError,
    check_labels,
    label_layout,
)
from campflow.errors import CampflowError
from campflow.store.records import CLAIMED, FieldColumn, RecordQuery, claim_parties, mark_processed
from models import Contact, Party, StepTargetContact

FETCH_ROWS = 5_000
HOME_COUNTRY_VARIABLE = "CAMPFLOW_HOME_COUNTRY"
HOME_COUNTRY_DEFAULT = "FR,FRA,France"
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- what a label says -----------------------------------------------------------------------


def home_countries() -> frozenset[str]:
    """How the operator's own country is written (not printed on labels)."""
    written = os.environ.get(HOME_COUNTRY_VARIABLE, HOME_COUNTRY_DEFAULT)
    return frozenset(part.strip().casefold() for part in written.split(",") if part.strip())


def address_lines(name: str | None, title: str | None, first_name: str | None, last_name: str | None,
                  address: str | None, postal_code: str | None, city: str | None, country: str | None,
                  home: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """A label's lines: party, person, address lines, postal code and city, foreign country."""
    person = " ".join(p.strip() for p in (title, first_name, last_name) if p and p.strip())
    town = " ".join(p.strip() for p in (postal_code, city) if p and p.strip())
    foreign = country.strip().upper() if country and country.strip().casefold() not in home else None
    lines = [name, person, *(address or "").splitlines(), town, foreign]
    return tuple(_XML_ILLEGAL.sub("", line.strip()) for line in lines if line and line.strip())


_PARTY_COLUMNS = tuple(FieldColumn(f"{table}.{field}", FieldRef(table, field)) for table, field in (
    ("party", "name"), ("contact", "title"), ("contact", "first_name"), ("contact", "last_name"),
    ("party", "address"), ("party", "postal_code"), ("party", "city"), ("party", "country")))


def _contact_query(ctx: StepContext) -> Any:
    """One row per contact of the claimed parties (a party without any: one row, no person)."""
    waiting = select(StepTargetContact.contact_id).where(
        StepTargetContact.step_id == ctx.step_id, StepTargetContact.party_id == Party.id,
        StepTargetContact.status == "to_process")
    targeted = exists().where(StepTargetContact.step_id == ctx.step_id,
                              StepTargetContact.party_id == Party.id)
    chosen = and_(Contact.party_id == Party.id, or_(Contact.id.in_(waiting), ~targeted))
    return (select(Party.name, Contact.title, Contact.first_name, Contact.last_name, Party.address,
                   Party.postal_code, Party.city, Party.country)
            .select_from(join(CLAIMED, Party, Party.id == CLAIMED.c.party_id).outerjoin(Contact, chosen))
            .order_by(Party.code, Contact.code))


# --- the step --------------------------------------------------------------------------------


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Print the step's `to_process` parties on a label sheet, then mark them `ok_continue`."""
    settings = ctx.settings.get("labels") or {}
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    try:
        sheet = label_layout(settings)
    except LayoutError as error:
        raise CampflowError(f"{place}: {error}") from None
    output = settings.get("format", "docx")
    if output not in WRITERS:
        raise CampflowError(f"{place}: labels.format must be one of {', '.join(WRITERS)}; got {output!r}")
    if not claim_parties(session, ctx.step_id):
        return StepOutcome(message="no party to process")
    query = (_contact_query(ctx) if settings.get("per_contact")
             else RecordQuery(ctx, {}).select(_PARTY_COLUMNS))
    result = session.execute(query.execution_options(yield_per=FETCH_ROWS, stream_results=True))
    home = home_countries()
    path = ctx.output_dir / f"{ctx.operation_code}-{ctx.step_code}.{output}"
    with result:
        count = write_atomically(path, lambda out: WRITERS[output](
            out, sheet, (address_lines(*row, home=home) for row in result)))
    done = mark_processed(session, ctx.step_id)
    pages = -(-count // sheet.per_page)
    return StepOutcome(processed=done, statuses={"ok_continue": done},
                       outputs=publish(ctx.output_dir, [path]),
                       message=f"{count} label{'' if count == 1 else 's'} on {pages} "
                               f"page{'' if pages == 1 else 's'} of {sheet} in {path.name}")


def write_atomically(path: Path, write: Any) -> int:
    """`write(file)` into a temporary file renamed to `path` once whole; returns its result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with partial.open("wb") as out:
            result = write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return result


# --- the Word sheet --------------------------------------------------------------------------


def twips(mm: float) -> int:
    return round(mm * TWIPS_PER_MM)


_MARK = "campflow-labels"


def _skeleton(sheet: LabelSheet) -> tuple[list[tuple[zipfile.ZipInfo, bytes]], bytes, bytes]:
    """python-docx's blank A4 document with the sheet's margins: its parts, and the XML before
    and after the table."""
    import docx
    from docx.shared import Mm, Pt

    document = docx.Document()
    section = document.sections[0]
    section.page_width, section.page_height = Mm(PAGE_WIDTH_MM), Mm(PAGE_HEIGHT_MM)
    section.top_margin = Mm(sheet.margin_top_mm)
    section.left_margin = Mm(sheet.margin_left_mm)
    section.right_margin = Mm(max(0.0, PAGE_WIDTH_MM - sheet.margin_left_mm - sheet.table_width_mm))
    # exactly `rows` rows fit a page, plus SPARE_MM for the paragraph after the table
    free = PAGE_HEIGHT_MM - sheet.margin_top_mm - sheet.rows * sheet.height_mm
    section.bottom_margin = Mm(max(0.0, free - SPARE_MM))
    section.header_distance = section.footer_distance = Mm(0)
    document.add_paragraph(_MARK)
    last = document.add_paragraph().paragraph_format  # Word needs a paragraph after a table:
    last.space_before = last.space_after = Pt(0)  # an exact 1 pt line, which SPARE_MM holds
    last.line_spacing = Pt(1)
    buffer = io.BytesIO()
    document.save(buffer)
    with zipfile.ZipFile(buffer) as package:
        entries = [(info, package.read(info)) for info in package.infolist()]
    xml = dict((i.filename, d) for i, d in entries)["word/document.xml"].decode("utf-8")
    marker = re.search(rf"<w:p>(?:(?!</w:p>).)*{_MARK}.*?</w:p>", xml, re.S)
    assert marker is not None, "python-docx wrote the marker paragraph differently"
    return entries, xml[: marker.start()].encode(), xml[marker.end():].encode()


def write_docx(out: Any, sheet: LabelSheet, labels: Iterable[Sequence[str]]) -> int:
    """Write the labels as a Word table sheet to the binary file `out`; returns their count."""
    entries, head, tail = _skeleton(sheet)
    counter = _Counter(labels)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        for info, data in entries:
            if info.filename != "word/document.xml":
                package.writestr(info.filename, data)
        entry = zipfile.ZipInfo("word/document.xml", date_time=time.localtime()[:6])
        entry.compress_type = zipfile.ZIP_DEFLATED
        with package.open(entry, "w", force_zip64=True) as stream:
            stream.write(head)
            for chunk in _table(sheet, counter):
                stream.write(chunk.encode("utf-8"))
            stream.write(tail)
    return counter.count


class _Counter:
    """Counts the labels an iterable yields, as they go by."""

    def __init__(self, labels: Iterable[Sequence[str]]) -> None:
        self.labels = iter(labels)
        self.count = 0

    def __iter__(self) -> Iterator[Sequence[str]]:
        for label in self.labels:
            self.count += 1
            yield label


def _table(sheet: LabelSheet, labels: Iterable[Sequence[str]]) -> Iterator[str]:
    """The table's XML, a row of labels at a time."""
    width, gap, height = twips(sheet.width_mm), twips(sheet.column_gap_mm), twips(sheet.height_mm)
    grid = [width if i % 2 == 0 else gap for i in range(2 * sheet.columns - 1)] if gap else [width] * sheet.columns
    no_margin = "".join(f'<w:{side} w:w="0" w:type="dxa"/>' for side in ("top", "left", "bottom", "right"))
    columns = "".join(f'<w:gridCol w:w="{w}"/>' for w in grid)
    yield (f'<w:tbl><w:tblPr><w:tblW w:w="{sum(grid)}" w:type="dxa"/><w:tblInd w:w="0" w:type="dxa"/>'
           f'<w:tblLayout w:type="fixed"/><w:tblCellMar>{no_margin}</w:tblCellMar></w:tblPr>'
           f'<w:tblGrid>{columns}</w:tblGrid>')
    row: list[Sequence[str]] = []
    for label in labels:
        row.append(label)
        if len(row) == sheet.columns:
            yield _row(sheet, row, width, gap, height)
            row = []
    if row:
        yield _row(sheet, row, width, gap, height)
    yield "</w:tbl>"


def _row(sheet: LabelSheet, labels: list[Sequence[str]], width: int, gap: int, height: int) -> str:
    size, pad = round(sheet.font_size * 2), twips(PADDING_MM)
    cells = []
    for column in range(sheet.columns):
        if column and gap:
            cells.append(f'<w:tc><w:tcPr><w:tcW w:w="{gap}" w:type="dxa"/></w:tcPr><w:p/></w:tc>')
        lines = labels[column] if column < len(labels) else ()
        paragraphs = "".join(
            f'<w:p><w:pPr><w:spacing w:before="0" w:after="0" w:line="240" w:lineRule="auto"/>'
            f'<w:ind w:left="{pad}" w:right="{pad}"/></w:pPr><w:r><w:rPr><w:sz w:val="{size}"/>'
            f'<w:szCs w:val="{size}"/></w:rPr><w:t xml:space="preserve">{escape(line)}</w:t></w:r></w:p>'
            for line in lines) or "<w:p/>"
        cells.append(f'<w:tc><w:tcPr><w:tcW w:w="{width}" w:type="dxa"/><w:vAlign w:val="center"/>'
                     f'</w:tcPr>{paragraphs}</w:tc>')
    return (f'<w:tr><w:trPr><w:cantSplit/><w:trHeight w:val="{height}" w:hRule="exact"/></w:trPr>'
            f'{"".join(cells)}</w:tr>')


# --- the PDF sheet ---------------------------------------------------------------------------

# a font with accented capitals (Œ, Ł…): DejaVu when the system has it, else the Vera fonts
# reportlab ships (Latin-1)
_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "Vera.ttf")


def _pdf_font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "CampflowLabel" not in pdfmetrics.getRegisteredFontNames():
        font = next(f for f in _FONTS if not f.startswith("/") or Path(f).is_file())
        pdfmetrics.registerFont(TTFont("CampflowLabel", font))
    return "CampflowLabel"


def label_origin(sheet: LabelSheet, index: int) -> tuple[float, float]:
    """(left, top) of the label at `index` on its page, in mm from the page's top-left corner."""
    row, column = divmod(index % sheet.per_page, sheet.columns)
    return (sheet.margin_left_mm + column * (sheet.width_mm + sheet.column_gap_mm),
            sheet.margin_top_mm + row * sheet.height_mm)


def write_pdf(out: Any, sheet: LabelSheet, labels: Iterable[Sequence[str]]) -> int:
    """Write the labels as an A4 PDF to the binary file `out`; returns their count."""
    try:
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.units import mm
        from reportlab.pdfgen.canvas import Canvas
    except ImportError:  # pragma: no cover - reportlab is a dependency
        raise CampflowError("labels.format pdf needs the reportlab package; install it or use "
                            "format: docx") from None
    font, size = _pdf_font(), sheet.font_size
    leading = size * 1.2
    canvas = Canvas(out, pagesize=A4, invariant=True)
    count = 0
    for count, lines in enumerate(labels, start=1):
        if count > 1 and (count - 1) % sheet.per_page == 0:
            canvas.showPage()
        left, top = label_origin(sheet, count - 1)
        x, y_top = left * mm, A4[1] - top * mm
        canvas.saveState()
        path = canvas.beginPath()
        path.rect(x, y_top - sheet.height_mm * mm, sheet.width_mm * mm, sheet.height_mm * mm)
        canvas.clipPath(path, stroke=0, fill=0)
        text = canvas.beginText()
        text.setFont(font, size, leading)
        # the block of lines centred vertically, like the Word cells
        block = leading * len(lines)
        text.setTextOrigin(x + PADDING_MM * mm, y_top - (sheet.height_mm * mm - block) / 2 - size)
        for line in lines:
            text.textLine(line)
        canvas.drawText(text)
        canvas.restoreState()
    canvas.showPage()
    canvas.save()
    return count


WRITERS = {"docx": write_docx, "pdf": write_pdf}


def check_label_settings(step: Any, loc: tuple, checker: Any) -> None:
    """Apply-time checks of `labels:`: a sheet layout that fits (`checker`: OperationCheck)."""
    for key, message in check_labels(step.labels.model_dump()):
        checker.problem(loc + (("labels", key) if key else ("labels",)), message)


register(StepKind(name="label_mailing", run=run, automated=True, retries=2, retry_delay_seconds=5,
                  settings={"labels": check_label_settings}))
