"""The central entity's pages: the orders waiting for a decision (approve, reject with a comment),
each package's orders per entity, and the audit log.

Deciding is for reviewers and admins (`decider_only`): another central operator sees the list
without buttons, and a POST is a 404. Each decision is audited; its e-mail leaves after commit."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse

from campflow.errors import CampflowError, NotFound
from campflow.network import orders, packages
from campflow.portal.pages import redirect, render
from campflow.portal.security import central_only, check_csrf, client_address, decider_only, flash, requires
from campflow.store import accounts, db
from campflow.store.access import may_read_audit
from campflow.store.identity import AccessDenied, Actor

router = APIRouter()
PER_PAGE = 50
NEEDS_COMMENT = "A rejection needs a comment telling the entity why."


def _pending_page(request: Request, who: Actor, status_code: int = 200, errors: dict[int, str] | None = None,
                  comments: dict[int, str] | None = None, error: str | None = None) -> HTMLResponse:
    with db.session() as session:
        pending = packages.list_orders(session, who, status="pending")
    return render(request, "central_orders.html", status_code=status_code, orders=pending,
                  may_decide=who.may_decide, errors=errors or {}, comments=comments or {}, error=error)


@router.get("/central/orders", response_class=HTMLResponse)
def pending_orders(request: Request, who: Actor = Depends(central_only)):
    return _pending_page(request, who)


def _decide(request: Request, who: Actor, order_id: int, decision: str, comment: str):
    action = f"{decision}_order"
    comment = comment.strip()
    subject = f"order {order_id}"
    refused = NEEDS_COMMENT if decision == "reject" and not comment else None
    if refused is None:
        decide = orders.approve_order if decision == "approve" else orders.reject_order
        try:
            with db.session() as session:
                outcome = decide(session, order_id, who, comment)
                accounts.audit(session, who.login, action, subject, entity_id=who.entity_id,
                               detail={"comment": comment} if comment else None, address=client_address(request))
        except CampflowError as exc:
            if isinstance(exc, AccessDenied | NotFound):
                raise
            refused = str(exc)
    if refused is not None:  # nothing changed; the refusal is kept
        accounts.audit_now(who.login, action, subject, outcome="refused", entity_id=who.entity_id,
                           detail={"reason": refused}, address=client_address(request))
        return _pending_page(request, who, 400, errors={order_id: refused}, comments={order_id: comment},
                             error=refused)
    try:
        packages.deliver(outcome)
    except CampflowError as exc:
        flash(request, str(exc), "error")
    for warning in outcome.warnings:
        flash(request, warning, "error")
    flash(request, outcome.summary)
    return redirect("/central/orders")


@router.post("/central/orders/{order_id}/approve", dependencies=[Depends(check_csrf)])
def approve(request: Request, order_id: int, comment: str = Form("", max_length=2000),
            who: Actor = Depends(decider_only)):
    return _decide(request, who, order_id, "approve", comment)


@router.post("/central/orders/{order_id}/reject", dependencies=[Depends(check_csrf)])
def reject(request: Request, order_id: int, comment: str = Form("", max_length=2000),
           who: Actor = Depends(decider_only)):
    return _decide(request, who, order_id, "reject", comment)


@router.get("/central/packages", response_class=HTMLResponse)
def package_orders(request: Request, who: Actor = Depends(central_only)):
    with db.session() as session:
        listed = [(package, packages.list_orders(session, who, package=package["code"]))
                  for package in packages.list_packages(session, who)]
    return render(request, "central_packages.html", packages=listed)


@router.get("/central/audit", response_class=HTMLResponse)
def audit_log(request: Request, login: str = "", action: str = "", page: int = 1,
              who: Actor = Depends(requires(may_read_audit))):
    login, action, page = login[:64], action[:64], max(page, 1)
    with db.session() as session:
        events, total = accounts.list_audit(session, who, login=login or None, action=action or None,
                                            page=page, per_page=PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))

    def link(number: int) -> str:
        query: dict[str, Any] = {k: v for k, v in (("login", login), ("action", action)) if v}
        return "/central/audit?" + urlencode(query | {"page": number})

    return render(request, "audit.html", events=events, total=total, page=page, pages=pages, login=login,
                  action=action, previous=link(page - 1) if page > 1 else None,
                  next=link(page + 1) if page < pages else None)
