"""`emailing` and `mass_emailing`: a message per recipient, personalised, sent through a channel.

One streamed SELECT yields a row per recipient (the party's own address, or each of its
contacts with one of the step's functions) with a value per field the templates read. Rows
go in batches: built (campflow.render.mail), claimed in the outbox, sent, settled (campflow.store.outbox), so a
message is never sent twice whatever crashes or retries. At the end the parties and contacts
take their messages' outcome in one UPDATE each.

`mass_emailing` is the same through its own channel (a relay for large volumes): by default
the block `mass-emailing`, where `emailing` uses `emailing`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, and_, func, null, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.types import Text

from blocks.channels import DEFAULT_CHANNELS, Channel, FileChannel, load_channel
from blocks.lookup import default_blocks_available
from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.delivery.senders import SENT, ChannelError, Delivery, FileSender, Outgoing, SmtpSender
from campflow.errors import CampflowError
from campflow.render.bodies import EmptyField, TemplateRefused
from campflow.render.headers import check_address, message_filename
from campflow.render.mail import MessageTemplate, Recipient, compile_message
from campflow.store.outbox import PENDING, OutboxWriter, remember, settle_statuses, start_run
from campflow.store.records import (
    CLAIMED,
    Claim,
    FieldColumn,
    RecordQuery,
    batches,
    claim_parties,
    question_ids,
    resolve_fields,
)
from campflow.store.sending import Pending, SendWindow
from models import Contact, Operation, OperationTargetContact, Party

BATCH = 500  # messages claimed, sent and settled together
FETCH_ROWS = 2_000  # rows per round trip of the server-side cursor
FIXED = 9  # party id, code, name, e-mail; contact id, code, first and last name, e-mail
log = logging.getLogger(__name__)


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Send the step's message to the recipients of its `to_process` parties."""
    return send_step(session, ctx)


def send_step(session: Session, ctx: StepContext, channel: Channel | None = None) -> StepOutcome:
    """The kind's run, optionally through a given channel block (scripts, benchmarks)."""
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    email = ctx.settings.get("email")
    if not isinstance(email, dict):
        raise CampflowError(f"{place}: a {ctx.kind} step needs `email:` with subject and body")
    try:
        message = compile_message(email, place)
    except TemplateRefused as exc:
        raise CampflowError(f"{place}: {exc}; nothing was sent") from None
    functions = contact_functions(email, place)
    columns = resolve_fields(session, message.references, place, "field",
                             "nothing was sent; fix the step's templates and apply it again")
    claim = claim_parties(session, ctx.step_id)
    if not claim:
        return StepOutcome(message="no party to process")
    note = ""
    if channel is None:
        channel, note = choose_channel(ctx, email, place)
    messages_dir = ctx.output_dir / "messages"
    sender = channel.open_sender(messages_dir) if isinstance(channel, FileChannel) else channel.open_sender()
    try:
        sender.check()
        attach = bool(session.scalar(select(Operation.attach_messages_to_events)
                                     .where(Operation.id == ctx.operation_id)))
        step_run = StepRun(session, ctx, message, columns, functions, sender, channel.sender,
                           messages_dir if attach and not sender.writes_files else None, claim)
        step_run.send_all()
    except ChannelError as exc:
        # the run's error adds what was sent and what waits, counted over all the step's attempts
        raise CampflowError(f"{place}: {exc}") from None
    finally:
        sender.close()
    counts = settle_statuses(session, ctx.step_id, ctx.operation_code, functions)
    return StepOutcome(processed=sum(counts.values()), statuses=counts, outputs=step_run.outputs(messages_dir),
                       message=step_run.summary(sender.label, note))


def check_email(step: Any, loc: tuple, checker: Any) -> None:
    """Apply-time checks of `email:`: fields of the subject and inline bodies, template files,
    attachments inside the spec's folder (`checker`: campflow.specs.checks.OperationCheck)."""
    email = step.email
    checker.check_fields_in(email.subject, "html", loc + ("email", "subject"))
    for name in ("html", "text"):
        if getattr(email, name) is not None:
            checker.check_fields_in(getattr(email, name), "html", loc + ("email", name))
    for name in ("body", "text_body"):
        if getattr(email, name) is not None:
            checker.check_template_file(getattr(email, name), loc + ("email", name), email.encoding)
    for i, attachment in enumerate(email.attachments):
        checker.allowed_file(attachment, loc + ("email", "attachments", i), "attachment")


def render_all(session: Session, ctx: StepContext, sender: str = "campflow <campflow@localhost>") -> list[Outgoing]:
    """Every message a run of the step would send now, built the same way; nothing claimed or sent.

    For previews and for benchmarks: a plain smtplib loop over these messages is the floor a
    run is compared with. Locks the step's `to_process` parties until the session ends.
    """
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    message = compile_message(ctx.settings["email"], place)
    functions = contact_functions(ctx.settings["email"], place)
    columns = resolve_fields(session, message.references, place)
    claim = claim_parties(session, ctx.step_id)
    if not claim:
        return []
    step_run = StepRun(session, ctx, message, columns, functions, FileSender(ctx.output_dir, "preview"), sender, None,
                       claim)
    messages: list[Outgoing] = []
    with step_run.recipients() as result:
        for rows in batches(result, BATCH):
            _, built = step_run.build(rows)
            messages += [outgoing for outgoing, _ in built.values()]
    return messages


def contact_functions(email: dict[str, Any], place: str) -> tuple[str, ...] | None:
    """The contact functions that receive the message (upper-case), or None: the party's own address."""
    contacts = email.get("contacts")
    if not contacts:
        return None
    functions = contacts.get("functions") if isinstance(contacts, dict) else None
    if set(contacts) - {"functions"} or not functions or not all(isinstance(f, str) and f.strip() for f in functions):
        raise CampflowError(f"{place}: `contacts:` must be {{functions: [DIRECTION, ACHATS]}}; got {contacts!r}")
    return tuple(dict.fromkeys(f.strip().upper() for f in functions))


def choose_channel(ctx: StepContext, email: dict[str, Any], place: str) -> tuple[Channel, str]:
    """The step's channel block; without one, the kind's default block, else `.eml` files."""
    named = email.get("channel")
    if named:
        found = load_channel(named)
        if found is None:
            raise CampflowError(f"{place}: no channel named {named!r} (an SMTP or file channel block); "
                                f"`campflow channels list` shows the saved ones, `campflow channels add-smtp "
                                f"{named} …` saves one")
        return found, ""
    default = DEFAULT_CHANNELS.get(ctx.kind, "emailing")
    found = load_channel(default) if default_blocks_available() else None
    if found is not None:
        return found, ""
    return FileChannel(), (f"no channel block '{default}': messages written as .eml files, not sent "
                           f"(`campflow channels add-smtp {default} …` to send them)")



def _logger() -> Any:
    if default_blocks_available():  # a run logger exists only in a run
        from prefect import get_run_logger

        return get_run_logger()
    return log


# --- the recipients --------------------------------------------------------------------------


class RecipientQuery(RecordQuery):
    """One row per recipient: the party's own address, or each of its contacts with a function.

    With functions, the contact fields (`T2.PRENOM`) are the recipient contact's; a party's
    contacts are restricted to those the operation targets when it targets any of them.
    A party without such a contact still has one row (no contact): it fails with the reason.
    """

    def __init__(self, ctx: StepContext, question_ids: dict[tuple[str, str], int],
                 functions: Sequence[str] | None) -> None:
        super().__init__(ctx, question_ids)
        self.functions = functions
        self.recipient: Any = None
        if functions:  # joined as "contact": the contact fields are the recipient's
            recipients = self._recipients(functions)
            self.recipient = self._outer("contact", recipients, recipients.c.party_id == Party.id)

    def _recipients(self, functions: Sequence[str]) -> Any:
        op = self.ctx.operation_id
        targeted = (select(OperationTargetContact.party_id).where(OperationTargetContact.operation_id == op)
                    .distinct().subquery("targeted_party"))
        chosen = OperationTargetContact.__table__.alias("chosen_contact")
        return (select(Contact)
                .join(CLAIMED, CLAIMED.c.party_id == Contact.party_id)
                .outerjoin(targeted, targeted.c.party_id == Contact.party_id)
                .outerjoin(chosen, and_(chosen.c.operation_id == op, chosen.c.contact_id == Contact.id))
                .where(func.upper(func.trim(Contact.function)).in_(list(functions)),
                       or_(targeted.c.party_id.is_(None), chosen.c.contact_id.is_not(None)))
                .subquery("recipient"))

    def select_recipients(self, columns: Sequence[FieldColumn]) -> Any:
        values = [self.value(ref).label(f"v{i}") for i, ref in enumerate(dict.fromkeys(c.ref for c in columns))]
        if self.recipient is not None:
            r = self.recipient.c
            fixed = [r.id, r.code, r.first_name, r.last_name, r.email]
            order = (Party.code, r.code)
        else:
            fixed = [null().cast(type_).label(name) for name, type_ in (
                ("contact_id", Integer), ("contact_code", Text), ("first_name", Text), ("last_name", Text),
                ("contact_email", Text))]
            order = (Party.code,)
        return (select(Party.id, Party.code, Party.name, Party.email, *fixed, *values)
                .select_from(self.from_).order_by(*order))


# --- one run ---------------------------------------------------------------------------------


class StepRun:
    """The batches of one step run: build, claim, send, settle."""

    def __init__(self, session: Session, ctx: StepContext, message: MessageTemplate,
                 columns: Sequence[FieldColumn], functions: Sequence[str] | None,
                 sender: SmtpSender | FileSender, sender_text: str, copies_dir: Path | None,
                 claim: Claim) -> None:
        self.session = session
        self.claim = claim
        self.ctx = ctx
        self.message = message
        self.columns = columns
        self.functions = functions
        self.sender = sender
        self.copies_dir = copies_dir  # where sent messages are kept for the events, when asked
        refs = list(dict.fromkeys(c.ref for c in columns))
        message.bind({c.text: FIXED + refs.index(c.ref) for c in columns}, sender=sender_text,
                     operation=ctx.operation_code, step=ctx.step_code)
        self.domain = sender_text.rpartition("@")[2].rstrip(">").strip() or "campflow.invalid"
        self.missing = f"no contact with function {', '.join(functions)}" if functions else ""
        self.outbox = OutboxWriter(ctx.operation_id, ctx.step_id, sender.label, ctx.resend_unknown, connect=False,
                                   check_lock=ctx.check_lock)
        self.refused_before_sending: dict[str, int] = {}
        self.empty_fields: dict[str, str] = {}  # a batch's EmptyField reasons → marker, counted by field
        self.files = 0

    def send_all(self) -> None:
        """Stream the recipients; a batch is built while the send window sends the one before."""
        start_run(self.session)
        result = self.recipients()
        self.outbox.open()
        window = SendWindow(self.outbox, self.sender, self.keep_copy, backlog=BATCH)
        try:
            with result:
                for rows in batches(result, BATCH, self.ctx.check_lock):
                    to_send, registered = self.register(*self.build(rows))
                    remember(self.session, registered)
                    window.put(to_send)
            window.finish()
            self.ctx.check_lock()  # the window claims nothing once the run lost its lock: fail the step
        finally:
            window.close()  # after an error: claim nothing more, settle the messages in hand
            self.outbox.close()
        if self.outbox.tally.unknown:
            _logger().warning("%s/%s: %d message(s) have an unknown fate (a run stopped while sending them): "
                              "not sent again; `campflow run %s --resend-unknown` sends them again",
                              self.ctx.operation_code, self.ctx.step_code, self.outbox.tally.unknown,
                              self.ctx.operation_code)

    def recipients(self) -> Any:
        """The streamed rows: one per recipient, fixed columns then the field values."""
        query = RecipientQuery(self.ctx, question_ids(self.session, self.columns, self.claim.orders), self.functions)
        statement = query.select_recipients(self.columns)
        return self.session.execute(statement.execution_options(yield_per=FETCH_ROWS, stream_results=True))

    def build(self, rows: Sequence[Any]) -> tuple[list[tuple], dict[tuple, tuple[Outgoing, str]]]:
        """One batch's outbox keys (with the reason when a message cannot be sent) and messages."""
        keys, built = [], {}
        for row in rows:
            party_id, party_code, party_name, party_email, contact_id, contact_code, first, last, contact_email = row[:FIXED]
            if self.functions and contact_id is None:
                raw, address, error = None, None, self.missing
            else:
                raw = contact_email if self.functions else party_email
                address, error = check_address(raw)
            if error is None:
                name = " ".join(filter(None, (first, last))) if self.functions else party_name
                message_id = (f"<campflow.{self.ctx.operation_code}.{self.ctx.step_code}.{party_id}."
                              f"{contact_id or 0}@{self.domain}>")
                try:
                    data = self.message.build(Recipient(address, name, party_code, message_id, row))
                except TemplateRefused as exc:
                    raise CampflowError(f"step {self.ctx.operation_code}/{self.ctx.step_code}: {exc}") from None
                except EmptyField as exc:  # a hole in this party's message: it fails, the others go on
                    error = str(exc)
                    self.empty_fields[error] = exc.marker
                except Exception as exc:  # a template failing on this party's values: this message fails
                    error = f"template error: {type(exc).__name__}: {exc}"
                else:
                    built[(party_id, contact_id)] = (
                        Outgoing(address, data, message_filename(party_code, contact_code)), message_id)
            keys.append((party_id, contact_id, raw.strip() if isinstance(raw, str) else None, error))
        return keys, built

    def register(self, keys: list[tuple], built: dict[tuple, tuple[Outgoing, str]]) -> tuple[list[Pending], list[int]]:
        """Register a built batch in the outbox: what to send, and every outbox id of the batch."""
        claimed = self.outbox.register(keys)
        errors = {(party_id, contact_id): error for party_id, contact_id, _, error in keys if error}
        for c in claimed:
            if c.mine and c.state == "failed":  # refused here, before any sending
                self.count_failure(errors[(c.party_id, c.contact_id)])
        self.empty_fields.clear()  # they were this batch's
        ids = [c.id for c in claimed]
        to_send = [Pending(c.id, *built[(c.party_id, c.contact_id)]) for c in claimed
                   if c.mine and c.state == PENDING]
        return to_send, ids

    def count_failure(self, error: str) -> None:
        if error == self.missing:
            key = "no contact with the step's functions"
        elif error in self.empty_fields:
            key = f"{self.empty_fields[error]} empty, no default"
        elif error.startswith("invalid address"):
            key = "invalid address"
        else:
            key = error.split(":", 1)[0]
        self.refused_before_sending[key] = self.refused_before_sending.get(key, 0) + 1

    def keep_copy(self, message: Outgoing, delivery: Delivery) -> None:
        """Write a sent message's .eml for the events, when the operation asks for it (before it is settled)."""
        if self.sender.writes_files:
            self.files += 1 if delivery.path else 0
            return
        if self.copies_dir is None or delivery.state != SENT:
            return
        self.copies_dir.mkdir(parents=True, exist_ok=True)
        path = self.copies_dir / message.filename
        path.write_bytes(message.data)
        delivery.path = str(path)
        self.files += 1

    def outputs(self, messages_dir: Path) -> tuple[Path, ...]:
        if not self.files:
            return ()
        folder = self.sender.folder if isinstance(self.sender, FileSender) else messages_dir
        return (folder,)

    def summary(self, label: str, note: str) -> str:
        tally = self.outbox.tally
        verb = "sent through" if not self.sender.writes_files else (
            "written to" if label.startswith("folder ") else "written through")
        parts = [f"{tally.sent} message{'s' if tally.sent != 1 else ''} {verb} {label}"]
        if tally.already_sent:
            parts.append(f"{tally.already_sent} already sent by an earlier run, not sent again")
        refused = dict(self.refused_before_sending)
        for reason, count in tally.reasons.items():
            refused[reason] = refused.get(reason, 0) + count
        if refused:
            parts.append(f"{sum(refused.values())} failed ({', '.join(f'{k}: {v}' for k, v in sorted(refused.items()))})")
        if tally.deferred:
            parts.append(f"{tally.deferred} deferred by the server, sent at the next run")
        if tally.unknown:
            parts.append(f"{tally.unknown} of unknown fate after an interrupted run, not sent again "
                         f"(campflow run {self.ctx.operation_code} --resend-unknown sends them)")
        if note:
            parts.append(note)
        return "; ".join(parts)




for _name in ("emailing", "mass_emailing"):
    # a server down fails the step task: Prefect retries it, then it fails; nothing is sent twice
    register(StepKind(name=_name, run=run, automated=True, retries=2, retry_delay_seconds=10,
                      settings={"email": check_email}))
