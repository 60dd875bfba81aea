"""`campflow approvals`: local entities approving their part of a `local_approval` step.

A local operator sees and changes only its own entity's list; the central entity's operators
see every list and act for an entity with --entity. Each command runs in one transaction:
a refusal changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from campflow.cli.common import JSON_OPTION_HELP, console, escape, print_json, print_table
from campflow.store import db

approvals_app = typer.Typer(help="Local approval of targets (local_approval steps).", no_args_is_help=True)

OperationArg = Annotated[str, typer.Argument(help="Operation code.")]
StepArg = Annotated[str, typer.Argument(help="The local_approval step's code.")]
PartiesArg = Annotated[list[str], typer.Argument(help="Party codes (TIERS), or PARTY/CONTACT for one contact "
                                                 "of a party (the party stays).")]
AsOption = Annotated[str | None, typer.Option("--as", help="Act as this operator login (default: "
                                              "CAMPFLOW_OPERATOR, else the system user).")]
EntityOption = Annotated[str | None, typer.Option("--entity", help="The local entity whose list it is "
                                                  "(central operators; default: your own entity).")]
JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")


@approvals_app.command("list")
def list_(operation: OperationArg,
          step: Annotated[str | None, typer.Option("--step", help="Only this local_approval step.")] = None,
          as_: AsOption = None, as_json: JsonOption = False) -> None:
    """The lists of an operation's local_approval steps: per entity its status, deadline, parties
    kept and removed. A local operator sees only its own entity's.

    Example: campflow approvals list SALON-ERP-2026 --step VALID --as lyon1
    """
    from campflow.store.access import find_visible_operation
    from campflow.store.approval_lists import operation_lists
    from campflow.store.identity import actor

    with db.session() as session:
        who = actor(session, as_)
        find_visible_operation(session, who, operation, involved=True)
        lists = operation_lists(session, operation, who, step)
    data = [{"step": s.step_code, "entity": e.entity_code, "status": e.status, "deadline": e.deadline,
             "deadline_local": s.local(e.deadline), "parties": e.parties, "kept": e.kept, "removed": e.removed,
             "contacts_removed": e.contacts_removed, "waiting": e.waiting, "reminders_sent": e.reminders_sent, "approved_by": e.approved_by,
             "approved_at": e.approved_at} for s, e in lists]
    if as_json:
        print_json(data)
        return
    if not data:
        console.print(f"no list to approve in {escape(operation)} (yet, or for you)")
        return
    print_table(f"Local approvals of {operation}", ["step", "entity", "status", "deadline", "parties", "kept",
                                                    "removed", "contacts removed", "approved by"],
                [(d["step"], d["entity"], d["status"], d["deadline_local"], d["parties"], d["kept"], d["removed"],
                  d["contacts_removed"], d["approved_by"]) for d in data])


@approvals_app.command("show")
def show(operation: OperationArg, step: StepArg, entity: EntityOption = None, as_: AsOption = None,
         as_json: JsonOption = False) -> None:
    """The parties of a list with their contacts, removed or not (a central operator sees every
    entity's). A contact's code is what `approvals remove OP STEP PARTY/CONTACT` takes.

    Example: campflow approvals show SALON-ERP-2026 VALID --as lyon1
    """
    from campflow.store.access import find_visible_operation
    from campflow.store.approval_lists import list_rows
    from campflow.store.approvals import find_step
    from campflow.store.identity import actor

    with db.session() as session:
        who = actor(session, as_)
        find_visible_operation(session, who, operation, involved=True)
        found = find_step(session, operation, step)
        rows = list_rows(session, found, who, entity)
    data = [{"entity": r[0], "party": r[1], "name": r[2], "city": r[3], "removed": r[4], "removed_by": r[5],
             "status": r[6], "contacts": [{"code": c, "name": who, "function": function, "removed": gone}
                                          for c, who, function, gone in r[7]]} for r in rows]
    if as_json:
        print_json(data)
        return
    print_table(f"{found.place} — deadline {found.local(found.deadline)}",
                ["entity", "party", "name", "city", "contacts", "kept", "status"],
                [(d["entity"], d["party"], d["name"], d["city"], _contacts(d["contacts"]),
                  f"no (removed by {d['removed_by']})" if d["removed"] else "yes", d["status"]) for d in data])


def _contacts_removed(count: int) -> str:
    return f"{count} contact{'' if count == 1 else 's'} removed from kept parties"


def _contacts(contacts: list[dict]) -> str:
    """A party's listed contacts on one cell: code, name, function; removed ones say so."""
    return "\n".join(" ".join(filter(None, (c["code"], c["name"], f"({c['function']})" if c["function"] else None,
                                            "— removed" if c["removed"] else None))) for c in contacts)


def _change(operation: str, step: str, parties: list[str], removed: bool, entity: str | None,
            as_: str | None, as_json: bool) -> None:
    from campflow.store.access import find_visible_operation
    from campflow.store.approval_lists import change_parties
    from campflow.store.approvals import find_step
    from campflow.store.identity import actor

    with db.session() as session:
        who = actor(session, as_)
        find_visible_operation(session, who, operation, involved=True)
        changes = change_parties(session, find_step(session, operation, step), who, parties,
                                 removed=removed, entity=entity)
    if as_json:
        print_json([asdict(c) | {"kept": c.kept} for c in changes])
        return
    verb = "removed from" if removed else "restored to"
    for c in changes:
        console.print(f"{escape(', '.join(c.changed))} {verb} {escape(c.entity)}'s list: "
                      f"{c.kept} kept, {c.removed} removed of {c.parties}"
                      + (f"; {_contacts_removed(c.contacts_removed)}" if c.contacts_removed else ""))
        if c.emptied:
            console.print(f"{escape(', '.join(c.emptied))}: no contact left, so the party is removed")


@approvals_app.command("remove")
def remove(operation: OperationArg, step: StepArg, parties: PartiesArg, entity: EntityOption = None,
           as_: AsOption = None, as_json: JsonOption = False) -> None:
    """Remove parties from your entity's list (they will not be contacted), or single contacts
    as PARTY/CONTACT (the party stays, that person is not contacted; a party's last contact
    removed removes the party). Refused after the deadline, once the list is approved, or for a
    party or contact not in your list.

    Example: campflow approvals remove SALON-ERP-2026 VALID P001 P007/C2 --as lyon1
    """
    _change(operation, step, parties, True, entity, as_, as_json)


@approvals_app.command("restore")
def restore(operation: OperationArg, step: StepArg, parties: PartiesArg, entity: EntityOption = None,
            as_: AsOption = None, as_json: JsonOption = False) -> None:
    """Put removed parties back in your entity's list with all their contacts, or one contact as
    PARTY/CONTACT (its party comes back too); before the deadline and the approval.

    Example: campflow approvals restore SALON-ERP-2026 VALID P007 P001/C2 --as lyon1
    """
    _change(operation, step, parties, False, entity, as_, as_json)


@approvals_app.command("approve")
def approve(operation: OperationArg, step: StepArg, entity: EntityOption = None, as_: AsOption = None,
            as_json: JsonOption = False) -> None:
    """Approve your entity's list as it stands; its kept parties move on at the step's next run.
    Refused after the deadline or when already approved.

    Example: campflow approvals approve SALON-ERP-2026 VALID --as lyon1
    """
    from campflow.store.access import find_visible_operation
    from campflow.store.approval_lists import approve as approve_list
    from campflow.store.approvals import find_step
    from campflow.store.identity import actor

    with db.session() as session:
        who = actor(session, as_)
        find_visible_operation(session, who, operation, involved=True)
        change = approve_list(session, find_step(session, operation, step), who, entity)
    if as_json:
        print_json(asdict(change) | {"kept": change.kept})
        return
    contacts = f", {_contacts_removed(change.contacts_removed)}" if change.contacts_removed else ""
    console.print(f"[green]{escape(change.entity)}'s list approved[/]: {change.kept} parties kept, "
                  f"{change.removed} removed{contacts}; they move on at the next run of {escape(operation)}")


@approvals_app.command("import")
def import_(operation: OperationArg, step: StepArg,
            file: Annotated[Path, typer.Argument(help="The list sent (.xlsx or .csv) with its KEEP column "
                                                 "filled in.", exists=True, dir_okay=False)],
            entity: EntityOption = None, as_: AsOption = None, as_json: JsonOption = False) -> None:
    """Read back a returned list and approve it. The list has a row per contact: rows whose KEEP
    says no, non, n, 0, false, faux, remove (or is blank) are removed; yes, oui, y, o, 1, x, true,
    vrai, keep are kept; a party whose rows all say no is removed. Every row of the list must be
    there. Bad rows are reported by row number and nothing is changed.

    Example: campflow approvals import SALON-ERP-2026 VALID SALON-ERP-2026-VALID-LYON.xlsx --as lyon1
    """
    from campflow.store.access import find_visible_operation
    from campflow.store.approval_lists import import_list
    from campflow.store.approvals import find_step
    from campflow.store.identity import actor

    with db.session() as session:
        who = actor(session, as_)
        find_visible_operation(session, who, operation, involved=True)
        change = import_list(session, find_step(session, operation, step), who, file, entity)
    if as_json:
        print_json(asdict(change) | {"kept": change.kept})
        return
    contacts = f", {_contacts_removed(change.contacts_removed)}" if change.contacts_removed else ""
    console.print(f"[green]{escape(change.entity)}'s list approved[/]: {change.kept} parties kept, "
                  f"{change.removed} removed{contacts} ({escape(', '.join(change.changed)) or 'none'})")


@approvals_app.command("review")
def review(operation: OperationArg, step: StepArg,
           entity: Annotated[str, typer.Option("--entity", help="The local entity whose list to review.")],
           timeout_hours: Annotated[float, typer.Option("--timeout-hours", help="How long to wait for the "
                                                        "answer (never past the deadline).")] = 72) -> None:
    """Run the local-approval flow: it pauses with a form in the Prefect UI (Resume) where the
    entity lists parties to remove, approves and gives its login; this command waits for it.

    Example: campflow approvals review SALON-ERP-2026 VALID --entity LYON
    """
    from campflow.orchestration.local_server import use_local_server
    from flows.local_approval import local_approval

    use_local_server()
    console.print(f"waiting for {escape(entity)}'s answer: open the flow run "
                  f"{escape(f'{operation}-{step}-{entity}')} (flow local-approval) in the Prefect UI and click Resume")
    result = local_approval(operation, step, entity, timeout_hours)
    console.print(f"[green]{escape(result['entity'])}[/]: {result['kept']} kept of {result['parties']}, "
                  f"removed {escape(', '.join(result['removed'])) or 'none'}"
                  + (", approved" if result["approved"] else "") + f" by {escape(result['operator'])}")
