"""The lockdown holds under partial failure (issue 12), checked at the packet level.

The shipped states/network.yaml and telemetry.yaml boot a container in the sandbox
(tests/e2e/harness.py: an "internet" namespace with the upstream resolvers 8.8.8.8 and
1.1.1.1 and TCP echo targets, a "container" namespace with real iptables and the real
CoreDNS). Each case checks what a process inside the container can reach: TCP connects,
DNS queries to 127.0.0.53 and to the upstream resolvers, and data on a connection held
across a converge; the rule text only where the order itself is the point.

The allowlist is a, b, c.allowed.test (198.18.0.30-32); 198.18.0.40 is on no allowlist;
169.254.169.254 stands for the metadata service and 172.16.0.10 for private space.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, register_token
from tests.e2e.harness import (
    ALLOWED_HOSTS,
    COREDNS,
    ECHO_PORT,
    ENDPOINT,
    GATEWAY,
    GATEWAY_ADDR,
    LOCAL_DNS,
    METADATA_ADDR,
    NOT_ALLOWED_ADDR,
    OTLP_PORT,
    PRIVATE_ADDR,
    SPARE_ADDRS,
    UPSTREAM_RESOLVERS,
    Sandbox,
)
from tests.e2e.lockdown import (
    REFERENCE_COREFILE,
    VARS,
    Lockdown,
    Result,
    comment,
    comparable_chain,
    reference_chain,
)

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

TOKEN = "glc_lockdown_token_5f0c2e7a91"
register_token(TOKEN)
ON = {"GRAFANA_INSTANCE_ID": "424242", "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": ENDPOINT}
A, B, C = ALLOWED_HOSTS
BLOCKED = 1.0  # seconds a connect that must fail is given (a DROP shows as a timeout)


@pytest.fixture
def world(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Lockdown]:
    clean_sandbox.reset_hosts()
    root = tmp_path / "root"
    root.mkdir()
    yield Lockdown(clean_sandbox, root)
    clean_sandbox.reset_hosts()


def connects(world: Lockdown, addr: str, port: int = ECHO_PORT) -> bool:
    return world.box.tcp_probe(addr, port, timeout=2.0) == "connected"


def blocked(world: Lockdown, addr: str, port: int = ECHO_PORT) -> bool:
    return world.box.tcp_probe(addr, port, timeout=BLOCKED) == "timeout"


def local_answer(world: Lockdown, name: str, want: list[str], wait: float = 8.0) -> list[str]:
    """What 127.0.0.53 answers for ``name``, asked until it is ``want`` or ``wait``
    seconds passed (the container's CoreDNS caches answers, NXDOMAIN too, for 5 s)."""
    deadline = time.monotonic() + wait
    while True:
        got = world.box.dns_query(name).answers
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def assert_locked_down(world: Lockdown, working: dict[str, str]) -> None:
    """Policy DROP, DNS through 127.0.0.53 answers the ``working`` names and nothing
    else, those connect, and what is on no allowlist does not."""
    assert world.policy() == "DROP", world.table()
    for name, addr in working.items():
        assert local_answer(world, name, [addr]) == [addr], name
        assert connects(world, addr), f"{name} ({addr}) does not connect"
    assert world.box.dns_query("not-allowed.example.org").rcode == "NXDOMAIN"
    for addr in (NOT_ALLOWED_ADDR, METADATA_ADDR, PRIVATE_ADDR):
        assert blocked(world, addr), f"{addr} is reachable"


def assert_names(result: Result, name: str) -> None:
    """The converge exited 1 and a state that did not succeed names ``name``."""
    assert result.rc == 1, result.output
    assert name in result.errors(), result.output


# --- 1. healthy boot ------------------------------------------------------------------------

def test_1_healthy_boot_reaches_exactly_the_allowlist(world: Lockdown) -> None:
    first = world.boot()
    assert first.rc == 0, first.output
    assert_locked_down(world, ALLOWED_HOSTS)


def test_1_healthy_boot_dns_udp_to_the_resolvers_tcp_only_locally(world: Lockdown) -> None:
    assert world.boot().rc == 0
    for server in UPSTREAM_RESOLVERS:
        assert world.box.dns_query(A, server=server).answers == [ALLOWED_HOSTS[A]], server
        tcp = world.box.dns_query(A, server=server, transport="tcp", timeout=BLOCKED)
        assert tcp.rcode in ("TIMEOUT", "ERROR"), f"TCP 53 to {server} answered: {tcp}"
    # TCP 53 to the local resolver is open, and answers everything locally: the catch-all
    # and the allowlisted names too (their pins; the reference container forwards them,
    # over TCP for a TCP query, which its own order drops upstream)
    local = world.box.dns_query("not-allowed.example.org", server=LOCAL_DNS, transport="tcp")
    assert local.rcode == "NXDOMAIN", local
    assert world.box.dns_query(A, server=LOCAL_DNS, transport="tcp").answers == \
        [ALLOWED_HOSTS[A]]


def test_1_healthy_boot_writes_the_reference_order(world: Lockdown) -> None:
    assert world.boot().rc == 0
    rules = world.chain()
    assert world.policy() == "DROP"
    assert comparable_chain(rules, len(ALLOWED_HOSTS), statekit=True) == \
        reference_chain(ALLOWED_HOSTS.values(), statekit=True)
    assert all(comment(rule).startswith("statekit:") for rule in rules), rules


def test_1_second_converge_changes_nothing(world: Lockdown) -> None:
    assert world.boot().rc == 0
    before = world.table()
    again = world.refresh(None, "--detailed-exitcode")
    assert again.rc == 0, again.output
    assert again.summary()["changed"] == 0
    assert world.table() == before


# --- 2. one NXDOMAIN name at boot, then its recovery ---------------------------------------

def test_2_nxdomain_name_at_boot_still_locks_down_and_recovers(world: Lockdown) -> None:
    world.box.set_hosts({C: None})
    first = world.boot()
    assert_names(first, C)
    assert_locked_down(world, {A: ALLOWED_HOSTS[A], B: ALLOWED_HOSTS[B]})
    assert world.box.dns_query(C).rcode == "NXDOMAIN"
    assert blocked(world, ALLOWED_HOSTS[C])  # never resolved: nothing to keep

    world.box.set_hosts({C: ALLOWED_HOSTS[C]})
    healed = world.refresh()
    assert healed.rc == 0, healed.output
    assert connects(world, ALLOWED_HOSTS[C])
    # 127.0.0.53 still answers the NXDOMAIN it cached above until its negative TTL ends
    # (the refresh changes no Corefile, so CoreDNS is not reloaded): here CoreDNS's
    # 5 s floor (the upstream's SOA says 1 s), in a real container up to `cache 300`
    # (docs/failure-model.md); local_answer asks again for 8 s.
    assert_locked_down(world, ALLOWED_HOSTS)


# --- 3. changed addresses on refresh ------------------------------------------------------------

NO_GRACE = ("--var", "pin_grace=0")


def test_3_changed_address_replaces_the_old_one(world: Lockdown) -> None:
    """With pin_grace 0 (as before pins had a grace), the old address closes at once."""
    assert world.boot().rc == 0
    old, new = ALLOWED_HOSTS[B], SPARE_ADDRS[0]
    world.box.set_hosts({B: new})
    refresh = world.refresh(None, *NO_GRACE)
    assert refresh.rc == 0, refresh.output
    assert local_answer(world, B, [new]) == [new]
    assert connects(world, new)
    assert blocked(world, old)


def test_3_a_moved_name_keeps_its_old_address_for_the_grace_then_closes_it(
        world: Lockdown) -> None:
    """The answers move to the new address at once; the old one stays open for
    pin_grace seconds after the refresh that stopped seeing it (clients cache answers),
    and the first refresh after that closes it."""
    assert world.boot().rc == 0
    old, new = ALLOWED_HOSTS[B], SPARE_ADDRS[0]
    world.box.set_hosts({B: new})
    grace = ("--var", "pin_grace=4")
    refresh = world.refresh(None, *grace)
    assert refresh.rc == 0, refresh.output
    assert local_answer(world, B, [new]) == [new]
    assert connects(world, new) and connects(world, old)
    assert any("gone=" in rule and old in rule for rule in world.chain())
    time.sleep(4.5)
    later = world.refresh(None, *grace)
    assert later.rc == 0, later.output
    assert connects(world, new)
    assert blocked(world, old)
    assert world.box.dns_query(B).answers == [new]


def test_3_failed_name_keeps_its_address_while_others_change(world: Lockdown) -> None:
    assert world.boot().rc == 0
    world.box.set_hosts({A: None, B: SPARE_ADDRS[0]})
    refresh = world.refresh(None, *NO_GRACE)
    assert_names(refresh, A)
    assert world.policy() == "DROP"
    assert connects(world, ALLOWED_HOSTS[A])  # last-known address kept
    assert connects(world, SPARE_ADDRS[0])  # the other name's change went in
    assert blocked(world, ALLOWED_HOSTS[B])
    assert connects(world, ALLOWED_HOSTS[C])


# --- 4. a Corefile the container's own template rendered ------------------------------------

def test_4_conflicting_corefile_is_adopted(world: Lockdown) -> None:
    world.corefile.parent.mkdir(parents=True)
    world.corefile.write_text(REFERENCE_COREFILE)
    first = world.boot()
    assert first.rc == 0, first.output
    assert_locked_down(world, ALLOWED_HOSTS)


# --- 5. the OTLP host resolving to the metadata service -------------------------------------

def test_5_otlp_host_on_the_metadata_address_stays_unreachable(world: Lockdown) -> None:
    world.box.set_hosts({GATEWAY: METADATA_ADDR})
    world.boot(ON)
    assert world.policy() == "DROP", world.table()
    assert blocked(world, METADATA_ADDR, OTLP_PORT)
    assert connects(world, ALLOWED_HOSTS[A])
    refresh = world.refresh(ON)
    assert world.policy() == "DROP", refresh.output
    assert blocked(world, METADATA_ADDR, OTLP_PORT)


def test_5_otlp_rule_sits_below_the_private_drops(world: Lockdown) -> None:
    first = world.boot(ON)
    assert first.rc == 0, first.output
    assert connects(world, GATEWAY_ADDR, OTLP_PORT)
    assert comparable_chain(world.chain(), len(ALLOWED_HOSTS), statekit=True) == \
        reference_chain(ALLOWED_HOSTS.values(), otlp=[(GATEWAY_ADDR, OTLP_PORT)],
                        statekit=True)


# --- 6. a foreign ACCEPT --------------------------------------------------------------------------

def test_6_foreign_accept_is_removed_by_refresh(world: Lockdown) -> None:
    assert world.boot().rc == 0
    world.iptables("-I", "OUTPUT", "1", "-d", NOT_ALLOWED_ADDR, "-j", "ACCEPT")
    assert connects(world, NOT_ALLOWED_ADDR)
    refresh = world.refresh()
    assert refresh.rc in (0, 2), refresh.output
    assert blocked(world, NOT_ALLOWED_ADDR)
    assert not [r for r in world.chain() if not comment(r).startswith("statekit:")]
    assert_locked_down(world, ALLOWED_HOSTS)


# --- 7. a connection opened before the lockdown ---------------------------------------------

def track_connections(world: Lockdown) -> None:
    """Turn connection tracking on in the container before any connection opens, as on
    a machine that already has a conntrack rule: a namespace tracks nothing until some
    rule needs it, and an untracked connection is never ESTABLISHED for the lockdown.
    The rule is in INPUT (policy ACCEPT), so it changes no verdict."""
    world.iptables("-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED",
                   "-j", "ACCEPT")


def test_7_private_connection_opened_before_is_cut(world: Lockdown) -> None:
    track_connections(world)
    conn = world.box.hold_connection(PRIVATE_ADDR)
    try:
        assert conn.send("before") == "echo"
        assert world.boot().rc == 0
        assert conn.send("after") != "echo"
    finally:
        conn.close()


def test_7_allowed_connection_opened_before_keeps_flowing(world: Lockdown) -> None:
    track_connections(world)
    conn = world.box.hold_connection(ALLOWED_HOSTS[A])
    try:
        assert conn.send("before") == "echo"
        assert world.boot().rc == 0
        assert conn.send("after") == "echo"
    finally:
        conn.close()


# --- 8. a bad telemetry input ----------------------------------------------------------------

def test_8_bad_telemetry_input_exits_3_but_locks_down(world: Lockdown) -> None:
    env = {**ON, "GRAFANA_OTLP_ENDPOINT": f"http://{GATEWAY}/otlp"}
    network = world.converge(env=env, resolver="upstream")
    assert network.rc == 3, network.output
    assert "GRAFANA_OTLP_ENDPOINT" in network.output
    assert "Traceback" not in network.output
    assert world.corefile.exists(), "no Corefile: the network phase was not applied"
    world.start_dns()
    assert_locked_down(world, ALLOWED_HOSTS)
    auth = world.converge(env=env, phase="auth")
    assert auth.rc == 3, auth.output
    assert not world.env_file.exists()
    assert not [r for r in world.chain() if "otlp" in r or GATEWAY_ADDR in r]
    assert world.box.dns_query(GATEWAY).rcode == "NXDOMAIN"
    assert GATEWAY not in world.corefile.read_text()
    assert blocked(world, GATEWAY_ADDR, OTLP_PORT)


# --- 9. the entrypoint with one dead name ------------------------------------------------------

def entrypoint_hooks(world: Lockdown) -> dict[str, str]:
    """STATEKIT (with the test vars), START_DNS (CoreDNS, then resolv.conf -> 127.0.0.53)."""
    work, root = world.box.workdir, world.root
    wrapper, start_dns = work / "ep-statekit", work / "ep-start-dns"
    wrapper.write_text("#!/bin/sh\ncmd=$1; shift\n"
                       f"cd {REPO} && exec {sys.executable} -m statekit \"$cmd\" "
                       + " ".join(f"'{v}'" for v in VARS) + ' "$@"\n')
    start_dns.write_text(
        "#!/bin/sh\n"
        f"{COREDNS} -conf {world.corefile} -pidfile {world.pidfile}"
        f" > {work}/ep-coredns.log 2>&1 &\n"
        f"i=0; while [ ! -s {world.pidfile} ] && [ $i -lt 100 ]; do sleep 0.1; "
        "i=$((i+1)); done; sleep 0.5\n"
        f"mount --bind {world.box.info.resolv['local']} /etc/resolv.conf\n")
    for path in (wrapper, start_dns):
        path.chmod(0o755)
    return {"STATEKIT": str(wrapper), "START_DNS": str(start_dns), "REFRESH": "0",
            "STATES": str(REPO / "states"), "STATEKIT_ROOT": str(root)}


def test_9_entrypoint_with_a_dead_name_starts_the_agent_locked_down(world: Lockdown) -> None:
    world.box.set_hosts({C: None})
    marker = world.root.parent / "agent-started"
    agent = world.root.parent / "agent.sh"
    agent.write_text(f'#!/bin/sh\necho "agent $*" > {marker}\n')
    agent.chmod(0o755)
    entry = world.box.run_in_container(
        ["sh", str(REPO / "examples/entrypoint.sh"), str(agent), "--flag", "value"],
        env=entrypoint_hooks(world), timeout=120)
    out = entry.stdout + entry.stderr
    assert entry.returncode == 0, out
    assert marker.read_text() == "agent --flag value\n", out
    assert_locked_down(world, {A: ALLOWED_HOSTS[A], B: ALLOWED_HOSTS[B]})
    assert world.box.dns_query(C).rcode == "NXDOMAIN"


def run_entrypoint(world: Lockdown, **hooks: str) -> tuple[int, str, bool]:
    """The entrypoint with the test hooks (and ``hooks`` over them): its exit code, its
    output, and whether the agent started."""
    marker = world.root.parent / "agent-started"
    agent = world.root.parent / "agent.sh"
    agent.write_text(f'#!/bin/sh\necho "agent $*" > {marker}\n')
    agent.chmod(0o755)
    entry = world.box.run_in_container(
        ["sh", str(REPO / "examples/entrypoint.sh"), str(agent)],
        env={**entrypoint_hooks(world), **hooks}, timeout=120)
    return entry.returncode, entry.stdout + entry.stderr, marker.exists()


def test_9_entrypoint_with_a_broken_network_yaml_does_not_start_the_agent(
        world: Lockdown, tmp_path: Path) -> None:
    states = tmp_path / "states"
    shutil.copytree(REPO / "states", states)
    network = states / "network.yaml"
    network.write_text(network.read_text().replace("jump: DROP", "jump: DROPP", 1))
    rc, out, started = run_entrypoint(world, STATES=str(states))
    assert rc != 0 and not started, out
    assert "the lockdown is not in place" in out, out
    assert world.policy() == "ACCEPT"  # the restore failed whole: nothing written


def test_9_entrypoint_without_statekit_does_not_start_the_agent(world: Lockdown) -> None:
    rc, out, started = run_entrypoint(world, STATEKIT="/nonexistent/statekit")
    assert rc != 0 and not started, out
    assert "not starting the agent" in out, out


def test_9_entrypoint_with_an_invalid_telemetry_input_boots_on_locked_down(
        world: Lockdown) -> None:
    rc, out, started = run_entrypoint(world, **{**ON, "GRAFANA_INSTANCE_ID": "abc"})
    assert rc == 0 and started, out
    assert "exited 3" in out and TOKEN not in out, out
    assert_locked_down(world, ALLOWED_HOSTS)
    assert not world.env_file.exists()


def test_9_a_broken_network_yaml_after_a_good_boot_keeps_the_lockdown_and_boots_on(
        world: Lockdown, tmp_path: Path) -> None:
    """The guard reads the live firewall: locked down by an earlier run is locked down."""
    assert world.boot().rc == 0
    states = tmp_path / "states"
    shutil.copytree(REPO / "states", states)
    (states / "network.yaml").write_text("phases: [network, auth]\nstates: [\n")
    rc, out, started = run_entrypoint(world, STATES=str(states))
    assert rc == 0 and started, out
    assert "exited 3" in out, out
    assert_locked_down(world, ALLOWED_HOSTS)


# --- 11. verify does not resolve again -------------------------------------------------------

@pytest.mark.parametrize("when", ["boot", "refresh"])
def test_11_each_name_is_asked_once_per_converge(world: Lockdown, when: str) -> None:
    """Counted at the upstream resolvers and at the container's CoreDNS (whose allowlist
    blocks log every query, and whose cache would hide a second lookup upstream)."""
    local = "container-coredns"
    if when == "refresh":
        assert world.boot().rc == 0
        world.box.set_hosts({B: SPARE_ADDRS[0]})  # the refresh has something to change
    marks = world.box.upstream_log_mark(), world.box.upstream_log_mark(local)
    result = world.converge(resolver="upstream" if when == "boot" else "local")
    assert result.rc == 0, result.output
    asked = (world.box.upstream_queries(marks[0])
             + world.box.upstream_queries(marks[1], local))
    for name in ALLOWED_HOSTS:
        assert (asked[(name, "A")], asked[(name, "AAAA")]) == (1, 0), (name, dict(asked))
