"""Child operations (by_campaign): a local entity's own, the central entity's by reference; an
operation's steps and funnel, and "Run", which starts a `run-operation` flow run through its
deployment, so that it shows in the Prefect UI like any other run."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from campflow.errors import CampflowError
from campflow.portal.pages import redirect, render
from campflow.portal.security import check_csrf, client_address, flash, signed_in
from campflow.store import access, accounts, db
from campflow.store.identity import Actor

router = APIRouter()

RUN_DEPLOYMENT = "run-operation/campflow"  # campflow.orchestration.schedules.DEPLOYMENT, prefect.yaml
STARTED = "started_runs"  # the session's flow runs started from the portal, shown once on the page


def ui_url() -> str:
    """The Prefect UI beside the API campflow talks to."""
    from campflow.orchestration.schedules import api_url

    return api_url().rstrip("/").removesuffix("/api")


@router.get("/operations", response_class=HTMLResponse)
def operations(request: Request, who: Actor = Depends(signed_in)):
    with db.session() as session:
        children = access.visible_children(session, who)
    references: dict[str, dict] = {}
    for child in children:
        references.setdefault(child["reference"], {"code": child["reference"], "label": child["reference_label"],
                                                   "children": []})["children"].append(child)
    return render(request, "operations.html", children=children, references=list(references.values()))


@router.get("/operations/{code}", response_class=HTMLResponse)
def operation(request: Request, code: str, who: Actor = Depends(signed_in)):
    with db.session() as session:
        found = access.operation_view(session, who, code)
    started = request.session.get(STARTED, {}).get(found["code"])
    if started:
        runs = dict(request.session[STARTED])
        runs.pop(found["code"])
        request.session[STARTED] = runs
    statuses = sorted({status for step in found["steps"] for status in step["funnel"]})
    return render(request, "operation.html", operation=found, statuses=statuses, started=started,
                  action=f"/operations/{quote(found['code'], safe='')}/run")


@router.post("/operations/{code}/run", dependencies=[Depends(check_csrf)])
def run(request: Request, code: str, who: Actor = Depends(signed_in)):
    with db.session() as session:
        found = access.operation_view(session, who, code)  # 404 when not the actor's to see
        operation = access.require_operation_access(session, found["code"], who.login, "run")
        entity_id = operation.owner_entity_id
    page = f"/operations/{quote(found['code'], safe='')}"
    try:
        flow_run = start_run(found["code"])
    except CampflowError as exc:
        accounts.audit_now(who.login, "operation_run", found["code"], outcome="refused", entity_id=entity_id,
                           detail={"reason": str(exc)}, address=client_address(request))
        flash(request, str(exc), "error")
        return redirect(page)
    accounts.audit_now(who.login, "operation_run", found["code"], entity_id=entity_id,
                       detail={"flow_run": str(flow_run.id), "name": flow_run.name, "deployment": RUN_DEPLOYMENT},
                       address=client_address(request))
    runs = dict(request.session.get(STARTED, {}))
    runs[found["code"]] = {"id": str(flow_run.id), "name": flow_run.name,
                           "url": f"{ui_url()}/runs/flow-run/{flow_run.id}"}
    request.session[STARTED] = runs
    return redirect(page)


def start_run(code: str):
    """A `run-operation` flow run of the operation, created through the deployment (not waited
    for: a worker or `campflow serve` runs it); a clear error, nothing started, when the Prefect
    server does not answer or the deployment is not there."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from campflow.orchestration.schedules import api_url

    url = api_url()
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
            if problem is not None:
                raise CampflowError(f"the Prefect server at {url} does not answer, so the run was not started; "
                                    "start it (campflow server) and try again")
            try:
                client.read_deployment_by_name(RUN_DEPLOYMENT)
            except ObjectNotFound:
                raise CampflowError(f"the deployment {RUN_DEPLOYMENT} is not on the Prefect server at {url}, so the "
                                    "run was not started; start `campflow serve` (or `campflow deploy`) and try "
                                    "again") from None
        return run_deployment(RUN_DEPLOYMENT, parameters={"operation": code}, timeout=0)
