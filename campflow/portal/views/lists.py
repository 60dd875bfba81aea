"""Local approval lists: a local entity's lists (remove and restore parties or contacts, approve,
download the list and upload it back), and the central entity's view of every list's progress.

Every rule is the store's (`campflow.store.approval_lists`, `campflow.store.access`): the page
asks with the signed-in actor and shows what it answers."""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from campflow.errors import CampflowError, NotFound, ProblemsError
from campflow.portal.pages import redirect, render
from campflow.portal.security import central_only, check_csrf, client_address, flash, signed_in
from campflow.store import accounts, approval_lists, approvals, db
from campflow.store.access import may_see_operation
from campflow.store.approvals import ApprovalStep, EntityList, find_step
from campflow.store.identity import Actor

router = APIRouter()

PAGE_SIZE = 50
MAX_UPLOAD = 10 * 1024 * 1024  # a list of tens of thousands of rows is a few MB
MAX_UNZIPPED = 200 * 1024 * 1024  # what its parts may inflate to (no zip bomb)
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _step(session, who: Actor, operation: str, step: str) -> ApprovalStep:
    """The local_approval step, as if it did not exist when the operation is not `who`'s to see."""
    if not may_see_operation(session, who, operation):
        raise NotFound(f"no operation {operation}")
    try:
        return find_step(session, operation, step)
    except NotFound:
        raise
    except CampflowError as exc:  # a report step, or not a local_approval step: no list here
        raise NotFound(str(exc)) from None


def _the_list(session, who: Actor, step: ApprovalStep, entity: str | None) -> EntityList:
    """The list a page acts on: the local operator's own, or the `entity` a central operator names."""
    if who.central and not entity:
        raise NotFound(f"no entity named for {step.place}")
    return approval_lists.entity_list(session, step, who, entity or None)


def _url(operation: str, step: str, entity: str | None = None, suffix: str = "", **query: object) -> str:
    base = f"/lists/{quote(operation, safe='')}/{quote(step, safe='')}{suffix}"
    params = {k: v for k, v in ({"entity": entity} | query).items() if v not in (None, "", 1)}
    return base + (f"?{urlencode(params)}" if params else "")


@router.get("/lists", response_class=HTMLResponse)
def my_lists(request: Request, who: Actor = Depends(signed_in)):
    if who.central:
        return redirect("/central/lists")
    with db.session() as session:
        lists = approval_lists.actor_lists(session, who)
        rows = [_summary(s, e, False) for s, e in lists]
    return render(request, "lists.html", lists=rows)


@router.get("/central/lists", response_class=HTMLResponse)
def central_lists(request: Request, who: Actor = Depends(central_only)):
    with db.session() as session:
        rows = [_summary(s, e, True) for s, e in approval_lists.actor_lists(session, who)]
    return render(request, "central_lists.html", lists=rows)


def _summary(step: ApprovalStep, found: EntityList, central: bool) -> dict:
    return {"operation": step.operation_code, "operation_label": step.operation_label, "step": step.step_code,
            "step_label": step.step_label, "entity": found.entity_code, "status": found.status,
            "deadline": step.local(found.deadline), "parties": found.parties, "kept": found.kept,
            "removed": found.removed, "contacts_removed": found.contacts_removed,
            "approved_by": found.approved_by,
            "approved_at": step.local(found.approved_at) if found.approved_at else None,
            "url": _url(step.operation_code, step.step_code, found.entity_code if central else None)}


@router.get("/lists/{operation}/{step}", response_class=HTMLResponse)
def show_list(request: Request, operation: str, step: str, q: str = "", page: int = 1, entity: str | None = None,
              who: Actor = Depends(signed_in)):
    page = max(page, 1)
    q = q[:200]
    with db.session() as session:
        found_step = _step(session, who, operation, step)
        if who.central and not entity:  # which entity's list: the central entity chooses
            lists = [_summary(s, e, True) for s, e in approval_lists.operation_lists(session, operation, who, step)]
            return render(request, "list_choose.html", step=found_step, lists=lists)
        found = _the_list(session, who, found_step, entity)
        total, rows = approval_lists.list_page(session, found_step, found, search=q, limit=PAGE_SIZE,
                                               offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    parties = [{"code": r[1], "name": r[2], "city": r[3], "removed": r[4], "removed_by": r[5], "status": r[6],
                "contacts": [{"code": c, "name": n, "function": f, "removed": gone} for c, n, f, gone in r[7]]}
               for r in rows]
    open_ = found.status == "pending" and approvals.clock() < found.deadline
    entity_code = found.entity_code if who.central else None
    return render(request, "list.html", step=found_step, found=found, parties=parties, q=q, page=page, pages=pages,
                  total=total, open=open_, entity=entity_code,
                  deadline=found_step.local(found.deadline),
                  approved_at=found_step.local(found.approved_at) if found.approved_at else None,
                  action=_url(operation, step), download=_url(operation, step, entity_code, "/download"),
                  previous=_url(operation, step, entity_code, q=q, page=page - 1) if page > 1 else None,
                  next=_url(operation, step, entity_code, q=q, page=page + 1) if page < pages else None,
                  back=_url(operation, step, entity_code, q=q, page=page))


def _back(form_back: str, operation: str, step: str, entity: str | None) -> str:
    """Where a form returns: the page it came from, when it is this list's page."""
    base = _url(operation, step)
    if form_back == base or form_back.startswith(base + "?"):
        return form_back
    return _url(operation, step, entity)


def _change(request: Request, who: Actor, operation: str, step: str, item: str, entity: str | None,
            back: str, removed: bool):
    action = "list_remove" if removed else "list_restore"
    item = item.strip()[:200]
    with db.session() as session:
        found_step = _step(session, who, operation, step)
        found = _the_list(session, who, found_step, entity)
        subject = f"{found_step.place}/{found.entity_code}"
        try:
            if not item:
                raise CampflowError("name a party (or PARTY/CONTACT for one of its contacts)")
            [change] = approval_lists.change_parties(session, found_step, who, [item], removed=removed,
                                                     entity=found.entity_code)
        except NotFound:
            refused = f"{item} is not in this list"
        except CampflowError as exc:
            refused = str(exc)
        else:
            refused = None
            accounts.audit(session, who.login, action, subject, entity_id=found.entity_id,
                           detail={"items": list(change.changed), "emptied": list(change.emptied)},
                           address=client_address(request))
            verb = "removed from" if removed else "restored to"
            message = (f"{', '.join(change.changed)} {verb} the list: {change.kept} kept, {change.removed} removed "
                       f"of {change.parties}")
            if change.emptied:
                message += f"; {', '.join(change.emptied)} had no contact left, so the party is removed"
            flash(request, message)
    if refused is not None:
        accounts.audit_now(who.login, action, subject, outcome="refused", entity_id=found.entity_id,
                           detail={"item": item, "reason": refused}, address=client_address(request))
        flash(request, refused, "error")
    return redirect(_back(back, operation, step, found.entity_code if who.central else None))


@router.post("/lists/{operation}/{step}/remove", dependencies=[Depends(check_csrf)])
def remove(request: Request, operation: str, step: str, item: str = Form("", max_length=400),
           entity: str | None = Form(None, max_length=64), back: str = Form("", max_length=2000),
           who: Actor = Depends(signed_in)):
    return _change(request, who, operation, step, item, entity, back, removed=True)


@router.post("/lists/{operation}/{step}/restore", dependencies=[Depends(check_csrf)])
def restore(request: Request, operation: str, step: str, item: str = Form("", max_length=400),
            entity: str | None = Form(None, max_length=64), back: str = Form("", max_length=2000),
            who: Actor = Depends(signed_in)):
    return _change(request, who, operation, step, item, entity, back, removed=False)


@router.post("/lists/{operation}/{step}/approve", dependencies=[Depends(check_csrf)])
def approve(request: Request, operation: str, step: str, entity: str | None = Form(None, max_length=64),
            who: Actor = Depends(signed_in)):
    with db.session() as session:
        found_step = _step(session, who, operation, step)
        found = _the_list(session, who, found_step, entity)
        subject = f"{found_step.place}/{found.entity_code}"
        try:
            change = approval_lists.approve(session, found_step, who, found.entity_code)
        except CampflowError as exc:
            refused = str(exc)
        else:
            refused = None
            accounts.audit(session, who.login, "list_approve", subject, entity_id=found.entity_id,
                           detail={"kept": change.kept, "removed": change.removed,
                                   "contacts_removed": change.contacts_removed}, address=client_address(request))
            flash(request, f"{found.entity_code}'s list approved: {change.kept} parties kept, {change.removed} removed"
                  + (f", {change.contacts_removed} contacts removed from kept parties" if change.contacts_removed
                     else ""))
    if refused is not None:
        accounts.audit_now(who.login, "list_approve", subject, outcome="refused", entity_id=found.entity_id,
                           detail={"reason": refused}, address=client_address(request))
        flash(request, refused, "error")
    return redirect(_url(operation, step, found.entity_code if who.central else None))


@router.get("/lists/{operation}/{step}/download")
def download(request: Request, operation: str, step: str, entity: str | None = None,
             who: Actor = Depends(signed_in)):
    """The list as it stands, the same .xlsx the step mails (a row per contact, KEEP to answer in)."""
    from campflow.core.kinds import StepContext
    from tasks.kinds.local_approval import write_list

    with db.session() as session, tempfile.TemporaryDirectory(prefix="campflow-list-") as folder:
        found_step = _step(session, who, operation, step)
        found = _the_list(session, who, found_step, entity)
        context = StepContext(found_step.operation_id, found_step.operation_code, found_step.step_id,
                              found_step.step_code, "local_approval", {}, Path(folder))
        path = write_list(session, context, found_step, found)
        content, name = path.read_bytes(), path.name
        accounts.audit(session, who.login, "list_download", f"{found_step.place}/{found.entity_code}",
                       entity_id=found.entity_id, address=client_address(request))
    return Response(content, media_type=XLSX_MIME,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _spreadsheet_problem(content: bytes) -> str | None:
    """Why `content` is not an .xlsx workbook we read, or None: the zip signature, the size
    bound, the workbook part, and what its parts inflate to."""
    if not content:
        return "the file is empty"
    if len(content) > MAX_UPLOAD:
        return f"the file is larger than {MAX_UPLOAD // (1024 * 1024)} MB; a list is far smaller"
    if not content.startswith(b"PK\x03\x04"):
        return "the file is not an Excel workbook (.xlsx); download the list, fill in KEEP and upload that file"
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            parts = archive.infolist()
            names = {p.filename for p in parts}
    except zipfile.BadZipFile:
        return "the file is not an Excel workbook (.xlsx): it cannot be opened"
    if "xl/workbook.xml" not in names:
        return "the file is a zip archive but not an Excel workbook (.xlsx)"
    if sum(p.file_size for p in parts) > MAX_UNZIPPED:
        return "the workbook is too large once opened"
    return None


@router.post("/lists/{operation}/{step}/upload", dependencies=[Depends(check_csrf)])
def upload(request: Request, operation: str, step: str, file: UploadFile = File(...),
           entity: str | None = Form(None, max_length=64), who: Actor = Depends(signed_in)):
    with db.session() as session:  # who may upload: checked before the file is read
        found_step = _step(session, who, operation, step)
        found = _the_list(session, who, found_step, entity)
    subject = f"{found_step.place}/{found.entity_code}"
    back = _url(operation, step, found.entity_code if who.central else None)
    content = file.file.read(MAX_UPLOAD + 1)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(file.filename or "list").stem)[:80] or "list"
    refused = _spreadsheet_problem(content)
    if refused is None:
        with tempfile.TemporaryDirectory(prefix="campflow-upload-") as folder:
            path = Path(folder) / f"{stem}.xlsx"
            path.write_bytes(content)
            try:
                with db.session() as session:
                    refused = _foreign(session, found_step, found, path)
                    if refused is None:
                        change = approval_lists.import_list(session, found_step, who, path, found.entity_code)
                        accounts.audit(session, who.login, "list_upload", subject, entity_id=found.entity_id,
                                       detail={"file": path.name, "removed": list(change.changed)},
                                       address=client_address(request))
            except ProblemsError as exc:
                refused = exc.render()
            except CampflowError as exc:
                refused = str(exc)
    if refused is not None:
        accounts.audit_now(who.login, "list_upload", subject, outcome="refused", entity_id=found.entity_id,
                           detail={"file": file.filename, "reason": refused[:2000]}, address=client_address(request))
        flash(request, f"The file was not taken; nothing changed. {refused}", "error")
        return redirect(back)
    flash(request, f"{found.entity_code}'s list read back and approved: {change.kept} parties kept, "
                   f"{change.removed} removed" + (f", {change.contacts_removed} contacts removed" if
                                                  change.contacts_removed else ""))
    return redirect(back)


def _foreign(session, step: ApprovalStep, found: EntityList, path: Path) -> str | None:
    """A clear refusal when the file holds none of the list's parties (another entity's list)."""
    from campflow.render.sheet_files import open_sheet

    codes = set()
    with open_sheet(path, aliases=approval_lists.LIST_COLUMNS, required=("party", "keep"), keep_other=True) as sheet:
        for _, row in sheet.rows():
            if row.get("party"):
                codes.add(row["party"])
            if len(codes) >= 1000:
                break
    if not codes:
        return None  # the import says what is missing
    mine = approval_lists.list_members(session, step, found, sorted(codes))
    if not mine:
        return (f"this file is not {found.entity_code}'s list of {step.place}: none of its parties is in your list. "
                "Download your list from this page, fill in KEEP and upload that file")
    return None
