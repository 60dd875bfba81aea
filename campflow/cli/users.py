"""`campflow users` (portal accounts) and `campflow portal` (the web door)."""

from __future__ import annotations

from typing import Annotated

import typer

from campflow.cli.common import JSON_OPTION_HELP, console, err_console, escape, print_json, print_table
from campflow.errors import CampflowError
from campflow.store import accounts, db
from models.accounts import ROLES

users_app = typer.Typer(help="Portal accounts: add, list, disable, reset a password.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
LoginArgument = Annotated[str, typer.Argument(help="The account's login.")]


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.command("portal")(portal)


def _send(account, invitation: bool, no_email: bool) -> None:
    from campflow.network.accounts import portal_url, send_password_link

    if no_email:
        from campflow.network.accounts import secret_key

        link = portal_url(f"password/{accounts.link_token(secret_key(), account)}")
        console.print(f"link for {account.login} (works once): {link}", soft_wrap=True)
        return
    try:
        sent = send_password_link(account, invitation=invitation)
    except CampflowError as exc:
        raise CampflowError(f"account {account.login} is saved, but {exc}; send the link again with "
                            f"`campflow users reset-password {account.login}`") from None
    console.print(f"{'invitation' if invitation else 'link'} sent to {escape(', '.join(sent.went_to))}")


@users_app.command("add")
def add(
    login: LoginArgument,
    email: Annotated[str, typer.Option("--email", help="Where the invitation goes.")],
    role: Annotated[list[str], typer.Option("--role", help=f"A role (repeatable): {', '.join(ROLES)}.")],
    entity: Annotated[str | None, typer.Option("--entity", help="The entity it acts for (local_operator: its "
                                                                "store; default: the central entity).")] = None,
    collaborator: Annotated[str | None, typer.Option(
        "--collaborator", help="The collaborator it is: its groups open confidential operations.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Full name, for the e-mails.")] = None,
    no_email: Annotated[bool, typer.Option("--no-email", help="Print the one-time link instead of mailing it.")]
    = False,
) -> None:
    """Create an account and e-mail it an invitation: a one-time link to set its password (72 h).

    Examples:
      campflow users add lyon --email lyon@store.test --role local_operator --entity LYON
      campflow users add claire --email claire@siege.test --role reviewer
      campflow users add jdupont --email jd@siege.test --role central_operator --collaborator JDUPONT
    """
    with db.session() as session:
        account = accounts.create(session, login, email, role, entity=entity, collaborator=collaborator, name=name)
        accounts.audit(session, None, "account_created", account.login, source="cli",
                       detail={"roles": list(account.roles), "entity": entity})
    console.print(f"account {account.login} created ({', '.join(account.roles)})")
    _send(account, True, no_email)


@users_app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """Accounts: login, e-mail, roles, entity, collaborator, state (invited, active, locked, disabled).

    Example: campflow users list
    """
    with db.session() as session:
        rows = accounts.list_accounts(session)
    if as_json:
        print_json(rows)
        return
    print_table("Accounts", ("login", "e-mail", "roles", "entity", "collaborator", "state", "last login"), [
        (r["login"], r["email"], ", ".join(r["roles"]), r["entity"] or "", r["collaborator"] or "", r["state"],
         f"{r['last_login_at']:%Y-%m-%d %H:%M}" if r["last_login_at"] else "") for r in rows])


@users_app.command("disable")
def disable(login: LoginArgument) -> None:
    """Disable an account: it can no longer log in, and its open sessions end.

    Example: campflow users disable lyon
    """
    with db.session() as session:
        account = accounts.disable(session, login)
        accounts.audit(session, None, "account_disabled", account.login, source="cli")
    console.print(f"account {account.login} disabled; `campflow users reset-password {account.login}` enables "
                  "it again")


@users_app.command("reset-password")
def reset_password(
    login: LoginArgument,
    no_email: Annotated[bool, typer.Option("--no-email", help="Print the one-time link instead of mailing it.")]
    = False,
) -> None:
    """Forget an account's password (and enable it): it is e-mailed a one-time link to set a new one.

    Example: campflow users reset-password lyon
    """
    with db.session() as session:
        account = accounts.reset(session, login)
        accounts.audit(session, None, "password_reset", account.login, source="cli")
    console.print(f"password of {account.login} reset; its sessions ended")
    _send(account, False, no_email)


def portal(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    https: Annotated[bool, typer.Option(
        "--https/--no-https", help="Mark cookies Secure: the portal is reached through HTTPS (a proxy in front). "
                                   "Default: when CAMPFLOW_PORTAL_URL starts with https://.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64,
                                         help="Processes serving the portal (one per core is a good start).")] = 1,
) -> None:
    """Serve the portal: local entities, reviewers and collaborators work in their browser.

    Accounts come from `campflow users add`; their invitation links point to CAMPFLOW_PORTAL_URL
    (default http://127.0.0.1:8080).

    Example: campflow portal --port 8080
    """
    import os

    import uvicorn

    from campflow.portal.app import create_app

    if https is None:
        https = os.environ.get("CAMPFLOW_PORTAL_URL", "").startswith("https://")
    if host not in ("127.0.0.1", "localhost", "::1") and not https:
        err_console.print("[yellow]warning:[/] the portal listens beyond this machine over plain HTTP; put it "
                          "behind HTTPS and pass --https")
    db.upgrade()
    create_app(https=https)  # fails here, once, when the key or the database is missing
    console.print(f"campflow portal on http://{host}:{port} with {workers} process{'es' if workers > 1 else ''} "
                  "(Ctrl-C stops it)")
    os.environ["CAMPFLOW_PORTAL_HTTPS"] = "1" if https else ""
    uvicorn.run("campflow.portal.app:served_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", proxy_headers=False)
