"""`campflow entities`, `campflow packages` and `campflow orders`: the network's commands."""

from __future__ import annotations

import typer

entities_app = typer.Typer(help="The network: central and local entities.", no_args_is_help=True)
packages_app = typer.Typer(help="Packages the central entity offers to local entities.", no_args_is_help=True)
orders_app = typer.Typer(help="Local entities' orders of packages, and their approval.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(entities_app, name="entities")
    app.add_typer(packages_app, name="packages")
    app.add_typer(orders_app, name="orders")
