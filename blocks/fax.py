"""The fax gateway block: faxes sent as e-mails to `<number>@<domain>` (e-mail-to-fax).

Most fax services (and the fax servers of many companies) take an e-mail whose recipient is
the fax number at the gateway's domain and whose attachment is the document to fax. The block
names the SMTP channel that carries these e-mails and how the gateway wants the number written.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field

NUMBER_FORMATS = ("e164", "digits", "international_00")


class FaxGateway(Block):
    """An e-mail-to-fax gateway reached through one of campflow's SMTP channels."""

    _block_type_name = "campflow fax gateway"
    _description = "Faxes sent as e-mails to <number>@<domain>, the document attached."

    channel: str = Field(description="Name of the campflow SMTP channel block that carries the faxes.")
    domain: str = Field(description="The gateway's domain, e.g. fax.example.com.")
    default_region: str = Field(default="FR", description="Country of numbers written without "
                                "an international prefix (ISO 3166 code).")
    number_format: Literal["e164", "digits", "international_00"] = Field(
        default="e164", description="How the number is written before the @: +33142685300 (e164), "
        "33142685300 (digits) or 0033142685300 (international_00).")

    def address(self, e164: str) -> str:
        """The gateway address of a number already normalised to E.164."""
        digits = e164.lstrip("+")
        local = {"e164": e164, "digits": digits, "international_00": f"00{digits}"}[self.number_format]
        return f"{local}@{self.domain}"
