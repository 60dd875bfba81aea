"""Sessions, CSRF tokens, rate limits and the signed-in actor: the portal's FastAPI dependencies.

- The session is a signed cookie (Starlette's SessionMiddleware: HttpOnly, SameSite=Lax, Secure
  when the portal is served over HTTPS) holding the account id and its generation: disabling the
  account or setting a new password ends every session opened before.
- Every form carries `csrf_token`, compared in constant time with the session's.
- Public routes (login, forgotten password, password links) are limited per client address.
"""

from __future__ import annotations

import collections
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Form, HTTPException, Request
from sqlalchemy.orm import Session

from campflow.store import db
from campflow.store.identity import Actor, account_actor
from models import Account

LOGIN_REQUIRED = 401


class LoginRequired(Exception):
    """No signed-in account: the page sends the browser to /login (then back)."""


class CsrfRefused(Exception):
    """A form posted without the session's CSRF token (or with a stale one)."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, csrf_token: str = Form("", max_length=200)) -> None:
    """Dependency of every POST: the form's token must be the session's."""
    expected = request.session.get("csrf")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        raise CsrfRefused()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class RateLimit:
    """At most `limit` requests per `seconds` per client address (in this process)."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.hits: dict[str, collections.deque[float]] = {}
        self.mutex = threading.Lock()

    def __call__(self, request: Request) -> None:
        now, key = time.monotonic(), client_address(request)
        with self.mutex:
            hits = self.hits.setdefault(key, collections.deque())
            while hits and hits[0] <= now - self.seconds:
                hits.popleft()
            if len(hits) >= self.limit:
                raise HTTPException(429, "Too many attempts from your address; wait a minute and try again.",
                                    headers={"Retry-After": str(int(self.seconds))})
            hits.append(now)
            if len(self.hits) > 10_000:  # forget quiet addresses: the table stays bounded
                for address in [a for a, h in self.hits.items() if not h or h[-1] <= now - self.seconds]:
                    del self.hits[address]

    def reset(self) -> None:
        with self.mutex:
            self.hits.clear()


# public routes: 30 posts a minute per address (a person never needs more; a script guessing does);
# CAMPFLOW_PORTAL_PUBLIC_RATE changes it (a load test logging everyone in from one address)
public_limit = RateLimit(int(os.environ.get("CAMPFLOW_PORTAL_PUBLIC_RATE") or 30), 60)


def sign_in(request: Request, account: Account) -> None:
    """Open a session for the account: a new CSRF token, the account id and its generation."""
    request.session.clear()
    request.session.update({"a": account.id, "g": account.generation, "csrf": secrets.token_urlsafe(32)})


def session_account(session: Session, request: Request) -> Account | None:
    account_id = request.session.get("a")
    if account_id is None:
        return None
    account = session.get(Account, account_id)
    if account is None or account.disabled or account.generation != request.session.get("g"):
        request.session.clear()
        return None
    return account


def optional_actor(request: Request) -> Actor | None:
    """The signed-in actor, or None (anonymous)."""
    if request.session.get("a") is None:
        return None
    with db.session() as session:
        account = session_account(session, request)
        return account_actor(session, account) if account is not None else None


def signed_in(request: Request) -> Actor:
    """Dependency of every page behind the door: the actor, else a redirect to /login."""
    who = optional_actor(request)
    if who is None:
        raise LoginRequired()
    request.state.actor = who
    return who


def requires(check: Callable[[Actor], bool]) -> Callable[..., Actor]:
    """A dependency: the signed-in actor when `check(actor)` holds, else 404 (the page does not exist for it)."""

    def dependency(who: Actor = Depends(signed_in)) -> Actor:
        if not check(who):
            raise HTTPException(404, "Not found")
        return who

    return dependency


central_only = requires(lambda who: who.central)
decider_only = requires(lambda who: who.may_decide)
local_only = requires(lambda who: not who.central and who.entity_id is not None)


def flash(request: Request, message: str, kind: str = "ok") -> None:
    messages: list[Any] = request.session.setdefault("flash", [])
    messages.append([kind, message[:500]])
    request.session["flash"] = messages[-5:]


def take_flashes(request: Request) -> list[Any]:
    return request.session.pop("flash", []) if "flash" in request.session else []
