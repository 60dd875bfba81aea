"""`campflow channels add-fax`: the e-mail-to-fax gateway faxing steps send through (a Prefect block)."""

from __future__ import annotations

from typing import Annotated

import typer

from campflow.cli.channels import NameArgument, OverwriteOption, _check_name, _first_error, channels_app
from campflow.cli.common import console, escape
from campflow.errors import CampflowError


def register(app: typer.Typer) -> None:
    channels_app.command("add-fax")(add_fax)


def add_fax(
    name: NameArgument,
    channel: Annotated[str, typer.Option("--channel", help="The SMTP (or file) channel that carries the "
                                         "faxes.")],
    domain: Annotated[str, typer.Option("--domain", help="The gateway's domain: faxes go to "
                                        "<number>@<domain>.")],
    region: Annotated[str, typer.Option("--region", help="Country of numbers written without an "
                                        "international prefix (ISO code).")] = "FR",
    number_format: Annotated[str, typer.Option("--number-format", help="How the gateway wants the number: "
                                               "e164 (+33142685300), digits (33142685300) or "
                                               "international_00 (0033142685300).")] = "e164",
    overwrite: OverwriteOption = False,
) -> None:
    """Save a fax gateway: a faxing step sends each party's document to <number>@<domain>
    through the channel. A faxing step uses the gateway `fax` unless its `document: {channel: NAME}`
    names another.

    Example: campflow channels add-fax fax --channel emailing --domain fax.example.com --region FR
    """
    import phonenumbers

    from blocks.channels import load_channel
    from blocks.fax import NUMBER_FORMATS, FaxGateway

    _check_name(name)
    if number_format not in NUMBER_FORMATS:
        raise CampflowError(f"--number-format {number_format!r}: use one of {', '.join(NUMBER_FORMATS)}")
    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise CampflowError(f"--region {region!r}: not a country code phone numbers know (FR, BE, CH, DE…)")
    if "@" in domain or not domain.strip(".") or " " in domain:
        raise CampflowError(f"--domain {domain!r}: give the gateway's domain alone, e.g. fax.example.com")
    from campflow.orchestration.local_server import use_local_server

    use_local_server()
    if load_channel(channel) is None:
        raise CampflowError(f"--channel {channel!r}: no such channel; `campflow channels list` shows the "
                            f"saved ones, `campflow channels add-smtp {channel} …` saves one")
    try:
        existing = FaxGateway.load(name)
    except ValueError:
        existing = None
    if existing is not None and not overwrite:
        raise CampflowError(f"fax gateway {name!r} exists already; add --overwrite to replace it")
    try:
        gateway = FaxGateway(channel=channel, domain=domain, default_region=region, number_format=number_format)
        gateway.save(name, overwrite=True)
    except ValueError as exc:
        raise CampflowError(f"fax gateway {name}: {_first_error(exc)}") from None
    console.print(f"[green]fax gateway {escape(name)} saved[/]: faxes to "
                  f"{escape(gateway.address('+33142685300'))} (for +33 1 42 68 53 00) through channel "
                  f"{escape(channel)}")
