"""Local approval of a step's target by local entities (SPEC section 9, by_target_approval).

A `local_approval` step splits its parties with a distribution (a party field's value → a
local entity, with an optional limit), records each entity's list (`local_approval_party`)
and its approval (`local_approval`: pending, approved, expired), then waits: each entity
removes parties, or single contacts of the parties it keeps (`local_approval_contact`), and
approves its list — by the CLI, a returned spreadsheet or the Prefect UI
form, all through `campflow.store.approval_lists` — before the deadline. Later runs of the step move
approved parties on and drop the rest at the deadline (`settle`). Everything on parties is
set-based; only entities (a handful per step) are looped over.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Integer, Text, cast, column, func, insert, select, table, text
from sqlalchemy.orm import Session

from campflow.core.kinds import StepContext
from campflow.core.settings import LocalApprovalSettings
from campflow.errors import CampflowError, NotFound
from campflow.store.operations import find_operation
from campflow.store.records import CLAIMED, RecordQuery, question_ids, resolve_fields
from models import Party

# The contacts a list shows for each of its parties: those the operation targets when it
# targets any of the party's contacts, else all of them — the ones its e-mail and phoning
# steps would reach. Parameters :step and :op.
LISTED_CONTACTS = """
    select c.id, c.party_id, c.code from contact c
    join local_approval_party lp on lp.step_id = :step and lp.party_id = c.party_id
    where exists (select from operation_target_contact t where t.operation_id = :op and t.contact_id = c.id)
       or not exists (select from operation_target_contact t where t.operation_id = :op and t.party_id = c.party_id)"""

VALUES = table("local_value", column("party_id", Integer), column("code", Text), column("value", Text),
               schema="pg_temp")


def clock() -> dt.datetime:
    """Now; the one place the kind, the CLI and the flow read the time (tests move it)."""
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class ApprovalStep:
    """A local_approval step with its settings read (the deadline aware, in the operation's zone)."""

    operation_id: int
    operation_code: str
    operation_label: str
    step_id: int
    step_code: str
    step_label: str
    step_position: int
    timezone: str
    distribution: str
    deadline: dt.datetime
    remind_before_hours: tuple[int, ...]
    report: bool

    @property
    def place(self) -> str:
        return f"{self.operation_code}/{self.step_code}"

    def local(self, moment: dt.datetime) -> str:
        """A moment as the entities read it: in the operation's timezone, with the zone named."""
        return f"{moment.astimezone(zoneinfo.ZoneInfo(self.timezone)):%Y-%m-%d %H:%M} ({self.timezone})"


def load_step(session: Session, step_id: int) -> ApprovalStep:
    """The step's local_approval settings, checked; a clear error when they are missing or bad."""
    row = session.execute(text("""
        select o.id, o.code, o.label, s.code, s.label, s.position, o.timezone, s.settings -> 'local_approval', s.kind
        from step s join operation o on o.id = s.operation_id where s.id = :step"""), {"step": step_id}).one()
    op_id, op_code, op_label, code, label, position, zone, raw, kind = row
    place = f"step {op_code}/{code}"
    if kind != "local_approval":
        raise CampflowError(f"{place} is a {kind} step, not a local_approval step; name the local_approval step")
    try:
        settings = LocalApprovalSettings.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise CampflowError(f"{place}: local_approval settings are wrong ({problems}); fix the spec and "
                            "apply it again") from None
    deadline = settings.deadline
    if deadline.tzinfo is None:  # written without offset: the operation's timezone
        deadline = deadline.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    return ApprovalStep(op_id, op_code, op_label, step_id, code, label, position, zone, settings.distribution,
                        deadline, tuple(sorted(set(settings.remind_before_hours), reverse=True)), settings.report)


def find_step(session: Session, operation: str, step: str) -> ApprovalStep:
    """The operation's local_approval step (not a report one) by codes, for the CLI and the flow."""
    from campflow.store.answers import find_action_step

    found = find_action_step(session, find_operation(session, operation), step)
    approval = load_step(session, found.id)
    if approval.report:
        raise CampflowError(f"step {approval.place} only reports to local entities (report: true); "
                            "there is no list to approve in it")
    return approval


# --- splitting the parties -------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    entities: int
    assigned: int
    excluded: int


def split_claimed(session: Session, ctx: StepContext, step: ApprovalStep, *, limits: bool = True) -> None:
    """Fill `pg_temp.local_split` (party_id, entity_id, matched, reason) for the claimed parties.

    A party goes to the entity of the rule whose value its field equals (trimmed, any case;
    the rule listed first when two match). A rule's limit keeps its first parties by party
    code: `limit_count` of them, or `limit_percent` of the parties having that value (rounded
    down, "at most"). `entity_id` is null for the others, `reason` says why.
    """
    distribution_id, field = _distribution(session, step)
    [field_column] = resolve_fields(session, [field], f"distribution {step.distribution} field", "field",
                                    "fix the distribution's field and apply it again")
    query = RecordQuery(ctx, question_ids(session, [field_column], None))  # a party field: no ORDER.FIELD
    value = cast(query.value(field_column.ref), Text)
    for statement in ("drop table if exists pg_temp.local_value", "drop table if exists pg_temp.local_split",
                      "create temporary table local_value (party_id integer primary key, code text, value text) "
                      "on commit drop",
                      "create temporary table local_split (party_id integer primary key, entity_id integer, "
                      "matched boolean not null, reason text) on commit drop"):
        session.execute(text(statement))
    session.execute(insert(VALUES).from_select(
        ["party_id", "code", "value"],
        select(CLAIMED.c.party_id, Party.code, func.btrim(value)).select_from(query.from_)))
    session.execute(text("""
        insert into pg_temp.local_split (party_id, entity_id, matched, reason)
        select v.party_id, case when m.kept then m.entity_id end, m.party_id is not null,
               case when m.party_id is null
                        then 'no local entity for ' || :field || coalesce('=' || nullif(v.value, ''), ' (empty)')
                    when not m.kept and m.limit_count is not null
                        then 'beyond ' || m.entity_code || '''s limit of ' || m.limit_count
                    when not m.kept
                        then 'beyond ' || m.entity_code || '''s limit of ' || m.limit_percent || '% of the '
                             || m.having_value || ' parties with ' || :field || '=' || v.value
               end
        from pg_temp.local_value v
        left join (
            select x.*, (not :limits
                         or ((x.limit_count is null or x.rank <= x.limit_count)
                             and (x.limit_percent is null
                                  or x.rank <= floor(x.having_value * x.limit_percent / 100.0)))) as kept
            from (select y.*, row_number() over (partition by y.rule_id order by y.code) as rank,
                         count(*) over (partition by y.rule_id) as having_value
                  from (select distinct on (v2.party_id) v2.party_id, v2.code, r.id as rule_id, r.entity_id,
                               e.code as entity_code, r.limit_count, r.limit_percent
                        from pg_temp.local_value v2
                        join distribution_rule r on r.distribution_id = :distribution
                                                and lower(btrim(r.value)) = lower(v2.value)
                        join entity e on e.id = r.entity_id
                        order by v2.party_id, r.position) y) x
        ) m on m.party_id = v.party_id"""), {"field": field, "distribution": distribution_id, "limits": limits})


def _distribution(session: Session, step: ApprovalStep) -> tuple[int, str]:
    found = session.execute(text("select id, field from distribution where code = :code"),
                            {"code": step.distribution}).one_or_none()
    if found is None:
        raise NotFound(f"step {step.place}: no distribution {step.distribution}; apply its spec "
                       "(kind: Distribution) or fix local_approval.distribution")
    return found[0], found[1]


def check_covered(session: Session, step: ApprovalStep) -> None:
    """Refuse a distribution whose values cover none of the parties (nothing is changed)."""
    matched, total = session.execute(text(
        "select count(*) filter (where matched), count(*) from pg_temp.local_split")).one()
    if matched or not total:
        return
    field = session.scalar(text("select field from distribution where code = :code"), {"code": step.distribution})
    rules = [r for (r,) in session.execute(text(
        "select r.value from distribution_rule r join distribution d on d.id = r.distribution_id "
        "where d.code = :code order by r.position limit 8"), {"code": step.distribution})]
    seen = ", ".join(f"{v or '(empty)'} ({n})" for v, n in session.execute(text(
        "select value, count(*) from pg_temp.local_value group by value order by count(*) desc, value limit 5")))
    raise CampflowError(
        f"step {step.place}: distribution {step.distribution} covers none of the {total} parties: their "
        f"{field} is {seen}, its values are {', '.join(rules)}; fix the distribution's values or field "
        "(or the step's distribution) and apply it again — nothing was changed")


def assign_split(session: Session, step: ApprovalStep) -> Split:
    """Record the entities' lists and approvals (pending); exclude the parties left out."""
    assigned = session.execute(text("""
        insert into local_approval_party (step_id, party_id, entity_id)
        select :step, party_id, entity_id from pg_temp.local_split where entity_id is not null
        order by party_id on conflict do nothing"""), {"step": step.step_id}).rowcount
    entities = session.execute(text("""
        insert into local_approval (step_id, entity_id, status, deadline)
        select distinct :step, entity_id, 'pending', cast(:deadline as timestamptz)
        from pg_temp.local_split where entity_id is not null
        on conflict (step_id, entity_id) do nothing"""), {"step": step.step_id, "deadline": step.deadline}).rowcount
    # Parties no rule covers, or beyond a rule's limit, reach no entity: they are `excluded`
    # (final, no route takes them on), not `not_processed_continue`, because the point of the
    # step is that no party is contacted without its local entity's approval. The reason says
    # which case it was.
    excluded = exclude(session, step.step_id, "select party_id, reason from pg_temp.local_split "
                                              "where entity_id is null")
    return Split(entities, assigned, excluded)


def exclude(session: Session, step_id: int, rows_sql: str, params: dict[str, Any] | None = None) -> int:
    """Set `excluded` with a reason on the step's waiting parties listed by `rows_sql` (party_id, reason)."""
    return session.execute(text(f"""
        update step_target st set status = 'excluded', reason = x.reason, processed_at = now()
        from ({rows_sql}) x
        where st.step_id = :step and st.party_id = x.party_id and st.status = 'to_process'"""),
        {"step": step_id, **(params or {})}).rowcount


# --- later runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """What a later run decided: parties moved on or dropped, and the lists still waiting."""

    late: int = 0  # arrived after the lists were sent
    approved: int = 0  # moved on (ok_continue)
    removed: int = 0  # removed by their entity (excluded)
    expired_entities: tuple[str, ...] = ()
    dropped: int = 0  # not approved before the deadline (excluded)
    contacts_removed: int = 0  # contacts taken off parties that moved on


def settle(session: Session, step: ApprovalStep, now: dt.datetime) -> Settled:
    """Move approved lists on, expire the lists past their deadline and drop their parties.

    Parties that reach the step after its lists were sent are excluded: they were never
    shown to an entity, and a list already approved cannot grow behind its entity's back.
    """
    session.execute(text("select id from local_approval where step_id = :step order by id for update"),
                    {"step": step.step_id})
    late = exclude(session, step.step_id, """
        select c.party_id, 'arrived after the local lists were sent on '
               || coalesce(to_char(timezone(:zone, (select min(sent_at) from local_approval
                                                     where step_id = :step)), 'YYYY-MM-DD HH24:MI'), '?')
               || '; it was never approved locally' as reason
        from pg_temp.claimed_party c
        where not exists (select 1 from local_approval_party lap where lap.step_id = :step
                                                                   and lap.party_id = c.party_id)""",
                   {"zone": step.timezone})
    expired = tuple(code for (code,) in session.execute(text("""
        update local_approval la set status = 'expired' from entity e
        where la.step_id = :step and la.status = 'pending' and la.deadline <= :now and e.id = la.entity_id
        returning e.code"""), {"step": step.step_id, "now": now}))
    contacts = drop_removed_contacts(session, step)
    moved = dict(session.execute(text("""
        with decided as (
            update step_target st
            set status = case when lap.removed then 'excluded' else 'ok_continue' end,
                reason = case when lap.removed then 'removed by ' || e.code || ' (' || coalesce(lap.removed_by, '?')
                                                    || ')' end,
                processed_at = now()
            from local_approval_party lap
            join local_approval la on la.step_id = lap.step_id and la.entity_id = lap.entity_id
            join entity e on e.id = la.entity_id
            where st.step_id = :step and lap.step_id = :step and lap.party_id = st.party_id
              and la.status = 'approved' and st.status = 'to_process'
            returning st.status)
        select status, count(*) from decided group by status"""), {"step": step.step_id}).all())
    dropped = exclude(session, step.step_id, """
        select lap.party_id, 'not approved by ' || e.code || ' before '
               || to_char(timezone(:zone, la.deadline), 'YYYY-MM-DD HH24:MI') || ' (' || :zone || ')' as reason
        from local_approval_party lap
        join local_approval la on la.step_id = lap.step_id and la.entity_id = lap.entity_id
        join entity e on e.id = la.entity_id
        where lap.step_id = :step and la.status = 'expired'""", {"zone": step.timezone})
    return Settled(late, moved.get("ok_continue", 0), moved.get("excluded", 0), expired, dropped, contacts)


def drop_removed_contacts(session: Session, step: ApprovalStep) -> int:
    """Take the contacts removed by their entity off the operation's target, for the kept parties
    of approved lists about to move on: each such party's targeted contacts become its listed ones
    but those, so the later steps (routing copies the targeted contacts) reach only the others."""
    params = {"step": step.step_id, "op": step.operation_id}
    session.execute(text("drop table if exists pg_temp.local_dropped"))
    dropped = session.execute(text("""
        create temporary table local_dropped on commit drop as
        select lac.party_id, lac.contact_id, 'removed by ' || e.code || ' (' || lac.removed_by || ')' as reason
        from local_approval_contact lac
        join local_approval_party lap on lap.step_id = lac.step_id and lap.party_id = lac.party_id and not lap.removed
        join local_approval la on la.step_id = lap.step_id and la.entity_id = lap.entity_id and la.status = 'approved'
        join entity e on e.id = la.entity_id
        join step_target st on st.step_id = lap.step_id and st.party_id = lap.party_id and st.status = 'to_process'
        where lac.step_id = :step"""), params).rowcount
    session.execute(text(f"""
        insert into operation_target_contact (operation_id, contact_id, party_id)
        select :op, l.id, l.party_id from ({LISTED_CONTACTS}) l
        where l.party_id in (select party_id from pg_temp.local_dropped)
          and l.id not in (select contact_id from pg_temp.local_dropped)
        order by l.id on conflict do nothing"""), params)
    session.execute(text("""
        delete from operation_target_contact otc using pg_temp.local_dropped d
        where otc.operation_id = :op and otc.contact_id = d.contact_id"""), params)
    session.execute(text("""
        update step_target_contact stc set status = 'excluded', reason = d.reason, processed_at = now()
        from pg_temp.local_dropped d where stc.step_id = :step and stc.contact_id = d.contact_id"""), params)
    session.execute(text("drop table pg_temp.local_dropped"))
    return dropped


@dataclass(frozen=True)
class EntityList:
    """One entity's list in a step, as mails and the CLI show it."""

    approval_id: int
    entity_id: int
    entity_code: str
    entity_label: str
    emails: tuple[str, ...]
    operators: tuple[str, ...]
    status: str
    deadline: dt.datetime
    sent_at: dt.datetime | None
    reminders_sent: int
    approved_by: str | None
    approved_at: dt.datetime | None
    parties: int
    removed: int
    waiting: int  # parties still to_process in the step
    contacts_removed: int  # contacts taken off the parties kept

    @property
    def kept(self) -> int:
        return self.parties - self.removed


_LISTS_SQL = """
    select la.id, e.id, e.code, e.label, e.emails, e.operators, la.status, la.deadline, la.sent_at,
           la.reminders_sent, la.approved_by, la.approved_at,
           count(lap.party_id), count(lap.party_id) filter (where lap.removed),
           count(lap.party_id) filter (where st.status = 'to_process'),
           (select count(*) from local_approval_contact lac
            join local_approval_party kept on kept.step_id = lac.step_id and kept.party_id = lac.party_id
            where lac.step_id = la.step_id and kept.entity_id = la.entity_id and not kept.removed)
    from local_approval la
    join entity e on e.id = la.entity_id
    left join local_approval_party lap on lap.step_id = la.step_id and lap.entity_id = la.entity_id
    left join step_target st on st.step_id = lap.step_id and st.party_id = lap.party_id
    where la.step_id = :step {where}
    group by la.id, e.id order by e.code"""


def entity_lists(session: Session, step_id: int, entity_id: int | None = None) -> list[EntityList]:
    """The step's lists (one per entity), or only that entity's."""
    where = "and la.entity_id = :entity" if entity_id is not None else ""
    return [EntityList(*row[:4], tuple(row[4] or ()), tuple(row[5] or ()), *row[6:]) for row in session.execute(
        text(_LISTS_SQL.format(where=where)), {"step": step_id, "entity": entity_id})]


def reminders_due(entity: EntityList, hours: tuple[int, ...], now: dt.datetime) -> int:
    """How many of the reminders (hours before the deadline, largest first) are due by now."""
    return sum(1 for h in hours if now >= entity.deadline - dt.timedelta(hours=h))


def mark_sent(session: Session, approval_id: int, *, reminders: int | None = None) -> None:
    """Record a list sent (first time) or the number of reminders now sent."""
    if reminders is None:
        session.execute(text("update local_approval set sent_at = coalesce(sent_at, now()) where id = :id"),
                        {"id": approval_id})
    else:
        session.execute(text("update local_approval set reminders_sent = greatest(reminders_sent, :n) "
                             "where id = :id"), {"id": approval_id, "n": reminders})
