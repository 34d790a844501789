"""``statekit drops``: what the states tell it, the hint for each kind of drop, the text
and JSON lines, and the command itself in a private network namespace (loopback
traffic through hand-made NFLOG rules; the lockdown's own drops are in
tests/test_drops_world.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from statekit.commands import drops
from statekit.errors import ApplyError
from statekit.host.host import Host
from statekit.host.runner import Result
from statekit.load import loader
from statekit.masking import Masker
from statekit.netfilter.explain import Pin, View
from statekit.netfilter.nflog import Drop, Packet
from tests.conftest import REPO, statekit, write
from tests.fakehost import FakeRunner

STATES = str(REPO / "states")
NO_LOG = """\
phases: [network]
states:
  - id: fw-accept
    type: iptables_rule
    phase: network
    chain: OUTPUT
    destination: 192.0.2.1
    jump: ACCEPT
"""
LINES = [
    "-A OUTPUT -d 169.254.0.0/16 -m comment --comment \"statekit:fw-drop-private\" -j DROP",
    "-A OUTPUT -d 140.82.112.0/20 -p tcp -m tcp --dport 443 -m comment --comment "
    "\"statekit:fw-github\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.30/32 -m comment --comment \"statekit:fw-allowlist "
    "a.allowed.test\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.10/32 -p tcp -m tcp --dport 443 -m comment --comment "
    "\"statekit:otlp-firewall otlp.example.net\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.31/32 -p tcp -m tcp --dport 8443 -m comment --comment "
    "\"statekit:fw-allowlist b.allowed.test gone=1733472000\" -j ACCEPT",
]
VIEW = View(LINES, None, {"198.18.0.33": ("c.allowed.test", 1733400000.0)})
RESOLVERS = ("127.0.0.53",)


def packet(dst: str, dport: int | None = 443, proto: int = 6, version: int = 4) -> Packet:
    return Packet(version=version, protocol=proto, source="198.18.0.2", destination=dst,
                  sport=40000 if dport else None, dport=dport)


def hint(p: Packet) -> tuple[str, str]:
    return drops.explain(p, tuple(VIEW.pins(p.destination)), VIEW, RESOLVERS)


def test_the_shipped_states_give_the_group_the_names_and_the_local_resolver() -> None:
    program = loader.load([STATES], {"domains": ["a.allowed.test", "b.allowed.test"]},
                          environ={})
    found = drops.setup(program)
    assert found.groups == (100,)
    assert found.hosts["fw-allowlist"] == {"a.allowed.test", "b.allowed.test"}
    assert found.resolvers == ("127.0.0.53",)
    assert drops.setup(None) == drops.Setup()


@pytest.mark.parametrize(("p", "reason", "words"), [
    (packet("198.18.0.40"), "unlisted", "on no list: to allow it, add its host name to "
     "`domains`"),
    (packet("198.18.0.40", None, 1), "unlisted", "on no list"),
    (packet("2001:db8::1", version=6), "ipv6", "IPv6 egress is locked down"),
    (packet("8.8.8.8", 53, 17), "dns", "DNS must go through 127.0.0.53"),
    (packet("8.8.8.8", 53, 6), "dns", "DNS must go through 127.0.0.53"),
    (packet("169.254.169.254"), "blocked_range", "blocked range 169.254.0.0/16 (state "
     "fw-drop-private; `blocked_ranges` in the shipped states)"),
    (packet("140.82.113.1", 22), "other_port", "140.82.113.1 is open for tcp/443 only "
     "(state fw-github)"),
    (packet("198.18.0.10", 8443), "other_port", "otlp.example.net is open for tcp/443 only"
     " (state otlp-firewall)"),
    (packet("198.18.0.30"), "accepted_now", "a.allowed.test is accepted now (state "
     "fw-allowlist): the firewall changed after this packet"),
    (packet("198.18.0.31"), "other_port", "b.allowed.test is open for tcp/8443 only"),
    (packet("198.18.0.33"), "left", "c.allowed.test stopped resolving to 198.18.0.33 at "),
    (Packet(4), "unknown", "could not be read"),
])
def test_each_drop_gets_the_hint_that_applies_first(p: Packet, reason: str,
                                                    words: str) -> None:
    got = hint(p)
    assert got[0] == reason
    assert words in got[1]


def test_dns_to_the_local_resolver_is_no_dns_hint_and_without_states_it_says_local() -> None:
    assert hint(packet("127.0.0.53", 53, 17))[0] == "unlisted"
    assert "through the local resolver" in drops.explain(packet("1.1.1.1", 53, 17), (), VIEW,
                                                         ())[1]


SHOWN = drops.Shown(
    Drop(time=1733472000.5, group=100, prefix="CODETAINER_DROP", uid=1000, gid=1000,
         hw_protocol=0x0800, packet=packet("198.18.0.31", 443)),
    (Pin("b.allowed.test", "fw-allowlist", gone=1733471000.0),), "other_port",
    "b.allowed.test is open for tcp/8443 only (state fw-allowlist)")


def test_the_text_line_says_when_who_what_which_name_and_what_to_do() -> None:
    line = drops._text_line(SHOWN, Masker())
    clock = time.strftime("%H:%M:%S", time.localtime(1733472000.5))
    since = time.strftime("%H:%M:%S", time.localtime(1733471000.0))
    assert line == (f"{clock} CODETAINER_DROP uid=1000 gid=1000 tcp 198.18.0.31:443 "
                    f"b.allowed.test (in grace since {since}) -- b.allowed.test is open "
                    "for tcp/8443 only (state fw-allowlist)")
    icmpv6 = Packet(version=6, protocol=58, source="::1", destination="::2", icmp_type=128)
    unknown = SHOWN._replace(drop=SHOWN.drop._replace(uid=None, gid=None, prefix="",
                                                      packet=icmpv6), pins=())
    assert " - uid=? gid=? icmpv6 ::2 echo-request -- " in drops._text_line(unknown, Masker())
    assert drops.target(packet("2001:db8::1", 443, version=6)) == "[2001:db8::1]:443"
    assert drops.target(Packet(version=4, protocol=1, source="a", destination="198.18.0.40",
                               icmp_type=42)) == \
        "198.18.0.40 type 42"


def test_the_json_line_has_every_field() -> None:
    line = json.loads(drops._json_line(SHOWN, Masker()))
    assert line == {
        "format_version": 1, "time": "2024-12-06T08:00:00.500Z", "group": 100,
        "prefix": "CODETAINER_DROP", "uid": 1000, "gid": 1000, "family": "ipv4",
        "protocol": "tcp", "source": "198.18.0.2", "destination": "198.18.0.31",
        "sport": 40000, "dport": 443, "icmp_type": None, "icmp_code": None,
        "names": [{"name": "b.allowed.test", "status": "grace", "state": "fw-allowlist",
                   "since": "2024-12-06T07:43:20.000Z"}],
        "reason": "other_port", "hint": SHOWN.hint}


def test_a_secret_in_a_prefix_is_masked() -> None:
    secret = SHOWN._replace(drop=SHOWN.drop._replace(prefix="glc_drops_secret_1234"))
    masker = Masker(["glc_drops_secret_1234"])
    assert "glc_drops_secret_1234" not in drops._text_line(secret, masker)
    assert "glc_drops_secret_1234" not in drops._json_line(secret, masker)


def test_states_without_an_nflog_rule_and_no_group_is_bad_input(tmp_path: Path) -> None:
    state = write(tmp_path / "s.yaml", NO_LOG)
    run = statekit(["drops", "--timeout", "0", str(state)])
    assert run.returncode == 3
    assert run.stderr == ("statekit: the states have no NFLOG rule (jump: NFLOG): give "
                          "--group N, the NFLOG group to read\n")
    run = statekit(["drops", "--timeout", "0", "--root", str(tmp_path / "nope"), str(state)])
    assert (run.returncode, run.stderr) == (
        3, f"statekit: --root {tmp_path / 'nope'}: no such directory\n")
    bad = statekit(["drops", "--group", "65536"])
    assert bad.returncode == 3 and "is not an NFLOG group (0 to 65535)" in bad.stderr


# --- the command, in a private network namespace -----------------------------------------

SEND = """\
import socket, sys
for port in sys.argv[1:]:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(port)))
"""


def in_ns(netns: str, *argv: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def start_drops(netns: str, *args: str) -> subprocess.Popen[str]:
    """``statekit drops ARGS`` in ``netns``, returned once it has bound its group."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "statekit",
                             "drops", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("statekit: reading NFLOG group"), first + proc.stderr.read()
    return proc


def send_udp(netns: str, *ports: int) -> None:
    in_ns(netns, "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
          "/usr/bin/python3", "-I", "-c", SEND, *map(str, ports))


@pytest.fixture
def logged(netns: str) -> str:
    """``netns`` with UDP to 127.0.0.1 logged to group 7, and port 9's address tagged as
    pinned for a name (for port 10 only)."""
    in_ns(netns, "iptables", "-A", "OUTPUT", "-p", "udp", "-j", "NFLOG", "--nflog-group", "7",
          "--nflog-prefix", "LOOP")
    in_ns(netns, "iptables", "-A", "OUTPUT", "-d", "127.0.0.1", "-p", "udp", "--dport", "10",
          "-m", "comment", "--comment", "statekit:fw-allowlist loop.allowed.test",
          "-j", "ACCEPT")
    return netns


@pytest.mark.netns
def test_json_lines_until_count(logged: str) -> None:
    proc = start_drops(logged, "--group", "7", "--count", "2", "--format", "json",
                       "--timeout", "30")
    send_udp(logged, 9, 11, 12)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["uid"], x["gid"], x["protocol"], x["destination"], x["dport"], x["prefix"])
            for x in lines] == [(1000, 1000, "udp", "127.0.0.1", 9, "LOOP"),
                                (1000, 1000, "udp", "127.0.0.1", 11, "LOOP")]
    assert [x["names"] for x in lines] == [[{"name": "loop.allowed.test", "status": "pinned",
                                            "state": "fw-allowlist", "since": None}]] * 2
    assert lines[0]["reason"] == "other_port"
    assert lines[0]["hint"] == ("loop.allowed.test is open for udp/10 only (state "
                                "fw-allowlist)")
    assert err == ""


@pytest.mark.netns
def test_timeout_ends_it_with_nothing_logged(logged: str) -> None:
    start = time.monotonic()
    proc = start_drops(logged, "--group", "7", "--timeout", "1")
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, "", "")
    assert 0.9 < time.monotonic() - start < 10


@pytest.mark.netns
def test_ctrl_c_ends_it_cleanly(logged: str) -> None:
    proc = start_drops(logged, "--group", "7")
    send_udp(logged, 9)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert " LOOP uid=1000 gid=1000 udp 127.0.0.1:9 loop.allowed.test -- " in line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, "", "")


@pytest.mark.netns
def test_a_reader_that_goes_away_ends_it_quietly(logged: str) -> None:
    proc = start_drops(logged, "--group", "7", "--timeout", "30")
    assert proc.stdout is not None
    proc.stdout.close()  # as `statekit drops | head -1` does once it has its line
    send_udp(logged, 9, 9)
    err = proc.stderr.read() if proc.stderr else ""
    assert (proc.wait(timeout=30), err) == (0, "")


@pytest.mark.netns
def test_a_group_another_listener_reads_is_one_line_and_exit_1(logged: str) -> None:
    first = start_drops(logged, "--group", "7", "--timeout", "30")
    try:
        second = statekit(["drops", "--group", "7", "--timeout", "1"], netns=logged)
        assert second.returncode == 1
        assert second.stderr.startswith("statekit: NFLOG group 7 is already read by another "
                                        "listener (netlink port ")
        assert second.stderr.endswith("stop it, or give --group to read another group\n")
        assert second.stderr.count("\n") == 1 and second.stdout == ""
    finally:
        first.kill()
        first.communicate()
    as_user = subprocess.run(
        ["ip", "netns", "exec", logged, "setpriv", "--reuid=1000", "--regid=1000",
         "--clear-groups", sys.executable, "-m", "statekit", "drops", "--group", "7"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert (as_user.returncode, as_user.stderr) == (1, (
        "statekit: reading NFLOG group 7 needs root (CAP_NET_ADMIN in this network "
        "namespace): run statekit drops as root\n"))


# --- the explainer: the live tables (a fake iptables-save) and the history ---------------

class FailingSave(FakeRunner):
    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
            check: bool = True) -> Result:
        raise ApplyError("command failed", argv=argv, returncode=1, stderr="no table")


def drop_to(dst: str, dport: int = 443) -> Drop:
    return Drop(time=1.0, group=100, packet=packet(dst, dport))


def test_the_explainer_reads_the_tables_once_per_interval_and_names_addresses(
        capsys: pytest.CaptureFixture[str]) -> None:
    runner = FakeRunner()
    runner.table("ipv4", "filter")["OUTPUT"].rules.extend(LINES)
    explainer = drops.Explainer(Host(runner=runner), drops.Setup(), lambda root: {
        "198.18.0.33": ("c.allowed.test", 1.0)})
    assert explainer.explain(drop_to("198.18.0.30")).pins == (
        Pin("a.allowed.test", "fw-allowlist"),)
    assert explainer.explain(drop_to("198.18.0.33")).reason == "left"
    saves = [c for c in runner.calls_made if c[0].endswith("save")]
    assert saves == [("iptables-save", "-t", "filter"), ("ip6tables-save", "-t", "filter")]
    explainer.read_at = time.monotonic() - drops.VIEW_TTL - 1  # stale: read again
    explainer.explain(drop_to("198.18.0.30"))
    assert len([c for c in runner.calls_made if c[0].endswith("save")]) == 4
    assert capsys.readouterr().err == ""


def test_a_firewall_or_history_that_cannot_be_read_is_said_once_and_drops_go_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(root: str) -> dict[str, tuple[str, float]]:
        raise ValueError("bad pin file")

    explainer = drops.Explainer(Host(runner=FailingSave()), drops.Setup(), broken)
    for _ in range(3):
        explainer.read_at = None
        assert explainer.explain(drop_to("198.18.0.40")).reason == "unlisted"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("statekit: cannot read the firewall (command failed")
    assert err[0].endswith("names are not shown")
    assert err[1] == ("statekit: cannot read the pin history (bad pin file): addresses that "
                      "left their name are not named")
