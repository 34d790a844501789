"""Block placement, pure: which ops a state's rules need in a chain (no kernel needed)."""

from __future__ import annotations

import pytest

from statekit.netfilter.block import Position, placed, plan_block
from statekit.netfilter.rulediff import text
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


def run(c: Chain, desired: list[str], position: Position = FIRST) -> tuple[Chain, list[str]]:
    """Plan, play the ops on the chain, and return it with the diff's lines."""
    block = plan_block(c, "OUTPUT", "a", desired, position)
    for op in block.ops:
        if op.kind == "insert":
            c.insert(op.at, op.line)
        else:
            c.remove(op.line)
    return c, [text(mark, rule) for mark, rule in block.diff]

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


def test_noop_when_block_is_right() -> None:
    c = chain(line("a", 1), line("a", 2), line(None))
    assert plan_block(c, "OUTPUT", "a", [line("a", 1), line("a", 2)], FIRST).ops == []


def test_first_inserts_at_top_in_order() -> None:
    c, diff = run(chain(line(None)), [line("a", 1), line("a", 2)])
    assert c.rules == [line("a", 1), line("a", 2), line(None)]
    assert diff == [f"+ {line('a', 1)}", f"+ {line('a', 2)}"]


def test_last_appends_and_restore_uses_append() -> None:
    block = plan_block(chain(line(None)), "OUTPUT", "a", [line("a", 1)], LAST)
    assert [op.restore for op in block.ops] == [line("a", 1)]


def test_insert_uses_one_based_index() -> None:
    block = plan_block(chain(line(None)), "OUTPUT", "a", [line("a", 1)], FIRST)
    assert block.ops[0].restore == line("a", 1).replace("-A OUTPUT", "-I OUTPUT 1")


def test_before_places_immediately_above_target() -> None:
    c, _ = run(chain(line(None), line("b"), line(None, 9)), [line("a", 1)], BEFORE_B)
    assert c.rules == [line(None), line("a", 1), line("b"), line(None, 9)]


def test_misplaced_block_is_moved_not_ok() -> None:
    c, diff = run(chain(line(None), line("a", 1)), [line("a", 1)])
    assert c.rules == [line("a", 1), line(None)]
    assert diff == [f"~ {line('a', 1)} (moved)"]


def test_added_address_inserted_inside_block_only() -> None:
    c = chain(line("a", 1), line("a", 3), line(None))
    block = plan_block(c, "OUTPUT", "a", [line("a", 1), line("a", 2), line("a", 3)], FIRST)
    assert [op.kind for op in block.ops] == ["insert"]
    assert block.ops[0].at == 1


def test_removed_address_deleted_only() -> None:
    c, diff = run(chain(line("a", 1), line("a", 2), line(None)), [line("a", 2)])
    assert c.rules == [line("a", 2), line(None)]
    assert diff == [f"- {line('a', 1)}"]


def test_wrong_order_is_rebuilt() -> None:
    c, diff = run(chain(line("a", 2), line("a", 1)), [line("a", 1), line("a", 2)])
    assert c.rules == [line("a", 1), line("a", 2)]
    assert all(d.startswith("~") for d in diff)


def test_absent_removes_every_owned_rule_only() -> None:
    c, _ = run(chain(line("a", 1), line(None, 1), line("a", 2), line("x", 1)), [])
    assert c.rules == [line(None, 1), line("x", 1)]
