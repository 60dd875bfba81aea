"""Notifications of the network (packages published, orders, decisions, lists to approve):
plain e-mails sent through the channel block `notifications`, or written as .eml files under
`$CAMPFLOW_OUTPUT_DIR/notifications/` when no such block is saved (as the demo does)."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from campflow.errors import CampflowError
from campflow.render.headers import sender_header

CHANNEL = "notifications"


def folder() -> Path:
    return Path(os.environ.get("CAMPFLOW_OUTPUT_DIR", "out")).resolve() / "notifications"


def notify(to: Sequence[str], subject: str, body: str, attachments: Sequence[Path] = (),
           tag: str = "notice") -> list[str]:
    """Send one message to each address; returns where each went (.eml path or address).

    A refused address or a channel that cannot send raises CampflowError naming it.
    """
    addresses = sorted({a.strip() for a in to if a and a.strip()})
    if not addresses:
        return []
    # Prefect's blocks load here, not at import: the CLI's commands that never notify stay quick.
    from blocks.channels import FileChannel, load_channel
    from campflow.delivery.senders import SENT, Outgoing
    from campflow.orchestration.local_server import use_local_server

    use_local_server()
    channel = load_channel(CHANNEL) or FileChannel()
    header, envelope = sender_header(channel.sender)
    stamp = formatdate(localtime=True)
    messages = []
    for n, address in enumerate(addresses):
        message = EmailMessage(policy=policy.SMTP)
        message["From"], message["To"], message["Subject"] = header, address, subject
        message["Date"], message["Message-ID"] = stamp, make_msgid(domain=envelope.partition("@")[2] or None)
        message.set_content(body)
        for path in attachments:
            kind, _ = mimetypes.guess_type(path.name)
            main, _, sub = (kind or "application/octet-stream").partition("/")
            message.add_attachment(_read(path), maintype=main, subtype=sub, filename=path.name)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{tag}-{address}")
        messages.append(Outgoing(address, message.as_bytes(), f"{safe}-{make_msgid()[1:9]}-{n}.eml"))
    sender = channel.open_sender(folder()) if isinstance(channel, FileChannel) else channel.open_sender()
    results: list = [None] * len(messages)
    try:
        sender.check()
        sender.send(messages, results)
    finally:
        sender.close()
    failed = [(m.recipient, r) for m, r in zip(messages, results, strict=True) if r is None or r.state != SENT]
    if failed:
        raise CampflowError("notification not sent to " + ", ".join(
            f"{address} ({result.reply if result else 'not attempted'})" for address, result in failed))
    return [r.path or m.recipient for m, r in zip(messages, results, strict=True)]


def _read(path: Path) -> bytes:
    """An attachment, never through a symlink put in its place (package documents are checked
    just before by campflow.paths.read_stored; this closes the moment in between)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CampflowError(f"cannot attach {path}: {exc.strerror}; nothing was sent") from None
    with os.fdopen(descriptor, "rb") as file:
        return file.read()
