"""Block placement, pure: when a state's block is in its slot (``placed``), peers
included. The ops a block needs (insert, append, move, delete) are planner cases:
tests/planner_cases/iptables_rule/block_*.yaml, run by tests/test_planner_cases.py."""

from __future__ import annotations

import pytest

from statekit.netfilter.block import Position, placed
from statekit.netfilter.table import Chain


def line(owner: str | None, n: int = 0) -> str:
    tag = f' -m comment --comment "statekit:{owner}"' if owner else ""
    return f"-A OUTPUT -d 10.0.0.{n}/32{tag} -j ACCEPT"


def chain(*lines: str) -> Chain:
    c = Chain("ACCEPT")
    for ln in lines:
        c.insert(len(c.rules), ln)
    return c


FIRST, LAST = Position("first"), Position("last")
BEFORE_B = Position("before", "b")


@pytest.mark.parametrize(("rules", "position", "ok"), [
    ([line("a", 1), line(None)], FIRST, True),
    ([line("x"), line("a", 1)], FIRST, False),         # an owned rule not in the slot
    ([line("x"), line("a", 1)], Position("first", peers=frozenset({"x"})), True),  # a peer
    ([line(None), line("a", 1)], FIRST, False),        # a foreign rule above
    ([line("a", 1), line(None), line("a", 2)], FIRST, False),  # not contiguous
    ([line(None), line("a", 1)], LAST, True),
    ([line("a", 1), line(None)], LAST, False),
    ([line("a", 1), line("x"), line("b")], BEFORE_B, False),  # x moved in between
    ([line("a", 1), line("x"), line("b")],
     Position("before", "b", frozenset({"x"})), True),  # x is also before b: a peer
    ([line("b"), line("a", 1)], BEFORE_B, False),
    ([line("a", 1), line(None), line("b")], BEFORE_B, False),
    ([line(None), line("a", 1)], Position("before", "missing"), True),  # like last
])
def test_placed(rules: list[str], position: Position, ok: bool) -> None:
    assert placed(chain(*rules), "a", position) is ok
