"""The packet tracer (tests/tracer.py) on hand-made tables: each match it reads, the
order it walks in, and its refusal of any rule it cannot read. The shipped states' traces
are in tests/test_lockdown_trace.py."""

from __future__ import annotations

import pytest

from tests.fakehost import FakeChain, FakeRunner
from tests.tracer import Packet, Unsupported, trace


def tag(sid: str) -> str:
    return f'-m comment --comment "statekit:{sid}"'


def machine(output: list[str], policy: str = "DROP", family: str = "ipv4",
            **user: list[str]) -> FakeRunner:
    runner = FakeRunner()
    chains = runner.table(family, "filter")
    chains["OUTPUT"] = FakeChain(policy, output)
    for name, rules in user.items():
        chains[name.replace("_", "-")] = FakeChain("-", rules)
    return runner


V4 = machine([
    f"-A OUTPUT -o lo {tag('lo')} -j ACCEPT",
    f"-A OUTPUT -d 172.16.0.0/12 {tag('log-private')} -j NFLOG --nflog-prefix DROPPED "
    "--nflog-group 100",
    f"-A OUTPUT -d 172.16.0.0/12 {tag('private')} -j DROP",
    f"-A OUTPUT -d 8.8.8.8/32 -p udp -m udp --dport 53 -m owner --uid-owner 0 {tag('dns-root')}"
    " -j ACCEPT",
    f"-A OUTPUT -d 8.8.8.8/32 -p udp -m udp --dport 53 {tag('dns-others')} -j DROP",
    f"-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED {tag('est')} -j ACCEPT",
    f"-A OUTPUT -s 10.0.0.0/24 -d 192.0.2.0/24 -p tcp -m tcp --dport 8000:8099 {tag('range')}"
    " -j ACCEPT",
    f"-A OUTPUT -o wg+ {tag('vpn')} -j ACCEPT",
    f"-A OUTPUT -p udp -m udp --sport 123 {tag('ntp')} -j REJECT --reject-with "
    "icmp-port-unreachable",
    f"-A OUTPUT {tag('log')} -j NFLOG --nflog-prefix DROPPED --nflog-group 100",
])


@pytest.mark.parametrize(("packet", "path"), [
    (Packet("127.0.0.1", oif="lo", dport=22), ["lo", "ACCEPT"]),
    (Packet("172.17.0.1", dport=443), ["log-private", "private", "DROP"]),
    (Packet("172.17.0.1", oif="lo", dport=443), ["lo", "ACCEPT"]),
    (Packet("172.32.0.1", dport=443), ["log", "DROP"]),  # outside 172.16/12
    (Packet("8.8.8.8", "udp", 53, uid=0), ["dns-root", "ACCEPT"]),
    (Packet("8.8.8.8", "udp", 53, uid=1000, ctstate="ESTABLISHED"), ["dns-others", "DROP"]),
    (Packet("8.8.8.8", "udp", 53, uid=None), ["dns-others", "DROP"]),  # no socket owner
    (Packet("8.8.8.8", "tcp", 53, uid=1000, ctstate="ESTABLISHED"), ["est", "ACCEPT"]),
    (Packet("8.8.8.8", "udp", 5353), ["log", "DROP"]),
    (Packet("192.0.2.1", dport=8000), ["range", "ACCEPT"]),
    (Packet("192.0.2.1", dport=8099), ["range", "ACCEPT"]),
    (Packet("192.0.2.1", dport=8100), ["log", "DROP"]),
    (Packet("192.0.2.1", dport=8000, src="10.0.1.2"), ["log", "DROP"]),  # not from 10.0.0/24
    (Packet("192.0.2.1", "udp", dport=8000), ["log", "DROP"]),  # the range is tcp
    (Packet("198.51.100.1", dport=443, oif="wg0"), ["vpn", "ACCEPT"]),
    (Packet("198.51.100.1", dport=443, oif="w"), ["log", "DROP"]),
    (Packet("198.51.100.1", "udp", 9, sport=123), ["ntp", "REJECT"]),
    (Packet("198.51.100.1", "icmp"), ["log", "DROP"]),
])
def test_each_match_and_the_order(packet: Packet, path: list[str]) -> None:
    assert trace(V4, packet).path == path


def test_a_trace_says_what_logged_and_what_decided() -> None:
    got = trace(V4, Packet("172.20.0.9", dport=443))
    assert got.logged == ["DROPPED"]
    assert (got.verdict, got.decided_by) == ("DROP", "private")
    assert got.by == f"-A OUTPUT -d 172.16.0.0/12 {tag('private')} -j DROP"
    end = trace(machine([]), Packet("192.0.2.1", dport=80))
    assert (end.verdict, end.by, end.decided_by, end.hits) == (
        "DROP", "policy OUTPUT DROP", "policy", [])


V6 = machine([
    *(f"-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type {t} {tag('icmp')} -j ACCEPT"
      for t in (135, 2)),
    f"-A OUTPUT -d fdaa::/16 -p tcp -m tcp --sport 22 ! --tcp-flags FIN,SYN,RST,ACK SYN "
    f"{tag('ssh')} -j ACCEPT",
    f"-A OUTPUT -p tcp -m tcp --tcp-flags ALL NONE {tag('null-scan')} -j DROP",
], family="ipv6", policy="ACCEPT")


@pytest.mark.parametrize(("packet", "path"), [
    (Packet("fe80::1", "icmp", icmpv6_type=135), ["icmp", "ACCEPT"]),
    (Packet("fe80::1", "icmp", icmpv6_type=2), ["icmp", "ACCEPT"]),
    (Packet("fe80::1", "icmp", icmpv6_type=128), ["ACCEPT"]),  # the policy
    (Packet("fdaa::9", "tcp", 50000, sport=22, tcp_flags=frozenset({"ACK"})), ["ssh", "ACCEPT"]),
    (Packet("fdaa::9", "tcp", 50000, sport=22, tcp_flags=frozenset({"SYN", "ACK"})),
     ["ssh", "ACCEPT"]),
    (Packet("fdaa::9", "tcp", 50000, sport=22, tcp_flags=frozenset({"SYN", "PSH"})),
     ["ACCEPT"]),  # SYN alone among FIN,SYN,RST,ACK: not a reply
    (Packet("fdaa::9", "tcp", 50000, sport=22, tcp_flags=frozenset()), ["ssh", "ACCEPT"]),
    (Packet("fdab::9", "tcp", 50000, sport=22, tcp_flags=frozenset()), ["null-scan", "DROP"]),
    (Packet("fdab::9", "tcp", 50000, sport=22), ["ACCEPT"]),
])
def test_ipv6_icmpv6_types_and_tcp_flags(packet: Packet, path: list[str]) -> None:
    assert trace(V6, packet).path == path


def test_user_chains_return_and_nflog_goes_on() -> None:
    runner = machine([
        f"-A OUTPUT {tag('to-sk')} -j SK-OUT",
        f"-A OUTPUT -p udp {tag('udp')} -j DROP",
        f"-A OUTPUT {tag('log')} -j NFLOG --nflog-group 5",
        f"-A OUTPUT -p tcp {tag('return')} -j RETURN",
        f"-A OUTPUT {tag('never')} -j DROP"],
        policy="ACCEPT", SK_OUT=[
            f"-A SK-OUT -d 10.0.0.1/32 {tag('sk-accept')} -j ACCEPT",
            f"-A SK-OUT -d 10.0.0.2/32 {tag('sk-return')} -j RETURN",
            f"-A SK-OUT -d 10.0.0.2/32 {tag('sk-skipped')} -j DROP"])
    assert trace(runner, Packet("10.0.0.1", dport=1)).path == ["to-sk", "sk-accept", "ACCEPT"]
    assert trace(runner, Packet("10.0.0.2", "udp", 1)).path == [
        "to-sk", "sk-return", "udp", "DROP"]  # back in OUTPUT, after the jump
    got = trace(runner, Packet("10.0.0.3", dport=1))  # through SK-OUT, to RETURN in OUTPUT
    assert got.path == ["to-sk", "log", "return", "ACCEPT"]
    assert (got.by, got.logged) == ("policy OUTPUT ACCEPT", [""])


@pytest.mark.parametrize("line", [
    "-A OUTPUT -m multiport --dports 80,443 -j ACCEPT",
    "-A OUTPUT -m state --state ESTABLISHED -j ACCEPT",
    "-A OUTPUT -m mark --mark 0x1 -j ACCEPT",
    "-A OUTPUT -m owner --gid-owner 0 -j ACCEPT",
    "-A OUTPUT -m owner --uid-owner alice -j ACCEPT",
    "-A OUTPUT -m owner --uid-owner 0-99 -j ACCEPT",
    "-A OUTPUT ! -d 10.0.0.0/8 -j ACCEPT",
    "-A OUTPUT ! -o lo -j DROP",
    "-A OUTPUT -i eth0 -j ACCEPT",
    "-A OUTPUT -p sctp -j ACCEPT",
    "-A OUTPUT -p tcp --dport 80 -j ACCEPT",  # no -m tcp
    "-A OUTPUT -m tcp --dport 80 -j ACCEPT",  # no -p tcp
    "-A OUTPUT -p udp -m udp --dport 80 --tcp-flags SYN SYN -j ACCEPT",
    "-A OUTPUT -p tcp -m tcp --tcp-flags SYN,XMAS SYN -j ACCEPT",
    "-A OUTPUT -p tcp -m tcp --dport http -j ACCEPT",
    "-A OUTPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT",
    "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j DROP",
    "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 1/3 -j DROP",
    "-A OUTPUT -m conntrack --ctstate NEW --ctdir ORIGINAL -j ACCEPT",
    "-A OUTPUT -m conntrack --ctstate SNAT -j ACCEPT",
    "-A OUTPUT -d 10.0.0.1/32",  # no target
    "-A OUTPUT -d 10.0.0.1 -j ACCEPT -d 10.0.0.2",
    "-A OUTPUT -j ACCEPT --reject-with tcp-reset",
    "-A OUTPUT -j MASQUERADE",
    "-A OUTPUT -j NO-SUCH-CHAIN",
    "-A OUTPUT -g SK-OUT",
    "-A OUTPUT -d 10.0.0.300/32 -j ACCEPT",
    "-I OUTPUT 1 -j ACCEPT",
])
def test_a_rule_it_cannot_read_is_refused_wherever_it_stands(line: str) -> None:
    """Even below a rule that would accept the packet, and in a chain it jumps to: the
    tracer reads every reachable rule before it says anything."""
    accept_all = f"-A OUTPUT {tag('all')} -j ACCEPT"
    for runner in (machine([accept_all, line]),
                   machine([accept_all, f"-A OUTPUT {tag('jump')} -j SK-OUT"],
                           SK_OUT=[line.replace("-A OUTPUT", "-A SK-OUT")])):
        with pytest.raises(Unsupported):
            trace(runner, Packet("10.0.0.1", dport=80))


def test_a_packet_must_say_enough() -> None:
    with pytest.raises(ValueError, match="needs a dport"):
        Packet("10.0.0.1", "udp")
    with pytest.raises(ValueError, match="only for an ICMPv6 packet"):
        Packet("10.0.0.1", "icmp", icmpv6_type=133)
    with pytest.raises(ValueError, match="ctstate"):
        Packet("10.0.0.1", dport=1, ctstate="established")
    with pytest.raises(ValueError, match="an ipv6 packet in the ipv4 table"):
        from tests.tracer import Tracer

        Tracer(V4, "ipv4").trace(Packet("fd00::1", dport=1))
