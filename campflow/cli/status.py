"""`campflow status set` and `campflow answers import`: what people report back from steps."""

from __future__ import annotations

import zoneinfo
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from campflow.cli.common import AS_OPTION_HELP, JSON_OPTION_HELP, console, escape, print_json
from campflow.store import db

status_app = typer.Typer(help="Statuses of parties and contacts in steps.", no_args_is_help=True)
answers_app = typer.Typer(help="Answers to the questionnaires of steps (call sheets).",
                          no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
AsOption = Annotated[str | None, typer.Option("--as", help=AS_OPTION_HELP)]


def register(app: typer.Typer) -> None:
    app.add_typer(status_app, name="status")
    app.add_typer(answers_app, name="answers")


@status_app.command("set")
def set_(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    step: Annotated[str, typer.Argument(help="Action step code.")],
    party: Annotated[str, typer.Argument(help="Party code (TIERS).")],
    status: Annotated[str, typer.Argument(help="to_process, ok_continue, not_processed_continue, "
                                          "failed, excluded or a custom target state.")],
    contact: Annotated[str | None, typer.Option("--contact", help="Set this contact's status "
                                                "instead of the party's.")] = None,
    callback_at: Annotated[str | None, typer.Option("--callback-at", help="Call again at this date "
                           "and time (with to_process); read in the operation's timezone unless "
                           "it has an offset.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with the status).")] = None,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set one party's (or one contact's) status in an action step. to_process with
    --callback-at keeps it to process and counts one more attempt.

    Example: campflow status set SALON-ERP-2026 S2 P001 to_process --callback-at "2026-03-12 14:30"
    """
    from campflow.store.access import require_operation_access
    from campflow.store.answers import set_status

    with db.session() as session:
        require_operation_access(session, operation, as_, "report")
        result = set_status(session, operation, step, party, status, contact_code=contact,
                            callback_at=callback_at, reason=reason)
    if as_json:
        print_json(asdict(result))
        return
    who = f"{result.party}/{result.contact}" if result.contact else result.party
    change = (f"{result.previous} → {result.status}" if result.previous != result.status
              else f"still {result.status}")
    console.print(f"{escape(who)} in {escape(result.step)}: [green]{change}[/]")
    if result.callback_at is not None and result.status == "to_process":
        local = result.callback_at.astimezone(zoneinfo.ZoneInfo(result.timezone))
        console.print(f"call back {local:%Y-%m-%d %H:%M} ({result.timezone}); "
                      f"attempts: {result.attempts}")


@answers_app.command("import")
def import_(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    step: Annotated[str, typer.Argument(help="Action step code.")],
    file: Annotated[Path, typer.Argument(help=".xlsx or .csv call sheet: TIERS, optional CONTACT, "
                                         "STATUT, RAPPEL and one column per question.",
                                         exists=True, dir_okay=False)],
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Import the good rows and "
                             "report the bad ones (default: all or nothing).")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write every rejected row "
                      "(row;reason) to this CSV file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import a call sheet: answers, statuses (STATUT) and callbacks (RAPPEL) of a step's
    parties and contacts. Question columns are named by question code (CATALOGUE) or qualified
    (Q1.CATALOGUE); empty cells leave what was there. Every bad row is reported with its row
    number; nothing is imported unless all rows are good (or --skip-bad-rows).

    Example: campflow answers import SALON-ERP-2026 S2 appels-S2.xlsx --report rejets.csv
    """
    from campflow.store.access import require_operation_access
    from campflow.store.answer_imports import import_answers

    with db.session() as session:
        require_operation_access(session, operation, as_, "report")
        result = import_answers(session, operation, step, file, skip_bad_rows=skip_bad_rows,
                                show_progress=not quiet, report=report)
    if as_json:
        print_json(asdict(result))
        return
    console.print(f"{result.rows} rows: [green]{result.answers_written} answers written[/], "
                  f"{result.statuses_changed} statuses changed, {result.callbacks} callbacks")
    if skip_bad_rows and result.rejected:
        console.print(f"[yellow]{result.rejected} bad row(s) skipped[/]")
