"""People of the network at the portal's door: the key that signs sessions and links, the
portal's address, and the invitation and forgotten-password e-mails.

The signing key is a secret: `CAMPFLOW_SECRET_KEY` when set (a portal served on several
machines sets the same one everywhere), else a Prefect `Secret` block `campflow-portal-key`
created once with 64 random bytes, shared by the CLI (which signs invitation links) and the
portal (which checks them)."""

from __future__ import annotations

import functools
import os
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campflow.network.notify import notify
from campflow.network.texts import render_notice
from campflow.store import accounts
from models import Account

KEY_BLOCK = "campflow-portal-key"
DEFAULT_URL = "http://127.0.0.1:8080"


@functools.cache
def secret_key() -> str:
    """The key signing sessions, CSRF tokens and links (see the module's docstring)."""
    if key := os.environ.get("CAMPFLOW_SECRET_KEY"):
        return key
    from prefect.blocks.system import Secret

    from campflow.orchestration.local_server import use_local_server

    use_local_server()
    try:
        return Secret.load(KEY_BLOCK).get()
    except ValueError:  # not saved yet: the first command that needs it creates it
        key = secrets.token_urlsafe(64)
        Secret(value=key).save(KEY_BLOCK, overwrite=False)
        return Secret.load(KEY_BLOCK).get()


def portal_url(path: str = "") -> str:
    """An address in the portal as its users reach it (`CAMPFLOW_PORTAL_URL`, default 127.0.0.1:8080)."""
    base = os.environ.get("CAMPFLOW_PORTAL_URL", DEFAULT_URL).rstrip("/")
    return f"{base}/{path.lstrip('/')}" if path else base


@dataclass(frozen=True)
class Sent:
    link: str
    went_to: list[str]


def send_password_link(account: Account, *, invitation: bool) -> Sent:
    """E-mail the account a one-time link to set its password (an invitation, or a reset)."""
    token = accounts.link_token(secret_key(), account)
    link = portal_url(f"password/{token}")
    hours = accounts.INVITATION_HOURS if invitation else accounts.RESET_HOURS
    name = "invitation" if invitation else "password_reset"
    subject, body = render_notice(name, None, login=account.login, name=account.name or account.login,
                                  link=link, hours=hours, portal=portal_url())
    return Sent(link, notify([account.email], subject, body, tag=name))


def forgot(session: Session, email: str) -> Account | None:
    """The enabled account of an e-mail address (any case), if any; the caller answers the same either way."""
    email = email.strip()[:254]
    return session.scalar(select(Account).where(func.lower(Account.email) == email.lower(),
                                                Account.disabled.is_(False)))
