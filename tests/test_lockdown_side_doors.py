"""The lockdown's two side doors closed (issue 20), checked at the packet level.

The shipped states boot a container in the sandbox (tests/e2e/harness.py), as in
tests/test_lockdown_cases.py. Here:

- **Upstream DNS for root only.** The agent (uid 1000) gets no answer from the upstream
  resolvers (8.8.8.8, 1.1.1.1), over UDP or TCP, not even from the source port of one of
  root's lookups (its conntrack entry); it still resolves the allowlist through
  127.0.0.53 (CoreDNS, root, forwards) and connects; statekit's own lookups (root) work at
  boot and in a refresh.
- **IPv6 locked down without conntrack.** The container has fdaa::2 and a route out; the
  internet has echo listeners on 2001:db8::10. Nothing leaves over IPv6 (TCP, UDP,
  ICMPv6 echo, as root or as the agent), a connection from source port 22 included; an
  SSH-like server on the container's port 22 answers a client in fdaa::/16, and only
  there; opting out (``ipv6_lockdown=false``) opens IPv6 again.

That each probe gets an answer with no firewall in the way is tested in
tests/test_lockdown_world.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.e2e.harness import (
    AGENT_UID,
    ALLOWED_HOSTS,
    CONTAINER_ADDR6,
    NOT_ALLOWED_ADDR,
    OUTSIDE_ADDR6,
    ROUTER6,
    SPARE_ADDRS,
    UPSTREAM_RESOLVERS,
    Sandbox,
)
from tests.e2e.lockdown import Lockdown

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

A, B = "a.allowed.test", "b.allowed.test"
BLOCKED = 1.0  # seconds a probe that must fail is given
#: What a probe whose packets the OUTPUT chain drops sees: TCP retries its SYN until the
#: timeout; a UDP or ICMP send fails at once with EPERM.
NO_ANSWER = {"timeout", "EPERM"}
SSH_PORT = 22
ROOT = None  # run as root (the harness's default)
PROTOCOLS: tuple[Literal["tcp", "udp", "icmp"], ...] = ("tcp", "udp", "icmp")
TRANSPORTS: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")


@pytest.fixture
def world(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Lockdown]:
    clean_sandbox.reset_hosts()
    root = tmp_path / "root"
    root.mkdir()
    yield Lockdown(clean_sandbox, root)
    clean_sandbox.reset_hosts()


def agent_upstream_dns(world: Lockdown, server: str,
                       transport: Literal["udp", "tcp"] = "udp") -> str:
    reply = world.box.dns_query(A, server=server, transport=transport, user=AGENT_UID,
                                timeout=BLOCKED)
    return reply.rcode


def upstream_answers(world: Lockdown, user: int | None, source_port: int = 0) -> bool:
    reply = world.box.dns_query(A, server=UPSTREAM_RESOLVERS[0], user=user,
                                source_port=source_port)
    return reply.answers == [ALLOWED_HOSTS[A]]


# --- upstream DNS for root only ------------------------------------------------------------

def test_the_agent_gets_no_upstream_dns_but_resolves_the_allowlist_locally(
    world: Lockdown,
) -> None:
    boot = world.boot()
    assert boot.rc == 0, boot.output
    for server in UPSTREAM_RESOLVERS:
        for transport in TRANSPORTS:
            rcode = agent_upstream_dns(world, server, transport)
            assert rcode in ("TIMEOUT", "ERROR"), f"{server} {transport} answered the agent"
    for name, addr in ALLOWED_HOSTS.items():
        assert world.box.dns_query(name, user=AGENT_UID).answers == [addr], name
        assert world.box.probe("tcp", name, user=AGENT_UID, resolver="local",
                               timeout=2.0) == "answer", name
    assert world.box.dns_query("not-allowed.example.org", user=AGENT_UID).rcode == "NXDOMAIN"


def test_statekits_own_lookups_as_root_work_at_boot_and_in_a_refresh(world: Lockdown) -> None:
    boot = world.boot()
    assert boot.rc == 0, boot.output
    assert boot.states()["fw-allowlist"]["facts"]["resolved"] == {
        name: [addr] for name, addr in ALLOWED_HOSTS.items()}
    world.box.set_hosts({B: SPARE_ADDRS[0]})
    refresh = world.refresh()
    assert refresh.rc == 0, refresh.output
    assert refresh.states()["fw-allowlist"]["facts"]["resolved"][B] == [SPARE_ADDRS[0]]
    assert world.box.probe("tcp", SPARE_ADDRS[0], timeout=2.0) == "answer"
    assert upstream_answers(world, ROOT)
    assert not upstream_answers(world, AGENT_UID)


def test_the_agent_cannot_ride_the_conntrack_entry_of_roots_lookup(world: Lockdown) -> None:
    """Root asks from a source port; the agent then sends from the same port. Without the
    DROP of other users' upstream DNS above ESTABLISHED, root's conntrack entry lets the
    agent's query through: the second half shows that it would."""
    assert world.boot().rc == 0
    assert upstream_answers(world, ROOT, source_port=40053)
    assert not upstream_answers(world, AGENT_UID, source_port=40053)
    drops = [r for r in world.chain() if '"statekit:fw-dns-upstream-others"' in r]
    assert len(drops) == len(UPSTREAM_RESOLVERS), world.chain()
    delete = "".join(f"-D{rule[2:]}\n" for rule in drops)
    proc = world.box.run_in_container(["iptables-restore", "--noflush"], resolver=None,
                                      input=f"*filter\n{delete}COMMIT\n")
    assert proc.returncode == 0, proc.stderr
    assert upstream_answers(world, ROOT, source_port=40054)
    assert upstream_answers(world, AGENT_UID, source_port=40054)  # the side door


# --- IPv6 locked down without conntrack ------------------------------------------------------

@pytest.mark.parametrize("user", [ROOT, AGENT_UID], ids=["root", "agent"])
def test_nothing_leaves_over_ipv6(world: Lockdown, user: int | None) -> None:
    boot = world.boot()
    assert boot.rc == 0, boot.output
    for proto in PROTOCOLS:
        got = world.box.probe(proto, OUTSIDE_ADDR6, user=user, timeout=BLOCKED)
        assert got in NO_ANSWER, f"{proto} to {OUTSIDE_ADDR6}: {got}"
    assert world.box.probe("tcp", ROUTER6, user=user, timeout=BLOCKED) in NO_ANSWER
    assert world.policy("ipv6") == "DROP"
    rules = world.chain("ipv6")
    assert rules and not [r for r in rules if "-m conntrack" in r or "-m state" in r], rules


def test_a_connection_from_source_port_22_gets_no_answer(world: Lockdown) -> None:
    """A SYN-only packet from port 22 is no reply: blocked to anywhere, fdaa::/16 too."""
    assert world.boot().rc == 0
    for addr in (OUTSIDE_ADDR6, ROUTER6):
        got = world.box.probe("tcp", addr, source_port=SSH_PORT, timeout=BLOCKED)
        assert got in NO_ANSWER, f"from port 22 to {addr}: {got}"


def test_the_ssh_server_answers_a_client_in_fdaa_and_no_one_else(world: Lockdown) -> None:
    """The handshake's SYN-ACK and the data come back from port 22, statelessly."""
    assert world.boot().rc == 0
    world.box.start_container_server(SSH_PORT)
    assert world.box.probe("tcp", CONTAINER_ADDR6, SSH_PORT, where="internet",
                           source=ROUTER6, timeout=2.0) == "answer"
    assert world.box.probe("tcp", CONTAINER_ADDR6, SSH_PORT, where="internet",
                           source=OUTSIDE_ADDR6, timeout=BLOCKED) == "timeout"


def test_a_second_converge_changes_nothing_in_either_family(world: Lockdown) -> None:
    assert world.boot().rc == 0
    before = world.table("ipv4"), world.table("ipv6")
    assert world.policy("ipv6") == "DROP"
    again = world.refresh(None, "--detailed-exitcode")
    assert again.rc == 0, again.output
    assert again.summary()["changed"] == 0
    assert (world.table("ipv4"), world.table("ipv6")) == before


def test_opting_out_opens_ipv6_and_opting_in_closes_it(world: Lockdown) -> None:
    off = world.boot(None, "--var", "ipv6_lockdown=false")
    assert off.rc == 0, off.output
    assert world.policy("ipv6") == "ACCEPT" and world.chain("ipv6") == []
    assert world.box.probe("tcp", OUTSIDE_ADDR6, user=AGENT_UID) == "answer"
    assert world.box.probe("tcp", NOT_ALLOWED_ADDR, user=AGENT_UID,
                           timeout=BLOCKED) in NO_ANSWER  # IPv4 stays locked down
    on = world.refresh()
    assert on.rc == 0, on.output
    assert world.box.probe("tcp", OUTSIDE_ADDR6, user=AGENT_UID,
                           timeout=BLOCKED) in NO_ANSWER
