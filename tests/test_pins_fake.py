"""Pinned answers and their grace (issue 20), on the fake host with a clock the test
controls: the firewall keeps an address that left a name's answers for ``pin_grace``
seconds (tagged ``gone=<when>``), then removes it; the zone answers only the current pins
that the firewall already accepts. No root, no sleeping; the kernel's side is in
tests/test_pins_world.py. What the firewall's rules become at each step (a pin leaves,
stays for its grace, goes, comes back; a failing name) is in the planner cases:
tests/planner_cases/iptables_rule/pin_*.yaml and failed_name_*.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statekit.engine.engine import Engine, Outcome
from statekit.host.files import FileSystem
from statekit.host.host import Host
from statekit.load import loader
from statekit.netfilter import resolve
from statekit.netfilter.table import COMMENT_LIMIT, comment_of, name_tag
from statekit.report import last_run
from tests.fakehost import FakeRunner

pytestmark = pytest.mark.root

STATES = """\
phases: [network]
vars:
  grace: 600
states:
  - id: out
    type: iptables_chain
    phase: network
    chain: OUTPUT
    policy: DROP
    purge: true
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
    pin_grace: "{{ grace }}"
    jump: ACCEPT
  - id: dns
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: [a.example, b.example]
    bind: [127.0.0.53]
    answer: pinned
    pins_from: allow
"""

T0 = 1_800_000_000


def rule(addr: str, name: str, gone: int | None = None) -> str:
    mark = f" gone={gone}" if gone is not None else ""
    return f'-A OUTPUT -d {addr}/32 -m comment --comment "statekit:allow {name}{mark}" -j ACCEPT'


LO = '-A OUTPUT -o lo -m comment --comment "statekit:lo" -j ACCEPT'


class World:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.file = tmp_path / "states.yaml"
        self.file.write_text(STATES)
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.runner = FakeRunner()
        self.now = T0
        self.vars: dict[str, Any] = {}
        self.answers: dict[str, tuple[str, ...] | resolve.Failure] = {
            "a.example": ("192.0.2.1",), "b.example": ("192.0.2.2",)}

        def fake_resolve(names: Any, families: Any, timeout: float,
                         resolvers: Any = ()) -> dict[str, Any]:
            return {n: self.answers[n] for n in names}

        monkeypatch.setattr(resolve, "resolve_each", fake_resolve)

    def converge(self, *, check: bool = False) -> dict[str, Outcome]:
        """One converge; recorded for `statekit status` as the command does."""
        program = loader.load([str(self.file)], self.vars, environ={})
        seen: list[Outcome] = []
        host = Host(root=str(self.root), runner=self.runner, now=self.now)
        Engine(program, host, check=check, on_outcome=seen.append).converge()
        if not check:
            last_run.record(host.fs, seen, now=self.now, phases=["network"], exit_code=0,
                            mask=str)
        return {o.state.id: o for o in seen}

    def last(self) -> dict[str, Any]:
        found = last_run.read(FileSystem(str(self.root)))
        assert found is not None
        return found

    def answers_of(self, name: str) -> list[str]:
        """The addresses the Corefile answers ``name`` with."""
        text = (self.root / "etc/coredns/Corefile").read_text()
        return [ln.split(" IN A ")[1].rstrip('"') for ln in text.splitlines()
                if f'answer "{name}. ' in ln]

    def restores(self) -> int:
        return sum(1 for c in self.runner.calls_made if c[0] == "iptables-restore")

    def allowed(self) -> list[str]:
        return [r for r in self.runner.rules() if r != LO]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


@pytest.mark.parametrize("length", [1, 60, 200, 253])
def test_a_name_of_any_length_fits_the_comment_with_its_gone_mark(length: int) -> None:
    labels, left = [], length
    while left > 0:
        label = min(63, left)
        labels.append("a" * label)
        left -= label + 1
    name = ".".join(labels)[:length].rstrip(".")
    base = "statekit:otlp-firewall grafana-otlp"
    tag = name_tag(base, name)
    assert len(f"{tag} gone={T0}") <= COMMENT_LIMIT
    assert tag.startswith(base + " ")
    assert name_tag(base, name) == tag
    assert name_tag(base, name + "b") != tag or len(name) >= 253


def test_comment_of_reads_quoted_and_bare_comments() -> None:
    assert comment_of(rule("192.0.2.1", "a.example", 5)) == "statekit:allow a.example gone=5"
    assert comment_of('-A OUTPUT -m comment --comment statekit:lo -j ACCEPT') == "statekit:lo"
    assert comment_of("-A OUTPUT -j ACCEPT") is None


def test_the_zone_answers_only_the_current_pins_never_those_in_grace(world: World) -> None:
    world.converge()
    assert world.answers_of("a.example") == ["192.0.2.1"]
    world.answers["a.example"] = ("192.0.2.9", "192.0.2.10")
    world.now += 60
    outcomes = world.converge()
    assert world.answers_of("a.example") == ["192.0.2.9", "192.0.2.10"]
    assert outcomes["dns"].plan.facts["pins"] == {"a.example": ["192.0.2.9", "192.0.2.10"],
                                                  "b.example": ["192.0.2.2"]}
    assert world.answers_of("b.example") == ["192.0.2.2"]


def test_every_answer_is_accepted_by_the_firewall_at_every_step(world: World) -> None:
    """Whatever the answers do (rotate, fail, come back), each converge leaves the zone
    answering a subset of what the firewall accepts for that name."""
    import random

    rng = random.Random(20)
    pool = [f"192.0.2.{i}" for i in range(1, 13)]
    for step in range(60):
        for name in ("a.example", "b.example"):
            roll = rng.random()
            world.answers[name] = (resolve.Failure(name, "timed out") if roll < 0.15
                                   else tuple(rng.sample(pool, 2)))
        world.vars = {"grace": rng.choice([0, 30, 600])}
        world.now += rng.choice([5, 10, 300])
        world.converge()
        for name in ("a.example", "b.example"):
            accepted = {r.split(" -d ")[1].split("/")[0] for r in world.allowed()
                        if f"statekit:allow {name}" in r}
            assert set(world.answers_of(name)) <= accepted, (step, name)


def test_a_failed_restore_leaves_the_old_pins(world: World) -> None:
    world.converge()
    world.answers["a.example"] = ("192.0.2.9",)
    world.runner.fail_restore = "iptables-restore: line 3 failed"
    outcomes = world.converge()
    assert outcomes["out"].status == "failed"
    assert world.answers_of("a.example") == ["192.0.2.1"]  # the firewall still has it


def test_at_first_boot_a_dead_name_has_no_answer(world: World) -> None:
    world.answers["a.example"] = resolve.Failure("a.example", "timed out")
    world.converge()
    assert world.answers_of("a.example") == []
    assert world.answers_of("b.example") == ["192.0.2.2"]


def test_a_no_op_refresh_writes_nothing(world: World) -> None:
    world.converge()
    corefile = world.root / "etc/coredns/Corefile"
    before, writes = corefile.stat().st_mtime_ns, world.restores()
    world.now += 300
    outcomes = world.converge()
    assert {o.status for o in outcomes.values()} == {"ok"}
    assert corefile.stat().st_mtime_ns == before and world.restores() == writes


def test_the_last_run_keeps_pins_grace_failures_since_when_and_history(world: World) -> None:
    world.converge()
    assert world.last()["names"]["a.example"]["pins"] == ["192.0.2.1"]
    world.answers["a.example"] = ("192.0.2.9",)
    world.now += 60
    world.converge()
    names = world.last()["names"]
    assert names["a.example"]["grace"] == {"192.0.2.1": T0 + 60}
    world.answers["b.example"] = resolve.Failure("b.example", "NXDOMAIN")
    world.now += 60
    world.converge()
    world.now += 60
    world.converge()
    failing = world.last()["names"]["b.example"]
    assert (failing["failing"], failing["failing_since"]) == ("NXDOMAIN", T0 + 120)
    assert failing["pins"] == ["192.0.2.2"] and failing["resolved"] == T0 + 60
    world.now = T0 + 60 + 600
    world.converge()
    last = world.last()
    assert last["names"]["a.example"]["grace"] == {}
    assert last["history"] == {"192.0.2.1": {"name": "a.example", "left": T0 + 660}}
    assert last["time"] == T0 + 660


def test_a_damaged_record_is_no_history(world: World) -> None:
    world.converge()
    path = world.root / "run/statekit/last-run.json"
    for junk in (b"{", b"[]", b'{"format_version": 99}', b"\xff\xfe", b"x" * 10):
        path.write_bytes(junk)
        assert last_run.read(FileSystem(str(world.root))) is None
        world.converge()  # rewritten whole
        assert world.last()["names"]["a.example"]["pins"] == ["192.0.2.1"]


def test_a_no_op_converge_only_moves_the_records_time(world: World) -> None:
    world.converge()
    world.converge()  # the first no-op: its counts differ from the first converge's
    path = world.root / "run/statekit/last-run.json"
    inode, content = path.stat().st_ino, path.read_bytes()
    world.now += 300
    world.converge()
    assert (path.stat().st_ino, path.read_bytes()) == (inode, content)  # not rewritten
    assert world.last()["time"] == T0 + 300
    world.answers["a.example"] = ("192.0.2.9",)
    world.now += 300
    world.converge()
    assert path.stat().st_ino != inode and world.last()["time"] == T0 + 600
