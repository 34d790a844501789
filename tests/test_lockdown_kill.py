"""SIGKILL anywhere in the lockdown's converge leaves the old table or the new one.

The shipped states (phase network) converge the sandbox's container (tests/e2e/harness.py)
from a "before" to an "after" lockdown. The converge's crash points are listed with
``STATEKIT_TEST_HOOK=list`` (statekit/testhook.py: each file write step and each command
is one); then for every point N the container is put back to "before", a converge is
killed at N (``kill:N``), and:

- the filter table (its OUTPUT chain and policy included) is exactly "before" or exactly
  "after" (iptables-save without counters): never a mix, never the DROP policy without
  its accepts nor the accepts without the DROP; the same for the IPv6 filter table, its
  own transaction (each family before or after on its own);
- the next converge completes and reaches "after" (the Corefile included; on the way it
  may be written more than once, by each coredns_zone state, each write atomic).

Two starting points: a fresh container (ACCEPT, no rules, no Corefile) and an older
lockdown (b.allowed.test at another address).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import ALLOWED_HOSTS, SPARE_ADDRS, Sandbox
from tests.e2e.lockdown import Lockdown, Result

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

B = list(ALLOWED_HOSTS)[1]
EMPTY = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


@dataclass(frozen=True)
class Snapshot:
    table: tuple[str, ...]
    table6: tuple[str, ...]
    corefile: bytes | None


class Machine:
    """The container of a :class:`Lockdown`, saved and put back between kills."""

    def __init__(self, world: Lockdown) -> None:
        self.world = world

    def snapshot(self) -> Snapshot:
        path = self.world.corefile
        return Snapshot(tuple(self.world.table()), tuple(self.world.table("ipv6")),
                        path.read_bytes() if path.exists() else None)

    def restore(self, snap: Snapshot) -> None:
        """Put the filter tables and the Corefile back as ``snap`` saw them, with no
        record of a last run (so that every converge writes one: the same hook points
        each time)."""
        (self.world.root / "run/statekit/last-run.json").unlink(missing_ok=True)
        for tool, table in (("iptables-restore", snap.table),
                            ("ip6tables-restore", snap.table6)):
            text = "\n".join(table) + "\n" if table else EMPTY
            proc = self.world.box.run_in_container([tool], input=text, resolver=None)
            assert proc.returncode == 0, proc.stderr
        if snap.corefile is None:
            self.world.corefile.unlink(missing_ok=True)
        else:
            self.world.corefile.parent.mkdir(parents=True, exist_ok=True)
            self.world.corefile.write_bytes(snap.corefile)
        assert self.snapshot() == snap

    def converge(self, hook: str | None = None) -> Result:
        """Without a grace: the table after is the same in every run (an address in
        grace carries the time it left; tests/test_pins_world.py kills across that)."""
        env = {"STATEKIT_TEST_HOOK": hook} if hook else None
        return self.world.converge("--var", "pin_grace=0", env=env, resolver="upstream")


@pytest.fixture
def machine(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Machine]:
    clean_sandbox.reset_hosts()
    root = tmp_path / "root"
    root.mkdir()
    yield Machine(Lockdown(clean_sandbox, root))
    clean_sandbox.reset_hosts()


def older_lockdown(machine: Machine) -> Snapshot:
    """A lockdown converged when b.allowed.test had another address."""
    machine.world.box.set_hosts({B: SPARE_ADDRS[0]})
    try:
        first = machine.converge()
        assert first.rc == 0, first.output
        return machine.snapshot()
    finally:
        machine.world.box.reset_hosts()


def crash_at(machine: Machine, point: int, before: Snapshot,
             after: Snapshot) -> tuple[list[str], str]:
    """Kill a converge from ``before`` at ``point``: what went wrong (nothing: []) and
    which tables the kill left (``before``, ``after``, ``same`` when the converge does
    not change that table, or ``mix``; IPv4/IPv6)."""
    machine.restore(before)
    killed = machine.converge(f"kill:{point}")
    problems = [] if killed.rc == -9 else [f"not killed: rc {killed.rc}"]
    got = machine.snapshot()
    left = []
    for family, old, new, now in (("IPv4", before.table, after.table, got.table),
                                  ("IPv6", before.table6, after.table6, got.table6)):
        left.append("same" if old == new == now else
                    {old: "before", new: "after"}.get(now, "mix"))
        if now not in (old, new):
            problems.append(f"the {family} filter table is neither before nor after:\n  "
                            + "\n  ".join(now))
    done = machine.converge()
    if done.rc != 0:
        problems.append(f"the next converge failed: {done.output.strip()[-300:]}")
    elif machine.snapshot() != after:
        problems.append("the next converge did not reach after")
    return [f"kill at point {point}: {p}" for p in problems], "/".join(left)


@pytest.mark.parametrize("start", ["fresh", "older-lockdown"])
def test_sigkill_at_every_point_leaves_the_old_table_or_the_new(machine: Machine,
                                                                start: str) -> None:
    before = older_lockdown(machine) if start == "older-lockdown" else machine.snapshot()
    assert machine.converge().rc == 0  # statekit's program cache is warm from here on,
    machine.restore(before)            # so every converge below has the same points
    listed = machine.converge("list")
    assert listed.rc == 0, listed.output
    after = machine.snapshot()
    assert after.table != before.table and any(":OUTPUT DROP" in ln for ln in after.table)
    points = [ln for ln in listed.stderr.splitlines() if ln.startswith("hook ")]
    assert any(ln.split()[2:4] == ["run", "iptables-restore"] for ln in points), points

    problems, left = [], []
    for n in range(1, len(points) + 1):
        found, table = crash_at(machine, n, before, after)
        problems += found
        left.append(table)
    assert problems == [], "\n".join(problems)
    for family in (0, 1):
        seen = {pair.split("/")[family] for pair in left}
        assert seen in ({"before", "after"}, {"same"}), f"not straddling the change: {left}"
    assert {pair.split("/")[0] for pair in left} == {"before", "after"}
    beyond, _ = crash_at(machine, len(points) + 1, before, after)
    assert beyond == [f"kill at point {len(points) + 1}: not killed: rc 0"]
    print(f"\n{start}: {len(points)} kill points, tables left: {left}")
