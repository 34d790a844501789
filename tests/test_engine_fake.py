"""The engine and the iptables planner in process, on the fake host (tests/fakehost.py):
no root, no namespace, milliseconds: one restore per table, check mode, names asked once,
a failed restore, skips, faults in one member. What the planners send for a given table is
in the planner cases (tests/planner_cases/); the kernel's side is in
tests/test_lockdown_*.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statekit.engine.engine import Engine, Outcome
from statekit.host.host import Host
from statekit.load import loader
from statekit.netfilter import resolve
from tests.fakehost import FakeRunner

STATES = """\
phases: [network]
states:
  - id: out
    type: iptables_chain
    phase: network
    chain: OUTPUT
    policy: DROP
    purge: true
  - id: drop-udp
    type: iptables_rule
    phase: network
    chain: OUTPUT
    order: 900
    protocol: udp
    jump: DROP
  - id: lo
    type: iptables_rule
    phase: network
    chain: OUTPUT
    order: 100
    out_interface: lo
    jump: ACCEPT
  - id: allow
    type: iptables_rule
    phase: network
    chain: OUTPUT
    order: 600
    destination_host: [a.example, b.example]
    resolvers: [192.0.2.53]
    resolve_timeout: 1
    jump: ACCEPT
  - id: marker
    type: env_file
    phase: network
    requires: [broken]
    path: /etc/marker
    entries: {A: "1"}
  - id: broken
    type: iptables_rule
    phase: network
    chain: NO-SUCH-CHAIN
    jump: ACCEPT
  - id: after-marker
    type: env_file
    phase: network
    requires: [marker]
    path: /etc/after
    entries: {A: "1"}
"""

EXPECTED = [
    '-A OUTPUT -o lo -m comment --comment "statekit:lo" -j ACCEPT',
    '-A OUTPUT -d 192.0.2.1/32 -m comment --comment "statekit:allow a.example" -j ACCEPT',
    '-A OUTPUT -d 192.0.2.2/32 -m comment --comment "statekit:allow b.example" -j ACCEPT',
    '-A OUTPUT -p udp -m comment --comment "statekit:drop-udp" -j DROP',
]


class World:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.file = tmp_path / "states.yaml"
        self.file.write_text(STATES)
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.runner = FakeRunner()
        self.answers: dict[str, tuple[str, ...] | resolve.Failure] = {
            "a.example": ("192.0.2.1",), "b.example": ("192.0.2.2",)}
        self.asked: list[str] = []

        def fake_resolve(names: Any, families: Any, timeout: float,
                         resolvers: Any = ()) -> dict[str, Any]:
            assert tuple(resolvers) == ("192.0.2.53",)
            self.asked += list(names)
            return {n: self.answers[n] for n in names}

        monkeypatch.setattr(resolve, "resolve_each", fake_resolve)

    def converge(self, *, check: bool = False) -> list[Outcome]:
        program = loader.load([str(self.file)], environ={})
        seen: list[Outcome] = []
        host = Host(root=str(self.root), runner=self.runner)
        Engine(program, host, check=check, on_outcome=seen.append).converge()
        return seen

    def restores(self) -> int:
        return sum(1 for c in self.runner.calls_made if c[0] == "iptables-restore")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


def status(outcomes: list[Outcome]) -> dict[str, str]:
    return {o.state.id: o.status for o in outcomes}


def test_purged_chain_is_written_in_order_in_one_restore(world: World) -> None:
    first = world.converge()
    assert world.runner.rules() == EXPECTED
    assert world.runner.policy() == "DROP"
    assert world.restores() == 1
    assert status(first)["out"] == "changed"
    second = status(world.converge())
    assert {second[s] for s in ("out", "lo", "allow", "drop-udp")} == {"ok"}
    assert world.restores() == 1  # a no-op writes nothing


def test_check_mode_writes_nothing_and_reports_in_the_same_order(world: World) -> None:
    checked = world.converge(check=True)
    assert world.restores() == 0 and world.runner.rules() == []
    applied = world.converge()
    assert [o.state.id for o in checked] == [o.state.id for o in applied]
    assert [o.status for o in checked] == [o.status for o in applied]


def test_each_name_is_asked_once_per_converge_verify_included(world: World) -> None:
    world.converge()
    assert sorted(world.asked) == ["a.example", "b.example"]


def test_a_failed_restore_changes_nothing_and_fails_the_table(world: World) -> None:
    world.runner.fail_restore = "iptables-restore: line 3 failed"
    outcomes = status(world.converge())
    assert world.runner.rules() == [] and world.runner.policy() == "ACCEPT"
    assert outcomes["out"] == outcomes["lo"] == "failed"


def test_blocked_by_is_data(world: World) -> None:
    outcomes = {o.state.id: o for o in world.converge()}
    assert outcomes["broken"].status == "failed"
    assert (outcomes["marker"].status, outcomes["marker"].blocked_by) == ("skipped", "broken")
    assert outcomes["after-marker"].blocked_by == "marker"  # a skip propagates
    assert outcomes["lo"].blocked_by is None and outcomes["lo"].status == "changed"


# --- fail closed by construction: any exception in one member (issue 19) ----------------

FAULTS = (ValueError("inet_ntop: illegal IP address string"), KeyError("x"),
          ZeroDivisionError("division by zero"), RecursionError("deep"), OSError(5, "EIO"))


@pytest.mark.parametrize("fault", FAULTS, ids=lambda e: type(e).__name__)
def test_a_resolver_that_raises_at_first_boot_still_gets_the_lockdown(
        world: World, monkeypatch: pytest.MonkeyPatch, fault: Exception) -> None:
    def explode(*_args: Any, **_kw: Any) -> Any:
        raise fault

    monkeypatch.setattr(resolve, "resolve_each", explode)
    outcomes = {o.state.id: o for o in world.converge()}
    assert world.runner.policy() == "DROP"
    assert world.runner.rules() == [EXPECTED[0], EXPECTED[3]]  # no name: none accepted
    assert outcomes["allow"].status == "failed"
    assert type(fault).__name__ in str(outcomes["allow"].error)
    assert "internal error" not in str(outcomes["allow"].error)
    assert outcomes["out"].status == "changed"


def test_a_resolver_that_raises_at_refresh_keeps_every_last_known_address(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.converge()

    def explode(*_args: Any, **_kw: Any) -> Any:
        raise ValueError("illegal IP address string passed to inet_ntop")

    monkeypatch.setattr(resolve, "resolve_each", explode)
    outcomes = {o.state.id: o for o in world.converge()}
    assert world.runner.rules() == EXPECTED and world.runner.policy() == "DROP"
    assert outcomes["allow"].status == "failed"
    assert outcomes["out"].status == "ok"


@pytest.mark.parametrize("fault", FAULTS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("member", ["lo", "allow", "drop-udp"])
def test_a_member_whose_rules_cannot_be_computed_fails_alone(
        world: World, monkeypatch: pytest.MonkeyPatch, member: str, fault: Exception) -> None:
    """Whatever raises while one member's rules are computed, the chain, its policy and
    every other member are written; that member keeps its live rules (none at first
    boot), at first boot and at refresh."""
    from statekit.resources import iptables_rule

    real = iptables_rule.expand
    broken = {"on": False}

    def expand(spec: Any, *args: Any, **kwargs: Any) -> list[str]:
        if broken["on"] and spec.id == member:
            raise fault
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(iptables_rule, "expand", expand)
    own = {"lo": [EXPECTED[0]], "allow": EXPECTED[1:3], "drop-udp": [EXPECTED[3]]}[member]
    broken["on"] = True
    first = {o.state.id: o for o in world.converge()}
    assert world.runner.policy() == "DROP"
    assert world.runner.rules() == [r for r in EXPECTED if r not in own]
    assert first[member].status == "failed"
    assert type(fault).__name__ in str(first[member].error)
    assert first["out"].status == "changed"
    broken["on"] = False
    world.converge()
    assert world.runner.rules() == EXPECTED
    broken["on"] = True
    again = {o.state.id: o for o in world.converge()}
    assert world.runner.rules() == EXPECTED  # its last-known rules, in place
    assert again[member].status == "failed" and again["out"].status == "ok"


# --- the entrypoint's guard: converge --require-lockdown (statekit/commands/lockdown.py) ----------

def test_the_lockdown_check_reads_policy_and_the_static_rules(world: World) -> None:
    from statekit.commands import lockdown

    program = loader.load([str(world.file)], environ={})
    host = Host(root=str(world.root), runner=world.runner)
    assert lockdown.problems(host, program) == [
        "OUTPUT (ipv4 filter): policy is ACCEPT, not DROP"]
    assert lockdown.problems(host, None) == [
        "OUTPUT (ipv4 filter): policy is ACCEPT, not DROP"]
    world.converge()
    assert lockdown.problems(Host(root=str(world.root), runner=world.runner), program) == []
    assert lockdown.problems(Host(root=str(world.root), runner=world.runner), None) == []
    world.runner.table("ipv4", "filter")["OUTPUT"].rules.remove(EXPECTED[0])
    assert lockdown.problems(Host(root=str(world.root), runner=world.runner), program) == [
        "OUTPUT (ipv4 filter): the rules of 'lo' are missing"]
    world.runner.table("ipv4", "filter")["OUTPUT"].rules.clear()
    assert lockdown.problems(Host(root=str(world.root), runner=world.runner), None) == [
        "OUTPUT (ipv4 filter): no rule of statekit's (no loopback, no DNS)"]


def test_a_dead_name_is_no_reason_to_stop_the_boot(world: World) -> None:
    from statekit.commands import lockdown

    world.answers = {n: resolve.Failure(n, "timed out") for n in world.answers}
    world.converge()
    program = loader.load([str(world.file)], environ={})
    assert lockdown.problems(Host(root=str(world.root), runner=world.runner), program) == []
