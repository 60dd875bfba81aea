"""The one switch between a flow run and a plain call when blocks are looked up.

A step names its blocks (an `email: {channel: NAME}`, `CAMPFLOW_OUTPUT_STORAGE=NAME`): those are
loaded wherever the step runs. Without a name a step falls back to a *default* block (the
`emailing` / `mass-emailing` channel, the `campflow-output` storage), and that default is
looked up only inside a Prefect flow or task run, where an API is at hand: a plain call (a
script, a preview, a test) does not start a Prefect server just to learn that no default
block is saved, and uses the built-in default (`.eml` files, outputs kept in the run folder).
docs/architecture.md ("Explicit inputs") describes it.
"""

from __future__ import annotations


def default_blocks_available() -> bool:
    """Whether default blocks are looked up: the caller runs inside a Prefect flow or task run."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None
