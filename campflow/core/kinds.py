"""The step-kind registry: a kind is one module and one `register()` call.

A kind module (the built-in ones are in `tasks/kinds/`) registers a `StepKind`: how it runs,
and the checks `campflow apply` runs on its steps (`check`) and on the settings it owns
(`settings`: `email:`, `document:`…). The modules are found through the
`campflow.step_kinds` entry points (pyproject.toml), loaded the first time a kind is asked
for: validation and the step engine ask this registry and import no kind themselves.
docs/step-kinds.md shows a small kind written from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any


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
    # batch (campflow.store.records.batches does), so a run whose lock is gone claims no new work
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
    run: Callable[[Any, StepContext], StepOutcome] | None  # (a SQLAlchemy Session, the context)
    automated: bool = True
    # what the parties a non-automated kind leaves `to_process` wait for, as the funnel says it
    waits_for: str = "people (status set / answers import)"
    retries: int = 0
    retry_delay_seconds: float = 0
    # apply-time checks of a step of this kind: check(step, loc, checker) reports through
    # `checker.problem(loc, message)` (campflow.specs.checks.OperationCheck)
    check: Callable[[Any, tuple, Any], None] | None = None
    # the step settings this kind owns, each with its apply-time check (same signature), run
    # for every step that has them: {"email": check_email}
    settings: Mapping[str, Callable[[Any, tuple, Any], None]] = field(default_factory=dict)


ENTRY_POINTS = "campflow.step_kinds"
REGISTRY: dict[str, StepKind] = {}
_loaded = False


def register(kind: StepKind) -> StepKind:
    REGISTRY[kind.name] = kind
    return kind


def load_kinds() -> dict[str, StepKind]:
    """Every registered kind, by name, in the order the entry points list them."""
    global _loaded
    if not _loaded:
        _loaded = True
        for point in entry_points(group=ENTRY_POINTS):
            point.load()  # the module registers its kinds
    return REGISTRY


def step_kind(name: str) -> StepKind:
    """The registered kind, loading the kind modules on first use."""
    kinds = load_kinds()
    try:
        return kinds[name]
    except KeyError:
        raise KeyError(f"no step kind {name!r}; registered: {', '.join(sorted(kinds))}") from None


def kind_names() -> tuple[str, ...]:
    return tuple(load_kinds())


def settings_checks() -> dict[str, Callable[[Any, tuple, Any], None]]:
    """The check of each step setting a kind owns (`email`, `document`…), by setting."""
    return {key: check for kind in load_kinds().values() for key, check in kind.settings.items()}
