"""Placing one state's block of rules in a chain (pure; works on a copy of the chain).

A state's rules form one contiguous block, in the desired order. ``first``: only rules
of its peers (the other ``first`` states of the chain) stand above it; ``last``: only
its peers' rules below it; ``before: X``: it ends above X's first rule with only its
peers' rules (the other ``before: X`` states) between (like ``last`` when X owns no rule
in the chain). Peers share a slot without fighting; anything else in the slot, a foreign
rule or an owned rule moved there by hand, makes the block misplaced. A misplaced, split
or reordered block is moved (deleted and inserted again); within a well-placed block only
the rules added or removed are touched. Insert indices are computed on the simulated chain, so the
restore's sequential semantics match.
"""

from __future__ import annotations

from statekit.netfilter.rulediff import marks
from statekit.netfilter.table import Chain, Op
from statekit.typeshim import Record


class Position(Record):
    kind: str = "first"  # first | last | before
    before: str = ""
    peers: frozenset[str] = frozenset()  # other states of the chain in the same slot


class BlockPlan:
    """The ops to run, in order, and the diff: ``(mark, rule)`` pairs
    (:mod:`statekit.netfilter.rulediff`)."""

    __slots__ = ("diff", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.diff: list[tuple[str, str]] = []


def _only_peers(chain: Chain, start: int, stop: int, peers: frozenset[str]) -> bool:
    return all(o is not None and o in peers for o in chain.owners[start:stop])


def placed(chain: Chain, state_id: str, position: Position) -> bool:
    """Whether the state's rules form one block standing where ``position`` says."""
    idx = chain.owned_by(state_id)
    if not idx:
        return True
    if idx[-1] - idx[0] + 1 != len(idx):
        return False
    peers = position.peers
    if position.kind == "first":
        return _only_peers(chain, 0, idx[0], peers)
    target = chain.first_of(position.before) if position.kind == "before" else None
    if target is not None:
        return idx[-1] < target and _only_peers(chain, idx[-1] + 1, target, peers)
    return _only_peers(chain, idx[-1] + 1, len(chain.rules), peers)


def target_index(chain: Chain, position: Position) -> int:
    if position.kind == "first":
        return 0
    target = chain.first_of(position.before) if position.kind == "before" else None
    return len(chain.rules) if target is None else target


def plan_block(chain: Chain, name: str, state_id: str, desired: list[str],
               position: Position) -> BlockPlan:
    """The ops taking ``chain`` (named ``name``) to the desired block of ``state_id``."""
    current = [chain.rules[i] for i in chain.owned_by(state_id)]
    ok = placed(chain, state_id, position)
    if current == desired and ok:
        return BlockPlan()
    sim, out = chain.copy(), BlockPlan()
    have, want = set(current), set(desired)
    in_order = [ln for ln in current if ln in want] == [ln for ln in desired if ln in have]
    if ok and in_order and len(have) == len(current):
        _incremental(sim, name, current, desired, position, out)
        out.diff = marks(current, desired)
    else:  # every rule of the block is deleted and inserted again: the kept ones move
        _rebuild(sim, name, current, desired, position, out)
        out.diff = marks(current, desired, moved=want)
    return out


def _delete(sim: Chain, name: str, line: str, out: BlockPlan) -> None:
    sim.remove(line)
    out.ops.append(Op(kind="delete", chain=name, restore="-D" + line[2:], line=line))


def _insert(sim: Chain, name: str, index: int, line: str, out: BlockPlan) -> None:
    spec = line[len(f"-A {name} "):]
    restore = line if index == len(sim.rules) else f"-I {name} {index + 1} {spec}"
    sim.insert(index, line)
    out.ops.append(Op(kind="insert", chain=name, restore=restore, line=line, at=index))


def _incremental(sim: Chain, name: str, current: list[str], desired: list[str],
                 position: Position, out: BlockPlan) -> None:
    want = set(desired)
    for line in current:
        if line not in want:
            _delete(sim, name, line, out)
    have = set(current)
    kept = [ln for ln in desired if ln in have]
    cursor: int | None = None
    for line in desired:
        if line in have:
            cursor = sim.rules.index(line) + 1
            continue
        if cursor is None:
            cursor = sim.rules.index(kept[0]) if kept else target_index(sim, position)
        _insert(sim, name, cursor, line, out)
        cursor += 1


def _rebuild(sim: Chain, name: str, current: list[str], desired: list[str],
             position: Position, out: BlockPlan) -> None:
    for line in current:
        _delete(sim, name, line, out)
    start = target_index(sim, position)
    for offset, line in enumerate(desired):
        _insert(sim, name, start + offset, line, out)
