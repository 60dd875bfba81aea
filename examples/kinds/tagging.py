"""An example step kind, written from scratch: `tagging` sets a custom field on its parties.

Everything a kind is lives in its module: how it runs (set-based, in the step's transaction),
what `campflow apply` refuses (`check`), and its registration. To make it a kind of your
installation, name this module under `[project.entry-points."campflow.step_kinds"]` in
pyproject.toml. docs/architecture.md walks through it; tests/test_layers.py runs it.

    steps:
      - code: T1
        label: Tag the visitors
        kind: tagging
        options: {tag: salon-2027}
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.store.records import claim_parties, mark_processed


def run(session: Any, ctx: StepContext) -> StepOutcome:
    """Tag the step's `to_process` parties (custom field `tag`), then mark them `ok_continue`."""
    if not claim_parties(session, ctx.step_id):
        return StepOutcome(message="no party to process")
    session.execute(text("update party set fields = fields || jsonb_build_object('tag', cast(:tag as text)) "
                         "where id in (select party_id from pg_temp.claimed_party)"),
                    {"tag": ctx.settings["options"]["tag"]})
    done = mark_processed(session, ctx.step_id)
    return StepOutcome(processed=done, statuses={"ok_continue": done})


def check(step: Any, loc: tuple, checker: Any) -> None:
    """What `campflow apply` refuses: a tagging step without a text tag."""
    if not isinstance((step.options or {}).get("tag"), str):
        checker.problem(loc, f"step {step.code}: a tagging step needs options: {{tag: TEXT}}")


register(StepKind(name="tagging", run=run, check=check))
