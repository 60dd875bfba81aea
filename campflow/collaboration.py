"""What an approved order means for each collaboration type (simple, by_form, by_campaign).

`on_approved` is called in the transaction that approves an order (a reviewer's decision, the
CLI, the approval flow, or automatic registration at publishing).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from models import Order


def on_approved(session: Session, order: Order, login: str) -> str | None:
    """Apply the consequences of an approval; returns a line for the decision e-mail, or None."""
    return None
