"""The lockdown tests' world itself (tests/e2e/harness.py), with no statekit involved.

What the lockdown tests rely on must be real before a blocked connect means anything:
both upstream resolvers answer from inside the container (UDP and TCP), a rewrite of the
upstream hosts file is served, queries are counted per name, every echo target connects
when no firewall is in the way, and a held connection sees a DROP that comes after it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    AGENT_UID,
    ALLOWED_HOSTS,
    CONTAINER_ADDR6,
    ECHO_ADDRS,
    ECHO_PORT,
    GATEWAY_ADDR,
    LOCAL_DNS,
    METADATA_ADDR,
    NOT_ALLOWED_ADDR,
    OTHER_PORT,
    OTLP_PORT,
    OUTSIDE_ADDR6,
    PRIVATE_ADDR,
    REPO,
    ROUTER6,
    SPARE_ADDRS,
    UPSTREAM_RESOLVERS,
    Sandbox,
    count_queries,
    hosts_text,
)
from tests.e2e.lockdown import (
    REFERENCE_COREFILE,
    comment,
    comparable_chain,
    reference_chain,
)

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]


@pytest.fixture
def box(clean_sandbox: Sandbox) -> Iterator[Sandbox]:
    clean_sandbox.reset_hosts()
    yield clean_sandbox
    clean_sandbox.reset_hosts()


def test_count_queries_reads_the_coredns_log() -> None:
    log = ('[INFO] 198.18.0.2:40372 - 1 "A IN a.allowed.test. udp 43 false 1232" NOERROR '
           'qr,aa,rd 84 0.0001s\n'
           '[INFO] 198.18.0.2:40373 - 2 "AAAA IN A.Allowed.test. tcp 43 false 65535" '
           'NOERROR qr,aa,rd 84 0.0001s\n'
           '[INFO] 198.18.0.2:40374 - 3 "A IN a.allowed.test. udp 43 false 1232" NXDOMAIN '
           'qr,aa,rd 84 0.0001s\n')
    assert count_queries(log) == {("a.allowed.test", "A"): 2, ("a.allowed.test", "AAAA"): 1}


def test_hosts_text_is_one_line_per_name() -> None:
    assert hosts_text({"b.test": "192.0.2.2", "a.test": "192.0.2.1"}) == (
        "192.0.2.1 a.test\n192.0.2.2 b.test\n")


def test_both_upstream_resolvers_answer_udp_and_tcp(box: Sandbox) -> None:
    for server in UPSTREAM_RESOLVERS:
        for name, addr in ALLOWED_HOSTS.items():
            for transport in ("udp", "tcp"):
                reply = box.dns_query(name, server=server, transport=transport)
                assert (reply.rcode, reply.answers) == ("NOERROR", [addr]), (server, transport)
        aaaa = box.dns_query("a.allowed.test", "AAAA", server=server)
        assert (aaaa.rcode, aaaa.answers) == ("NOERROR", [])
        assert box.dns_query("nowhere.allowed.test", server=server).rcode == "NXDOMAIN"


def test_set_hosts_is_served_and_counted(box: Sandbox) -> None:
    box.set_hosts({"b.allowed.test": SPARE_ADDRS[0], "c.allowed.test": None})
    for server in UPSTREAM_RESOLVERS:
        assert box.dns_query("b.allowed.test", server=server).answers == [SPARE_ADDRS[0]]
        assert box.dns_query("c.allowed.test", server=server).rcode == "NXDOMAIN"
    mark = box.upstream_log_mark()
    box.dns_query("a.allowed.test", server=UPSTREAM_RESOLVERS[1])
    box.dns_query("a.allowed.test", "AAAA", server=UPSTREAM_RESOLVERS[0])
    box.dns_query("c.allowed.test", server=UPSTREAM_RESOLVERS[0])
    assert box.upstream_queries(mark) == {("a.allowed.test", "A"): 1,
                                          ("a.allowed.test", "AAAA"): 1,
                                          ("c.allowed.test", "A"): 1}
    box.reset_hosts()
    assert box.dns_query("c.allowed.test", server=UPSTREAM_RESOLVERS[0]).answers == [
        ALLOWED_HOSTS["c.allowed.test"]]


def test_every_echo_target_connects_without_a_firewall(box: Sandbox) -> None:
    for addr in ECHO_ADDRS:
        assert box.tcp_probe(addr, ECHO_PORT) == "connected", addr


def test_ipv6_and_the_agent_reach_everything_without_a_firewall(box: Sandbox) -> None:
    """What the side-door tests (tests/test_lockdown_side_doors.py) see blocked answers
    when nothing is in the way: IPv6 TCP, UDP and ICMPv6 echo, as root and as the agent;
    DNS to the upstream resolvers as the agent, from a chosen source port too; a
    connection from port 22; and the container's port 22 from inside and outside
    fdaa::/16."""
    for user in (None, AGENT_UID):
        for proto in ("tcp", "udp", "icmp"):
            assert box.probe(proto, OUTSIDE_ADDR6, user=user) == "answer", (proto, user)
        for server in UPSTREAM_RESOLVERS:
            reply = box.dns_query("a.allowed.test", server=server, user=user,
                                  source_port=40053)
            assert reply.answers == [ALLOWED_HOSTS["a.allowed.test"]], (server, user)
    assert box.probe("tcp", OUTSIDE_ADDR6, source_port=22) == "answer"
    assert box.probe("tcp", "a.allowed.test", user=AGENT_UID, resolver="upstream") == "answer"
    box.start_container_server(22)
    for source in (ROUTER6, OUTSIDE_ADDR6):
        assert box.probe("tcp", CONTAINER_ADDR6, 22, where="internet",
                         source=source) == "answer", source


def test_a_held_connection_sees_a_later_drop(box: Sandbox) -> None:
    conn = box.hold_connection(PRIVATE_ADDR)
    assert conn.state == "connected"
    assert conn.send("one") == "echo"
    assert conn.send("two") == "echo"
    drop = ["iptables", "-I", "OUTPUT", "1", "-d", PRIVATE_ADDR, "-j", "DROP"]
    assert box.run_in_container(drop, resolver=None).returncode == 0
    assert conn.send("three") == "timeout"
    conn.close()


def test_reset_ends_held_connections(box: Sandbox) -> None:
    conn = box.hold_connection(PRIVATE_ADDR)
    assert conn.send() == "echo"
    box.reset_container()
    assert conn.proc.poll() is not None


def sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sandbox.py"), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_set_hosts_dns_tcp_and_queries(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    up = sandbox_cli("up", "--state-dir", state, "--format", "json")
    assert up.returncode == 0, up.stderr
    try:
        changed = sandbox_cli("set-hosts", "--state-dir", state, f"b.allowed.test={SPARE_ADDRS[1]}",
                              "c.allowed.test=")
        assert changed.returncode == 0, changed.stderr
        for name, want in (("b.allowed.test", ["NOERROR", SPARE_ADDRS[1]]),
                           ("c.allowed.test", ["NXDOMAIN"])):
            dns = sandbox_cli("dns", "--state-dir", state, "--server", UPSTREAM_RESOLVERS[1],
                              "--tcp", name)
            assert dns.stdout.split() == want, dns.stdout + dns.stderr
        queries = sandbox_cli("queries", "--state-dir", state)
        counted = {tuple(ln.split()[1:]): int(ln.split()[0]) for ln in queries.stdout.splitlines()}
        assert counted[("A", "c.allowed.test")] >= 1, queries.stdout  # the harness asks too
        assert ("AAAA", "c.allowed.test") not in counted
        bad = sandbox_cli("set-hosts", "--state-dir", state, "no-equals-sign")
        assert bad.returncode != 0 and "NAME=ADDR" in bad.stderr
    finally:
        down = sandbox_cli("down", "--state-dir", state)
    assert down.returncode == 0, down.stderr


def allowlist_corefile() -> str:
    """The container's Corefile as the lockdown writes it, by hand."""
    blocks = "".join(
        f"{name}:53 {{\n    bind {LOCAL_DNS}\n    template IN AAAA {{\n        rcode NOERROR\n"
        f"    }}\n    forward . {' '.join(UPSTREAM_RESOLVERS)}\n    log\n    cache 300\n}}\n"
        for name in ALLOWED_HOSTS)
    return blocks + REFERENCE_COREFILE


def test_the_reference_chain_by_hand_gives_what_the_cases_expect(box: Sandbox,
                                                                 tmp_path: Path) -> None:
    """The cases' expectations are satisfiable: the reference chain (issue 12), restored
    by hand, passes the probes the cases make, and reads back as the cases compare it."""
    box.run_in_container(["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                          "ESTABLISHED", "-j", "ACCEPT"], resolver=None)
    private, allowed = box.hold_connection(PRIVATE_ADDR), box.hold_connection(
        ALLOWED_HOSTS["a.allowed.test"])
    assert (private.send(), allowed.send()) == ("echo", "echo")
    chain = reference_chain(ALLOWED_HOSTS.values(), otlp=[(GATEWAY_ADDR, OTLP_PORT)])
    restore = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n"
               + "".join(rule.replace(" -j ", ' -m comment --comment "statekit:by-hand" -j ',
                                      1) + "\n" for rule in chain) + "COMMIT\n")
    proc = box.run_in_container(["iptables-restore", "--noflush"], input=restore,
                                resolver=None)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "Corefile").write_text(allowlist_corefile())
    box.start_container_coredns(tmp_path / "Corefile", tmp_path / "coredns.pid")

    rules = [ln for ln in box.run_in_container(["iptables-save", "-t", "filter"],
                                               resolver=None).stdout.splitlines()
             if ln.startswith("-A OUTPUT ")]
    assert comparable_chain(rules, len(ALLOWED_HOSTS)) == chain
    assert {comment(rule) for rule in rules} == {"statekit:by-hand"}
    assert (private.send(), allowed.send()) == ("timeout", "echo")
    private.close()
    allowed.close()
    for name, addr in ALLOWED_HOSTS.items():
        assert box.dns_query(name).answers == [addr]
        assert box.tcp_probe(addr, ECHO_PORT) == "connected"
    assert box.dns_query("not-allowed.example.org").rcode == "NXDOMAIN"
    for addr in (NOT_ALLOWED_ADDR, METADATA_ADDR, PRIVATE_ADDR, SPARE_ADDRS[0]):
        assert box.tcp_probe(addr, ECHO_PORT, timeout=1) == "timeout", addr
    assert box.tcp_probe(GATEWAY_ADDR, OTLP_PORT) == "connected"
    assert box.tcp_probe(GATEWAY_ADDR, OTHER_PORT, timeout=1) == "timeout"
    for server in UPSTREAM_RESOLVERS:
        assert box.dns_query("b.allowed.test", server=server).answers == [
            ALLOWED_HOSTS["b.allowed.test"]]
        tcp = box.dns_query("b.allowed.test", server=server, transport="tcp", timeout=1)
        assert tcp.rcode in ("TIMEOUT", "ERROR"), tcp
    # TCP to 127.0.0.53 is open; CoreDNS answers the catch-all itself (an allowlisted name
    # over TCP is forwarded over TCP, which the reference order drops: see the cases)
    assert box.dns_query("not-allowed.example.org", transport="tcp").rcode == "NXDOMAIN"
