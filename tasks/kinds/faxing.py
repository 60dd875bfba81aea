"""`faxing`: each party's merged Word document sent to its fax number through a fax gateway.

The gateway is e-mail-to-fax (blocks/fax.py): the fax is an e-mail to `<number>@<domain>`
with the party's document attached, sent through one of the SMTP (or file) channels. The
document is the step's `document:` merged for that party alone (campflow/render/wordmerge.py), the
same merge as a `document_mailing` step. Numbers are normalised to E.164 with the gateway's
default country; a missing or invalid number gives the party `failed` with the reason.
Sending goes through the outbox like e-mails do: a fax is never sent twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

import phonenumbers
from sqlalchemy.orm import Session

from blocks.channels import Channel, FileChannel, load_channel
from blocks.fax import FaxGateway
from campflow.core.fields import FieldRef
from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.delivery.senders import ChannelError, Outgoing
from campflow.errors import CampflowError
from campflow.render.bodies import EmptyField
from campflow.render.headers import message_filename, sender_header
from campflow.render.wordmerge import merge_document
from campflow.store.outbox import PENDING, OutboxWriter, remember, settle_statuses, start_run
from campflow.store.records import FieldColumn, RecordQuery, batches, claim_parties, question_ids
from campflow.store.sending import Pending, SendWindow
from tasks.kinds.document_mailing import MergePlan, plan_merge

DEFAULT_GATEWAY = "fax"  # the block a faxing step uses when its `document.channel` names none
BATCH = 50  # faxes merged, claimed, sent and settled together (each carries a document)
FETCH_ROWS = 500
DOCX_TYPE = ("application", "vnd.openxmlformats-officedocument.wordprocessingml.document")
FIXED = (FieldColumn("party.id", FieldRef("party", "id")), FieldColumn("party.code", FieldRef("party", "code")),
         FieldColumn("party.name", FieldRef("party", "name")), FieldColumn("party.fax", FieldRef("party", "fax")))
_LETTERS = re.compile(r"[^\W\d_]")


def normalise_fax(raw: str | None, region: str) -> str:
    """The number in E.164 (`+33142685300`); ValueError saying why it cannot be faxed to."""
    if raw is None or not raw.strip():
        raise ValueError("no fax number")
    shown = raw.strip()
    if _LETTERS.search(shown):  # phonenumbers would read letters as a keypad's digits
        raise ValueError(f"invalid fax number {shown!r}: it contains letters")
    try:
        number = phonenumbers.parse(shown, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"invalid fax number {shown!r}: {exc._msg}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"invalid fax number {shown!r}: not a valid number (country {region} "
                         "when written without +)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Fax each `to_process` party its merged document; statuses from what was sent."""
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    document = ctx.settings.get("document") or {}
    gateway, channel = load_gateway(document.get("channel") or DEFAULT_GATEWAY, place)
    plan = plan_merge(session, ctx)
    claim = claim_parties(session, ctx.step_id)
    if not claim:
        return StepOutcome(message="no party to process")
    messages_dir = ctx.output_dir / "faxes"
    sender = channel.open_sender(messages_dir) if isinstance(channel, FileChannel) else channel.open_sender()
    outbox = OutboxWriter(ctx.operation_id, ctx.step_id, sender.label, ctx.resend_unknown)
    window: SendWindow | None = None
    try:
        sender.check()
        start_run(session)
        faxes = FaxRun(ctx, plan, gateway, channel.sender)
        query = RecordQuery(ctx, question_ids(session, plan.columns, claim.orders)).select((*FIXED, *plan.columns))
        result = session.execute(query.execution_options(yield_per=FETCH_ROWS, stream_results=True))
        window = SendWindow(outbox, sender, backlog=BATCH)  # a few faxes claimed at a time
        with result:
            for rows in batches(result, BATCH, ctx.check_lock):
                window.put(faxes.register(session, rows, outbox))
        window.finish()
    except ChannelError as exc:
        raise CampflowError(f"{place}: {exc}; the parties stay to_process and the step is retried") from None
    finally:
        if window is not None:
            window.close()  # after an error: claim nothing more, settle the faxes in hand
        outbox.close()
        sender.close()
    counts = settle_statuses(session, ctx.step_id, ctx.operation_code, None)
    tally = outbox.tally
    parts = [f"{tally.sent} fax{'es' if tally.sent != 1 else ''} sent through {gateway.domain} "
             f"({sender.label})"]
    if tally.already_sent:
        parts.append(f"{tally.already_sent} already sent by an earlier run, not sent again")
    if faxes.refused:
        parts.append(", ".join(f"{n} {reason}" for reason, n in sorted(faxes.refused.items())))
    if tally.unknown:
        parts.append(f"{tally.unknown} of unknown fate after an interrupted run, not sent again "
                     f"(campflow run {ctx.operation_code} --resend-unknown)")
    return StepOutcome(processed=sum(counts.values()), statuses=counts, message="; ".join(parts),
                       outputs=(messages_dir,) if isinstance(channel, FileChannel) and tally.sent else ())


def load_gateway(name: str, place: str) -> tuple[FaxGateway, Channel]:
    """The fax gateway block and the channel it sends through; a clear error when either is missing."""
    try:
        gateway = FaxGateway.load(name)
    except ValueError:
        raise CampflowError(f"{place}: no fax gateway named {name!r}; save one with `campflow channels "
                            f"add-fax {name} --channel SMTP_CHANNEL --domain fax.example.com`") from None
    channel = load_channel(gateway.channel)
    if channel is None:
        raise CampflowError(f"{place}: fax gateway {name!r} sends through channel {gateway.channel!r}, "
                            "which does not exist; `campflow channels list` shows the saved ones")
    return gateway, channel


class FaxRun:
    """Builds each party's fax e-mail and sends it through the outbox."""

    def __init__(self, ctx: StepContext, plan: MergePlan, gateway: FaxGateway, sender: str) -> None:
        self.ctx = ctx
        self.plan = plan
        self.gateway = gateway
        self.from_header, envelope = sender_header(sender)
        self.domain = envelope.rpartition("@")[2] or "campflow.invalid"
        self.refused: dict[str, int] = {}

    def register(self, session: Session, rows: Sequence[Any], outbox: OutboxWriter) -> list[Pending]:
        """Build a batch's faxes and register them in the outbox; those to send."""
        keys, built = [], {}
        for row in rows:
            party_id, code, name, raw = row[:len(FIXED)]
            try:
                number = normalise_fax(raw, self.gateway.default_region)
                values = self.plan.filled(self.plan.values(row[len(FIXED):]))
            except ValueError as exc:
                reason = str(exc)
                self.refused[reason.split(":")[0]] = self.refused.get(reason.split(":")[0], 0) + 1
                keys.append((party_id, None, raw, reason))
                continue
            except EmptyField as exc:  # no fax goes out with a hole: this party fails, the others go on
                key = f"{exc.marker} empty, no default"
                self.refused[key] = self.refused.get(key, 0) + 1
                keys.append((party_id, None, raw, str(exc.for_party(code))))
                continue
            address = self.gateway.address(number)
            message_id = f"<campflow.{self.ctx.operation_code}.{self.ctx.step_code}.{party_id}.fax@{self.domain}>"
            built[party_id] = (Outgoing(address, self.message(address, code, name, number, message_id, values),
                                        message_filename(code, None)), message_id)
            keys.append((party_id, None, address, None))
        registered = outbox.register(keys)
        remember(session, [c.id for c in registered])
        return [Pending(c.id, *built[c.party_id]) for c in registered if c.mine and c.state == PENDING]

    def message(self, address: str, code: str, name: str, number: str, message_id: str,
                values: dict[str, Any]) -> bytes:
        ctx = self.ctx
        message = EmailMessage(policy=SMTP)
        message["From"] = self.from_header
        message["To"] = address
        message["Subject"] = f"{ctx.operation_code} {ctx.step_code} — {name} ({number})"
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = message_id
        message["X-Campflow-Operation"] = ctx.operation_code
        message["X-Campflow-Step"] = ctx.step_code
        message["X-Campflow-Party"] = code
        message.set_content(f"Fax for {name}, {number}: the attached document.\n")
        message.add_attachment(merge_document(self.plan.template, values), maintype=DOCX_TYPE[0],
                               subtype=DOCX_TYPE[1], filename=f"{ctx.operation_code}-{ctx.step_code}-{code}.docx")
        return message.as_bytes()



register(StepKind(name="faxing", run=run, automated=True, retries=2, retry_delay_seconds=10))
