"""`campflow apply`, `campflow export`, `campflow db`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from campflow.cli.common import console, err_console, escape
from campflow.store import db


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("export")(export)
    db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
    db_app.command("upgrade")(upgrade)
    db_app.command("url")(show_url)
    db_app.command("stop")(stop)
    app.add_typer(db_app, name="db")
    app.command("stop")(stop)


def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or upgrade campflow's tables (Alembic migrations).

    Example: campflow db upgrade
    """
    db.upgrade(revision)
    console.print(f"database at revision [bold]{db.current_revision()}[/]")


def show_url() -> None:
    """Print the database URL in use (embedded PostgreSQL when none is configured).

    Example: psql "$(campflow db url | sed 's/+psycopg//')"
    """
    from sqlalchemy.engine import make_url

    print(make_url(db.database_url()).render_as_string(hide_password=True))


def stop() -> None:
    """Stop the embedded PostgreSQL and the local Prefect server under $CAMPFLOW_HOME (the next
    command that needs either starts it again). `campflow stop` and `campflow db stop` are the same.

    Example: campflow db stop && rm -rf .campflow
    """
    import os

    from campflow.orchestration import local_server
    if os.environ.get("CAMPFLOW_DATABASE_URL"):
        console.print("CAMPFLOW_DATABASE_URL names a database: there is no embedded server to stop")
    elif db.stop_embedded():
        console.print(f"stopped the embedded PostgreSQL in {db.campflow_home()}")
    else:
        console.print(f"no embedded PostgreSQL runs in {db.campflow_home()}")
    stopped = local_server.stop()
    console.print(f"stopped the local Prefect server ({stopped.ui})" if stopped
                  else f"no local Prefect server runs in {db.campflow_home()}")


def apply(
    target: Annotated[Path, typer.Argument(help="A spec file, or a folder of .yaml files.")],
    check: Annotated[bool, typer.Option("--check", help="Validate only; write nothing.")] = False,
    as_: Annotated[str | None, typer.Option("--as", help="The operator acting (default: CAMPFLOW_OPERATOR): "
                   "a local entity's operator may change only its own operations (its child operations).")] = None,
) -> None:
    """Apply spec documents (Operation, Questionnaire, Family, EntityType, State,
    FieldDictionary, Collaborator, Entity, Distribution, Package). Idempotent; all or nothing.

    Example: campflow apply examples/specs --check;  campflow apply soldes-lyon.yaml --as marie
    """
    from campflow.specs.apply import apply_path

    with db.session() as session:
        results = apply_path(session, target, check_only=check, operator=as_)
    for r in results:
        colour = {"created": "green", "updated": "yellow", "unchanged": "dim", "checked": "cyan"}[r.outcome]
        console.print(f"[{colour}]{r.outcome:9}[/] {r.kind} {escape(r.code)}  [dim]{escape(r.place)}[/]")
        for warning in r.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    if check:
        console.print(f"{len(results)} document(s) valid; nothing written (--check)")
        return
    from campflow.orchestration.schedules import after_apply

    for level, line in after_apply([r.code for r in results if r.kind == "Operation"]):
        (err_console if level == "warning" else console).print(
            f"[yellow]warning:[/] {escape(line)}" if level == "warning" else escape(line))


def export(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file "
                      "(template paths made relative to it) instead of standard output.")] = None,
    as_: Annotated[str | None, typer.Option("--as", help="The operator acting (default: CAMPFLOW_OPERATOR): "
                   "a local entity's operator may read only its own operations.")] = None,
) -> None:
    """Write an operation back as a spec; applying it changes nothing.

    Example: campflow export SALON-ERP-2026 -o salon.yaml
    """
    from campflow.specs.export import export_operation, paths_outside, relative_paths
    from campflow.store.access import require_operation_access

    with db.session() as session:
        require_operation_access(session, operation, as_, "read")
        data = export_operation(session, operation)
    if output:
        data = relative_paths(data, output.resolve().parent)
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {output}")
        outside = paths_outside(data)
        if outside:
            err_console.print(f"[yellow]note:[/] {len(outside)} file(s) lie outside {output.resolve().parent} "
                              f"({escape(outside[0])}…): apply refuses them there unless their folder is in "
                              "CAMPFLOW_ALLOWED_DIRS; export next to the spec, or copy the files beside the export")
    else:
        print(text, end="")
