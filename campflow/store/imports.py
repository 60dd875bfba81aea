"""Master data imports: parties and contacts, upserted by code (SPEC section 5)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from campflow.errors import ImportRejected, Problem
from campflow.render.sheet_files import open_sheet
from campflow.render.sheets import EXTRA, Sheet
from campflow.store.staging import Rejections, copy_rows, create_stage, drop_rejected, progress, reject_where

# FICHE values (Divalto's record tables) and the kinds' own names
KIND_CODES = {"CLI": "client", "PRO": "prospect", "FOU": "supplier", "VRP": "sales_rep", "TIA": "other"}
KINDS_BY_WORD = {**KIND_CODES, **{k.upper(): k for k in KIND_CODES.values()}}
PARTY_COLUMNS = {
    "kind": ["FICHE", "KIND"], "code": ["TIERS", "CODE"], "name": ["NOM", "NAME", "RAISON_SOCIALE"],
    "email": ["EMAIL", "MAIL"], "phone": ["TEL", "PHONE", "TELEPHONE"], "fax": ["FAX"],
    "address": ["ADRESSE", "ADDRESS"], "postal_code": ["CP", "POSTAL_CODE", "CODE_POSTAL"],
    "city": ["VILLE", "CITY"], "country": ["PAYS", "COUNTRY"],
}
CONTACT_COLUMNS = {
    "party": ["TIERS", "PARTY"], "code": ["CONTACT"], "last_name": ["NOM", "NAME", "LAST_NAME"],
    "first_name": ["PRENOM", "FIRST_NAME"], "function": ["FONCTION", "FUNCTION"],
    "email": ["EMAIL", "MAIL"], "phone": ["TEL", "PHONE"], "title": ["CIVILITE", "TITLE"],
}
CUSTOM_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\((\d{1,3})\))?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class ImportResult:
    rows: int
    created: int
    updated: int
    rejected: int


def kind_of(word: str | None) -> str | None:
    return KINDS_BY_WORD.get((word or "").strip().upper())


def custom_keys(sheet: Sheet, standard: set[str]) -> dict[str, tuple[str, int | None]]:
    """Custom columns: sheet key -> (field name, index), refusing names we cannot store."""
    found: dict[str, tuple[str, int | None]] = {}
    problems = []
    for column in sheet.columns:
        if column.key in standard:
            continue
        match = CUSTOM_NAME.match(column.key.replace(" ", "_"))
        if not match:
            problems.append(Problem(f"{sheet.path.name} column {column.letter}",
                                    f"{column.header!r} is not a usable field name; use letters, "
                                    "digits and _, with (n) for an indexed field, e.g. STAT(2)"))
            continue
        index = int(match.group(2)) if match.group(2) else None
        found[column.key] = (match.group(1).lower(), index)
    if problems:
        raise ImportRejected(problems, "nothing was imported")
    return found


def register_custom_fields(session: Session, table: str, custom: dict[str, tuple[str, int | None]]) -> None:
    for name, index in set(custom.values()):
        session.execute(text(
            "insert into custom_field (table_name, name, indexed, source) values (:t, :n, :i, 'import') "
            "on conflict (table_name, name) do update set indexed = custom_field.indexed or excluded.indexed"
        ), {"t": table, "n": name, "i": index is not None})


def fields_sql(custom: dict[str, tuple[str, int | None]], alias: str) -> tuple[str, dict[str, str]]:
    """The staged custom columns as one jsonb expression (built by PostgreSQL, not per row in
    Python); keys are bound parameters. Empty cells are left out, so they change nothing."""
    if not custom:
        return "'{}'::jsonb", {}
    pairs = [(f"cf{i}", f"{name}({index})" if index else name)
             for i, (name, index) in enumerate(custom.values())]
    chunks = [pairs[i:i + 50] for i in range(0, len(pairs), 50)]  # jsonb_build_object: 100 args
    sql = " || ".join(
        "jsonb_strip_nulls(jsonb_build_object(" + ", ".join(f"cast(:{p}k as text), {alias}.{p}" for p, _ in chunk) + "))"
        for chunk in chunks)
    return sql, {f"{p}k": key for p, key in pairs}


def _stage_master_rows(session: Session, path: Path, table: str, columns: dict[str, list[str]],
                       required: list[str], problem, rejections: Rejections, show_progress: bool
                       ) -> tuple[int, dict[str, tuple[str, int | None]]]:
    """Stream a parties or contacts file into `<table>_stage`; returns (rows, custom columns)."""
    with open_sheet(path, aliases=columns, required=required) as sheet:
        custom = custom_keys(sheet, set(columns))
        standard = list(columns)
        stage = f"{table}_stage"
        extra = [f"cf{i}" for i in range(len(custom))]
        create_stage(session, stage, [(c, "text") for c in (*standard, *extra)])

        def rows() -> Iterator[list[Any]]:
            for row_no, row in sheet.rows():
                reason = problem(row)
                if reason:
                    rejections.add(row_no, reason)
                    continue
                yield [row_no, *(row.get(c) for c in standard), *(row.get(k) for k in custom)]

        with progress(f"reading {path.name}", enabled=show_progress) as advance:
            total = copy_rows(session, stage, [*standard, *extra], rows(), advance)
    return total + len(rejections), custom


def import_parties(session: Session, path: Path, *, skip_bad_rows: bool = False,
                   show_progress: bool = True, report: Path | None = None) -> ImportResult:
    """Upsert parties from a spreadsheet; all or nothing unless `skip_bad_rows`."""
    rejections = Rejections(path)
    total, custom = _stage_master_rows(session, path, "party", PARTY_COLUMNS, ["kind", "code", "name"],
                                       _party_problem, rejections, show_progress)
    reject_where(session, rejections, """
        select row_no, 'party code ' || code || ' appears again (first at row ' || first || ')'
        from (select row_no, code, min(row_no) over (partition by code) as first from party_stage) s
        where row_no <> first""")
    return _finish(session, "party_stage", rejections, total, skip_bad_rows, report, lambda: (
        register_custom_fields(session, "party", custom), _upsert_parties(session, custom))[1])


def _party_problem(row: dict[str, Any]) -> str | None:
    """Why a party row is rejected, or None; a good row's FICHE becomes the kind's name."""
    if row.get(EXTRA):
        return f"cells outside the columns: {row[EXTRA]}"
    if not row.get("code"):
        return "TIERS (party code) is empty"
    if kind_of(row.get("kind")) is None:
        return (f"unknown FICHE {row.get('kind')!r}; use one of "
                f"{', '.join(KIND_CODES)} or {', '.join(KIND_CODES.values())}")
    if not row.get("name"):
        return "NOM (name) is empty"
    if row.get("email") and not EMAIL.match(row["email"]):
        return f"EMAIL {row['email']!r} is not an e-mail address"
    row["kind"] = kind_of(row["kind"])
    return None


PARTY_VALUES = ("kind", "name", "email", "phone", "fax", "address", "postal_code", "city", "country")


def _upsert_parties(session: Session, custom: dict[str, tuple[str, int | None]]) -> tuple[int, int]:
    """Update the parties the file knows, then insert the new ones: plain statements are
    twice as fast as INSERT … ON CONFLICT on a million rows; the lock keeps them exact."""
    fields, keys = fields_sql(custom, "s")
    session.execute(text("lock table party in share row exclusive mode"))
    assignments = ", ".join(
        f"{c} = s.{c}" if c in ("kind", "name") else f"{c} = coalesce(s.{c}, p.{c})" for c in PARTY_VALUES)
    updated = session.execute(text(f"""
        update party p set {assignments}, fields = p.fields || {fields}, updated_at = now()
        from party_stage s where p.code = s.code"""), keys).rowcount
    columns = ", ".join(PARTY_VALUES)
    created = session.execute(text(f"""
        with added as (
            insert into party (code, {columns}, fields)
            select s.code, {", ".join(f"s.{c}" for c in PARTY_VALUES)}, {fields} from party_stage s
            where not exists (select from party p where p.code = s.code)
            order by s.code  -- in index order: appends instead of random page splits
            returning 1)
        select count(*) from added"""), keys).scalar_one()
    return created, updated


def _finish(session: Session, stage: str, rejections: Rejections, total: int, skip_bad_rows: bool,
            report: Path | None, write) -> ImportResult:
    if report is not None:
        rejections.write_report(report)
    if not skip_bad_rows:
        rejections.raise_if_any(total)
    drop_rejected(session, stage, rejections)
    created, updated = write()
    return ImportResult(total, created, updated, len(rejections))


def import_contacts(session: Session, path: Path, *, skip_bad_rows: bool = False,
                    show_progress: bool = True, report: Path | None = None) -> ImportResult:
    """Upsert contacts by (party, contact code); the party must exist."""
    rejections = Rejections(path)
    total, custom = _stage_master_rows(session, path, "contact", CONTACT_COLUMNS, ["party", "code"],
                                       _contact_problem, rejections, show_progress)
    reject_where(session, rejections, """
        select s.row_no, 'unknown party ' || s.party || '; import it first with campflow parties import'
        from contact_stage s left join party p on p.code = s.party where p.id is null""")
    reject_where(session, rejections, """
        select row_no, 'contact ' || party || '/' || code || ' appears again (first at row ' || first || ')'
        from (select row_no, party, code, min(row_no) over (partition by party, code) as first
              from contact_stage) s where row_no <> first""")
    return _finish(session, "contact_stage", rejections, total, skip_bad_rows, report, lambda: (
        register_custom_fields(session, "contact", custom), _upsert_contacts(session, custom))[1])


def _contact_problem(row: dict[str, Any]) -> str | None:
    if row.get(EXTRA):
        return f"cells outside the columns: {row[EXTRA]}"
    if not row.get("party"):
        return "TIERS (party code) is empty"
    if not row.get("code"):
        return "CONTACT (contact code) is empty"
    if row.get("email") and not EMAIL.match(row["email"]):
        return f"EMAIL {row['email']!r} is not an e-mail address"
    return None


def _upsert_contacts(session: Session, custom: dict[str, tuple[str, int | None]]) -> tuple[int, int]:
    fields, keys = fields_sql(custom, "s")
    return _counted(session, keys, f"""
        insert into contact (party_id, code, title, last_name, first_name, function, email, phone, fields)
        select p.id, s.code, s.title, s.last_name, s.first_name, upper(s.function), s.email, s.phone, {fields}
        from contact_stage s join party p on p.code = s.party
        on conflict (party_id, code) do update set
            title = coalesce(excluded.title, contact.title),
            last_name = coalesce(excluded.last_name, contact.last_name),
            first_name = coalesce(excluded.first_name, contact.first_name),
            function = coalesce(excluded.function, contact.function),
            email = coalesce(excluded.email, contact.email), phone = coalesce(excluded.phone, contact.phone),
            fields = contact.fields || excluded.fields, updated_at = now()
        returning (xmax = 0) as created""")


def _counted(session: Session, params: dict[str, str], upsert: str) -> tuple[int, int]:
    """Run an upsert returning `created` per row; count created and updated rows in SQL."""
    created, updated = session.execute(text(
        f"with done as ({upsert}) select count(*) filter (where created), "
        "count(*) filter (where not created) from done"), params).one()
    return created, updated
