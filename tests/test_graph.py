"""Ordering: dependency order, file order breaking ties, cycles named."""

from __future__ import annotations

from statekit.engine.graph import check_graph, find_cycle, order
from statekit.program import State


def st(sid: str, order_: int, requires: list[str] | None = None,
       onchanges: list[str] | None = None) -> State:
    return State(id=sid, type="command", phase="p", file="f.yaml", line=1, index=order_,
                 order=order_, requires=requires or [], onchanges=onchanges or [])


def ids(states: list[State]) -> list[str]:
    return [s.id for s in states]


def test_file_order_when_independent() -> None:
    assert ids(order([st("a", 0), st("b", 1), st("c", 2)])) == ["a", "b", "c"]


def test_requirement_moves_a_state_down_only_as_far_as_needed() -> None:
    states = [st("a", 0, ["c"]), st("b", 1), st("c", 2), st("d", 3)]
    assert ids(order(states)) == ["b", "c", "a", "d"]


def test_onchanges_orders_like_requires() -> None:
    states = [st("reload", 0, onchanges=["zone"]), st("zone", 1)]
    assert ids(order(states)) == ["zone", "reload"]


def test_requirement_outside_the_phase_is_ignored_for_ordering() -> None:
    assert ids(order([st("a", 0, ["elsewhere"]), st("b", 1)])) == ["a", "b"]


def test_cycle_is_named() -> None:
    cycle = find_cycle([st("a", 0, ["b"]), st("b", 1, ["c"]), st("c", 2, ["a"])])
    assert cycle == ["a", "b", "c", "a"]


def test_no_cycle() -> None:
    assert find_cycle([st("a", 0, ["b"]), st("b", 1)]) is None


def test_check_graph_returns_each_problem_as_data_with_its_field() -> None:
    """No file or line here (the loader adds them): the state, the field that names the
    target, what is wrong."""
    a, b = st("a", 0, ["b", "nope"]), st("b", 1, ["a"])
    problems = [(s.id, field, text) for s, field, text in check_graph([a, b], ["p"])]
    assert problems == [("a", "requires", "unknown state 'nope'"),
                        ("a", "requires", "dependency cycle: a -> b -> a")]
    assert check_graph([a], ["p"], others=["b", "nope"]) == []
