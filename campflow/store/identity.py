"""Who is acting: an operator login (`--as`, else CAMPFLOW_OPERATOR, else the system user) and
the network entity it acts for. The central entity sees and changes everything; a local
entity only what is its own (its orders, its lists to approve, its child operations).

A login that is a portal account (`campflow users add`) acts with that account's entity, roles
and groups, on the CLI as in the portal; a login only listed in an Entity's `operators:` acts
for that entity with the role its type gives (central_operator or local_operator)."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError
from models import Account, Collaborator, Entity

CENTRAL_ROLES = frozenset({"admin", "central_operator", "reviewer", "collaborator"})


@dataclass(frozen=True)
class Actor:
    login: str
    entity_id: int | None
    entity_code: str
    central: bool
    roles: frozenset[str] = field(default=frozenset())
    groups: frozenset[str] = field(default=frozenset())  # collaborator groups (confidential operations)
    account_id: int | None = None

    @property
    def admin(self) -> bool:
        return "admin" in self.roles

    @property
    def may_decide(self) -> bool:
        """Approve or reject orders: admins and reviewers (an operator listed by a central
        entity without an account, as before accounts existed)."""
        if self.account_id is None:
            return self.central
        return bool(self.roles & {"admin", "reviewer"})

    @property
    def may_change_network(self) -> bool:
        """Publish packages, change central operations: admins and central operators."""
        if self.account_id is None:
            return self.central
        return bool(self.roles & {"admin", "central_operator"})

    def may_act_for(self, entity_id: int | None) -> bool:
        return self.central or (entity_id is not None and entity_id == self.entity_id)

    def require(self, entity_id: int, what: str) -> None:
        """Refuse, naming both entities, when a local operator touches another entity's `what`."""
        if not self.may_act_for(entity_id):
            raise AccessDenied(f"{self.login} acts for {self.entity_code} and may not read or change {what}; "
                               "only its own entity's, or the central entity's operators")


class AccessDenied(CampflowError):
    """The actor may not see or do this; the portal answers 404 without the message."""


def login(as_: str | None = None) -> str:
    return as_ or os.environ.get("CAMPFLOW_OPERATOR") or getpass.getuser()


def account_actor(session: Session, account: Account) -> Actor:
    """The actor of a portal account: its entity (the central one when it names none), roles, groups."""
    roles = frozenset(account.roles)
    groups: frozenset[str] = frozenset()
    if account.collaborator_id is not None:
        groups = frozenset(session.scalar(select(Collaborator.groups)
                                          .where(Collaborator.id == account.collaborator_id)) or ())
    if account.entity_id is not None:
        entity = session.get(Entity, account.entity_id)
    else:
        entity = session.scalars(select(Entity).where(Entity.type == "central").order_by(Entity.code)).first()
    central = bool(roles & CENTRAL_ROLES) and (entity is None or entity.type == "central")
    return Actor(account.login, entity.id if entity else None, entity.code if entity else "", central,
                 roles, groups, account.id)


def actor(session: Session, as_: str | None = None) -> Actor:
    """The operator and its entity; an operator listed by no entity and no account is refused."""
    name = login(as_)
    account = session.scalar(select(Account).where(Account.login == name))
    if account is not None:
        if account.disabled:
            raise CampflowError(f"account {name!r} is disabled; an administrator enables it again with "
                                f"`campflow users reset-password {name}`")
        return account_actor(session, account)
    rows = session.execute(select(Entity.id, Entity.code, Entity.type)
                           .where(text(":login = any(entity.operators)")).params(login=name)
                           .order_by(Entity.type, Entity.code)).all()
    if not rows:
        raise CampflowError(f"operator {name!r} acts for no entity; add it to an Entity's operators: "
                            "or create its account (campflow users add), or pass --as LOGIN "
                            "(or set CAMPFLOW_OPERATOR)")
    entity_id, code, kind = rows[0]  # an operator of the central entity and a local one acts centrally
    central = kind == "central"
    return Actor(name, entity_id, code, central, frozenset({"central_operator" if central else "local_operator"}))
