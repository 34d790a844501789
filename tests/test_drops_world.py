"""``statekit drops`` at the packet level: the shipped states boot a container in the
sandbox (tests/e2e/harness.py), ``statekit drops`` follows NFLOG group 100 inside it, and
the agent (uid 1000) tries what the lockdown forbids.

The shipped chain logs every packet it drops: what reaches its last rule, and, just
before each DROP above it (the private/metadata ranges, other users' DNS to the upstream
resolvers, UDP), the same NFLOG group and prefix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, record_output, register_token
from tests.e2e.harness import (
    ALLOWED_HOSTS,
    ECHO_PORT,
    ENDPOINT,
    GATEWAY,
    GATEWAY_ADDR,
    METADATA_ADDR,
    MINIMAL_PATH,
    NOT_ALLOWED_ADDR,
    OTHER_PORT,
    SPARE_ADDRS,
    Sandbox,
)
from tests.e2e.lockdown import STATES, VARS, Lockdown

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

A = next(iter(ALLOWED_HOSTS))
TOKEN = "glc_drops_token_9d41c0b7e2"
register_token(TOKEN)
ON = {"GRAFANA_INSTANCE_ID": "424242", "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": ENDPOINT}
LOG = ["-j", "NFLOG", "--nflog-group", "100", "--nflog-prefix", "CODETAINER_DROP"]
CONNECT = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(0.5)  # before TCP's first retransmission (1 s): one SYN, one drop
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError:
    print("blocked")
"""
DATAGRAM = """\
import socket, sys
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (sys.argv[1], int(sys.argv[2])))
except OSError:
    pass
"""
PING = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
try:  # an echo request; EPERM is the drop
    s.sendto(bytes([8, 0, 0xf7, 0xff, 0, 0, 0, 0]), (sys.argv[1], 0))
except PermissionError:
    pass
"""
@pytest.fixture
def world(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Lockdown]:
    """The shipped states booted in the container (the test allowlist)."""
    clean_sandbox.reset_hosts()
    root = tmp_path / "root"
    root.mkdir()
    world = Lockdown(clean_sandbox, root)
    booted = world.boot()
    assert booted.rc == 0, booted.output
    yield world
    clean_sandbox.reset_hosts()


class Follower:
    """``statekit drops`` running in the container."""

    def __init__(self, world: Lockdown, *args: str,
                 env: dict[str, str] | None = None) -> None:
        argv = ["-m", "statekit", "drops", "--root", str(world.root), *VARS, *args, STATES]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(world.box.container_argv([sys.executable, *argv], None),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO,
                                     env={"PATH": MINIMAL_PATH, "LANG": "C.UTF-8",
                                          **(env or {})})
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        assert first == "statekit: reading NFLOG group 100 (Ctrl-C to stop)\n", \
            first + self.proc.stderr.read()

    def finish(self, timeout: float = 30) -> tuple[int, list[str], str]:
        """Exit code, the lines printed, stderr (after the first line)."""
        out, err = self.proc.communicate(timeout=timeout)
        record_output(out, err)
        return self.proc.returncode, out.splitlines(), err

    def json(self) -> list[dict[str, Any]]:
        rc, lines, err = self.finish()
        assert (rc, err) == (0, ""), err
        return [json.loads(line) for line in lines]


def as_agent(world: Lockdown, script: str, *args: str) -> str:
    """Run ``script`` as uid/gid 1000 in the container (the system python)."""
    proc = world.box.run_in_container(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3",
         "-I", "-c", script, *args], resolver=None)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_connect_to_an_address_on_no_list_shows_uid_destination_port_and_what_to_do(
        world: Lockdown) -> None:
    follower = Follower(world, "--count", "1", "--timeout", "30")
    assert as_agent(world, CONNECT, NOT_ALLOWED_ADDR, str(ECHO_PORT)) == "blocked"
    rc, lines, err = follower.finish()
    assert (rc, err) == (0, "")
    [line] = lines
    assert line.endswith(f" CODETAINER_DROP uid=1000 gid=1000 tcp {NOT_ALLOWED_ADDR}:443 -- "
                         "on no list: to allow it, add its host name to `domains` (and "
                         "reach it by name)"), line


def test_json_for_udp_the_metadata_service_dns_elsewhere_and_icmp(world: Lockdown) -> None:
    # a time window, not --count: the kernel's own IPv6 multicast (MLD reports, no
    # socket, no uid) may be dropped meanwhile, and is left out below
    follower = Follower(world, "--format", "json", "--timeout", "8")
    as_agent(world, DATAGRAM, NOT_ALLOWED_ADDR, "9999")
    as_agent(world, DATAGRAM, "1.1.1.1", "53")  # the upstream resolvers: root's only
    assert as_agent(world, CONNECT, METADATA_ADDR, str(ECHO_PORT)) == "blocked"
    assert as_agent(world, CONNECT, "8.8.8.8", "53") == "blocked"
    ping = world.box.run_in_container([sys.executable, "-I", "-c", PING, NOT_ALLOWED_ADDR],
                                      resolver=None)
    assert ping.returncode == 0, ping.stderr
    got = [x for x in follower.json() if x["family"] == "ipv4"]
    assert [(x["uid"], x["gid"], x["family"], x["protocol"], x["destination"], x["dport"],
             x["icmp_type"], x["reason"]) for x in got] == [
        (1000, 1000, "ipv4", "udp", NOT_ALLOWED_ADDR, 9999, None, "unlisted"),
        (1000, 1000, "ipv4", "udp", "1.1.1.1", 53, None, "dns"),
        (1000, 1000, "ipv4", "tcp", METADATA_ADDR, 443, None, "blocked_range"),
        (1000, 1000, "ipv4", "tcp", "8.8.8.8", 53, None, "dns"),
        (0, 0, "ipv4", "icmp", NOT_ALLOWED_ADDR, None, 8, "unlisted")]
    assert got[2]["hint"].startswith("blocked range 169.254.0.0/16 (state fw-drop-private;")
    assert got[3]["hint"] == ("DNS must go through 127.0.0.53: it answers the allowlisted "
                              "names only")
    assert all(x["prefix"] == "CODETAINER_DROP" and x["group"] == 100 and x["names"] == []
               and x["source"] == "198.18.0.2" and x["time"].endswith("Z") for x in got)


def test_count_stops_after_n_drops_and_timeout_after_s_seconds(world: Lockdown) -> None:
    follower = Follower(world, "--count", "2")
    for port in (1001, 1002, 1003):
        assert as_agent(world, CONNECT, NOT_ALLOWED_ADDR, str(port)) == "blocked"
    rc, lines, err = follower.finish()
    assert (rc, err) == (0, "")
    assert [line.split(" -- ")[0].split()[-1] for line in lines] == [
        f"{NOT_ALLOWED_ADDR}:1001", f"{NOT_ALLOWED_ADDR}:1002"]
    quiet = Follower(world, "--timeout", "2")
    assert quiet.finish() == (0, [], "")
    assert 2 <= time.monotonic() - quiet.started < 15


def test_an_address_in_the_table_for_a_name_is_shown_with_the_name(world: Lockdown) -> None:
    """A pin in grace for another port (a tagged rule inserted by hand): the name, since
    when, and the port it is open for."""
    gone = int(time.time()) - 60
    world.iptables("-I", "OUTPUT", "1", "-d", NOT_ALLOWED_ADDR, "-p", "tcp", "--dport",
                   "8443", "-m", "comment", "--comment",
                   f"statekit:fw-allowlist {A} gone={gone}", "-j", "ACCEPT")
    follower = Follower(world, "--format", "json", "--count", "1", "--timeout", "30")
    assert as_agent(world, CONNECT, NOT_ALLOWED_ADDR, str(ECHO_PORT)) == "blocked"
    [line] = follower.json()
    assert line["names"] == [{"name": A, "status": "grace", "state": "fw-allowlist",
                              "since": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                     time.gmtime(gone))}]
    assert (line["reason"], line["hint"]) == (
        "other_port", f"{A} is open for tcp/8443 only (state fw-allowlist)")


def test_an_address_that_left_its_name_is_shown_with_the_name(world: Lockdown) -> None:
    """The name moves to another address; a refresh without grace closes the old one;
    the agent still uses it. No rule names the old address now: the pin history the
    converge recorded (run/statekit/last-run.json) does."""
    old = ALLOWED_HOSTS[A]
    world.box.set_hosts({A: SPARE_ADDRS[0]})
    refreshed = world.refresh(None, "--var", "pin_grace=0")
    assert refreshed.rc == 0, refreshed.output
    assert not any(f"-d {old}/32 " in rule for rule in world.chain()), world.chain()
    record = json.loads((world.root / "run/statekit/last-run.json").read_text())
    left = record["history"][old]["left"]
    assert record["history"][old]["name"] == A
    follower = Follower(world, "--count", "1", "--timeout", "30")
    assert as_agent(world, CONNECT, old, str(ECHO_PORT)) == "blocked"
    rc, [line], err = follower.finish()
    assert (rc, err) == (0, "")
    clock = time.strftime("%H:%M:%S", time.localtime(left))
    assert f" uid=1000 gid=1000 tcp {old}:443 {A} (left {clock}) -- {A} stopped resolving " \
           f"to {old} at {clock}: the client holds a stale address" in line, line
    (world.root / "run/statekit/last-run.json").unlink()
    without = Follower(world, "--count", "1", "--timeout", "30")
    assert as_agent(world, CONNECT, old, str(ECHO_PORT)) == "blocked"
    rc, [line], err = without.finish()
    assert line.endswith(f"tcp {old}:443 -- on no list: to allow it, add its host name to "
                         "`domains` (and reach it by name)"), line


def test_with_telemetry_on_the_otlp_host_on_another_port_is_named(world: Lockdown) -> None:
    """The OTLP rule opens the gateway's addresses on the endpoint's port only; the token
    the states hold never shows."""
    refreshed = world.refresh(ON)
    assert refreshed.rc == 0, refreshed.output
    follower = Follower(world, "--count", "1", "--timeout", "30", env=ON)
    assert as_agent(world, CONNECT, GATEWAY_ADDR, str(OTHER_PORT)) == "blocked"
    rc, [line], err = follower.finish()
    assert (rc, err) == (0, "")
    assert line.endswith(f"tcp {GATEWAY_ADDR}:{OTHER_PORT} {GATEWAY} -- {GATEWAY} is open "
                         "for tcp/443 only (state otlp-firewall)"), line
    assert TOKEN not in line
