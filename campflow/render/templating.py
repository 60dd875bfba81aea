"""Copying template steps between operation specs. Pure: spec data in, spec data out."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from campflow.errors import CampflowError


@dataclass
class StepCopy:
    operation: dict[str, Any]
    code: str
    replaces: bool
    dropped_routes: list[str] = field(default_factory=list)


def walk(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for step in steps:
        yield step
        yield from walk(step.get("steps", []))


def copy_step_into(template: dict[str, Any], step_code: str, target: dict[str, Any], *,
                   as_code: str | None = None, parent: str | None = None) -> StepCopy:
    """`target` with a copy of the template step (replacing a step of the same code)."""
    found = next((s for s in walk(template.get("steps", [])) if s["code"] == step_code), None)
    if found is None:
        raise CampflowError(f"operation {template['code']} has no step {step_code}")
    if not (found.get("template") or template.get("template")):
        raise CampflowError(f"step {template['code']}/{step_code} is not a template step; "
                            "mark it `template: true`")
    step = copy.deepcopy(found)
    step.pop("template", None)
    step["code"] = as_code or step_code
    operation = copy.deepcopy(target)
    codes = {s["code"] for s in walk(operation.get("steps", []))} | {s["code"] for s in walk([step])}
    dropped = []
    for node in walk([step]):
        kept = [r for r in node.get("next", []) if r["to"] in codes]
        dropped += [r["to"] for r in node.get("next", []) if r["to"] not in codes]
        if "next" in node:
            node["next"] = kept
    replaces = _replace(operation.get("steps", []), step)
    if not replaces:
        siblings = operation.setdefault("steps", [])
        if parent:
            group = next((s for s in walk(siblings) if s["code"] == parent and "steps" in s), None)
            if group is None:
                raise CampflowError(f"{operation['code']} has no group {parent}")
            siblings = group["steps"]
        siblings.append(step)
    return StepCopy(operation, step["code"], replaces, dropped)


def _replace(steps: list[dict[str, Any]], step: dict[str, Any]) -> bool:
    for i, existing in enumerate(steps):
        if existing["code"] == step["code"]:
            steps[i] = step
            return True
        if _replace(existing.get("steps", []), step):
            return True
    return False
