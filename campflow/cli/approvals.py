"""`campflow approvals`: local entities approving their part of a `local_approval` step."""

from __future__ import annotations

import typer

approvals_app = typer.Typer(help="Local approval of targets (local_approval steps).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")
