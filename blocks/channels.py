"""E-mail channels: Prefect blocks naming where a step's messages go; `campflow.delivery.senders` sends
through them.

* `SmtpChannel` holds a prefect-email `EmailServerCredentials` block (server, port, security,
  login) plus campflow's own settings: the sender, how many SMTP connections send in parallel
  (`concurrency`), the most messages per second (`rate`, a token bucket shared by every step
  of this process sending through the same server) and the network timeout.
* `FileChannel` writes each message as an `.eml` file (the demo needs no server).
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

from prefect.blocks.core import Block
from prefect_email import EmailServerCredentials
from prefect_email.credentials import SMTPServer, SMTPType
from pydantic import Field, field_validator

from campflow.delivery.senders import ChannelError, FileSender, SmtpSender, _reply, sender_address
from campflow.delivery.smtp_pool import _close
from campflow.errors import CampflowError

# the block each kind sends through when its step names none
DEFAULT_CHANNELS = {"emailing": "emailing", "mass_emailing": "mass-emailing"}


def _valid_sender(value: str) -> str:
    """A channel's sender is an address, display name allowed (pydantic field validator)."""
    sender_address(value)
    return value


def _saved_name(block: Block) -> str:
    return block._block_document_name or "(unsaved)"


class SmtpChannel(Block):
    """Messages sent through an SMTP server (relay, submission server, e-mail service)."""

    _block_type_name = "campflow SMTP channel"
    _description = ("Where campflow's e-mail steps send: an SMTP server (prefect-email credentials), "
                    "the sender, parallel connections and a rate limit.")

    credentials: EmailServerCredentials = Field(description="The SMTP server and its login (prefect-email block).")
    sender: str = Field(description="The From of every message, display name allowed: "
                        "'Salon ERP <salon@example.com>'.")
    concurrency: int = Field(default=2, ge=1, le=32, description="SMTP connections sending in parallel.")
    rate: float | None = Field(default=None, gt=0, description="At most this many messages per second "
                               "(all steps of a worker process together); empty: as fast as the server takes them.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for the server before giving up.")

    _check_sender = field_validator("sender")(_valid_sender)
    name = property(_saved_name)

    def server(self) -> tuple[str, int, SMTPType]:
        """Host, port and security of the server."""
        credentials = self.credentials
        host = credentials.smtp_server
        host = host.value if isinstance(host, SMTPServer) else str(host)
        kind = credentials.smtp_type
        kind = kind if isinstance(kind, SMTPType) else SMTPType[str(kind).upper()]
        return host, credentials.smtp_port or kind.value, kind

    def label(self) -> str:
        host, port, _ = self.server()
        return f"SMTP channel '{self.name}' ({host}:{port})"

    def connect(self) -> smtplib.SMTP:
        """A new connection, secured and logged in; ChannelError naming the server when it fails."""
        host, port, kind = self.server()
        credentials = self.credentials
        context = ssl.create_default_context() if credentials.verify else ssl._create_unverified_context()
        connection: smtplib.SMTP | None = None
        try:
            if kind == SMTPType.SSL:
                connection = smtplib.SMTP_SSL(host, port, timeout=self.timeout, context=context)
            else:
                connection = smtplib.SMTP(host, port, timeout=self.timeout)
                if kind == SMTPType.STARTTLS:
                    connection.starttls(context=context)
            connection.ehlo_or_helo_if_needed()
            if credentials.username:
                connection.login(credentials.username, credentials.password.get_secret_value())
            return connection
        except smtplib.SMTPAuthenticationError as exc:
            _close(connection)
            raise ChannelError(f"SMTP server {host}:{port} of channel '{self.name}' refused the login of "
                               f"{credentials.username!r}: {_reply(exc.smtp_code, exc.smtp_error)}; fix the "
                               f"password (campflow channels add-smtp {self.name} … --overwrite)") from None
        except (OSError, smtplib.SMTPException) as exc:
            _close(connection)
            raise ChannelError(f"cannot reach SMTP server {host}:{port} of channel '{self.name}': "
                               f"{exc or type(exc).__name__}") from None

    def open_sender(self) -> SmtpSender:
        return SmtpSender(self)


class FileChannel(Block):
    """Messages written as `.eml` files into a folder instead of being sent."""

    _block_type_name = "campflow file channel"
    _description = "campflow's e-mail steps write each message as an .eml file into a folder."

    folder: str | None = Field(default=None, description="Where the .eml files go; empty: the step's "
                               "output folder (…/<operation>/<run>/<step>/messages).")
    sender: str = Field(default="campflow <campflow@localhost>", description="The From of every message.")

    _check_sender = field_validator("sender")(_valid_sender)
    name = property(_saved_name)

    def label(self, default_folder: Path | None = None) -> str:
        if self._block_document_name is None:  # the fallback when no channel is saved
            return f"folder {self.target(default_folder)}"
        return f"file channel '{self.name}' ({self.target(default_folder)})"

    def target(self, default_folder: Path | None = None) -> Path:
        if self.folder:
            return Path(self.folder).expanduser().resolve()
        if default_folder is None:
            raise CampflowError(f"file channel '{self.name}' has no folder; give it one")
        return default_folder

    def open_sender(self, default_folder: Path | None = None) -> FileSender:
        return FileSender(self.target(default_folder), self.label(default_folder))


Channel = SmtpChannel | FileChannel


def load_channel(name: str) -> Channel | None:
    """The saved SMTP or file channel block of that name; None when there is none."""
    for block_class in (SmtpChannel, FileChannel):
        try:
            return block_class.load(name)
        except ValueError:  # "Unable to find block document named …", or the type was never registered
            continue
        except Exception as exc:  # the Prefect API is down or unreachable
            raise CampflowError(f"cannot read channel {name!r} from the Prefect API: {exc}; check "
                                "PREFECT_API_URL and that the server runs") from exc
    return None
