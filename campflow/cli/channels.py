"""`campflow channels …`: the SMTP and file channels e-mail steps send through (Prefect blocks)."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

import typer

from campflow.cli.common import JSON_OPTION_HELP, console, escape, print_json, print_table
from campflow.errors import CampflowError

channels_app = typer.Typer(
    help="E-mail channels (Prefect blocks): an `emailing` step sends through the block `emailing`, a "
    "`mass_emailing` step through `mass-emailing`, unless its `email: {channel: NAME}` names another; "
    "with none saved, messages are written as .eml files.",
    no_args_is_help=True)

NAME_PATTERN = re.compile(r"^[a-z0-9-]+$")
NameArgument = Annotated[str, typer.Argument(help="Channel name: lower-case letters, digits and dashes "
                                             "(emailing, mass-emailing, relay-2…).")]
SenderOption = Annotated[str, typer.Option("--sender", help="The From of the messages, display name allowed: "
                                           "\"Salon ERP <salon@example.com>\".")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace a channel of that name.")]


def register(app: typer.Typer) -> None:
    app.add_typer(channels_app, name="channels")


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise CampflowError(f"channel name {name!r}: use lower-case letters, digits and dashes only "
                            "(Prefect block names), e.g. mass-emailing")


def _save(block: Any, name: str, overwrite: bool) -> None:
    """Save the block; a channel of that name (of either type) is replaced only with --overwrite."""
    from blocks.channels import load_channel
    from campflow.orchestration.local_server import use_local_server

    use_local_server()

    existing = load_channel(name)
    if existing is not None:
        if not overwrite:
            raise CampflowError(f"channel {name!r} exists already; add --overwrite to replace it")
        if type(existing) is not type(block):
            existing.delete(name)  # one name, one channel: never an SMTP and a file channel both
    try:
        block.save(name, overwrite=True)
    except ValueError as exc:
        raise CampflowError(f"channel {name!r}: {exc}") from None


@channels_app.command("add-smtp")
def add_smtp(
    name: NameArgument,
    host: Annotated[str, typer.Option("--host", help="SMTP server host name.")],
    sender: SenderOption,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: 465 with --ssl, 587 with "
                                             "--starttls, 25 with --plain).", min=1, max=65535)] = None,
    username: Annotated[str | None, typer.Option("--username", help="Login, when the server asks for one.")] = None,
    password_env: Annotated[str | None, typer.Option("--password-env", help="Name of the environment variable "
                            "holding the password; it is stored in the block, never printed.")] = None,
    ssl: Annotated[bool, typer.Option("--ssl", help="TLS from the start (usually port 465).")] = False,
    starttls: Annotated[bool, typer.Option("--starttls", help="STARTTLS after connecting (usually port 587; "
                                           "the default).")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="No encryption (a relay on the local network, a "
                                        "test server).")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not check the server's TLS "
                                            "certificate.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", help="SMTP connections sending in parallel.",
                                             min=1, max=32)] = 2,
    rate: Annotated[float | None, typer.Option("--rate", help="At most this many messages per second.",
                                               min=0.001)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server.", min=0.1)] = 30.0,
    overwrite: OverwriteOption = False,
) -> None:
    """Save an SMTP channel: a prefect-email EmailServerCredentials block inside a campflow block.

    Example: MAIL_PASSWORD=… campflow channels add-smtp emailing --host smtp.example.com --port 587
    --starttls --username salon@example.com --password-env MAIL_PASSWORD
    --sender "Salon ERP <salon@example.com>" --concurrency 4 --rate 50
    """
    from prefect_email import EmailServerCredentials

    from blocks.channels import SmtpChannel

    _check_name(name)
    chosen = [flag for flag, on in (("--ssl", ssl), ("--starttls", starttls), ("--plain", plain)) if on]
    if len(chosen) > 1:
        raise CampflowError(f"choose one of --ssl, --starttls and --plain; got {' '.join(chosen)}")
    security = {"--ssl": "SSL", "--starttls": "STARTTLS", "--plain": "INSECURE"}[chosen[0] if chosen else "--starttls"]
    password = ""
    if password_env:
        if password_env not in os.environ:
            raise CampflowError(f"--password-env {password_env}: that environment variable is not set; "
                                f"export {password_env}=… first")
        password = os.environ[password_env]
    if password and not username:
        raise CampflowError("--password-env needs --username")
    try:
        credentials = EmailServerCredentials(smtp_server=host, smtp_port=port, smtp_type=security,
                                             username=username or None, password=password, verify=not no_verify)
        channel = SmtpChannel(credentials=credentials, sender=sender, concurrency=concurrency, rate=rate,
                              timeout=timeout)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CampflowError(f"channel {name}: {_first_error(exc)}") from None
    _save(channel, name, overwrite)
    host_, port_, kind = channel.server()
    console.print(f"[green]SMTP channel {escape(name)} saved[/]: {escape(host_)}:{port_} ({kind.name.lower()}), "
                  f"sender {escape(sender)}, {concurrency} connection(s)"
                  + (f", at most {rate:g} messages/s" if rate else ""))


@channels_app.command("add-file")
def add_file(
    name: NameArgument,
    folder: Annotated[str | None, typer.Option("--folder", help="Where the .eml files go (default: the "
                                               "step's output folder, …/<operation>/<run>/<step>/messages).")] = None,
    sender: Annotated[str, typer.Option("--sender", help="The From of the messages.")] = "campflow <campflow@localhost>",
    overwrite: OverwriteOption = False,
) -> None:
    """Save a file channel: messages are written as .eml files instead of being sent.

    Example: campflow channels add-file mass-emailing --folder /srv/outgoing --sender "Salon <salon@example.com>"
    """
    from blocks.channels import FileChannel

    _check_name(name)
    try:
        channel = FileChannel(folder=folder, sender=sender)
    except ValueError as exc:
        raise CampflowError(f"channel {name}: {_first_error(exc)}") from None
    _save(channel, name, overwrite)
    console.print(f"[green]file channel {escape(name)} saved[/]: .eml files into "
                  f"{escape(folder or 'the step output folder')}")


@channels_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False) -> None:
    """List the saved channels (never their passwords).

    Example: campflow channels list
    """
    rows = [describe(name, channel) for name, channel in saved_channels()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no channel saved: e-mail steps write .eml files "
                      "(campflow channels add-smtp emailing … to send them)")
        return
    print_table("e-mail channels and fax gateways", ("name", "type", "server", "security", "login", "sender", "parallel",
                                    "rate/s", "folder"),
                [(r["name"], r["type"], r.get("server"), r.get("security"), r.get("username"), r["sender"],
                  r.get("concurrency"), r.get("rate"), r.get("folder")) for r in rows])


@channels_app.command("check")
def check(name: NameArgument) -> None:
    """Connect to a channel's server (login included) and say whether it answers; sends nothing.

    Example: campflow channels check emailing
    """
    from blocks.channels import FileChannel, load_channel
    from campflow.orchestration.local_server import use_local_server

    use_local_server()
    channel = load_channel(name)
    if channel is None:
        raise CampflowError(f"no channel named {name!r}; `campflow channels list` shows the saved ones")
    if isinstance(channel, FileChannel):
        console.print(f"file channel {escape(name)}: writes .eml files into "
                      f"{escape(channel.folder or 'the step output folder')}")
        return
    sender = channel.open_sender()
    try:
        sender.check()
    finally:
        sender.close()
    console.print(f"[green]{escape(channel.label())} answers[/]")


def saved_channels() -> list[tuple[str, Any]]:
    """(name, block) of every saved channel and fax gateway, by name."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    from blocks.channels import FileChannel, SmtpChannel
    from blocks.fax import FaxGateway
    from campflow.orchestration.local_server import use_local_server

    use_local_server()
    found = []
    with get_client(sync_client=True) as client:
        for block_class in (SmtpChannel, FileChannel, FaxGateway):
            try:
                documents = client.read_block_documents_by_type(block_class.get_block_type_slug(),
                                                                include_secrets=False)
            except (ObjectNotFound, PrefectHTTPStatusError) as exc:
                if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code != 404:
                    raise
                continue  # the block type was never registered: no channel of that type
            found += [(d.name, block_class.load(d.name)) for d in documents if d.name and not d.is_anonymous]
    return sorted(found, key=lambda pair: pair[0])


def describe(name: str, channel: Any) -> dict[str, Any]:
    """A channel as plain data, secrets left out."""
    from blocks.channels import SmtpChannel
    from blocks.fax import FaxGateway

    if isinstance(channel, FaxGateway):
        return {"name": name, "type": "fax", "server": f"<number>@{channel.domain}",
                "sender": f"through channel {channel.channel}", "folder": None,
                "region": channel.default_region, "number_format": channel.number_format}
    if isinstance(channel, SmtpChannel):
        host, port, kind = channel.server()
        return {"name": name, "type": "smtp", "server": f"{host}:{port}",
                "security": {"SSL": "ssl", "STARTTLS": "starttls", "INSECURE": "plain"}[kind.name],
                "username": channel.credentials.username, "sender": channel.sender,
                "concurrency": channel.concurrency, "rate": channel.rate, "timeout": channel.timeout}
    return {"name": name, "type": "file", "sender": channel.sender, "folder": channel.folder}


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first['msg'].removeprefix('Value error, ')}" if where else first["msg"]
    return str(exc)
