"""Portal accounts: argon2 password hashes, the lockout after wrong passwords, one-time signed
links (invitation, forgotten password), and the audit trail.

A link carries the account id and its `generation`; setting a password bumps the generation, so
a link works once, and sessions opened before a reset end (their cookie carries it too)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from campflow.errors import CampflowError
from campflow.store.identity import AccessDenied, Actor
from models import Account, AuditEvent, Collaborator, Entity, Operation, Order, Package
from models.accounts import ROLES

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
INVITATION_HOURS = 72
RESET_HOURS = 2
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 hashes anything; a bound keeps a login form from hashing megabytes
LOGIN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
WRONG = "wrong login or password"  # one message, whether the login exists or not

_hasher = PasswordHasher()
# a hash computed once, checked when the login is unknown: the answer takes as long either way
_DUMMY = _hasher.hash("campflow-not-a-password")


class LoginRefused(CampflowError):
    """A login that does not open a session: wrong, locked or disabled (the message says which
    only when it reveals nothing about other accounts)."""


class LinkRefused(CampflowError):
    """An invitation or reset link that is forged, expired or already used."""


@dataclass(frozen=True)
class NewAccount:
    account: Account
    token: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise CampflowError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise CampflowError(f"a password has at most {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _hasher.hash(password)


def find(session: Session, login: str, *, lock: bool = False) -> Account:
    query = select(Account).where(Account.login == login.strip().lower())
    account = session.scalar(query.with_for_update() if lock else query)
    if account is None:
        known = session.scalars(select(Account.login).order_by(Account.login)).all()
        from campflow.errors import closest

        raise CampflowError(f"no account {login!r}{closest(login, known)}")
    return account


def create(session: Session, login: str, email: str, roles: list[str], *, entity: str | None = None,
           collaborator: str | None = None, name: str | None = None) -> Account:
    """A new account without a password (its invitation link sets it)."""
    login = login.strip().lower()
    if not LOGIN.match(login):
        raise CampflowError(f"login {login!r}: use 1 to 64 lowercase letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    email = email.strip()
    if not EMAIL.match(email) or len(email) > 254:
        raise CampflowError(f"e-mail {email!r} is not an address like name@example.com")
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise CampflowError(f"role {', '.join(unknown) or '(none)'} is unknown; roles are {', '.join(ROLES)}")
    if session.scalar(select(func.count()).select_from(Account).where(Account.login == login)):
        raise CampflowError(f"account {login} already exists; see `campflow users list`")
    if session.scalar(select(func.count()).select_from(Account).where(func.lower(Account.email) == email.lower())):
        raise CampflowError(f"another account already uses {email}; each account has its own e-mail")
    entity_id = collaborator_id = None
    if entity:
        row = session.execute(select(Entity.id, Entity.type).where(Entity.code == entity)).first()
        if row is None:
            codes = session.scalars(select(Entity.code)).all()
            from campflow.errors import closest

            raise CampflowError(f"no entity {entity}{closest(entity, codes)}")
        entity_id = row.id
        if row.type == "local" and set(roles) - {"local_operator"}:
            raise CampflowError(f"{entity} is a local entity: its accounts have the local_operator role only")
        if row.type == "central" and "local_operator" in roles:
            raise CampflowError(f"{entity} is the central entity: give local_operator accounts a local --entity")
    elif "local_operator" in roles:
        raise CampflowError("a local_operator acts for a local entity: give --entity CODE")
    if collaborator:
        collaborator_id = session.scalar(select(Collaborator.id).where(Collaborator.code == collaborator))
        if collaborator_id is None:
            codes = session.scalars(select(Collaborator.code)).all()
            from campflow.errors import closest

            raise CampflowError(f"no collaborator {collaborator}{closest(collaborator, codes)}")
    account = Account(login=login, email=email, name=name, roles=sorted(set(roles)), entity_id=entity_id,
                      collaborator_id=collaborator_id)
    session.add(account)
    session.flush()
    return account


# ---------------------------------------------------------------- logging in


def authenticate(session: Session, login: str, password: str, now: dt.datetime | None = None) -> Account:
    """The account, once its password is right; LoginRefused otherwise (the failure is counted,
    and after MAX_FAILURES the login is locked for LOCKOUT)."""
    now = now or _now()
    account = session.scalar(select(Account).where(Account.login == login.strip().lower()[:64]).with_for_update())
    password = password[:MAX_PASSWORD + 1]
    if account is None or account.password_hash is None:
        _verify(_DUMMY, password)
        raise LoginRefused(WRONG)
    if account.locked_until is not None and account.locked_until > now:
        minutes = max(1, int((account.locked_until - now).total_seconds() // 60) + 1)
        raise LoginRefused(f"this login is locked after {MAX_FAILURES} wrong passwords; try again in "
                           f"{minutes} minute{'s' if minutes > 1 else ''}, or use “forgot password”")
    if not _verify(account.password_hash, password):
        account.failed_logins += 1
        if account.failed_logins >= MAX_FAILURES:
            account.locked_until, account.failed_logins = now + LOCKOUT, 0
        raise LoginRefused(WRONG)
    if account.disabled:
        raise LoginRefused("this account is disabled; ask your administrator")
    account.failed_logins, account.locked_until, account.last_login_at = 0, None, now
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    return account


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def set_password(session: Session, account: Account, password: str) -> None:
    """Set the password, unlock, and end older links and sessions (the generation moves on)."""
    account.password_hash = hash_password(password)
    account.generation += 1
    account.failed_logins, account.locked_until = 0, None


def disable(session: Session, login: str) -> Account:
    account = find(session, login, lock=True)
    account.disabled = True
    account.generation += 1  # its open sessions end
    return account


def reset(session: Session, login: str) -> Account:
    """Forget the password (and enable the account): a new link sets another."""
    account = find(session, login, lock=True)
    account.password_hash, account.disabled = None, False
    account.generation += 1
    account.failed_logins, account.locked_until = 0, None
    return account


# ---------------------------------------------------------------- one-time links


def _serializer(key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt="campflow-password-link")


def link_token(key: str, account: Account) -> str:
    return _serializer(key).dumps({"a": account.id, "g": account.generation})


def account_of_link(session: Session, key: str, token: str, max_hours: float,
                    *, lock: bool = False) -> Account:
    """The account a password link is for; LinkRefused when forged, expired or used."""
    try:
        data = _serializer(key).loads(token[:512], max_age=int(max_hours * 3600))
    except SignatureExpired:
        raise LinkRefused("this link has expired; ask for a new one with “forgot password”") from None
    except BadSignature:
        raise LinkRefused("this link is not valid; ask for a new one with “forgot password”") from None
    query = select(Account).where(Account.id == data.get("a"))
    account = session.scalar(query.with_for_update() if lock else query)
    if account is None or account.generation != data.get("g") or account.disabled:
        raise LinkRefused("this link was already used or replaced by a newer one; ask for a new one with "
                          "“forgot password”")
    return account


# ---------------------------------------------------------------- the audit trail


def audit(session: Session, login: str | None, action: str, subject: str | None = None, *,
          outcome: str = "ok", entity_id: int | None = None, detail: dict[str, Any] | None = None,
          source: str = "portal", address: str | None = None) -> None:
    """Keep one event (in the caller's transaction: a refused change keeps its refusal).

    An event about an operation (its lists, its run, an order of a package of it, a page of it)
    carries the operation's id, so that the audit log shows it only to those who may see the
    operation (`list_audit`)."""
    session.add(AuditEvent(login=login, action=action, subject=subject, outcome=outcome, entity_id=entity_id,
                           detail=detail, source=source, address=address,
                           operation_id=_operation_of(session, subject)))


def _operation_of(session: Session, subject: str | None) -> int | None:
    """The operation an event's subject is about: `order N`, `OP/STEP/ENTITY`, `OP`, or a portal
    path (/lists/OP/…, /operations/OP, /packages/CODE/…, /orders/N, /central/orders/N/…)."""
    if not subject:
        return None
    parts = [p for p in subject.split("?", 1)[0].replace("order ", "orders/", 1).split("/") if p]
    if parts[:2] == ["central", "orders"]:
        parts = parts[1:]
    if not parts or parts[0] in ("central",):
        return None
    if parts[0] == "orders" and len(parts) > 1 and parts[1].isdigit():
        return session.scalar(select(Package.operation_id).join(Order, Order.package_id == Package.id)
                              .where(Order.id == int(parts[1])))
    if parts[0] == "packages" and len(parts) > 1:
        return session.scalar(select(Package.operation_id).where(Package.code == parts[1]))
    code = parts[1] if parts[0] in ("lists", "operations") and len(parts) > 1 else parts[0]
    return session.scalar(select(Operation.id).where(Operation.code == code))


def audit_now(login: str | None, action: str, subject: str | None = None, **kwargs: Any) -> None:
    """Keep one event in its own transaction (a refusal whose request is rolled back)."""
    from campflow.store import db

    with db.session() as session:
        audit(session, login, action, subject, **kwargs)


def list_audit(session: Session, who: Actor, *, login: str | None = None, action: str | None = None,
               page: int = 1, per_page: int = 50) -> tuple[list[dict[str, Any]], int]:
    """One page of the audit log, newest first, and how many events match; `login` and `action`
    filter exactly. Only for the actors `access.may_read_audit` allows."""
    from campflow.store.access import may_read_audit

    if not may_read_audit(who):
        raise AccessDenied(f"{who.login} may not read the audit log")
    query = select(AuditEvent)
    if not who.admin:  # events about an operation it may not see (confidential) are not shown
        from campflow.store.access import visible_operations

        query = query.where(or_(AuditEvent.operation_id.is_(None), AuditEvent.operation_id.in_(
            select(Operation.id).where(visible_operations(who)))))
    if login:
        query = query.where(AuditEvent.login == login.strip().lower())
    if action:
        query = query.where(AuditEvent.action == action.strip())
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    entities = dict(session.execute(select(Entity.id, Entity.code)).all())
    events = session.scalars(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                             .offset((max(page, 1) - 1) * per_page).limit(per_page))
    return [{"id": e.id, "at": e.at, "login": e.login, "entity": entities.get(e.entity_id), "action": e.action,
             "subject": e.subject, "outcome": e.outcome, "detail": e.detail, "source": e.source,
             "address": e.address} for e in events], total


def list_accounts(session: Session) -> list[dict[str, Any]]:
    entities = dict(session.execute(select(Entity.id, Entity.code)).all())
    collaborators = dict(session.execute(select(Collaborator.id, Collaborator.code)).all())
    return [{"login": a.login, "email": a.email, "name": a.name, "roles": list(a.roles),
             "entity": entities.get(a.entity_id), "collaborator": collaborators.get(a.collaborator_id),
             "state": "disabled" if a.disabled else "invited" if a.password_hash is None else
             "locked" if a.locked_until and a.locked_until > _now() else "active",
             "last_login_at": a.last_login_at}
            for a in session.scalars(select(Account).order_by(Account.login))]


def touch(session: Session, account_id: int) -> None:
    session.execute(update(Account).where(Account.id == account_id).values(updated_at=func.now()))
