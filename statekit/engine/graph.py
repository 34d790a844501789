"""Ordering: requisites (``requires``, ``onchanges``, a resource's own) and phases.

Checked once for all phases: unknown targets, a requisite in a later phase, cycles
(named). The problems are data (state, field, what is wrong): the loader, which knows the
files, tells each with its file and line. Inside a phase, states run in dependency
order, file order breaking ties.
"""

from __future__ import annotations

import heapq

from statekit import resources
from statekit.errors import did_you_mean
from statekit.program import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


def edges(state: State) -> list[tuple[str, str]]:
    """(field, target id) for every requisite of ``state``: what must run before it."""
    out = [("requires", t) for t in state.requires]
    out += [("onchanges", t) for t in state.onchanges]
    if state.spec is not None:
        out += [("position", t) for t in resources.get(state.type).ordering(state.spec)]
    return out


def check_graph(states: list[State], phases: list[str], others: Iterable[str] = (), *,
                complete: bool = True) -> list[tuple[State, str, str]]:
    """Every problem of the requisites, as (state, field, problem): an unknown target
    (with the nearest id), one in a later phase, a state that requires itself, a cycle.
    The field is the one that names the target (``requires``, ``position.before``...).
    ``others``: ids of states that could not be loaded (their own errors are told: naming
    one is no error); with ``complete`` false (a file could not be read), an unknown
    target is not told."""
    by_id = {s.id: s for s in states}
    known = [*by_id, *others]
    rank = {p: i for i, p in enumerate(phases)}
    out: list[tuple[State, str, str]] = []
    for state in states:
        for key, target in edges(state):
            other = by_id.get(target)
            problem = None
            if other is None and target not in known and complete:
                problem = f"unknown state {target!r}" + did_you_mean(target, known)
            elif other is not None and rank[other.phase] > rank[state.phase]:
                problem = (f"{target!r} is in phase {other.phase!r}, which runs after "
                           f"{state.phase!r}")
            elif other is state:
                problem = "a state cannot require itself"
            if problem:
                out.append((state, _field(state, key), problem))
    cycle = find_cycle(states)
    if cycle:
        out.append((by_id[cycle[0]], "requires", "dependency cycle: " + " -> ".join(cycle)))
    return out


#: The field that names a type's own requisite (``edges``' "position").
_ORDERING_FIELD = {"iptables_rule": "position.before", "coredns_zone": "pins_from"}


def _field(state: State, key: str) -> str:
    """The field that names the target: a type's own requisite by its own field."""
    return _ORDERING_FIELD.get(state.type, key) if key == "position" else key


def find_cycle(states: list[State]) -> list[str] | None:
    """A cycle as ``[a, b, a]`` (each requires the next), or None."""
    return cycle_in({s.id: [t for _, t in edges(s)] for s in states})


def cycle_in(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph ``deps`` (node -> the nodes it points to) as ``[a, b, a]``,
    or None; nodes are visited in the mapping's order."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for nxt in deps.get(node, []):
            if color.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in color and (found := visit(nxt)):
                return found
        stack.pop()
        color[node] = 2
        return None

    for node in deps:
        if node not in color and (found := visit(node)):
            return found
    return None


def order(states: list[State]) -> list[State]:
    """``states`` (one phase) in dependency order; ties broken by file order (stable)."""
    members = {s.id: s for s in states}
    waiting = {s.id: {t for _, t in edges(s) if t in members} for s in states}
    dependents: dict[str, list[str]] = {s.id: [] for s in states}
    for sid, deps in waiting.items():
        for dep in deps:
            dependents[dep].append(sid)
    ready = [(s.order, s.id) for s in states if not waiting[s.id]]
    heapq.heapify(ready)
    result: list[State] = []
    while ready:
        _, sid = heapq.heappop(ready)
        result.append(members[sid])
        for nxt in dependents[sid]:
            waiting[nxt].discard(sid)
            if not waiting[nxt]:
                heapq.heappush(ready, (members[nxt].order, nxt))
    return result
