"""A local entity's packages and orders: the packages offered now, a package with its documents and
its order form (generated from the package's `form:`), my orders with their history, edit, cancel.

Every read and change goes through campflow.network (packages, orders) with the signed-in actor:
another entity's order, or a package not offered to mine, is a 404 (AccessDenied / NotFound)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from campflow.errors import CampflowError, NotFound
from campflow.network import orders, packages
from campflow.network.packages import FormValuesRefused
from campflow.paths import PathRefused
from campflow.portal.pages import redirect, render
from campflow.portal.security import check_csrf, client_address, flash, local_only, signed_in
from campflow.store import accounts, db
from campflow.store.identity import AccessDenied, Actor
from models.network import LIVE_ORDER_STATUSES, ORDER_STATUSES

router = APIRouter()
PREFIX = "v_"  # a form field FIELD is posted as v_FIELD (never mistaken for csrf_token)


async def posted(request: Request) -> dict[str, str]:
    """The posted form's text fields (the order form's fields are the package's own)."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def form_values(form: list[dict[str, Any]], data: dict[str, str]) -> dict[str, str]:
    """The package's fields from a posted form: a checkbox is yes when ticked, else no; an empty
    field is empty (on an edit: cleared)."""
    values = {}
    for spec in form:
        raw = data.get(PREFIX + spec["code"], "")
        values[spec["code"]] = ("yes" if raw else "no") if spec.get("type") == "bool" else raw[:2000]
    return values


def shown_values(form: list[dict[str, Any]], values: dict[str, Any]) -> dict[str, str]:
    """Values as the form's inputs show them (a ticked checkbox: "yes")."""
    shown = {}
    for spec in form:
        value = values.get(spec["code"])
        if spec.get("type") == "bool":
            shown[spec["code"]] = "yes" if value is True or str(value).lower() in packages.YES else ""
        else:
            shown[spec["code"]] = "" if value is None else str(value)
    return shown


def _refusal(exc: CampflowError) -> None:
    """Not allowed and not found are the generic 404 page (re-raised); other refusals are shown."""
    if isinstance(exc, AccessDenied | NotFound):
        raise exc


def _deliver(request: Request, outcome: packages.Outcome) -> None:
    """The e-mails of a committed action; a failure is said, the action stays recorded."""
    try:
        packages.deliver(outcome)
    except CampflowError as exc:
        flash(request, str(exc), "error")
    for warning in outcome.warnings:
        flash(request, warning, "error")


# ---------------------------------------------------------------- packages


@router.get("/packages", response_class=HTMLResponse)
def package_list(request: Request, who: Actor = Depends(signed_in)):
    with db.session() as session:
        offered = packages.list_packages(session, who)
    return render(request, "packages.html", packages=offered)


def _package_page(request: Request, who: Actor, code: str, status_code: int = 200,
                  values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                  error: str | None = None) -> HTMLResponse:
    with db.session() as session:
        package = packages.show_package(session, code, who)
    mine = package["my_order"]
    may_order = (not who.central and package["state"] == "open" and package["collaboration"] != "by_target_approval"
                 and (mine is None or mine["status"] not in LIVE_ORDER_STATUSES))
    return render(request, "package.html", status_code=status_code, package=package, may_order=may_order,
                  values=values or shown_values(package["form"], {}), errors=errors or {}, error=error,
                  documents=[(n, name.rsplit("/", 1)[-1]) for n, name in enumerate(package["documents"], 1)],
                  prefix=PREFIX)


@router.get("/packages/{code}", response_class=HTMLResponse)
def package_page(request: Request, code: str, who: Actor = Depends(signed_in)):
    return _package_page(request, who, code)


@router.get("/packages/{code}/documents/{number}")
def package_document(request: Request, code: str, number: int, who: Actor = Depends(signed_in)):
    try:
        with db.session() as session:
            name, content = packages.package_document(session, code, number, who)
    except PathRefused as exc:  # the file moved or was swapped: said without its path
        accounts.audit_now(who.login, "document_unreadable", f"package {code} document {number}", outcome="failed",
                           entity_id=who.entity_id, detail={"reason": str(exc)}, address=client_address(request))
        return render(request, "error.html", status_code=404, title="Document unavailable",
                      message=f"Document {number} of package {code} cannot be read now; the central entity "
                              "has been told through its audit log.")
    disposition = f"attachment; filename*=UTF-8''{quote(name)}"
    return Response(content, media_type="application/octet-stream",
                    headers={"Content-Disposition": disposition})


@router.post("/packages/{code}/order", dependencies=[Depends(check_csrf)])
def place_order(request: Request, code: str, data: dict[str, str] = Depends(posted),
                who: Actor = Depends(local_only)):
    with db.session() as session:  # not offered to my entity now: 404 before anything else is said
        form = packages.show_package(session, code, who)["form"]
    values = form_values(form, data)
    try:
        with db.session() as session:
            outcome = orders.create_order(session, code, who, values)
            order_id = outcome.order_ids[0]
            accounts.audit(session, who.login, "create_order", f"order {order_id}", entity_id=who.entity_id,
                           detail={"package": code}, address=client_address(request))
    except FormValuesRefused as exc:
        return _package_page(request, who, code, 400, values=shown_values(form, values), errors=exc.fields)
    except CampflowError as exc:
        _refusal(exc)
        return _package_page(request, who, code, 400, values=shown_values(form, values), error=str(exc))
    _deliver(request, outcome)
    flash(request, outcome.summary)
    return redirect(f"/orders/{order_id}")


# ---------------------------------------------------------------- orders


@router.get("/orders", response_class=HTMLResponse)
def order_list(request: Request, package: str = "", status: str = "", who: Actor = Depends(signed_in)):
    status = status if status in ORDER_STATUSES else ""
    with db.session() as session:
        codes = [p["code"] for p in packages.list_packages(session, who)]
        if package and package not in codes:
            package = ""
        listed = packages.list_orders(session, who, package=package or None, status=status or None)
    return render(request, "orders.html", orders=listed, package_codes=codes, statuses=ORDER_STATUSES,
                  package=package, status=status)


def _order_page(request: Request, who: Actor, order_id: int, status_code: int = 200,
                values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                error: str | None = None) -> HTMLResponse:
    with db.session() as session:
        order = packages.show_order(session, order_id, who)
        form = list(packages.find_package(session, order["package"]).form)
    return render(request, "order.html", status_code=status_code, order=order, form=form,
                  actions=orders.order_actions(order, who), values=values or shown_values(form, order["values"]),
                  errors=errors or {}, error=error, prefix=PREFIX)


@router.get("/orders/{order_id}", response_class=HTMLResponse)
def order_page(request: Request, order_id: int, who: Actor = Depends(signed_in)):
    return _order_page(request, who, order_id)


@router.post("/orders/{order_id}/edit", dependencies=[Depends(check_csrf)])
def edit_order(request: Request, order_id: int, data: dict[str, str] = Depends(posted),
               who: Actor = Depends(signed_in)):
    with db.session() as session:
        order = packages.show_order(session, order_id, who)  # another entity's: 404
        form = list(packages.find_package(session, order["package"]).form)
    values = form_values(form, data)
    try:
        with db.session() as session:
            outcome = orders.edit_order(session, order_id, who, values)
            accounts.audit(session, who.login, "edit_order", f"order {order_id}", entity_id=who.entity_id,
                           address=client_address(request))
    except FormValuesRefused as exc:
        return _order_page(request, who, order_id, 400, values=shown_values(form, values), errors=exc.fields)
    except CampflowError as exc:
        _refusal(exc)
        return _order_page(request, who, order_id, 400, error=str(exc))
    flash(request, outcome.summary)
    return redirect(f"/orders/{order_id}")


@router.post("/orders/{order_id}/cancel", dependencies=[Depends(check_csrf)])
def cancel_order(request: Request, order_id: int, comment: str = Form("", max_length=2000),
                 who: Actor = Depends(signed_in)):
    try:
        with db.session() as session:
            outcome = orders.cancel_order(session, order_id, who, comment.strip() or None)
            accounts.audit(session, who.login, "cancel_order", f"order {order_id}", entity_id=who.entity_id,
                           detail={"comment": comment.strip()} if comment.strip() else None,
                           address=client_address(request))
    except CampflowError as exc:
        _refusal(exc)
        return _order_page(request, who, order_id, 400, error=str(exc))
    _deliver(request, outcome)
    flash(request, outcome.summary)
    return redirect(f"/orders/{order_id}")
