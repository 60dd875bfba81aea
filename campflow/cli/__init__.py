"""The `campflow` command."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from campflow.cli import approvals, network, ops, servers, specs, status, targeting, users
from campflow.cli import channels as channel_commands
from campflow.cli import fax as fax_commands
from campflow.cli import phoning as phoning_commands
from campflow.cli import run as run_commands
from campflow.cli.common import err_console
from campflow.errors import CampflowError
from campflow.store.identity import AccessDenied

app = typer.Typer(
    name="campflow",
    help="Marketing operations run as Prefect flows, with all business state in PostgreSQL.\n\n"
    "Example: campflow apply examples/specs && campflow ops tree",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
specs.register(app)
ops.register(app)
targeting.register(app)
status.register(app)
run_commands.register(app)
phoning_commands.register(app)
channel_commands.register(app)
fax_commands.register(app)
servers.register(app)
network.register(app)
approvals.register(app)
users.register(app)


def main() -> None:
    """Run the CLI; domain errors print one clear message and exit 1."""
    try:
        app(standalone_mode=False)
    except CampflowError as exc:
        if isinstance(exc, AccessDenied):
            _audit(exc)
        # escaped: messages quote spec text such as `in: [ok_continue]`, which is no markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # click's usage errors carry their own exit code
        import click

        if _missing_table(exc):
            from sqlalchemy.engine import make_url

            from campflow.store import db
            shown = make_url(db.database_url()).render_as_string(hide_password=True)
            err_console.print(f"[bold red]error:[/] the database {shown} lacks campflow's tables "
                              f"({str(exc.orig).splitlines()[0]}); run `campflow db upgrade`",
                              highlight=False, markup=True, soft_wrap=True)
            sys.exit(1)

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise


def _audit(refused: AccessDenied) -> None:
    """Keep a refusal in the audit trail (source "cli"); the login is the refusal's, else the one
    the command named."""
    from campflow.store.access import audit_refusal
    from campflow.store.identity import login

    args = sys.argv[1:]
    named = args[args.index("--as") + 1] if "--as" in args[:-1] else None
    try:
        audit_refusal(refused, "cli", login(named))
    except Exception as exc:  # noqa: BLE001 - the refusal is what the operator must read
        err_console.print(f"[yellow]warning:[/] the refusal below could not be audited ({escape(str(exc))})")


def _missing_table(exc: Exception) -> bool:
    from psycopg.errors import UndefinedTable
    from sqlalchemy.exc import ProgrammingError

    return isinstance(exc, ProgrammingError) and isinstance(exc.orig, UndefinedTable)


__all__ = ["app", "main"]
