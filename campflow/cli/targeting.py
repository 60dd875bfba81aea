"""`campflow parties|contacts|targets …`: master data and who operations target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from campflow.cli.common import AS_OPTION_HELP, JSON_OPTION_HELP, console, print_json, print_table
from campflow.store import db

parties_app = typer.Typer(help="Third parties (clients, prospects, suppliers…).", no_args_is_help=True)
contacts_app = typer.Typer(help="Contacts of parties.", no_args_is_help=True)
targets_app = typer.Typer(help="Who an operation targets.", no_args_is_help=True)

SkipOption = Annotated[bool, typer.Option("--skip-bad-rows", help="Import the good rows and report "
                                          "the bad ones (default: all or nothing).")]
ReportOption = Annotated[Path | None, typer.Option("--report", help="Write every rejected row "
                                                   "(row;reason) to this CSV file.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
AsOption = Annotated[str | None, typer.Option("--as", help=AS_OPTION_HELP)]


def register(app: typer.Typer) -> None:
    app.add_typer(parties_app, name="parties")
    app.add_typer(contacts_app, name="contacts")
    app.add_typer(targets_app, name="targets")


def _report_skipped(result, skip: bool) -> None:
    if skip and result.rejected:
        console.print(f"[yellow]{result.rejected} bad row(s) skipped[/]")


@parties_app.command("import")
def import_parties(
    file: Annotated[Path, typer.Argument(help=".xlsx or .csv (; TAB or , separated; UTF-8 or "
                                         "Windows-1252).", exists=True, dir_okay=False)],
    skip_bad_rows: SkipOption = False, report: ReportOption = None, quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upsert parties by code. Columns FICHE (CLI, PRO, FOU, VRP, TIA), TIERS, NOM, EMAIL, TEL,
    FAX, ADRESSE, CP, VILLE, PAYS (French or English names); any other column is a custom field,
    STAT(2) fills element 2 of the indexed field stat.

    Example: campflow parties import examples/data/parties.csv
    """
    from campflow.store.imports import import_parties as run

    with db.session() as session:
        result = run(session, file, skip_bad_rows=skip_bad_rows, show_progress=not quiet, report=report)
    if as_json:
        print_json(result.__dict__)
        return
    console.print(f"{result.rows} rows: [green]{result.created} parties created[/], "
                  f"{result.updated} updated")
    _report_skipped(result, skip_bad_rows)


@contacts_app.command("import")
def import_contacts(
    file: Annotated[Path, typer.Argument(help=".xlsx or .csv", exists=True, dir_okay=False)],
    skip_bad_rows: SkipOption = False, report: ReportOption = None, quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upsert contacts by party and contact code. Columns TIERS, CONTACT, NOM, PRENOM, FONCTION,
    EMAIL, TEL, CIVILITE.

    Example: campflow contacts import examples/data/contacts.csv
    """
    from campflow.store.imports import import_contacts as run

    with db.session() as session:
        result = run(session, file, skip_bad_rows=skip_bad_rows, show_progress=not quiet, report=report)
    if as_json:
        print_json(result.__dict__)
        return
    console.print(f"{result.rows} rows: [green]{result.created} contacts created[/], "
                  f"{result.updated} updated")
    _report_skipped(result, skip_bad_rows)


def _print_target_result(result, as_json: bool, skip: bool = False) -> None:
    if as_json:  # the note is for people; left_out, by kind, only when some rows were left out
        print_json({k: v for k, v in result.__dict__.items() if k != "note" and (k != "left_out" or v)})
        return
    console.print(f"[green]{result.parties_added} parties targeted[/], {result.contacts_added} contacts; "
                  f"{result.already} already targeted")
    if result.note:
        console.print(f"[yellow]{result.note}[/]")
    _report_skipped(result, skip)


@targets_app.command("import")
def import_targets(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    file: Annotated[Path, typer.Argument(help=".xlsx or .csv with FICHE, TIERS and optional CONTACT "
                                         "columns; the header row is found by keyword.",
                                         exists=True, dir_okay=False)],
    skip_bad_rows: SkipOption = False, report: ReportOption = None, quiet: QuietOption = False,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Target the parties (and contacts) of a spreadsheet. Every bad row is reported with its
    row number; nothing is imported unless all rows are good (or --skip-bad-rows). Parties of a
    kind the operation does not target are left out and counted (listed in --report).

    Example: campflow targets import SALON-ERP-2026 examples/data/targets.xlsx
    """
    from campflow.store.access import require_operation_access
    from campflow.store.targeting import import_targets as run

    with db.session() as session:
        require_operation_access(session, operation, as_, "change")
        result = run(session, operation, file, skip_bad_rows=skip_bad_rows, show_progress=not quiet,
                     report=report)
    _print_target_result(result, as_json, skip_bad_rows)


@targets_app.command("from-step")
def from_step(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    source: Annotated[str, typer.Option("--source", help="OTHER_OPERATION/STEP")],
    processed_only: Annotated[bool, typer.Option("--processed-only", help="Only parties whose status "
                              "is ok_continue or not_processed_continue.")] = False,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Target the parties of another operation's step.

    Example: campflow targets from-step SALON-ERP-2026 --source SALON-ERP-2025/S6 --processed-only
    """
    from campflow.store.access import require_operation_access
    from campflow.store.targeting import targets_from_step

    with db.session() as session:
        require_operation_access(session, operation, as_, "change")
        require_operation_access(session, source.partition("/")[0], as_, "read")
        result = targets_from_step(session, operation, source, processed_only=processed_only)
    _print_target_result(result, as_json)
    if result.rejected and not as_json:
        console.print(f"{result.rejected} parties left out: their kind is not one of the operation's")


@targets_app.command("add")
def add(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    where: Annotated[str, typer.Option("--where", help="Conditions on party and contact fields, "
                     "e.g. \"VILLE = Paris and (kind in (PRO, CLI) or not CP matches '75*')\"")],
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Target every party of the operation's kinds that matches conditions.

    Example: campflow targets add SALON-ERP-2026 --where "CP matches '69*' and T2.FONCTION = DIRECTION"
    """
    from campflow.store.access import require_operation_access
    from campflow.store.targeting import targets_add_where

    with db.session() as session:
        require_operation_access(session, operation, as_, "change")
        result = targets_add_where(session, operation, where)
    _print_target_result(result, as_json)


@targets_app.command("list")
def list_(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    step: Annotated[str | None, typer.Option("--step", help="Show the parties of this step.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status (with --step).")] = None,
    sort: Annotated[str, typer.Option("--sort", help="Column to sort by; prefix - to reverse.")] = "code",
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows (0: all).")] = 100,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """The targets of an operation, or a step's parties with their status.

    Example: campflow targets list SALON-ERP-2026 --step S2 --status to_process --sort city
    """
    from campflow.store.access import require_operation_access
    from campflow.store.targeting import list_targets

    with db.session() as session:
        require_operation_access(session, operation, as_, "read")
        columns, rows, total = list_targets(session, operation, step=step, status=status, sort=sort,
                                            limit=limit or None)
    if as_json:
        print_json({"total": total, "rows": rows})
        return
    title = f"{operation}{' step ' + step if step else ''}: {total} parties"
    if total > len(rows):
        title += f" (first {len(rows)}; --limit 0 for all)"
    hidden = {"added_at", "source"} | ({"postal_code", "email", "contacts", "processed_at"} if step else set())
    shown = [c for c in columns if c not in hidden]  # all stay in --json
    print_table(title, shown, [[r[c] for c in shown] for r in rows])
