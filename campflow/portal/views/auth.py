"""Logging in and out, setting a password from a one-time link, and the forgotten password."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse

from campflow.errors import CampflowError
from campflow.network import accounts as people
from campflow.portal.pages import redirect, render
from campflow.portal.security import (
    check_csrf,
    client_address,
    flash,
    optional_actor,
    public_limit,
    sign_in,
)
from campflow.store import accounts, db

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this portal only (never another site)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None):
    return render(request, "login.html", next=_safe_next(next))


@router.post("/login", dependencies=[Depends(public_limit), Depends(check_csrf)])
def login(request: Request, login: str = Form("", max_length=200), password: str = Form("", max_length=1000),
          next: str = Form("/", max_length=2000)):
    address = client_address(request)
    with db.session() as session:  # a refusal commits too: the wrong password is counted
        try:
            account = accounts.authenticate(session, login, password)
        except accounts.LoginRefused as exc:
            accounts.audit(session, login.strip().lower()[:64] or None, "login_failed", outcome="refused",
                           detail={"reason": str(exc)}, address=address)
            refused = str(exc)
        else:
            accounts.audit(session, account.login, "login", entity_id=account.entity_id, address=address)
            sign_in(request, account)
            refused = None
    if refused is not None:
        return render(request, "login.html", status_code=401, error=refused, login=login[:64], next=_safe_next(next))
    return redirect(_safe_next(next))


@router.post("/logout", dependencies=[Depends(check_csrf)])
def logout(request: Request):
    who = optional_actor(request)
    if who is not None:
        accounts.audit_now(who.login, "logout", entity_id=who.entity_id, address=client_address(request))
    request.session.clear()
    flash(request, "You are logged out.")
    return redirect("/login")


@router.get("/password/{token}", response_class=HTMLResponse)
def password_page(request: Request, token: str):
    try:
        with db.session() as session:
            account = accounts.account_of_link(session, people.secret_key(), token, accounts.INVITATION_HOURS)
            login = account.login
    except accounts.LinkRefused as exc:
        return render(request, "error.html", status_code=400, title="Link refused", message=str(exc),
                      forgot=True)
    return render(request, "password.html", token=token, login=login)


@router.post("/password/{token}", dependencies=[Depends(public_limit), Depends(check_csrf)])
def set_password(request: Request, token: str, password: str = Form("", max_length=1000),
                 again: str = Form("", max_length=1000)):
    address = client_address(request)
    try:
        with db.session() as session:
            account = accounts.account_of_link(session, people.secret_key(), token, accounts.INVITATION_HOURS,
                                               lock=True)
            login = account.login
            if password != again:
                raise CampflowError("the two passwords differ; type the same password twice")
            accounts.set_password(session, account, password)
            accounts.audit(session, account.login, "password_set", entity_id=account.entity_id, address=address)
            sign_in(request, account)
    except accounts.LinkRefused as exc:
        return render(request, "error.html", status_code=400, title="Link refused", message=str(exc), forgot=True)
    except CampflowError as exc:
        return render(request, "password.html", status_code=400, token=token, login=login, error=str(exc))
    flash(request, "Your password is set; you are logged in.")
    return redirect("/")


@router.get("/forgot", response_class=HTMLResponse)
def forgot_page(request: Request):
    return render(request, "forgot.html")


@router.post("/forgot", dependencies=[Depends(public_limit), Depends(check_csrf)])
def forgot(request: Request, email: str = Form("", max_length=254)):
    with db.session() as session:
        account = people.forgot(session, email)
        if account is not None:
            accounts.audit(session, account.login, "password_link_asked", entity_id=account.entity_id,
                           address=client_address(request))
    if account is not None:
        try:
            people.send_password_link(account, invitation=False)
        except CampflowError:  # the answer must not tell whether the address has an account
            accounts.audit_now(account.login, "password_link_not_sent", outcome="failed")
    flash(request, "If an account uses this address, a link to set a new password is on its way.")
    return redirect("/login")

