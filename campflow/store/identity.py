"""Who is acting: an operator login (`--as`, else CAMPFLOW_OPERATOR, else the system user) and
the network entity it acts for. The central entity sees and changes everything; a local
entity only what is its own (its orders, its lists to approve, its child operations)."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError
from models import Entity


@dataclass(frozen=True)
class Actor:
    login: str
    entity_id: int
    entity_code: str
    central: bool

    def may_act_for(self, entity_id: int) -> bool:
        return self.central or entity_id == self.entity_id

    def require(self, entity_id: int, what: str) -> None:
        """Refuse, naming both entities, when a local operator touches another entity's `what`."""
        if not self.may_act_for(entity_id):
            raise CampflowError(f"{self.login} acts for {self.entity_code} and may not read or change {what}; "
                                "only its own entity's, or the central entity's operators")


def login(as_: str | None = None) -> str:
    return as_ or os.environ.get("CAMPFLOW_OPERATOR") or getpass.getuser()


def actor(session: Session, as_: str | None = None) -> Actor:
    """The operator and its entity; an operator listed by no entity is refused."""
    name = login(as_)
    rows = session.execute(select(Entity.id, Entity.code, Entity.type)
                           .where(text(":login = any(entity.operators)")).params(login=name)
                           .order_by(Entity.type, Entity.code)).all()
    if not rows:
        raise CampflowError(f"operator {name!r} acts for no entity; add it to an Entity's operators: "
                            "or pass --as LOGIN (or set CAMPFLOW_OPERATOR)")
    entity_id, code, kind = rows[0]  # an operator of the central entity and a local one acts centrally
    return Actor(name, entity_id, code, kind == "central")
