"""Which campflow field each merge field of a Word master reads (`document.fields`), checked at apply."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from campflow.core.field_catalog import FieldCatalog
from campflow.errors import FormulaError
from campflow.render.wordmerge import TemplateError, WordTemplate

# --- field mapping ---------------------------------------------------------------------------


def template_fields(path: Path | str) -> tuple[str, ...]:
    """The names of a `.docx` master's merge fields, in document order; TemplateError if unusable."""
    return WordTemplate(path).fields


def map_fields(names: Sequence[str], fields: Mapping[str, str],
               catalog: FieldCatalog, template: str = "the template") -> tuple[dict[str, str], list[str]]:
    """Each merge field's `TABLE.FIELD` text, and a message per field that maps to nothing.

    A name listed in `fields` (exactly, else ignoring case) takes the field given there;
    `TABLE__FIELD` names and field-dictionary names stand for themselves.
    """
    folded = {key.casefold(): target for key, target in fields.items()}
    aliases = {alias.casefold() for alias in catalog.aliases if "." not in alias}
    mapping: dict[str, str] = {}
    problems: list[str] = []
    for name in names:
        target = fields.get(name, folded.get(name.casefold()))
        if target is not None:
            mapping[name] = target
            continue
        if "__" in name or name.casefold() in aliases:
            try:
                catalog.resolve(name)
            except FormulaError as error:
                problems.append(f"{template}: merge field {name!r}: {error.message}; correct it in "
                                "the template or map it under document.fields")
                continue
            mapping[name] = name
            continue
        problems.append(f"{template}: merge field {name!r} has no mapping (its name is not "
                        f"TABLE__FIELD such as PCFIDX__NOM); add it under document.fields, "
                        f"e.g. \"{name}: {_guess(name, catalog)}\"")
    return mapping, problems


def _guess(name: str, catalog: FieldCatalog) -> str:
    """The field a bare name would mean (`Ville` → party.city), else an example."""
    try:
        return str(catalog.resolve(re.sub(r"\W+", "_", name).strip("_") or "x"))
    except FormulaError:
        return "contact.first_name"


def check_template(path: Path, fields: Mapping[str, str], catalog: FieldCatalog) -> list[str]:
    """Apply-time problems of a document step's template: not a Word file, unmapped fields."""
    try:
        template = WordTemplate(path)
    except TemplateError as error:
        return [str(error)]
    unknown = [f"template {path.name}: field code {code} is not one campflow's merge understands (it merges "
               "MERGEFIELD, in French CHAMP DE FUSION or CHAMPFUSION, and leaves Word's own fields such as "
               "PAGE, DATE or HYPERLINK to Word); remove it, or replace it with a merge field"
               for code in template.unknown_codes]
    return unknown + map_fields(template.fields, fields, catalog, f"template {path.name}")[1]
