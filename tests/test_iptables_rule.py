"""iptables_rule and iptables_chain against the real kernel, in a private netns, via the CLI:
what only the kernel can tell (does iptables-save print back what statekit renders? does a
rule the kernel refuses leave the table as it was? is the xtables lock waited for?).

Every test creates its own network namespace (the ``netns`` fixture); the tool shims of
``tool_log`` count each iptables-save / iptables-restore process statekit runs. What the
planners send for a given table (drift, moves, absent, policies, positions, names, pins)
is in the planner cases: tests/planner_cases/, run on the fake host by
tests/test_planner_cases.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Run, ToolLog, in_netns, saved, statekit

pytestmark = pytest.mark.netns

BASE = """
- id: loopback
  type: iptables_rule
  phase: network
  chain: OUTPUT
  out_interface: lo
  jump: ACCEPT
- id: web
  type: iptables_rule
  phase: network
  chain: OUTPUT
  family: both
  protocol: TCP
  dport: 443
  destination: [10.0.0.0/8, 192.0.2.9, "2001:db8::1"]  # in the order written
  comment: gateway
  jump: ACCEPT
- id: drop-log
  type: iptables_rule
  phase: network
  chain: OUTPUT
  position: last
  jump: NFLOG
  log_prefix: "statekit-drop: "
  nflog_group: 100
- id: output-policy
  type: iptables_chain
  phase: network
  chain: OUTPUT
  policy: DROP
"""
WEB = '-p tcp -m tcp --dport 443 -m comment --comment "statekit:web gateway" -j ACCEPT'
LOOP = '-A OUTPUT -o lo -m comment --comment "statekit:loopback" -j ACCEPT'
NFLOG = ('-A OUTPUT -m comment --comment "statekit:drop-log" -j NFLOG '
         '--nflog-prefix "statekit-drop: " --nflog-group 100')
EXPECTED_V4 = [f"-A OUTPUT -d 10.0.0.0/8 {WEB}", f"-A OUTPUT -d 192.0.2.9/32 {WEB}",
               LOOP, NFLOG]


class Ctx:
    """One test's namespace, state file, --root and tool log."""

    def __init__(self, netns: str, tmp_path: Path, tools: ToolLog) -> None:
        self.netns, self.tmp, self.tools = netns, tmp_path, tools
        self.file = tmp_path / "states.yaml"
        (tmp_path / "root").mkdir(exist_ok=True)

    def write(self, states: str) -> Path:
        self.file.write_text("phases: [network]\nstates:\n"
                             + textwrap.indent(textwrap.dedent(states), "  "))
        return self.file

    def argv(self, *args: str) -> list[str]:
        return ["converge", str(self.file), "--root", str(self.tmp / "root"), *args]

    def converge(self, *args: str) -> Run:
        self.tools.reset()
        return statekit(self.argv(*args), netns=self.netns, env=self.tools.env)

    def rules(self, family: str = "ipv4", chain: str = "OUTPUT") -> list[str]:
        return [ln for ln in saved(self.netns, family=family) if ln.startswith(f"-A {chain} ")]

    def ipt(self, *argv: str) -> None:
        in_netns(self.netns, ["iptables", *argv])


@pytest.fixture
def ctx(netns: str, tmp_path: Path, tool_log: ToolLog) -> Ctx:
    return Ctx(netns, tmp_path, tool_log)


def test_converge_places_rules_then_noop_runs_one_save_and_no_restore(
    ctx: Ctx, nshost: Any,
) -> None:
    ctx.write(BASE)
    first = ctx.converge()
    assert first.returncode == 0, first.output
    assert "changed=4" in first.output
    assert ctx.rules() == EXPECTED_V4
    assert ctx.rules("ipv6") == [f"-A OUTPUT -d 2001:db8::1/128 {WEB}"]
    assert ":OUTPUT DROP [0:0]" in saved(ctx.netns)
    assert ctx.tools.calls().count("iptables-restore") == 1  # one transaction per family
    assert ctx.tools.calls().count("ip6tables-restore") == 1
    assert nshost.iptables.rules("filter", "OUTPUT") == ["-P OUTPUT DROP", *EXPECTED_V4]
    second = ctx.converge("--detailed-exitcode")
    assert second.returncode == 0, second.output
    assert "changed=0" in second.output
    assert sorted(ctx.tools.calls()) == ["ip6tables-save", "iptables-save"]


def test_kernel_rejected_rule_leaves_table_unchanged(ctx: Ctx) -> None:
    """What validation cannot know (a kernel module missing, a chain deleted by another
    program between the check and the restore) makes the restore fail: played by an
    iptables-restore that refuses the transaction holding the ``bad`` rule."""
    ctx.write(BASE)
    assert ctx.converge().returncode == 0
    before = saved(ctx.netns)
    shim = ctx.tools.bin_dir / "iptables-restore"
    real = shim.read_text().splitlines()[-1].split()[1]
    shim.write_text(f"#!/bin/sh\ninput=$(cat)\ncase \"$input\" in *statekit:bad*)\n"
                    "  echo \"iptables-restore: line 3 failed\" >&2; exit 1;;\nesac\n"
                    f"printf '%s\\n' \"$input\" | exec {real} \"$@\"\n")
    ctx.write(BASE + """
- id: fine
  type: iptables_rule
  phase: network
  chain: OUTPUT
  destination: 192.0.2.50
  jump: ACCEPT
- id: bad
  type: iptables_rule
  phase: network
  chain: OUTPUT
  destination: 192.0.2.51
  jump: ACCEPT
""")
    run = ctx.converge()
    assert run.returncode == 1, run.output
    assert "failed=2" in run.output and "transaction failed, nothing changed" in run.output
    assert saved(ctx.netns) == before


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"destination": "300.1.2.3"}, "destination", "not an IP address"),
    ({"destination": "2001:db8::1"}, "destination", "IPv6 address, but family is ipv4"),
    ({"protocol": "tcp", "dport": "443:80"}, "dport", "range is low:high"),
    ({"protocol": "tcp", "dport": 99999}, "dport", "not valid"),
    ({"protocol": "icmp", "dport": 22}, "dport", "only with protocol tcp or udp"),
    ({"destination_host": "bad_name.example"}, "destination_host", "not a valid DNS name"),
    ({"in_interface": "eth0"}, "in_interface", "cannot be used in chain OUTPUT"),
    ({"comment": 'say "hi"'}, "comment", "without quotes"),
    ({"position": "middle"}, "position", "is not valid"),
    ({"chain": "BAD CHAIN"}, "chain", "is not valid: expected a chain name: letters"),
    ({"jump": "no/such"}, "jump", "is not valid: expected one of ACCEPT, DROP"),
    ({"jump": "INPUT"}, "jump", "built-in chain"),
    ({"jump": "LOG", "nflog_group": 3}, "nflog_group", "only with jump NFLOG"),
    ({"chain": "INPUT", "uid_owner": 0}, "uid_owner", "cannot be used in chain INPUT"),
    ({"uid_owner": "no-such-user-sk"}, "uid_owner", "no such user 'no-such-user-sk'"),
    ({"uid_owner": -1}, "uid_owner", "is not valid"),
    ({"protocol": "udp", "syn": False}, "syn", "only with protocol tcp (protocol is udp)"),
    ({"protocol": "icmp", "icmpv6_type": 133}, "icmpv6_type",
     "only with protocol icmp and family ipv6"),
    ({"protocol": "icmp", "family": "ipv6", "icmpv6_type": ["echo", 2]}, "icmpv6_type",
     "'echo' is not an ICMPv6 type"),
    ({"protocol": "icmp", "family": "ipv6", "icmpv6_type": 256}, "icmpv6_type",
     "is not valid"),
])
def test_invalid_input_exits_3_and_touches_nothing(
    ctx: Ctx, extra: dict[str, Any], field: str, message: str,
) -> None:
    fields = {"chain": "OUTPUT", "jump": "ACCEPT", **extra}
    ctx.file.write_text(json.dumps({"phases": ["network"], "states": [
        {"id": "x", "type": "iptables_rule", "phase": "network", **fields}]}, indent=1))
    run = ctx.converge()
    assert run.returncode == 3, run.output
    assert "states.yaml:" in run.stderr and f"states[x].{field}: " in run.stderr
    assert message in run.stderr
    assert ctx.tools.calls() == []


def test_user_chain_rules_and_deletion_rules(ctx: Ctx) -> None:
    chain = """
- id: sk-chain
  type: iptables_chain
  phase: network
  chain: SK-OUT
  family: both
- id: to-chain
  type: iptables_rule
  phase: network
  chain: OUTPUT
  family: both
  jump: SK-OUT
  requires: [sk-chain]
- id: in-chain
  type: iptables_rule
  phase: network
  chain: SK-OUT
  family: both
  protocol: icmp
  jump: RETURN
  requires: [sk-chain]
"""
    ctx.write(chain)
    run = ctx.converge()
    assert run.returncode == 0, run.output
    assert ctx.rules("ipv6", "SK-OUT") == [
        '-A SK-OUT -p ipv6-icmp -m comment --comment "statekit:in-chain" -j RETURN']
    ctx.write("- id: sk-chain\n  type: iptables_chain\n  phase: network\n  chain: SK-OUT\n"
              "  ensure: absent\n")
    run = ctx.converge()
    assert run.returncode == 1 and "still has 1 rule(s)" in run.output
    ctx.ipt("-F", "SK-OUT")
    run = ctx.converge()
    assert run.returncode == 1 and "referenced by -A OUTPUT" in run.output
    ctx.ipt("-F", "OUTPUT")
    assert ctx.converge().returncode == 0
    assert ":SK-OUT - [0:0]" not in saved(ctx.netns)
    assert ":SK-OUT - [0:0]" in saved(ctx.netns, family="ipv6")


def test_waits_for_xtables_lock_held_by_another_process(ctx: Ctx) -> None:
    """The lock is held in the namespace's own /run (a private mount namespace)."""
    ctx.write(BASE)
    script = ("mount -t tmpfs tmpfs /run && (flock /run/xtables.lock sleep 3 &) && sleep 0.3 "
              "&& ! flock -n /run/xtables.lock true && echo LOCK-HELD && exec \"$@\"")
    argv = ["ip", "netns", "exec", ctx.netns, "unshare", "--mount", "sh", "-c", script, "sh",
            sys.executable, "-m", "statekit", *ctx.argv()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**ctx.tools.env, "LANG": "C.UTF-8"}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOCK-HELD" in proc.stdout
    assert ctx.rules() == EXPECTED_V4


def test_owner_syn_and_icmpv6_fields_converge_then_are_a_noop(ctx: Ctx) -> None:
    """A user name is resolved at load (root: 0); every line reads back as rendered."""
    ctx.write("""
- id: root-dns
  type: iptables_rule
  phase: network
  chain: OUTPUT
  family: both
  protocol: udp
  dport: 53
  uid_owner: root
  jump: ACCEPT
- id: replies
  type: iptables_rule
  phase: network
  chain: OUTPUT
  family: ipv6
  protocol: tcp
  sport: 22
  syn: false
  destination: fdaa::/16
  jump: ACCEPT
- id: nd
  type: iptables_rule
  phase: network
  chain: OUTPUT
  family: ipv6
  protocol: icmp
  icmpv6_type: [neighbour-solicitation, 136]
  jump: ACCEPT
""")
    first = ctx.converge()
    assert first.returncode == 0, first.output
    owner = "-p udp -m udp --dport 53 -m owner --uid-owner 0 -m comment --comment"
    assert ctx.rules() == [f'-A OUTPUT {owner} "statekit:root-dns" -j ACCEPT']
    assert ctx.rules("ipv6") == [
        '-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m comment --comment '
        '"statekit:nd" -j ACCEPT',
        '-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m comment --comment '
        '"statekit:nd" -j ACCEPT',
        '-A OUTPUT -d fdaa::/16 -p tcp -m tcp --sport 22 ! --tcp-flags FIN,SYN,RST,ACK SYN '
        '-m comment --comment "statekit:replies" -j ACCEPT',
        f'-A OUTPUT {owner} "statekit:root-dns" -j ACCEPT']
    second = ctx.converge("--detailed-exitcode")
    assert second.returncode == 0, second.output
    assert "changed=0" in second.output
