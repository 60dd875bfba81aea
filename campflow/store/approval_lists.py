"""What local entities do with their lists: remove and restore parties or contacts, approve, import a
returned spreadsheet, list them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError, ImportRejected, NotFound, Problem
from campflow.render.sheet_files import open_sheet
from campflow.store import approvals
from campflow.store.access import find_visible_operation
from campflow.store.approvals import LISTED_CONTACTS, ApprovalStep, EntityList, entity_lists, find_step, load_step
from campflow.store.identity import Actor

# The KEEP column of a list: what a cell may say. A blank cell removes the party too, so a
# store may simply blank out the rows it does not want.
KEEP_WORDS = ("yes", "oui", "y", "o", "1", "x", "true", "vrai", "keep", "garder")
REMOVE_WORDS = ("no", "non", "n", "0", "false", "faux", "remove", "removed", "supprimer", "retirer")
LIST_COLUMNS = {"party": ["TIERS", "PARTY", "CODE"], "contact": ["CONTACT"], "keep": ["KEEP", "GARDER"]}

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
    find_visible_operation(session, actor, step.operation_code, involved=True)
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
    now = now or approvals.clock()  # read through the module, so tests can move time
    tokens = list(dict.fromkeys(c.strip() for c in codes if c and c.strip()))
    if not tokens:
        raise CampflowError("name at least one party code (TIERS), or PARTY/CONTACT for one of its contacts")
    find_visible_operation(session, actor, step.operation_code, involved=True)
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
    now = now or approvals.clock()
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
    now = now or approvals.clock()
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


# a list's rows: entity, party code, name, city, removed, removed_by, status in the step, and the
# listed contacts as [code, name, function, removed] (list_rows and list_page add where and order)
_LIST_ROWS = f"""
        select e.code, p.code, p.name, p.city, lap.removed, lap.removed_by, st.status,
               (select coalesce(jsonb_agg(jsonb_build_array(
                           l.code, nullif(concat_ws(' ', c.first_name, c.last_name), ''), c.function,
                           x.contact_id is not null) order by l.code), '[]')
                from ({LISTED_CONTACTS}) l join contact c on c.id = l.id
                left join local_approval_contact x on x.step_id = :step and x.contact_id = l.id
                where l.party_id = lap.party_id)
        from local_approval_party lap join party p on p.id = lap.party_id join entity e on e.id = lap.entity_id
        left join step_target st on st.step_id = lap.step_id and st.party_id = lap.party_id
"""


def list_rows(session: Session, step: ApprovalStep, actor: Actor | None, entity: str | None = None) -> list[tuple]:
    """The parties of the lists an actor may see (None: the system, all): entity, code, name, city,
    removed, removed_by, status in the step, and the listed contacts as (code, name, function,
    removed) lists."""
    find_visible_operation(session, actor, step.operation_code, involved=True)
    entity_id = entity_id_of(session, entity) if entity else (None if actor is None or actor.central
                                                               else actor.entity_id)
    if entity_id is not None and actor is not None:
        actor.require(entity_id, f"{entity or actor.entity_code}'s list in {step.place}")
    where = "and lap.entity_id = :entity" if entity_id is not None else ""
    return [tuple(r) for r in session.execute(text(
        f"{_LIST_ROWS} where lap.step_id = :step {where} order by e.code, p.code"),
        {"step": step.step_id, "entity": entity_id, "op": step.operation_id})]


def operation_lists(session: Session, operation: str, actor: Actor, step: str | None = None
                    ) -> list[tuple[ApprovalStep, EntityList]]:
    """Every list of the operation's local_approval steps (or of one) that the actor may see."""
    op = find_visible_operation(session, actor, operation, involved=True)
    if step is not None:
        steps = [find_step(session, operation, step)]
    else:
        ids = session.scalars(text("select id from step where operation_id = :op and kind = 'local_approval' "
                                   "order by position"), {"op": op.id})
        steps = [s for s in (load_step(session, i) for i in ids) if not s.report]
    return [(s, e) for s in steps for e in entity_lists(session, s.step_id)
            if actor.may_act_for(e.entity_id)]


# --- the portal's views of the lists: every list an actor may see, one list a page at a time ---


def actor_lists(session: Session, actor: Actor) -> list[tuple[ApprovalStep, EntityList]]:
    """Every list of every local_approval step (report steps aside) the actor may see: a local
    operator its entity's, the central entity's all; operations outside its groups left out."""
    from campflow.store.access import may_see_operation

    entity_id = None if actor.central else actor.entity_id
    found = session.execute(text("""
        select distinct o.code, s.position, s.id from local_approval la join step s on s.id = la.step_id
        join operation o on o.id = s.operation_id
        where cast(:entity as int) is null or la.entity_id = :entity order by o.code, s.position"""),
        {"entity": entity_id}).all()
    lists = []
    for code, _, step_id in found:
        if not may_see_operation(session, actor, code):
            continue
        step = load_step(session, step_id)
        if step.report:
            continue
        lists += [(step, e) for e in entity_lists(session, step_id, entity_id) if actor.may_act_for(e.entity_id)]
    return lists


def entity_list(session: Session, step: ApprovalStep, actor: Actor, entity: str | None = None) -> EntityList:
    """One entity's list (`entity`, else the actor's own), without locking it: for reading."""
    entity_id = entity_id_of(session, entity) if entity else actor.entity_id
    shown = entity or actor.entity_code
    if entity_id is None:
        raise NotFound(f"no list of {shown} in {step.place}")
    actor.require(entity_id, f"{shown}'s list in {step.place}")
    found = entity_lists(session, step.step_id, entity_id)
    if not found:
        raise NotFound(f"{shown} has no list in {step.place}")
    return found[0]


def _like(words: str) -> str:
    return "%" + words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_page(session: Session, step: ApprovalStep, found: EntityList, *, search: str | None = None,
              limit: int = 50, offset: int = 0) -> tuple[int, list[tuple]]:
    """One page of an entity's list (`found`, from entity_list or chosen_list): how many parties
    match `search` (party code or name, a listed contact's name or code), and the page's rows as
    list_rows gives them. Only the page is read (LIMIT/OFFSET)."""
    params = {"step": step.step_id, "op": step.operation_id, "entity": found.entity_id,
              "q": _like(search.strip()) if search and search.strip() else None,
              "limit": limit, "offset": offset}
    where = f"""lap.step_id = :step and lap.entity_id = :entity and (cast(:q as text) is null
        or p.code ilike :q or p.name ilike :q
        or exists (select from ({LISTED_CONTACTS}) l join contact c on c.id = l.id
                   where l.party_id = lap.party_id
                     and (l.code ilike :q or concat_ws(' ', c.first_name, c.last_name) ilike :q
                          or concat_ws(' ', c.last_name, c.first_name) ilike :q)))"""
    total = session.scalar(text(f"""select count(*) from local_approval_party lap join party p on p.id = lap.party_id
                                    where {where}"""), params)
    rows = [tuple(r) for r in session.execute(text(
        f"{_LIST_ROWS} where {where} order by p.code limit :limit offset :offset"), params)]
    return total, rows


def list_members(session: Session, step: ApprovalStep, found: EntityList, codes: list[str]) -> list[str]:
    """Which of those party codes are in the entity's list."""
    return list(session.scalars(text("""
        select p.code from local_approval_party lap join party p on p.id = lap.party_id
        where lap.step_id = :step and lap.entity_id = :entity and p.code = any(cast(:codes as text[]))"""),
        {"step": step.step_id, "entity": found.entity_id, "codes": codes}))
