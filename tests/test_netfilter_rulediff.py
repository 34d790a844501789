"""The -/+/~ lines of a change to a chain's rules, pure: one order and one spelling for
a block, a purged chain's member and the purged chain."""

from __future__ import annotations

import pytest

from statekit.netfilter.rulediff import marks, out_of_order, text


@pytest.mark.parametrize(("current", "desired", "moved", "expected"), [
    (["a", "b"], ["a", "b"], (), []),
    (["a", "x", "b"], ["a", "b", "c"], (), [("-", "x"), ("+", "c")]),
    # the rules there now first, in their order (- and ~ mixed), then the new ones
    (["b", "x", "a"], ["a", "b", "c"], {"a", "b"}, [("~", "b"), ("-", "x"), ("~", "a"),
                                                     ("+", "c")]),
    ([], ["a", "b"], (), [("+", "a"), ("+", "b")]),
    (["a"], [], {"a"}, [("-", "a")]),  # a rule that goes is never "moved"
])
def test_marks(current: list[str], desired: list[str], moved: set[str],
               expected: list[tuple[str, str]]) -> None:
    assert marks(current, desired, moved) == expected


@pytest.mark.parametrize(("current", "desired", "expected"), [
    (["a", "b", "c"], ["a", "b", "c"], set()),
    (["c", "a", "b"], ["a", "b", "c"], {"c"}),  # one rule moves, not three
    (["b", "a"], ["a", "b"], {"a"}),
    (["x", "b", "a", "y"], ["a", "b", "z"], {"a"}),  # only rules in both can move
])
def test_out_of_order_is_the_fewest_moves(current: list[str], desired: list[str],
                                          expected: set[str]) -> None:
    assert out_of_order(current, desired) == expected


def test_lines_as_a_person_reads_them() -> None:
    assert [text(m, "-A OUTPUT -j ACCEPT") for m in "-+~"] == [
        "- -A OUTPUT -j ACCEPT", "+ -A OUTPUT -j ACCEPT", "~ -A OUTPUT -j ACCEPT (moved)"]
