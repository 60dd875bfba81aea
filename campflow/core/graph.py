"""The step graph of an operation: edges, order, entry steps. Pure code.

An action step with explicit routes (`next:`) sends parties along them; one without
sends its `ok_continue` parties to the next action step in document order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StepNode:
    code: str
    routes_to: tuple[str, ...] | None  # None: no `next:` (the default route)


class CycleError(ValueError):
    def __init__(self, cycle: tuple[str, ...]) -> None:
        self.cycle = cycle
        super().__init__("steps form a cycle: " + " -> ".join(cycle + cycle[:1]))


def edges(actions: Sequence[StepNode]) -> tuple[tuple[str, str], ...]:
    """Every (from, to) pair, default routes included, in document order."""
    result: list[tuple[str, str]] = []
    for position, node in enumerate(actions):
        if node.routes_to is None:
            if position + 1 < len(actions):
                result.append((node.code, actions[position + 1].code))
        else:
            result.extend((node.code, to) for to in node.routes_to)
    return tuple(result)


def topological_order(actions: Sequence[StepNode]) -> tuple[str, ...]:
    """Kahn's sort, ties broken by document order; raises CycleError naming the cycle."""
    codes = [node.code for node in actions]
    rank = {code: i for i, code in enumerate(codes)}
    successors: dict[str, list[str]] = {code: [] for code in codes}
    indegree = dict.fromkeys(codes, 0)
    for source, target in edges(actions):
        if target in successors and target not in successors[source]:
            successors[source].append(target)
            indegree[target] += 1
    ready = sorted((c for c in codes if indegree[c] == 0), key=rank.__getitem__)
    order: list[str] = []
    while ready:
        code = ready.pop(0)
        order.append(code)
        for target in successors[code]:
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
                ready.sort(key=rank.__getitem__)
    if len(order) < len(codes):
        raise CycleError(_find_cycle(successors, [c for c in codes if indegree[c] > 0]))
    return tuple(order)


def _find_cycle(successors: dict[str, list[str]], remaining: list[str]) -> tuple[str, ...]:
    """Walk from a step left over by Kahn's sort until a step repeats."""
    left = set(remaining)
    path: list[str] = [remaining[0]]
    while True:
        nxt = next(t for t in successors[path[-1]] if t in left)
        if nxt in path:
            return tuple(path[path.index(nxt):])
        path.append(nxt)


def entry_steps(actions: Sequence[StepNode]) -> tuple[str, ...]:
    """Action steps no edge leads to: they receive the operation's targets."""
    targets = {target for _, target in edges(actions)}
    return tuple(node.code for node in actions if node.code not in targets)
