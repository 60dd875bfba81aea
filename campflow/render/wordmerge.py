"""Word mail merge: the MERGEFIELDs of a `.docx` master filled with campflow fields.

A template's merge fields are named `TABLE__FIELD` (`PCFIDX__NOM`, `T2__PRENOM`), which read
as `TABLE.FIELD`, or have the names users already gave them (`Voornaam`, `Hello world`), which
a step maps in `document.fields`. docx-mailmerge2 parses the fields (simple `w:fldSimple` and
complex `w:fldChar` fields split over runs, formatting switches `\\@`, `\\#`, `\\*`); the merged
package is written here, record by record.

Memory: docx-mailmerge2's own `merge_templates` keeps every record's copy of the body in one
tree until it saves. `WordTemplate.write` instead copies the body for one record at a time,
fills it and appends its XML to a temporary file, then zips that file into the package; it
holds at most two records' bodies, so memory does not grow with the number of parties. What
does grow is small: one relationship per record and header or footer with merge fields (each
record gets its own copy of such a part). Disk: the temporary body, then the package.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from lxml import etree
from mailmerge import NAMESPACES
from mailmerge.conditional_field import ConditionalField
from mailmerge.field import NextField
from mailmerge.unique_man import UniqueIdsManager

from campflow.errors import CampflowError
from campflow.render.word_codes import LAYOUT_CODES, RECORD_CODES, W, _MailMerge, unmerged_codes

R = NAMESPACES["r"]
RELATIONSHIPS = NAMESPACES["rr"]
CONTENT_TYPES = "[Content_Types].xml"
MAIN_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
DOTX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml"
_BODY_COMMENT = "campflow-body"  # stands for the records while the frame is serialised
_BODY_MARK = f"<!--{_BODY_COMMENT}-->".encode()
# characters XML 1.0 forbids; a value holding one would make lxml refuse the whole record
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class TemplateError(CampflowError):
    """A `.docx` master that cannot be merged; the message names the file and what is wrong."""


# --- reading a template ----------------------------------------------------------------------


def _not_a_package(head: bytes) -> str:
    """What a file that is not a zip most likely is, and how to make a .docx of it."""
    if not head:
        return "the file is empty"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return ("it is a Word 97-2003 .doc file (or a password-protected document); open it in "
                "Word and save it as a Word document (.docx) without a password")
    if head.startswith(b"{\\rtf"):
        return "it is an RTF file; open it in Word and save it as a Word document (.docx)"
    if head.startswith(b"%PDF"):
        return "it is a PDF file; a mail merge needs the Word document (.docx) it was made from"
    return "it is not a zip package (a text file renamed .docx?); save the letter from Word as .docx"


def _read_package(path: Path, raw: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    """Every entry of the package (`raw`, read from `path`); TemplateError when it is not a Word document."""
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise TemplateError(f"{path.name} is not a Word .docx file: {_not_a_package(raw[:8])}")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as package:
            entries = [(info, package.read(info)) for info in package.infolist()]
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise TemplateError(f"{path.name} is a damaged zip package: {error}") from None
    names = {info.filename: data for info, data in entries}
    if "word/document.xml" not in names:
        found = ("an Excel workbook" if "xl/workbook.xml" in names
                 else "a PowerPoint presentation" if "ppt/presentation.xml" in names
                 else "a zip")
        raise TemplateError(f"{path.name} is not a Word .docx file: it is {found} without "
                            "word/document.xml; save the letter from Word as .docx")
    if CONTENT_TYPES not in names:
        raise TemplateError(f"{path.name} is not a Word .docx file: the zip has no {CONTENT_TYPES}; "
                            "save the letter from Word as .docx")
    if DOTX_TYPE.encode() in names[CONTENT_TYPES]:
        raise TemplateError(f"{path.name} is a Word template (.dotx); open it in Word and save "
                            "it as a Word document (.docx)")
    return entries


def _part_name(base: str, target: str) -> str:
    """The package name of a relationship target written relative to `base`'s folder."""
    if target.startswith("/"):
        return target[1:]
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), target))


def _rels_name(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def _xml(tree: Any) -> bytes:
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True, standalone=True)


class WordTemplate:
    """A parsed `.docx` master: its merge fields, and merged packages made from it.

    Raises TemplateError when the file is not a Word document or uses fields campflow cannot
    merge (Word's NEXT / NEXTIF / SKIPIF record fields, merge fields in foot- or endnotes).
    """

    def __init__(self, path: Path | str, raw: bytes | None = None) -> None:
        """`raw`: the file's bytes when the caller read them (a run reads them checked, campflow.paths)."""
        self.path = Path(path)
        raw = self.path.read_bytes() if raw is None else raw
        self._entries = _read_package(self.path, raw)
        self._data = {info.filename: data for info, data in self._entries}
        try:
            with _MailMerge(io.BytesIO(raw)) as merge:  # parses every part, then closes the zip
                pass
        except Exception as error:  # lxml, KeyError, ValueError: all mean a damaged document
            raise TemplateError(f"{self.path.name} cannot be read as a Word document ({type(error).__name__}: "
                                f"{error}); open it in Word and save it again") from None
        self._merge = merge
        docx = merge.docx
        main = docx.category_part_map.get("main")
        if not main:
            raise TemplateError(f"{self.path.name} is not a Word .docx file: its {CONTENT_TYPES} "
                                "declares no main document; save the letter from Word as .docx")
        self._main = main[0]
        self._root = docx.parts[self._main]["part"].getroot()
        self.fields = self._read_fields()
        self.unknown_codes = self._unknown_codes()
        self._prepare_parts()

    def _read_fields(self) -> tuple[str, ...]:
        """The merge fields' names in document order; refuse the fields campflow cannot merge."""
        data = self._merge.merge_data
        names: dict[str, None] = {}
        self._dated: set[str] = set()
        self._numbered: set[str] = set()
        for category in ("main", "header_footer", "notes"):
            for part in self._merge.docx.get_parts([category]):
                for element in part["part"].getroot().iter("MergeField"):
                    field = data.get_field_obj(element.get("merge_key"))
                    if isinstance(field, (NextField, ConditionalField)):
                        raise TemplateError(
                            f"{self.path.name}: Word's {field.instr_tokens[0]} field (several records "
                            "on one page) is not supported; campflow merges one party per section — "
                            "remove it, and use a label_mailing step for labels")
                    if category == "notes":
                        raise TemplateError(
                            f"{self.path.name}: merge field {field.name!r} is in a footnote or "
                            "endnote; campflow merges the body, headers and footers only")
                    switches = [token[:2] for token in field.instr_tokens[2:]]
                    if "\\@" in switches:
                        self._dated.add(field.name)
                    if "\\#" in switches:
                        self._numbered.add(field.name)
                    names[field.name] = None
        return tuple(names)

    def _unknown_codes(self) -> tuple[str, ...]:
        """Field codes neither merged nor computed by Word alone (IF, ASK, a German merge field…)."""
        found: dict[str, None] = {}
        for part in self._merge.docx.get_parts(["main", "header_footer", "notes"]):
            for code in unmerged_codes(part["part"].getroot()):
                if code.upper() not in LAYOUT_CODES and code.upper() not in RECORD_CODES:
                    found[code] = None
        return tuple(found)

    def _prepare_parts(self) -> None:
        """What every merged package shares: the frame around the body, the fixed parts."""
        docx = self._merge.docx
        root = deepcopy(self._root)
        body = root.find(f"{{{W}}}body")
        if body is None or not len(body) or body[-1].tag != f"{{{W}}}sectPr":
            raise TemplateError(f"{self.path.name}: the document body has no section properties "
                                "(w:sectPr); open it in Word and save it again")
        self._body = deepcopy(body)  # the record copies are made from this
        for child in list(body):
            body.remove(child)
        body.append(etree.Comment(_BODY_COMMENT))
        self._head, self._tail = _xml(root.getroottree()).split(_BODY_MARK)
        # header and footer parts holding merge fields get a filled copy per record
        self._varying = {zi.filename: docx.parts[zi] for zi in docx.category_part_map.get("header_footer", [])
                         if docx.parts[zi]["part"].getroot().find(".//MergeField") is not None}
        self._fixed: dict[str, bytes] = {}
        blank = {name: "" for name in self.fields}
        for name, info in self._varying.items():  # left unreferenced once records have copies
            copy = deepcopy(info["part"].getroot())
            self._merge.merge_data.replace(copy, blank)
            self._fixed[name] = _xml(copy.getroottree())
        for zi in docx.category_part_map.get("settings", []):
            settings = deepcopy(docx.parts[zi]["part"].getroot())
            for link in settings.findall(f"{{{W}}}mailMerge"):
                # the data source link: Word would ask for the source on opening
                settings.remove(link)
            self._fixed[zi.filename] = _xml(settings.getroottree())
        self._rels_part = _rels_name(self._main.filename)
        rels = self._data.get(self._rels_part)
        self._rels = None if rels is None else etree.fromstring(rels)
        self._varying_rids: dict[str, str] = {}
        if self._rels is not None:
            for relation in self._rels:
                target = _part_name(self._main.filename, relation.get("Target", ""))
                if target in self._varying and relation.get("TargetMode") != "External":
                    self._varying_rids[relation.get("Id")] = target
        self._types = docx.parts[docx.category_part_map["content_types"][0]]["part"].getroot()

    # --- values ------------------------------------------------------------------------------

    def _value(self, name: str, value: Any) -> Any:
        """What a field shows: text with no XML-illegal characters, dates per the field's switch."""
        if value is None:
            return ""
        if isinstance(value, str):
            value = _XML_ILLEGAL.sub("", value)
            if name in self._numbered:
                try:
                    return Decimal(value.replace(",", ".").strip())
                except InvalidOperation:
                    return value
            return value
        if isinstance(value, bool):
            return "oui" if value else "non"
        if isinstance(value, (dt.date, dt.time)) and name not in self._dated:
            return _date_text(value)
        return value

    def _row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        # every field gets a value, so none stays a field (a missing value merges as blank)
        return {name: self._value(name, values.get(name)) for name in self.fields}

    # --- writing ------------------------------------------------------------------------------

    def render(self, values: Mapping[str, Any]) -> bytes:
        """One merged document (a single section) as `.docx` bytes."""
        buffer = io.BytesIO()
        self.write(buffer, [values])
        return buffer.getvalue()

    def write(self, target: IO[bytes], records: Iterable[Mapping[str, Any]]) -> int:
        """Write a `.docx` with one section per record (a new page each); returns the count.

        Raises ValueError when `records` is empty: a document needs at least one section.
        """
        data = self._merge.merge_data
        # fresh drawing ids per package; restored, as a caller may render one party's document
        # (per-party files) between two records of a merged one
        outer, data.unique_id_manager = data.unique_id_manager, UniqueIdsManager()
        try:
            return self._write(target, records)
        finally:
            data.unique_id_manager = outer

    def _write(self, target: IO[bytes], records: Iterable[Mapping[str, Any]]) -> int:
        state = _PackageState(rels=deepcopy(self._rels), types=deepcopy(self._types))
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as package, \
                tempfile.TemporaryFile() as body:
            body.write(self._head)
            pending, count = None, 0
            for values in records:
                record = self._fill(self._row(values), package, state)
                if pending is not None:
                    body.write(_inner_xml(_close_section(pending)))
                pending, count = record, count + 1
            if pending is None:
                raise ValueError(f"no record to merge into {self.path.name}")
            body.write(_inner_xml(pending))  # the last record keeps the body's own w:sectPr
            body.write(self._tail)
            body.seek(0)
            self._write_parts(package, body, state)
        return count

    def _fill(self, row: dict[str, Any], package: zipfile.ZipFile, state: _PackageState) -> Any:
        """A filled copy of the body for one record (its w:sectPr last)."""
        data = self._merge.merge_data
        body = deepcopy(self._body)
        data.fix_ids(body)  # drawing ids stay unique across records
        data.replace(body, row)
        for leftover in list(body.iter("MergeField")):  # e.g. a field nested in an unknown one
            leftover.getparent().remove(leftover)
        if self._varying_rids:
            self._copy_varying_parts(body, row, package, state)
        sections = body.findall(f".//{{{W}}}sectPr")
        for kind in sections[0].findall(f"{{{W}}}type"):
            sections[0].remove(kind)  # no w:type: each record starts on a new page
        return body

    def _copy_varying_parts(self, body: Any, row: dict[str, Any], package: zipfile.ZipFile,
                            state: _PackageState) -> None:
        """Headers and footers with merge fields: a filled copy for this record, referenced by it."""
        renamed = {}
        for rid, name in self._varying_rids.items():
            state.copies += 1
            folder, file = posixpath.split(name)
            stem, suffix = posixpath.splitext(file)
            copy_name = posixpath.join(folder, f"{stem}-r{state.copies}{suffix}")
            copy = deepcopy(self._varying[name]["part"].getroot())
            self._merge.merge_data.fix_ids(copy)
            self._merge.merge_data.replace(copy, row)
            package.writestr(copy_name, _xml(copy.getroottree()))
            own_rels = self._data.get(_rels_name(name))
            if own_rels is not None:  # images of the header: same targets, same folder
                package.writestr(_rels_name(copy_name), own_rels)
            override = deepcopy(self._varying[name]["file"])
            override.set("PartName", f"/{copy_name}")
            state.types.append(override)
            relation = deepcopy(next(r for r in state.rels if r.get("Id") == rid))
            relation.set("Id", f"rIdCampflow{state.copies}")
            relation.set("Target", posixpath.relpath(copy_name, posixpath.dirname(self._main.filename)))
            state.rels.append(relation)
            renamed[rid] = relation.get("Id")
        for tag in ("headerReference", "footerReference"):
            for reference in body.iter(f"{{{W}}}{tag}"):
                rid = reference.get(f"{{{R}}}id")
                if rid in renamed:
                    reference.set(f"{{{R}}}id", renamed[rid])

    def _write_parts(self, package: zipfile.ZipFile, body: IO[bytes], state: _PackageState) -> None:
        """The template's other parts, the body streamed in, the updated relationships."""
        for info, data in self._entries:
            name = info.filename
            if name == self._main.filename:
                entry = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                entry.compress_type = zipfile.ZIP_DEFLATED
                with package.open(entry, "w", force_zip64=True) as stream:
                    shutil.copyfileobj(body, stream, 1 << 20)
            elif name == self._rels_part and state.rels is not None:
                package.writestr(name, _xml(state.rels.getroottree()))
            elif name == CONTENT_TYPES:
                package.writestr(name, _xml(state.types.getroottree()))
            else:
                package.writestr(name, self._fixed.get(name, data))


@dataclass
class _PackageState:
    """What grows while one package is written: relationships and content types of copies."""

    rels: Any
    types: Any
    copies: int = 0


def _close_section(body: Any) -> Any:
    """Move the record's closing w:sectPr into its last paragraph: a section break, no blank line."""
    section = body[-1]
    body.remove(section)
    last = body[-1] if len(body) else None
    if last is None or last.tag != f"{{{W}}}p" or last.find(f"{{{W}}}pPr/{{{W}}}sectPr") is not None:
        last = etree.SubElement(body, f"{{{W}}}p")
    properties = last.find(f"{{{W}}}pPr")
    if properties is None:
        properties = etree.Element(f"{{{W}}}pPr")
        last.insert(0, properties)
    change = properties.find(f"{{{W}}}pPrChange")  # the schema puts sectPr before it
    if change is not None:
        change.addprevious(section)
    else:
        properties.append(section)
    return body


def _inner_xml(body: Any) -> bytes:
    """The children of a w:body as XML, without redeclaring namespaces on each of them."""
    data = etree.tostring(body, encoding="UTF-8", xml_declaration=False)
    return data[data.index(b">") + 1 : data.rindex(b"</")]


def _date_text(value: dt.date | dt.time) -> str:
    """A date as letters write it in France; a field switch (\\@ "d MMMM yyyy") overrides it."""
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y" if value.time() == dt.time() else "%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return value.strftime("%H:%M")


def merge_document(template: Path | str | WordTemplate, values: Mapping[str, Any]) -> bytes:
    """One party's merged document as `.docx` bytes (e.g. a fax), from a merge-field → value dict.

    `values` is keyed by the template's merge-field names (`WordTemplate.fields`); a field
    missing from it merges as blank. Pass a `WordTemplate` to parse the master only once.
    """
    parsed = template if isinstance(template, WordTemplate) else WordTemplate(template)
    return parsed.render(values)
