"""The step-kind registry: a kind is one module in `tasks/kinds/` and one `register()` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class StepContext:
    """What a step kind needs to process its parties; plain data."""

    operation_id: int
    operation_code: str
    step_id: int
    step_code: str
    kind: str
    settings: dict[str, Any]  # the step's kind settings as in the spec (email, columns…)
    output_dir: Path  # where the step writes its files (created by the kind when needed)
    # messages whose fate is unknown after a crash are sent again only when asked
    resend_unknown: bool = False
    # raises when the run lost its lock on the operation: a kind calls it before claiming each
    # batch (tasks.records.batches does), so a run whose lock is gone claims no new work
    check_lock: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class StepOutcome:
    """What a step did: parties processed, by final status, and the files it wrote."""

    processed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    outputs: tuple[Path | str, ...] = ()  # local files, or locations in an output-storage block
    message: str = ""


@dataclass(frozen=True)
class StepKind:
    """How one kind of step runs.

    `run` processes the step's `to_process` parties set-based, in the caller's transaction,
    and sets their final statuses. A kind that is not `automated` (phoning, other) leaves
    its parties `to_process` until people answer (status set / answers import); its `run`,
    when it has one, prepares their work (a call sheet) without changing a status.
    """

    name: str
    run: Callable[[Session, StepContext], StepOutcome] | None
    automated: bool = True
    # what the parties a non-automated kind leaves `to_process` wait for, as the funnel says it
    waits_for: str = "people (status set / answers import)"
    retries: int = 0
    retry_delay_seconds: float = 0


REGISTRY: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
    REGISTRY[kind.name] = kind
    return kind


def step_kind(name: str) -> StepKind:
    """The registered kind, loading the built-in kinds on first use."""
    if not REGISTRY:
        import tasks.kinds  # noqa: F401  (registers the built-in kinds)
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no step kind {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def in_prefect_run() -> bool:
    """Whether the caller runs inside a Prefect flow or task run (blocks can then be loaded)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None
