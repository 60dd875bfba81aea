"""Word field codes: the merge fields in English and French, Word's own fields, what stays unmerged."""

from __future__ import annotations

from typing import IO, Any

from mailmerge import NAMESPACES, MailMerge
from mailmerge.mailmerge import MailMergeDocx
from mailmerge.mergedata import MergeData
from mailmerge.mergeoptions import MailMergeOptions
from mailmerge.part import Part

W = NAMESPACES["w"]

# Word in French writes `CHAMP DE FUSION` (older versions `CHAMPFUSION`) where English Word
# writes MERGEFIELD; Word reads field codes in any case
MERGE_CODES = (("MERGEFIELD",), ("CHAMPFUSION",), ("CHAMPDEFUSION",), ("CHAMP", "DE", "FUSION"))
RECORD_CODES = ("NEXT", "NEXTIF", "SKIPIF")  # refused by WordTemplate with their own message
# fields Word computes itself from the document, whatever the record: left in the letter as they are
LAYOUT_CODES = frozenset((
    "PAGE", "NUMPAGES", "SECTIONPAGES", "SECTION", "DATE", "TIME", "CREATEDATE", "SAVEDATE", "PRINTDATE",
    "HYPERLINK", "REF", "PAGEREF", "NOTEREF", "STYLEREF", "SEQ", "TOC", "TC", "INDEX", "XE", "SYMBOL",
    "FORMTEXT", "FORMCHECKBOX", "FORMDROPDOWN", "INCLUDEPICTURE", "EQ", "LISTNUM", "FILENAME",
    "AUTHOR", "TITLE", "SUBJECT", "DOCPROPERTY", "NUMWORDS", "NUMCHARS", "ADVANCE", "QUOTE", "SHAPE",
))


def merge_tokens(tokens: list[str]) -> list[str]:
    """A field's instruction tokens with its merge code as docx-mailmerge2 knows it: MERGEFIELD
    for the French spellings, upper case (`mergefield` is a merge field to Word too)."""
    upper = [token.upper() for token in tokens[:3]]
    for code in MERGE_CODES:
        if tuple(upper[:len(code)]) == code:
            return ["MERGEFIELD", *tokens[len(code):]]
    if upper and upper[0] in RECORD_CODES:
        return [upper[0], *tokens[1:]]
    return tokens


class _MergeData(MergeData):
    @classmethod
    def _get_field_tokens(cls, instr):  # noqa: ANN001, ANN206 - docx-mailmerge2's signature
        return merge_tokens(super()._get_field_tokens(instr))


class _MailMerge(MailMerge):
    """docx-mailmerge2's parsing (MailMerge.__init__ of 1.0.x) with the merge codes above."""

    def __init__(self, file: IO[bytes]) -> None:  # noqa: D107
        self.options = MailMergeOptions()
        self.docx = MailMergeDocx(file)
        self.merge_data = _MergeData(options=self.options)
        self.new_parts = []
        self._has_unmerged_fields = False
        try:
            self.docx.fill_parts()
            for part_info in self.docx.get_parts():
                Part(self.merge_data, part_info["part"]).parse()
        except Exception:
            self.docx.close()
            raise


def unmerged_codes(root: Any) -> list[str]:
    """The codes of the fields left in a parsed part (merge fields are MergeField elements by
    then), in document order: the simple ones' `w:instr`, the complex ones' instruction runs."""
    codes: list[str] = []
    open_fields: list[list[str] | None] = []  # per open field: its instruction text so far, None past it
    for element in root.iter(f"{{{W}}}fldSimple", f"{{{W}}}fldChar", f"{{{W}}}instrText"):
        if element.tag == f"{{{W}}}fldSimple":
            codes.append(element.get(f"{{{W}}}instr", ""))
        elif element.tag == f"{{{W}}}instrText":
            if open_fields and open_fields[-1] is not None:
                open_fields[-1].append(element.text or "")
        else:
            kind = element.get(f"{{{W}}}fldCharType")
            if kind == "begin":
                open_fields.append([])
            elif open_fields and kind in ("separate", "end"):
                text = open_fields[-1]
                if text is not None:
                    codes.append("".join(text))
                if kind == "end":
                    open_fields.pop()
                else:
                    open_fields[-1] = None
    return [code for code in (_first_word(c) for c in codes) if code]


def _first_word(instruction: str) -> str:
    words = instruction.replace('"', " ").split()
    return words[0] if words else ""
