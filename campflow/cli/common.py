"""What the command groups share: consoles, JSON output, the database session."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JSON_OPTION_HELP = "Print JSON instead of a table (for scripts)."
AS_OPTION_HELP = ("The operator acting (default: CAMPFLOW_OPERATOR; naming nobody acts as the administrator): "
                  "a local entity's operator sees only its own operations, and nobody but an admin sees an "
                  "operation outside their collaborator groups.")


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=_default))


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def escape(text: Any) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))
