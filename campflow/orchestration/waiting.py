"""How a flow run waits for a person's answer: the form behind "Resume" in the Prefect UI.

One rule, `releases_process()`: a flow run created from a deployment (`campflow serve`, a
worker, `run_deployment`, the UI's "Run") *suspends*. Its process ends, so the served process
or worker runs other flow runs meanwhile; the answer (the UI's Resume form, or
`resume_flow_run(id, run_input=...)`) schedules the run again, it starts from the top in a new
process, and `wait_for_answer` returns the answer on that pass. A flow called directly
(`campflow approvals review`, `campflow orders review`, tests, scripts) has no deployment to
start again from: it *pauses* and its process polls for the answer, as it always did.

Either way an answer not given within the timeout fails the run, and the form, its
description and the answer's checks are the same.

Each pass runs the flow's code before the wait again, so that code only reads. A refused
answer is recorded on the flow run (Prefect's flow run input store, `refused-N`), so a later
pass carries its reason to the next form instead of applying that answer again. Nothing else
is carried between passes: the flows run no task before they wait and keep their state in
PostgreSQL, so they need no persisted results (which would live on the disk of the machine
that ran the pass, out of reach of a worker on another machine).
"""

from __future__ import annotations

import json
from typing import TypeVar

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.input.actions import create_flow_run_input

T = TypeVar("T", bound=RunInput)


def releases_process() -> bool:
    """True when the current flow run comes from a deployment: waiting suspends it (its process
    ends and the run starts again once answered); False for a direct call, which pauses in its
    process."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def wait_for_answer(form: type[T], number: int, timeout: int, poll_seconds: int) -> T:
    """The answer to the `number`-th form of this flow run (1, 2, …), once a person gives it.

    Suspends the run (from a deployment) or pauses it in this process (a direct call). When this
    form was answered in an earlier pass, returns that answer at once.

    Raises:
        FlowPauseTimeout: no answer within `timeout` seconds (a direct call; a suspended run is
            failed by the Prefect server: "The flow was paused and never resumed.").
    """
    key = str(number)  # the key pause_flow_run gives the number-th pause by default
    if releases_process():
        return suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
    return pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=poll_seconds, key=key)


def earlier_refusal(number: int) -> str | None:
    """Why the `number`-th answer was refused in an earlier pass of this flow run, if it was."""
    if not releases_process():
        return None
    with get_client(sync_client=True) as client:
        try:
            return json.loads(client.read_flow_run_input(FlowRunContext.get().flow_run.id, _refusal_key(number)))
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise


def record_refusal(number: int, reason: str) -> None:
    """Keep why the `number`-th answer was refused, for the passes after this one."""
    if not releases_process():
        return
    create_flow_run_input(_refusal_key(number), reason)


def _refusal_key(number: int) -> str:
    return f"refused-{number}"

