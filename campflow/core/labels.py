"""Label sheet layouts: the standard sheets, a step's `labels:` settings read as a layout, and
whether it fits an A4 page."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from campflow.errors import CampflowError

PAGE_WIDTH_MM, PAGE_HEIGHT_MM = 210.0, 297.0  # A4
TWIPS_PER_MM = 1440 / 25.4
PADDING_MM = 2.5  # text inset from a label's left and right edges
SPARE_MM = 1.0  # room under the last row for the paragraph Word needs after a table
DEFAULT_SHEET = "L7160"


@dataclass(frozen=True)
class LabelSheet:
    """A sheet of labels on A4 paper; lengths in millimetres."""

    rows: int
    columns: int
    width_mm: float
    height_mm: float
    margin_top_mm: float
    margin_left_mm: float
    column_gap_mm: float = 0.0
    font_size: float = 10.0
    name: str = "custom"
    maker: str = ""

    @property
    def per_page(self) -> int:
        return self.rows * self.columns

    @property
    def table_width_mm(self) -> float:
        return self.columns * self.width_mm + (self.columns - 1) * self.column_gap_mm

    def __str__(self) -> str:
        maker = f"{self.maker} " if self.maker else ""
        return (f"{maker}{self.name} ({self.columns}×{self.rows}, "
                f"{self.width_mm:g}×{self.height_mm:g} mm)")


# Sheets as their makers publish them (label size, top and side margins, pitch).
SHEETS: Mapping[str, LabelSheet] = {s.name: s for s in (
    LabelSheet(7, 3, 63.5, 38.1, 15.15, 7.25, 2.5, name="L7160", maker="Avery"),
    LabelSheet(8, 3, 63.5, 33.9, 12.9, 7.25, 2.5, name="L7159", maker="Avery"),
    LabelSheet(7, 2, 99.1, 38.1, 15.15, 4.65, 2.5, name="L7163", maker="Avery"),
    LabelSheet(8, 2, 99.1, 33.9, 12.9, 4.65, 2.5, name="L7162", maker="Avery"),
    LabelSheet(4, 2, 99.1, 67.7, 13.1, 4.65, 2.5, font_size=12, name="L7165", maker="Avery"),
    LabelSheet(13, 5, 38.1, 21.2, 10.7, 4.75, 2.5, font_size=6.5, name="L7651", maker="Avery"),
    LabelSheet(8, 3, 70.0, 36.0, 4.5, 0.0, name="3475", maker="Avery Zweckform"),
    LabelSheet(8, 3, 70.0, 37.0, 0.5, 0.0, name="3474", maker="Avery Zweckform"),
)}
_OVERRIDES = ("rows", "columns", "width_mm", "height_mm", "margin_top_mm", "margin_left_mm", "font_size")


class LayoutError(CampflowError):
    """A `labels:` block that names no usable layout; `key` is the setting at fault."""

    def __init__(self, key: str | None, message: str) -> None:
        self.key = key
        super().__init__(message)


def find_sheet(name: str) -> LabelSheet | None:
    """A standard sheet by name: `L7160`, `Avery L7160`, `avery-zweckform-3475`…, any case."""
    wanted = re.sub(r"avery|zweckform|[\s_-]", "", name.casefold())
    return next((s for s in SHEETS.values() if s.name.casefold() == wanted), None)


def label_layout(settings: Mapping[str, Any] | None) -> LabelSheet:
    """The layout a step's `labels:` describes; LayoutError naming the setting at fault."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    given = {k: settings[k] for k in _OVERRIDES if k in settings}
    name = settings.get("sheet")
    if name is None and not given:
        name = DEFAULT_SHEET
    if name is not None:
        sheet = find_sheet(str(name))
        if sheet is None:
            known = "; ".join(str(s) for s in SHEETS.values())
            raise LayoutError("sheet", f"unknown label sheet {name!r}; known sheets: {known} — "
                              "or give rows, columns, width_mm and height_mm instead")
        if given:
            sheet = replace(sheet, **given, name=f"{sheet.name} (adjusted)")
    else:
        missing = [k for k in ("rows", "columns", "width_mm", "height_mm") if k not in given]
        if missing:
            raise LayoutError(None, f"labels: name a standard sheet ({', '.join(SHEETS)}) or give "
                              f"rows, columns, width_mm and height_mm; missing {', '.join(missing)}")
        # margins not given: the labels centred on the page
        given.setdefault("margin_left_mm", max(0.0, (PAGE_WIDTH_MM - given["columns"] * given["width_mm"]) / 2))
        given.setdefault("margin_top_mm", max(0.0, (PAGE_HEIGHT_MM - given["rows"] * given["height_mm"]) / 2))
        sheet = LabelSheet(**given)
    _check_fits(sheet)
    return sheet


def _check_fits(sheet: LabelSheet) -> None:
    wide = sheet.margin_left_mm + sheet.table_width_mm
    high = sheet.margin_top_mm + sheet.rows * sheet.height_mm
    if wide > PAGE_WIDTH_MM + 0.05:
        raise LayoutError("columns", f"labels: {sheet.columns} columns of {sheet.width_mm:g} mm from a "
                          f"{sheet.margin_left_mm:g} mm margin take {wide:g} mm; an A4 page is 210 mm wide")
    if high > PAGE_HEIGHT_MM + 0.05:
        raise LayoutError("rows", f"labels: {sheet.rows} rows of {sheet.height_mm:g} mm under a "
                          f"{sheet.margin_top_mm:g} mm margin take {high:g} mm; an A4 page is 297 mm high")


def check_labels(settings: Mapping[str, Any] | None) -> list[tuple[str | None, str]]:
    """Apply-time problems of a `labels:` block, each with the setting it is about."""
    try:
        label_layout(settings)
    except LayoutError as error:
        return [(error.key, str(error))]
    return []
