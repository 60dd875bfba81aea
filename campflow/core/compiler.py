"""Compile an operation (plain spec data) into a frozen plan the flow walks. Pure code.

`compile_operation(snapshot)` takes the operation as `campflow.specs.export.export_operation`
returns it: no session, no Prefect. The plan lists action steps in dependency order, each
with its routes (formulas parsed, default routes made explicit), who feeds it, and its due
date; `str(plan)` is what `campflow run --dry-run` prints.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from campflow.core.formula import And, Node, Ref, check_names, parse_formula, to_text
from campflow.core.graph import StepNode, entry_steps, topological_order


def _freeze(value: Any) -> Any:
    """Lists become tuples and mappings sorted tuples of pairs, so plans are hashable."""
    if isinstance(value, Mapping):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A frozen condition definition back as a dict (for the SQL builder)."""
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                                        for p in value) and value:
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ConditionPlan:
    code: str
    kind: str  # answer | field | party_kind | status
    definition: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return thaw(self.definition)


@dataclass(frozen=True)
class Rule:
    """Conditions and the formula over them; `formula` None means always true."""

    conditions: tuple[ConditionPlan, ...]
    formula: Node | None

    def __str__(self) -> str:
        return to_text(self.formula) if self.formula is not None else "always"


@dataclass(frozen=True)
class RoutePlan:
    source: str
    target: str
    position: int
    rule: Rule
    when_status: tuple[str, ...]
    default: bool  # the implicit route to the next step in document order


@dataclass(frozen=True)
class StepPlan:
    code: str
    label: str
    kind: str
    position: int
    event: str | None
    questionnaire: str | None
    run_at: dt.datetime | None
    where: Rule | None
    routes: tuple[RoutePlan, ...]
    sources: tuple[str, ...]
    entry: bool
    settings: tuple[tuple[str, Any], ...]

    def is_due(self, now: dt.datetime) -> bool:
        return self.run_at is None or self.run_at <= now


@dataclass(frozen=True)
class OperationPlan:
    code: str
    label: str
    timezone: str
    party_kinds: tuple[str, ...]
    steps: tuple[StepPlan, ...]  # in dependency order

    @property
    def entry_steps(self) -> tuple[str, ...]:
        return tuple(s.code for s in self.steps if s.entry)

    def step(self, code: str) -> StepPlan:
        for step in self.steps:
            if step.code == code:
                return step
        raise KeyError(f"operation {self.code} has no action step {code}")

    def __str__(self) -> str:
        lines = [f"Operation {self.code} — {self.label} ({self.timezone})",
                 f"entry steps: {', '.join(self.entry_steps) or 'none'}"]
        for step in self.steps:
            extras = [f"event {step.event}" if step.event else "",
                      f"run_at {step.run_at:%Y-%m-%d %H:%M %Z}" if step.run_at else "",
                      f"where {step.where}" if step.where else "",
                      f"after {', '.join(step.sources)}" if step.sources else "entry"]
            lines.append(f"{step.code} {step.kind}: {step.label} [{'; '.join(e for e in extras if e)}]")
            for route in step.routes:
                statuses = "" if route.when_status == ("ok_continue",) else f" when {'|'.join(route.when_status)}"
                lines.append(f"  -> {route.target} if {route.rule}{statuses}{' (next step)' if route.default else ''}")
            if not step.routes:
                lines.append("  (end of path)")
        return "\n".join(lines)


def walk(steps: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for step in steps:
        yield step
        yield from walk(step.get("steps", ()))


def compile_rule(conditions: Mapping[str, Mapping[str, Any]], formula: str | None) -> Rule:
    """A route's or a `where:`'s rule: its formula, or all its conditions together."""
    planned = tuple(ConditionPlan(code.upper(), _kind(d), _freeze(d)) for code, d in conditions.items())
    if formula is not None:
        node = parse_formula(formula)
        check_names(node, [c.code for c in planned], formula)
    elif len(planned) > 1:
        node = And(tuple(Ref(c.code) for c in planned))
    elif planned:
        node = Ref(planned[0].code)
    else:
        node = None
    return Rule(planned, node)


def _kind(definition: Mapping[str, Any]) -> str:
    return next(k for k in ("answer", "field", "party_kind", "status") if k in definition)


def compile_operation(snapshot: Mapping[str, Any]) -> OperationPlan:
    """The plan of one operation; raises CycleError / FormulaError on a bad snapshot."""
    zone = zoneinfo.ZoneInfo(snapshot.get("timezone", "UTC"))
    actions = [s for s in walk(snapshot.get("steps", ())) if s.get("kind")]
    nodes = [StepNode(s["code"], None if "next" not in s else tuple(r["to"] for r in s["next"]))
             for s in actions]
    order = topological_order(nodes)
    entries = set(entry_steps(nodes))
    routes: dict[str, list[RoutePlan]] = {s["code"]: [] for s in actions}
    for position, step in enumerate(actions):
        if "next" not in step:
            if position + 1 < len(actions):
                routes[step["code"]].append(RoutePlan(step["code"], actions[position + 1]["code"], 0,
                                                      Rule((), None), ("ok_continue",), True))
            continue
        for i, route in enumerate(step["next"]):
            routes[step["code"]].append(RoutePlan(
                step["code"], route["to"], i, compile_rule(route.get("conditions", {}), route.get("formula")),
                tuple(route.get("when_status", ("ok_continue",))), False))
    sources: dict[str, list[str]] = {s["code"]: [] for s in actions}
    for planned in routes.values():
        for route in planned:
            if route.source not in sources[route.target]:
                sources[route.target].append(route.source)
    by_code = {s["code"]: (i, s) for i, s in enumerate(actions)}
    steps = []
    for code in order:
        position, step = by_code[code]
        where = step.get("where")
        steps.append(StepPlan(
            code=code, label=step["label"], kind=step["kind"], position=position,
            event=step.get("event"), questionnaire=step.get("questionnaire"),
            run_at=_aware(step.get("run_at"), zone),
            where=compile_rule(where.get("conditions", {}), where.get("formula")) if where else None,
            routes=tuple(routes[code]), sources=tuple(sources[code]), entry=code in entries,
            settings=_freeze({k: step[k] for k in ("email", "document", "labels", "columns", "options")
                              if k in step})))
    return OperationPlan(snapshot["code"], snapshot["label"], str(zone), tuple(snapshot.get("party_kinds", ())),
                         tuple(steps))


def _aware(text: str | None, zone: zoneinfo.ZoneInfo) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=zone)
