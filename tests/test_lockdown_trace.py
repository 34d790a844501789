"""The shipped states (states/), converged on the fake host with a fake resolver, then
packets traced through the OUTPUT chains they wrote (tests/tracer.py): what the lockdown
lets out and what it drops, in milliseconds, without root or a namespace. The namespace
tests (tests/test_lockdown_*.py, tests/test_ipv6_lockdown.py) send real packets where
only the kernel can tell.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statekit.engine.engine import Engine, Outcome
from statekit.host.host import Host
from statekit.load import loader
from statekit.netfilter import resolve
from tests.conftest import REPO
from tests.fakehost import FakeRunner
from tests.tracer import Packet, Trace, trace

pytestmark = pytest.mark.root

STATES = REPO / "states"
T0 = 1_800_000_000
DOMAINS = ["allowed.example", "metadata.example", "private.example"]
ANSWERS = {"allowed.example": ("198.51.100.10",),
           "metadata.example": ("169.254.169.254",),  # an allowlisted name that resolves
           "private.example": ("172.20.1.1",)}  # into the blocked ranges
PIN_GRACE = 660  # states/network.yaml's pin_grace


class Machine:
    """The fake host, converged with the shipped states (phase network)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.tmp = tmp_path
        self.runner = FakeRunner()
        self.answers: dict[str, tuple[str, ...]] = dict(ANSWERS)
        self.now = T0

        def answer(names: Any, families: Any, timeout: float,
                   resolvers: Any = ()) -> dict[str, Any]:
            assert tuple(resolvers) == ("8.8.8.8", "1.1.1.1")  # the upstream resolvers
            return {n: self.answers[n] for n in names}

        monkeypatch.setattr(resolve, "resolve_each", answer)

    def converge(self, states: Path = STATES, **overrides: Any) -> dict[str, Outcome]:
        program = loader.load([str(states)], {"domains": DOMAINS, **overrides}, environ={})
        host = Host(root=str(self.root), runner=self.runner, now=self.now)
        outcomes = {o.state.id: o for o in Engine(program, host).converge(["network"])}
        failed = {k: o.error for k, o in outcomes.items() if o.status == "failed"}
        assert not failed, failed
        return outcomes

    def trace(self, packet: Packet) -> Trace:
        return trace(self.runner, packet)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    m = Machine(tmp_path, monkeypatch)
    m.converge()
    return m


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """One converged machine for the tests that only trace (they change nothing)."""
    with pytest.MonkeyPatch.context() as patch:
        m = Machine(tmp_path_factory.mktemp("shipped"), patch)
        m.converge()
        yield m


LOGGED_DROP = ["CODETAINER_DROP"]


def label(value: Any) -> str:
    """A test's id: the packet, then its path (``fw-log>DROP``)."""
    return ">".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize(("packet", "path"), [
    # loopback: anything, to anyone, first
    (Packet("127.0.0.1", dport=8080, oif="lo"), ["fw-loopback", "ACCEPT"]),
    (Packet("127.0.0.53", "udp", 53, oif="lo"), ["fw-loopback", "ACCEPT"]),
    (Packet("127.0.0.53", "tcp", 53, oif="lo"), ["fw-loopback", "ACCEPT"]),
    # the local resolver's rules, for a packet to it that does not leave by lo
    (Packet("127.0.0.53", "udp", 53), ["fw-dns-local-udp", "ACCEPT"]),
    (Packet("127.0.0.53", "tcp", 53), ["fw-dns-local-tcp", "ACCEPT"]),
    # the metadata address and the private ranges: logged, then dropped, even for an
    # allowlisted name that resolves there, even for root, even ESTABLISHED
    (Packet("169.254.169.254", dport=80), ["fw-log-private", "fw-drop-private", "DROP"]),
    (Packet("169.254.169.254", dport=80, uid=0, ctstate="ESTABLISHED"),
     ["fw-log-private", "fw-drop-private", "DROP"]),
    (Packet("172.20.1.1", dport=443), ["fw-log-private", "fw-drop-private", "DROP"]),
    (Packet("172.31.255.255", "udp", 53, uid=0), ["fw-log-private", "fw-drop-private", "DROP"]),
    # the upstream resolvers: root's DNS goes out; anyone else's is logged, then dropped,
    # even as an ESTABLISHED packet (the conntrack entry of one of root's lookups)
    (Packet("8.8.8.8", "udp", 53, uid=0), ["fw-dns-upstream", "ACCEPT"]),
    (Packet("1.1.1.1", "udp", 53, uid=0, ctstate="ESTABLISHED"), ["fw-dns-upstream", "ACCEPT"]),
    (Packet("8.8.8.8", "udp", 53, uid=1000),
     ["fw-log-dns-upstream-others", "fw-dns-upstream-others", "DROP"]),
    (Packet("8.8.8.8", "udp", 53, uid=1000, ctstate="ESTABLISHED"),
     ["fw-log-dns-upstream-others", "fw-dns-upstream-others", "DROP"]),
    (Packet("1.1.1.1", "udp", 53, uid=None, ctstate="ESTABLISHED"),
     ["fw-log-dns-upstream-others", "fw-dns-upstream-others", "DROP"]),
    # replies and related packets of accepted connections
    (Packet("203.0.113.5", dport=443, ctstate="ESTABLISHED"), ["fw-established", "ACCEPT"]),
    (Packet("203.0.113.5", "icmp", ctstate="RELATED"), ["fw-established", "ACCEPT"]),
    # GitHub's ranges on 443 only
    (Packet("140.82.112.3", dport=443), ["fw-github", "ACCEPT"]),
    (Packet("140.82.112.3", dport=22), ["fw-log", "DROP"]),
    # an allowlisted name's address: accepted (any port); an unlisted one: logged, dropped
    (Packet("198.51.100.10", dport=443), ["fw-allowlist", "ACCEPT"]),
    (Packet("198.51.100.10", "udp", 443), ["fw-allowlist", "ACCEPT"]),
    (Packet("198.51.100.11", dport=443), ["fw-log", "DROP"]),
    # UDP nothing above accepted (QUIC, DNS to another server): logged, dropped
    (Packet("203.0.113.5", "udp", 443), ["fw-log-udp", "fw-drop-udp", "DROP"]),
    (Packet("9.9.9.9", "udp", 53, uid=0), ["fw-log-udp", "fw-drop-udp", "DROP"]),
], ids=label)
def test_ipv4_lockdown(shipped: Machine, packet: Packet, path: list[str]) -> None:
    got = shipped.trace(packet)
    assert got.path == path, got
    assert got.logged == (LOGGED_DROP if got.verdict == "DROP" else [])  # every drop logged


@pytest.mark.parametrize(("packet", "path"), [
    (Packet("::1", dport=8080, oif="lo"), ["fw6-loopback", "ACCEPT"]),
    (Packet("2001:db8::1", dport=443), ["fw6-log", "DROP"]),
    (Packet("2001:db8::1", dport=443, uid=0, ctstate="ESTABLISHED"), ["fw6-log", "DROP"]),
    (Packet("2001:4860:4860::8888", "udp", 53, uid=0), ["fw6-log", "DROP"]),
    *((Packet("ff02::2", "icmp", icmpv6_type=t), ["fw6-icmp", "ACCEPT"])
      for t in (133, 134, 135, 136, 2)),
    (Packet("2001:db8::1", "icmp", icmpv6_type=128), ["fw6-log", "DROP"]),  # echo request
    (Packet("2001:db8::1", "icmp", icmpv6_type=1), ["fw6-log", "DROP"]),  # unreachable
    # SSH replies: from port 22, to the platform's ranges, never a SYN-only packet
    (Packet("fdaa::5", "tcp", 51000, sport=22, ctstate="ESTABLISHED"),
     ["fw6-ssh-replies", "ACCEPT"]),
    (Packet("2605:4c40::7", "tcp", 51000, sport=22, tcp_flags=frozenset({"SYN", "ACK"})),
     ["fw6-ssh-replies", "ACCEPT"]),
    (Packet("fdaa::5", "tcp", 51000, sport=22, tcp_flags=frozenset({"FIN", "ACK"})),
     ["fw6-ssh-replies", "ACCEPT"]),
    (Packet("fdaa::5", "tcp", 22, sport=22, tcp_flags=frozenset({"SYN"})), ["fw6-log", "DROP"]),
    (Packet("fdaa::5", "tcp", 51000, sport=2222, ctstate="ESTABLISHED"), ["fw6-log", "DROP"]),
    (Packet("2001:db8::1", "tcp", 51000, sport=22, ctstate="ESTABLISHED"), ["fw6-log", "DROP"]),
    (Packet("fdaa::5", "udp", 51000, sport=22), ["fw6-log", "DROP"]),
], ids=label)
def test_ipv6_lockdown(shipped: Machine, packet: Packet, path: list[str]) -> None:
    got = shipped.trace(packet)
    assert got.path == path, got
    assert got.logged == (LOGGED_DROP if got.verdict == "DROP" else [])


def test_with_ipv6_lockdown_off_every_ipv6_packet_goes_out(machine: Machine) -> None:
    machine.converge(ipv6_lockdown=False)
    for packet in (Packet("2001:db8::1", dport=443), Packet("2001:db8::1", "icmp",
                                                            icmpv6_type=128),
                   Packet("fdaa::5", "tcp", 22, sport=22, tcp_flags=frozenset({"SYN"}))):
        got = machine.trace(packet)
        assert (got.path, got.by) == (["ACCEPT"], "policy OUTPUT ACCEPT"), got
    assert machine.trace(Packet("198.51.100.11", dport=443)).verdict == "DROP"  # IPv4 still


def test_an_address_in_grace_is_accepted_until_the_grace_ends(machine: Machine) -> None:
    old = Packet("198.51.100.10", dport=443)
    machine.answers["allowed.example"] = ("198.51.100.20",)
    machine.now = T0 + 300
    machine.converge()
    assert machine.trace(Packet("198.51.100.20", dport=443)).path == ["fw-allowlist", "ACCEPT"]
    assert machine.trace(old).path == ["fw-allowlist", "ACCEPT"]  # in grace
    machine.now = T0 + 300 + PIN_GRACE - 1
    machine.converge()
    assert machine.trace(old).verdict == "ACCEPT"
    machine.now = T0 + 300 + PIN_GRACE
    machine.converge()
    assert machine.trace(old).path == ["fw-log", "DROP"]
    assert machine.trace(Packet("198.51.100.20", dport=443)).verdict == "ACCEPT"


def test_the_tracer_catches_an_ordering_bug(machine: Machine) -> None:
    """ESTABLISHED moved above the upstream-DNS drop (order 400 -> 315): another user's
    packet riding the conntrack entry of one of root's lookups gets out. The tracer sees
    it; with the shipped order it is dropped."""
    dns = Packet("8.8.8.8", "udp", 53, uid=1000, ctstate="ESTABLISHED")
    assert machine.trace(dns).verdict == "DROP"
    wrong = machine.tmp / "states"
    wrong.mkdir()
    head, tail = (STATES / "network.yaml").read_text().split("  - id: fw-established\n", 1)
    assert "order: 400\n" in tail.split("\n\n", 1)[0]  # the state's own order
    (wrong / "network.yaml").write_text(
        head + "  - id: fw-established\n" + tail.replace("order: 400\n", "order: 315\n", 1))
    (wrong / "telemetry.yaml").write_text((STATES / "telemetry.yaml").read_text())
    machine.converge(wrong)
    got = machine.trace(dns)
    assert (got.verdict, got.decided_by) == ("ACCEPT", "fw-established"), got
    assert got.logged == []  # not even logged
    assert machine.trace(Packet("8.8.8.8", "udp", 53, uid=1000)).verdict == "DROP"  # NEW
