"""Crash consistency: SIGKILL a converge at every hook point (``STATEKIT_TEST_HOOK``).

One converge changes an env file, a Corefile and the filter tables (IPv4 and IPv6 rules
and the OUTPUT policy of both families, in one transaction per table, as in
states/network.yaml) of a private network namespace, from version A to version B. The points
are listed with ``STATEKIT_TEST_HOOK=list``; then, for each point N, the machine is put
back to A, a converge to B is killed at N (``kill:N``), and:

- the env file and the Corefile are each whole A (with A's mode) or whole B (B's mode);
- each filter table (IPv4, IPv6) is exactly A's or exactly B's (iptables-save without
  comments and counters): never a half-applied transaction;
- the next converge completes, reaches B, and leaves no ``.NAME.statekit-tmp-*`` file.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Run, in_netns, register_token, saved, statekit

pytestmark = pytest.mark.netns

TOKEN = "glc_crash_token_7d1e9a2b4c"
register_token(TOKEN)
ENV_FILE = "tmp/otel/otel-env"
COREFILE = "etc/coredns/Corefile"
RECORD = "run/statekit/last-run.json"  # statekit status's record of the last converge
STATES = """\
phases: [network, auth]
secrets: [TOKEN]
vars:
  version: a
states:
  - id: dns
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: "{{ 'a.example.test' if version == 'a' else ['b.example.test', 'c.example.test'] }}"
    bind: [127.0.0.53]
    forward: [192.0.2.53]
    mode: "{{ '0644' if version == 'a' else '0640' }}"
  - id: fw-web
    type: iptables_rule
    phase: network
    chain: OUTPUT
    family: both
    protocol: tcp
    dport: "{{ 443 if version == 'a' else 8443 }}"
    destination: "{{ ['192.0.2.1', '2001:db8::1'] if version == 'a' else
                     ['192.0.2.2', '192.0.2.3', '2001:db8::2'] }}"
    jump: ACCEPT
  - id: fw-log
    type: iptables_rule
    phase: network
    chain: OUTPUT
    position: last
    jump: NFLOG
    nflog_group: "{{ 1 if version == 'a' else 2 }}"
  - id: fw-policy
    type: iptables_chain
    phase: network
    requires: [fw-web, fw-log]
    chain: OUTPUT
    family: both
    policy: "{{ 'ACCEPT' if version == 'a' else 'DROP' }}"
  - id: otel-env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    entries:
      VERSION: "{{ version }}"
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Basic%20{{ ('42:' ~ env.TOKEN) | b64encode }}"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
"""
_COUNTERS = re.compile(r" \[\d+:\d+\]$")


@dataclass(frozen=True)
class Snapshot:
    """What a converge manages: both files (content, mode) and both filter tables."""

    env: tuple[bytes, int] | None
    corefile: tuple[bytes, int] | None
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


class Machine:
    """A temporary root and a private network namespace, converged by the CLI."""

    def __init__(self, netns: str, tmp: Path) -> None:
        self.netns, self.root = netns, tmp / "root"
        self.root.mkdir()
        self.states = tmp / "states.yaml"
        self.states.write_text(STATES)

    def converge(self, version: str, hook: str | None = None) -> Run:
        env = {"TOKEN": TOKEN} | ({"STATEKIT_TEST_HOOK": hook} if hook else {})
        return statekit(["converge", "--root", str(self.root), "--var", f"version={version}",
                         str(self.states)], netns=self.netns, env=env)

    def reset(self) -> None:
        """Back to nothing: no files, empty filter tables with ACCEPT policies, and no
        record of a last run (so that every converge writes one: the same hook points
        each time)."""
        for rel in (ENV_FILE, COREFILE, RECORD):
            (self.root / rel).unlink(missing_ok=True)
        empty = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 "COMMIT\n")
        for tool in ("iptables-restore", "ip6tables-restore"):
            in_netns(self.netns, [tool], input=empty)

    def snapshot(self) -> Snapshot:
        return Snapshot(self._file(ENV_FILE), self._file(COREFILE), self._table("ipv4"),
                        self._table("ipv6"))

    def temporaries(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if ".statekit-tmp-" in p.name)

    def _file(self, rel: str) -> tuple[bytes, int] | None:
        path = self.root / rel
        if not path.exists():
            return None
        return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)

    def _table(self, family: str) -> tuple[str, ...]:
        return tuple(_COUNTERS.sub("", ln) for ln in saved(self.netns, family=family))


@pytest.fixture
def machine(netns: str, tmp_path: Path) -> Iterator[Machine]:
    yield Machine(netns, tmp_path)


def hook_points(machine: Machine, version: str) -> list[str]:
    """The hook points of one converge to ``version`` (it runs to completion)."""
    run = machine.converge(version, hook="list")
    assert run.returncode == 0, run.output
    return [ln for ln in run.stderr.splitlines() if ln.startswith("hook ")]


def reference(machine: Machine, version: str) -> Snapshot:
    machine.reset()
    assert machine.converge(version).returncode == 0
    return machine.snapshot()


def either(field: str, got: Snapshot, before: Snapshot, after: Snapshot) -> bool:
    return getattr(got, field) in (getattr(before, field), getattr(after, field))


def crash_at(machine: Machine, point: int, start: str | None, before: Snapshot,
             after: Snapshot) -> list[str]:
    """Kill a converge (from ``start``, or nothing) to B at ``point``; what went wrong."""
    machine.reset()
    if start is not None:
        assert machine.converge(start).returncode == 0
    killed = machine.converge("b", hook=f"kill:{point}")
    problems = [] if killed.returncode == -9 else [f"not killed: rc {killed.returncode}"]
    got = machine.snapshot()
    problems += [f"{field} is neither before nor after" for field in
                 ("env", "corefile", "ipv4", "ipv6") if not either(field, got, before, after)]
    done = machine.converge("b")
    if done.returncode != 0:
        problems.append(f"next converge failed: {done.output.strip()[-200:]}")
    if machine.snapshot() != after:
        problems.append("next converge did not reach B")
    if machine.temporaries():
        problems.append(f"temporary files left: {machine.temporaries()}")
    return [f"kill at point {point}: {p}" for p in problems]


@pytest.mark.parametrize("start", ["a", None], ids=["from-a", "from-nothing"])
def test_sigkill_at_every_hook_point_leaves_old_or_new(machine: Machine,
                                                       start: str | None) -> None:
    after = reference(machine, "b")
    before = reference(machine, start) if start else Snapshot(None, None, *_empty(machine))
    machine.reset()
    if start:
        machine.converge(start)
    points = hook_points(machine, "b")
    kinds = {ln.split()[2] for ln in points}
    assert {"create", "write", "fsync", "rename", "run"} <= kinds, points
    assert len(points) >= 10, points
    problems = [p for n in range(1, len(points) + 1)
                for p in crash_at(machine, n, start, before, after)]
    assert problems == []
    beyond = crash_at(machine, len(points) + 1, start, before, after)
    assert beyond == [f"kill at point {len(points) + 1}: not killed: rc 0"]
    print(f"\n{start or 'nothing'} -> b: {len(points)} kill points, all consistent")


def _empty(machine: Machine) -> tuple[tuple[str, ...], tuple[str, ...]]:
    machine.reset()
    snap = machine.snapshot()
    return snap.ipv4, snap.ipv6


def test_a_kill_between_tables_leaves_each_table_whole(machine: Machine) -> None:
    """Killed after the IPv4 restore, before the IPv6 one: IPv4 is all B (rules and
    policy), IPv6 all A; the Corefile is B, the env file (next phase) still A."""
    before, after = reference(machine, "a"), reference(machine, "b")
    machine.reset()
    assert machine.converge("a").returncode == 0
    points = hook_points(machine, "b")
    machine.reset()
    assert machine.converge("a").returncode == 0
    restores = [int(ln.split()[1]) for ln in points if ln.endswith("restore")]
    assert len(restores) == 2, points
    assert machine.converge("b", hook=f"kill:{restores[1]}").returncode == -9
    got = machine.snapshot()
    assert got.ipv4 == after.ipv4 and got.ipv6 == before.ipv6
    assert got.ipv4 != before.ipv4 and got.ipv6 != after.ipv6
    assert got.corefile == after.corefile and got.env == before.env
