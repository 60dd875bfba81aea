"""`campflow entities`, `campflow packages` and `campflow orders`: the network's commands.

Each command runs in one transaction; its e-mails go out once it is committed (a failed e-mail is
reported as an error saying the action itself was recorded)."""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.tree import Tree
from sqlalchemy import select

from campflow.cli.common import JSON_OPTION_HELP, console, err_console, escape, print_json, print_table
from campflow.errors import CampflowError
from campflow.network import orders, packages
from campflow.store import db, identity
from models import Entity

entities_app = typer.Typer(help="The network: central and local entities.", no_args_is_help=True)
packages_app = typer.Typer(help="Packages the central entity offers to local entities.", no_args_is_help=True)
orders_app = typer.Typer(help="Local entities' orders of packages, and their approval.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(entities_app, name="entities")
    app.add_typer(packages_app, name="packages")
    app.add_typer(orders_app, name="orders")


JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
AsOption = Annotated[str | None, typer.Option(
    "--as", help="act as this operator; default $CAMPFLOW_OPERATOR or the system user")]
ValueOption = Annotated[list[str] | None, typer.Option(
    "--value", help="A form field's value, FIELD=VALUE (repeatable); an empty VALUE clears the field.")]
OrderArgument = Annotated[int, typer.Argument(help="Order id, as `campflow orders list` shows it.")]


def parse_values(pairs: Sequence[str] | None) -> dict[str, str]:
    """`FIELD=VALUE` options as a dict; a pair without `=` or a field given twice is refused."""
    values: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CampflowError(f"--value takes FIELD=VALUE, e.g. --value MAGASIN=Lyon; got {pair!r}")
        if name.upper() in (n.upper() for n in values):
            raise CampflowError(f"--value {name} is given twice; give each field once")
        values[name] = value
    return values


def _report(outcome: packages.Outcome) -> None:
    for warning in outcome.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(escape(outcome.summary))


def _when(value: Any, zone: str | None = None) -> str:
    """A date and time as the package's people read it: in its timezone (UTC when none)."""
    if value is None:
        return ""
    return f"{value.astimezone(zoneinfo.ZoneInfo(zone or 'UTC')):%Y-%m-%d %H:%M}"


def _zones(views: list[dict[str, Any]]) -> str:
    """The title's note of the timezone the dates are shown in."""
    zones = sorted({v["timezone"] for v in views})
    return f" (dates in {zones[0]})" if len(zones) == 1 else " (dates in each package's timezone)" if zones else ""


# ---------------------------------------------------------------- entities


@entities_app.command("list")
def entities_list(as_json: JsonOption = False) -> None:
    """The entity tree: type, operators (logins), reviewers and notification e-mails.

    Example: campflow entities list
    """
    with db.session() as session:
        rows = [{"code": e.code, "label": e.label, "type": e.type, "parent_id": e.parent_id, "id": e.id,
                 "operators": list(e.operators), "reviewers": list(e.reviewers), "emails": list(e.emails)}
                for e in session.scalars(select(Entity).order_by(Entity.code))]
    codes = {r["id"]: r["code"] for r in rows}
    for r in rows:
        r["parent"] = codes.get(r.pop("parent_id"))
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "id"} for r in rows])
        return
    if not rows:
        console.print("no entity yet; apply Entity specs with `campflow apply`")
        return
    top = Tree("[bold]Entities[/]")
    nodes: dict[str | None, Tree] = {}

    def add(row: dict[str, Any], parent: Tree) -> None:
        people = " ".join(x for x in (
            f"operators {', '.join(row['operators'])}" if row["operators"] else "",
            f"reviewers {', '.join(row['reviewers'])}" if row["reviewers"] else "",
            f"e-mails {', '.join(row['emails'])}" if row["emails"] else "") if x)
        nodes[row["code"]] = parent.add(f"[bold]{escape(row['code'])}[/] {escape(row['label'])} "
                                        f"[cyan]{row['type']}[/] [dim]{escape(people)}[/]")
        for child in rows:
            if child["parent"] == row["code"]:
                add(child, nodes[row["code"]])

    for row in rows:
        if row["parent"] is None:
            add(row, top)
    console.print(top)


# ---------------------------------------------------------------- packages


@packages_app.command("list")
def packages_list(as_: AsOption = None, as_json: JsonOption = False) -> None:
    """Packages: all, with their state, for the central entity; those offered now for a local one.

    A local entity sees the packages published, visible now and offered to it, with its order.

    Example: campflow packages list --as lyon
    """
    with db.session() as session:
        who = identity.actor(session, as_)
        views = packages.list_packages(session, who)
    if as_json:
        print_json(views)
        return
    if who.central:
        rows = [(v["code"], v["label"], v["state"], v["collaboration"], v["approval"],
                 _when(v["visible_from"], v["timezone"]), _when(v["visible_until"], v["timezone"]),
                 _when(v["registration_deadline"], v["timezone"]), ", ".join(v["audience"]),
                 ", ".join(f"{k} {n}" for k, n in sorted(v["orders"].items()))) for v in views]
        print_table(f"Packages{_zones(views)}", ("code", "label", "state", "collaboration", "approval", "visible from",
                                 "visible until", "deadline", "audience", "orders"), rows)
        return
    rows = [(v["code"], v["label"], v["state"], v["collaboration"], _when(v["registration_deadline"], v["timezone"]),
             f"{v['my_order']['id']} {v['my_order']['status']}" if v["my_order"] else "")
            for v in views]
    print_table(f"Packages offered to {who.entity_code}{_zones(views)}", ("code", "label", "state", "collaboration",
                                                           "deadline", "my order"), rows)


@packages_app.command("show")
def packages_show(
    code: Annotated[str, typer.Argument(help="Package code.")],
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """A package: dates, audience, form fields, documents and orders.

    Example: campflow packages show PKG-CATALOGUE --as lyon
    """
    with db.session() as session:
        who = identity.actor(session, as_)
        view = packages.show_package(session, code, who)
        package = packages.find_package(session, code)
        how = packages.order_line(package, who.login) if not who.central else None
    if as_json:
        print_json(view)
        return
    skip = ("form", "description", "documents", "orders", "my_order")
    rows = [(k, _when(v, view["timezone"]) if k.endswith(("_from", "_until", "_deadline", "_at")) else
             (", ".join(v) if isinstance(v, list) else v)) for k, v in view.items() if k not in skip]
    rows += [("documents", "\n".join(view["documents"])), ("description", view["description"])]
    if view["orders"] is not None:
        rows.append(("orders", ", ".join(f"{k} {n}" for k, n in sorted(view["orders"].items())) or "none"))
    if view["my_order"]:
        rows.append(("my order", f"{view['my_order']['id']} {view['my_order']['status']}"))
    elif how and view["state"] == "open":
        rows.append(("how to order", how))
    print_table(f"Package {view['code']}", ("field", "value"), rows)
    if view["form"]:
        print_table("Form", ("field", "label", "type", "required", "choices"), [
            (f["code"], f["label"], f.get("type", "text"), "yes" if f.get("required") else "",
             ", ".join(f.get("choices", []))) for f in view["form"]])


@packages_app.command("publish")
def packages_publish(
    code: Annotated[str, typer.Argument(help="Package code.")],
    as_: AsOption = None,
) -> None:
    """Publish a package: e-mail its audience the description, documents and how to order.

    In automatic approval mode every audience entity is registered with an approved order.

    Example: campflow packages publish PKG-SOLDES --as marketing
    """
    _report(packages.act(orders.publish, code, as_=as_))


# ---------------------------------------------------------------- orders


@orders_app.command("create")
def orders_create(
    package: Annotated[str, typer.Argument(help="Package code.")],
    value: ValueOption = None,
    entity: Annotated[str | None, typer.Option(
        "--entity", help="The local entity ordered for (central operators only).")] = None,
    as_: AsOption = None,
) -> None:
    """Order a package for your entity; the central reviewers are e-mailed to decide.

    In automatic approval mode the order is approved at once.

    Example: campflow orders create PKG-CATALOGUE --as lyon --value MAGASIN="Lyon Bellecour" --value "REMISE=15 %"
    """
    _report(packages.act(orders.create_order, package, as_=as_, values=parse_values(value), entity=entity))


@orders_app.command("edit")
def orders_edit(order: OrderArgument, value: ValueOption = None, as_: AsOption = None) -> None:
    """Change an order's form values (all are checked again).

    Allowed while it is pending; once approved, only in automatic mode and for by_campaign packages.

    Example: campflow orders edit 12 --as lyon --value "REMISE=20 %"
    """
    if not value:
        raise CampflowError("nothing to change: give --value FIELD=VALUE")
    _report(packages.act(orders.edit_order, order, as_=as_, values=parse_values(value)))


@orders_app.command("cancel")
def orders_cancel(
    order: OrderArgument,
    comment: Annotated[str | None, typer.Option("--comment", help="Why (kept in the history).")] = None,
    as_: AsOption = None,
) -> None:
    """Cancel a pending order, or unsubscribe from a package approved automatically.

    Example: campflow orders cancel 12 --as lyon
    """
    _report(packages.act(orders.cancel_order, order, as_=as_, comment=comment))


@orders_app.command("list")
def orders_list(
    package: Annotated[str | None, typer.Option("--package", help="Only this package's orders.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only orders in this status: pending, approved, rejected or cancelled.")] = None,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Orders: all for the central entity, your entity's for a local one.

    Example: campflow orders list --status pending --as marketing
    """
    with db.session() as session:
        views = packages.list_orders(session, identity.actor(session, as_), package=package, status=status)
    if as_json:
        print_json(views)
        return
    print_table("Orders", ("id", "package", "entity", "status", "values", "by", "decided by", "comment"), [
        (v["id"], v["package"], v["entity"], v["status"], ", ".join(f"{k}={x}" for k, x in v["values"].items()),
         v["created_by"], v["decided_by"], v["comment"]) for v in views])


@orders_app.command("show")
def orders_show(order: OrderArgument, as_: AsOption = None, as_json: JsonOption = False) -> None:
    """An order, its values and its history.

    Example: campflow orders show 12 --as lyon
    """
    with db.session() as session:
        view = packages.show_order(session, order, identity.actor(session, as_))
    if as_json:
        print_json(view)
        return
    rows = [(k, _when(v, view["timezone"]) if k.endswith("_at") else v) for k, v in view.items()
            if k not in ("values", "history")]
    rows += [(f"value {k}", v) for k, v in view["values"].items()]
    print_table(f"Order {view['id']}", ("field", "value"), rows)
    print_table("History", ("at", "who", "action", "comment", "values"), [
        (_when(e["at"], view["timezone"]), e["actor"], e["action"], e["comment"],
         ", ".join(f"{k}={x}" for k, x in (e["values"] or {}).items())) for e in view["history"]])


@orders_app.command("approve")
def orders_approve(
    order: OrderArgument,
    comment: Annotated[str, typer.Option("--comment", help="Mailed to the local entity with the decision.")] = "",
    as_: AsOption = None,
) -> None:
    """Approve a pending order (central operators); the decision is mailed to the local entity.

    Example: campflow orders approve 12 --as marketing --comment "Bonne campagne"
    """
    _report(packages.act(orders.approve_order, order, as_=as_, comment=comment))


@orders_app.command("reject")
def orders_reject(
    order: OrderArgument,
    comment: Annotated[str, typer.Option("--comment", help="Why (required); mailed to the local entity.")] = "",
    as_: AsOption = None,
) -> None:
    """Reject a pending order with a comment (central operators); it is mailed to the local entity.

    Example: campflow orders reject 12 --as marketing --comment "Budget épuisé pour Lyon"
    """
    _report(packages.act(orders.reject_order, order, as_=as_, comment=comment))


@orders_app.command("review")
def orders_review(
    order: OrderArgument,
    timeout_hours: Annotated[float, typer.Option("--timeout-hours", help="How long to wait for the decision.")] = 72,
) -> None:
    """Run the approve-order flow: it waits for the decision given in the Prefect UI.

    The run pauses until a central reviewer answers the form behind "Resume" on it, then applies
    the decision. The same decision can be given with `campflow orders approve|reject ID`; the
    run then ends without deciding again. Needs the Prefect server (`campflow server`, or
    PREFECT_API_URL).

    Example: campflow orders review 12 --timeout-hours 24
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from campflow.orchestration.local_server import use_local_server
    from campflow.orchestration.schedules import api_url

    use_local_server()

    url = api_url()
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            if client.api_healthcheck() is not None:
                raise CampflowError(f"the Prefect server at {url} is unreachable, and the decision is given in its "
                                    "UI; start it with `campflow server` (or set PREFECT_API_URL), or decide with "
                                    f"`campflow orders approve|reject {order}`")
        from flows.network import approve_order

        state = approve_order(order, timeout_hours, return_state=True)
    if not state.is_completed():
        try:
            state.result()
        except CampflowError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the pause timed out
            raise CampflowError(f"the approve-order run of order {order} ended {state.name}: {exc}; the order "
                                f"stays pending; decide it with `campflow orders approve|reject {order}`") from None
    console.print(escape(state.message or state.name))
