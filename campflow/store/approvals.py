"""Local approval of a step's target by local entities (SPEC section 9, by_target_approval).

A `local_approval` step splits its parties with a distribution (a party field's value → a
local entity, with an optional limit), records each entity's list (`local_approval_party`)
and its approval (`local_approval`: pending, approved, expired), then waits: each entity
removes parties, or single contacts of the parties it keeps (`local_approval_contact`), and
approves its list — by the CLI, a returned spreadsheet or the Prefect UI
form, all through the functions below — before the deadline. Later runs of the step move
approved parties on and drop the rest at the deadline (`settle`). Everything on parties is
set-based; only entities (a handful per step) are looped over.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Integer, Text, cast, column, func, insert, select, table, text
from sqlalchemy.orm import Session

from campflow.core.kinds import StepContext
from campflow.core.settings import LocalApprovalSettings
from campflow.errors import CampflowError, ImportRejected, NotFound, Problem
from campflow.render.sheet_files import open_sheet
from campflow.store.identity import Actor
from campflow.store.operations import find_operation
from campflow.store.records import CLAIMED, RecordQuery, question_ids, resolve_fields
from models import Party

# The KEEP column of a list: what a cell may say. A blank cell removes the party too, so a
# store may simply blank out the rows it does not want.
KEEP_WORDS = ("yes", "oui", "y", "o", "1", "x", "true", "vrai", "keep", "garder")
REMOVE_WORDS = ("no", "non", "n", "0", "false", "faux", "remove", "removed", "supprimer", "retirer")
LIST_COLUMNS = {"party": ["TIERS", "PARTY", "CODE"], "contact": ["CONTACT"], "keep": ["KEEP", "GARDER"]}

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


# --- what entities do: remove, restore, approve, import --------------------------------------


@dataclass(frozen=True)
class ListChange:
    """The outcome of an entity's action on its list."""

    operation: str
    step: str
    entity: str
    changed: tuple[str, ...] = ()  # party codes (PARTY/CONTACT for a contact) removed or restored
    approved: bool = False
    parties: int = 0
    removed: int = 0
    contacts_removed: int = 0
    emptied: tuple[str, ...] = ()  # parties removed because none of their contacts was left

    @property
    def kept(self) -> int:
        return self.parties - self.removed


def _lock_lists(session: Session, step: ApprovalStep) -> dict[int, EntityList]:
    """The step's lists by entity id, their approval rows locked against a concurrent run."""
    session.execute(text("select id from local_approval where step_id = :step order by id for update"),
                    {"step": step.step_id})
    return {e.entity_id: e for e in entity_lists(session, step.step_id)}


def entity_id_of(session: Session, code: str) -> int:
    found = session.scalar(text("select id from entity where code = :code"), {"code": code})
    if found is None:
        raise NotFound(f"no entity {code}; see `campflow entities list`")
    return found


def chosen_list(session: Session, step: ApprovalStep, actor: Actor, entity: str | None) -> EntityList:
    """The list an actor acts on: `entity`'s, else its own; refused when not its to touch."""
    lists = _lock_lists(session, step)
    if entity is None and actor.central:
        codes = ", ".join(e.entity_code for e in lists.values()) or "none yet"
        raise CampflowError(f"{actor.login} acts for the central entity {actor.entity_code}: name the local "
                            f"entity whose list of {step.place} this is with --entity (lists: {codes})")
    entity_id = entity_id_of(session, entity) if entity else actor.entity_id
    shown = entity or actor.entity_code
    actor.require(entity_id, f"{shown}'s list in {step.place}")
    if entity_id not in lists:
        raise NotFound(f"{shown} has no list in {step.place}"
                       + ("" if lists else " (the step has not sent its lists yet: run the operation first)"))
    return lists[entity_id]


def require_open(step: ApprovalStep, found: EntityList, now: dt.datetime) -> None:
    """Refuse changes to a list already approved, expired, or past its deadline."""
    if found.status == "approved":
        raise CampflowError(f"{found.entity_code}'s list in {step.place} was already approved by "
                            f"{found.approved_by} on {step.local(found.approved_at or now)}; it can no longer change")
    if found.status == "expired" or now >= found.deadline:
        raise CampflowError(f"the deadline of {found.entity_code}'s list in {step.place} was "
                            f"{step.local(found.deadline)}: it has passed, so the list can no longer change; "
                            "its parties are dropped")


def change_parties(session: Session, step: ApprovalStep, actor: Actor, codes: list[str], *, removed: bool,
                   entity: str | None = None, now: dt.datetime | None = None) -> list[ListChange]:
    """Remove (or restore) parties, or single contacts written PARTY/CONTACT, from their entity's
    list; all refused if one may not be.

    Removing a party's last listed contact removes the party; restoring a contact restores its
    party; restoring a party puts back all its contacts.
    """
    now = now or clock()
    tokens = list(dict.fromkeys(c.strip() for c in codes if c and c.strip()))
    if not tokens:
        raise CampflowError("name at least one party code (TIERS), or PARTY/CONTACT for one of its contacts")
    lists = _lock_lists(session, step)
    only = entity_id_of(session, entity) if entity else (None if actor.central else actor.entity_id)
    if only is not None:
        actor.require(only, f"{entity or actor.entity_code}'s list in {step.place}")
    wanted = sorted(set(tokens) | {t.rsplit("/", 1)[0] for t in tokens if "/" in t})
    members = {code: (party_id, entity_id) for code, party_id, entity_id in session.execute(text("""
        select p.code, lap.party_id, lap.entity_id from local_approval_party lap join party p on p.id = lap.party_id
        where lap.step_id = :step and p.code = any(cast(:codes as text[]))"""),
        {"step": step.step_id, "codes": wanted}) if only is None or entity_id == only}
    listed = listed_contacts(session, step, [pid for pid, _ in members.values()])
    parties, contacts, missing, strangers = [], {}, [], []
    entity_of: dict[str, int] = {}  # token → the entity whose list it changes
    for token in tokens:
        party_code, _, contact_code = token.rpartition("/") if token not in members else (token, "", "")
        if party_code not in members:
            missing.append(token)
            continue
        party_id, entity_of[token] = members[party_code]
        if not contact_code:
            parties.append(party_id)
        elif contact_code not in listed.get(party_id, {}):
            strangers.append((token, party_code))
        else:
            contacts[token] = (party_id, listed[party_id][contact_code])
    whose = f"{entity or actor.entity_code}'s list" if only is not None else "any list"
    problems = []
    if missing:
        problems.append(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in {whose} of {step.place}")
    for token, party_code in strangers:
        known = ", ".join(sorted(listed.get(members[party_code][0], {}))) or "none"
        problems.append(f"{token}: {party_code} has no such contact in the list (its contacts: {known})")
    if problems:
        raise NotFound("; ".join(problems) + f"; see `campflow approvals show {step.operation_code} "
                       f"{step.step_code}`")
    touched = sorted(set(entity_of.values()))
    for entity_id in touched:
        require_open(step, lists[entity_id], now)
    params = {"step": step.step_id, "login": actor.login, "parties": parties,
              "contacts": [cid for _, cid in contacts.values()], "owners": [pid for pid, _ in contacts.values()]}
    emptied: list[int] = []
    if removed:
        session.execute(text("""
            update local_approval_party set removed = true, removed_by = :login
            where step_id = :step and party_id = any(cast(:parties as int[]))"""), params)
        session.execute(text("""
            insert into local_approval_contact (step_id, contact_id, party_id, removed_by)
            select :step, c, p, :login from unnest(cast(:contacts as int[]), cast(:owners as int[])) x(c, p)
            on conflict do nothing"""), params)
        emptied = [pid for (pid,) in session.execute(text(f"""
            update local_approval_party lap set removed = true, removed_by = :login
            where lap.step_id = :step and lap.party_id = any(cast(:owners as int[])) and not lap.removed
              and not exists (select from ({LISTED_CONTACTS}) l where l.party_id = lap.party_id
                              and not exists (select from local_approval_contact x
                                              where x.step_id = :step and x.contact_id = l.id))
            returning lap.party_id"""), params | {"op": step.operation_id})]
    else:
        session.execute(text("""
            delete from local_approval_contact
            where step_id = :step and (party_id = any(cast(:parties as int[])) or contact_id = any(cast(:contacts as int[])))
            """), params)
        session.execute(text("""
            update local_approval_party set removed = false, removed_by = null
            where step_id = :step and (party_id = any(cast(:parties as int[])) or party_id = any(cast(:owners as int[])))
            """), params)
    emptied_codes = [code for code, (party_id, _) in members.items() if party_id in emptied]
    changes = []
    for entity_id in touched:
        after = entity_lists(session, step.step_id, entity_id)[0]
        changes.append(ListChange(step.operation_code, step.step_code, after.entity_code,
                                  tuple(sorted(t for t, e in entity_of.items() if e == entity_id)),
                                  parties=after.parties, removed=after.removed,
                                  contacts_removed=after.contacts_removed,
                                  emptied=tuple(sorted(c for c in emptied_codes if members[c][1] == entity_id))))
    return changes


def listed_contacts(session: Session, step: ApprovalStep, party_ids: list[int]) -> dict[int, dict[str, int]]:
    """The listed contacts of those parties: party id → contact code → contact id."""
    found: dict[int, dict[str, int]] = {}
    for contact_id, party_id, code in session.execute(text(f"""
            select l.id, l.party_id, l.code from ({LISTED_CONTACTS}) l
            where l.party_id = any(cast(:parties as int[]))"""),
            {"step": step.step_id, "op": step.operation_id, "parties": party_ids}):
        found.setdefault(party_id, {})[code] = contact_id
    return found


def approve(session: Session, step: ApprovalStep, actor: Actor, entity: str | None = None,
            now: dt.datetime | None = None) -> ListChange:
    """Approve an entity's list as it stands; its kept parties move on at the step's next run."""
    now = now or clock()
    found = chosen_list(session, step, actor, entity)
    require_open(step, found, now)
    session.execute(text("update local_approval set status = 'approved', approved_by = :login, approved_at = :now "
                         "where id = :id"), {"login": actor.login, "now": now, "id": found.approval_id})
    return ListChange(step.operation_code, step.step_code, found.entity_code, approved=True,
                      parties=found.parties, removed=found.removed, contacts_removed=found.contacts_removed)


def import_list(session: Session, step: ApprovalStep, actor: Actor, path: Path, entity: str | None = None,
                now: dt.datetime | None = None) -> ListChange:
    """Read a returned list, then approve it; all or nothing.

    The list has a row per listed contact (a party without contacts has one row, CONTACT
    blank). KEEP says which contacts stay; a party whose rows all say no is removed. A sheet
    without the CONTACT column (or a party's single row with CONTACT blank) decides per party.
    """
    now = now or clock()
    found = chosen_list(session, step, actor, entity)
    require_open(step, found, now)
    codes = dict(session.execute(text("""
        select p.code, lap.party_id from local_approval_party lap join party p on p.id = lap.party_id
        where lap.step_id = :step and lap.entity_id = :entity"""),
        {"step": step.step_id, "entity": found.entity_id}).all())
    listed = listed_contacts(session, step, list(codes.values()))
    answers: dict[str, dict[str, bool]] = {}  # party code → contact code ("" for the party) → keep
    seen: dict[str, set[str]] = {}  # the rows met, good or bad: party code → contact codes
    problems: list[Problem] = []
    with open_sheet(path, aliases=LIST_COLUMNS, required=("party", "keep"), keep_other=True) as sheet:
        for number, row in sheet.rows():
            place = f"{path.name} row {number}"
            code, keep = row.get("party"), (row.get("keep") or "").strip().lower()
            contact = (row.get("contact") or "").strip()
            mine = seen.get(code or "", set())
            if not code:
                problems.append(Problem(place, "TIERS is empty; give the party's code as in the list sent"))
            elif code not in codes:
                problems.append(Problem(place, f"{code} is not in {found.entity_code}'s list of {step.place}; "
                                               "remove the row (only the list sent can come back)"))
            elif contact and contact not in listed.get(codes[code], {}):
                seen.setdefault(code, set())  # its other rows are still expected
                known = ", ".join(sorted(listed.get(codes[code], {}))) or "none"
                problems.append(Problem(place, f"{code}/{contact}: {code} has no such contact in the list (its "
                                               f"contacts: {known}); keep the CONTACT codes as sent"))
            elif contact in mine or (mine and (contact == "" or "" in mine)):
                problems.append(Problem(place, f"{code}{'/' + contact if contact else ''} is listed twice; "
                                               "keep one row per contact (or one per party)"))
            else:
                seen.setdefault(code, set()).add(contact)
                if keep and keep not in KEEP_WORDS and keep not in REMOVE_WORDS:
                    problems.append(Problem(place, f"KEEP must say yes (keep) or no (remove) — also "
                                                   f"{', '.join(KEEP_WORDS[1:])} / {', '.join(REMOVE_WORDS[1:])}, "
                                                   f"or blank to remove; got {row.get('keep')!r}"))
                else:
                    answers.setdefault(code, {})[contact] = keep in KEEP_WORDS
    absent = sorted(set(codes) - set(seen))
    absent += sorted(f"{code}/{c}" for code, given in seen.items() if "" not in given
                     for c in set(listed.get(codes[code], {})) - given)
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        problems.append(Problem(path.name, f"the rows of {shown} are missing; a returned list keeps every row "
                                           "(write no in KEEP to remove a party or a contact)"))
    if problems:
        raise ImportRejected(problems, f"nothing was changed and {found.entity_code}'s list is not approved; "
                                       "fix the file and import it again")
    removed_parties = {code for code, given in answers.items() if not any(given.values())}
    removed_contacts = {(codes[code], listed[codes[code]][c]): f"{code}/{c}" for code, given in answers.items()
                        if code not in removed_parties for c, keep in given.items() if c and not keep}
    session.execute(text("""
        update local_approval_party lap set removed = d.removed,
               removed_by = case when d.removed then coalesce(case when lap.removed then lap.removed_by end, :login) end
        from unnest(cast(:ids as int[]), cast(:removed as boolean[])) d(party_id, removed)
        where lap.step_id = :step and lap.party_id = d.party_id"""),
        {"ids": list(codes.values()), "removed": [c in removed_parties for c in codes], "login": actor.login,
         "step": step.step_id})
    session.execute(text("""
        delete from local_approval_contact lac
        where lac.step_id = :step and lac.party_id = any(cast(:parties as int[]))
          and lac.contact_id <> all(cast(:contacts as int[]))"""),
        {"step": step.step_id, "parties": list(codes.values()), "contacts": [c for _, c in removed_contacts]})
    session.execute(text("""
        insert into local_approval_contact (step_id, contact_id, party_id, removed_by)
        select :step, c, p, :login from unnest(cast(:contacts as int[]), cast(:owners as int[])) x(c, p)
        on conflict do nothing"""),
        {"step": step.step_id, "login": actor.login, "contacts": [c for _, c in removed_contacts],
         "owners": [p for p, _ in removed_contacts]})
    change = approve(session, step, actor, found.entity_code, now)
    return ListChange(change.operation, change.step, change.entity,
                      tuple(sorted(removed_parties) + sorted(removed_contacts.values())), True, len(codes),
                      len(removed_parties), len(removed_contacts))


def list_rows(session: Session, step: ApprovalStep, actor: Actor | None, entity: str | None = None) -> list[tuple]:
    """The parties of the lists an actor may see (None: the system, all): entity, code, name, city,
    removed, removed_by, status in the step, and the listed contacts as (code, name, function,
    removed) lists."""
    entity_id = entity_id_of(session, entity) if entity else (None if actor is None or actor.central
                                                               else actor.entity_id)
    if entity_id is not None and actor is not None:
        actor.require(entity_id, f"{entity or actor.entity_code}'s list in {step.place}")
    where = "and lap.entity_id = :entity" if entity_id is not None else ""
    return [tuple(r) for r in session.execute(text(f"""
        select e.code, p.code, p.name, p.city, lap.removed, lap.removed_by, st.status,
               (select coalesce(jsonb_agg(jsonb_build_array(
                           l.code, nullif(concat_ws(' ', c.first_name, c.last_name), ''), c.function,
                           x.contact_id is not null) order by l.code), '[]')
                from ({LISTED_CONTACTS}) l join contact c on c.id = l.id
                left join local_approval_contact x on x.step_id = :step and x.contact_id = l.id
                where l.party_id = lap.party_id)
        from local_approval_party lap join party p on p.id = lap.party_id join entity e on e.id = lap.entity_id
        left join step_target st on st.step_id = lap.step_id and st.party_id = lap.party_id
        where lap.step_id = :step {where} order by e.code, p.code"""),
        {"step": step.step_id, "entity": entity_id, "op": step.operation_id})]


def operation_lists(session: Session, operation: str, actor: Actor, step: str | None = None
                    ) -> list[tuple[ApprovalStep, EntityList]]:
    """Every list of the operation's local_approval steps (or of one) that the actor may see."""
    op = find_operation(session, operation)
    if step is not None:
        steps = [find_step(session, operation, step)]
    else:
        ids = session.scalars(text("select id from step where operation_id = :op and kind = 'local_approval' "
                                   "order by position"), {"op": op.id})
        steps = [s for s in (load_step(session, i) for i in ids) if not s.report]
    return [(s, e) for s in steps for e in entity_lists(session, s.step_id)
            if actor.may_act_for(e.entity_id)]
