"""The shipped IPv6 lockdown and the root-only upstream DNS, on the fake host (no root, no
namespace) and, where only the kernel can tell, in a private namespace.

states/network.yaml with no allowlist (``domains=[]``: nothing to resolve) converges the
IPv4 and the IPv6 OUTPUT chains in one run. What a kernel without IPv6 does, and what an
ip6tables that cannot work does, is decided in statekit/netfilter/save.py
(``family_missing``) and told in docs/failure-model.md.
"""

from __future__ import annotations

import _socket
import errno
from pathlib import Path
from typing import Any

import pytest

from statekit.engine.engine import Engine, Outcome
from statekit.errors import StateError
from statekit.host.host import Host
from statekit.load import loader
from statekit.netfilter import save
from tests.conftest import REPO, in_netns, saved, statekit
from tests.fakehost import FakeRunner

pytestmark = pytest.mark.netns

STATES = str(REPO / "states")
TAG = '-m comment --comment "statekit:{}"'
IPV6_CHAIN = [
    f'-A OUTPUT -o lo {TAG.format("fw6-loopback")} -j ACCEPT',
    *(f'-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type {t} {TAG.format("fw6-icmp")} -j ACCEPT'
      for t in (133, 134, 135, 136, 2)),
    *(f"-A OUTPUT -d {net} -p tcp -m tcp --sport 22 ! --tcp-flags FIN,SYN,RST,ACK SYN "
      f'{TAG.format("fw6-ssh-replies")} -j ACCEPT' for net in ("fdaa::/16", "2605:4c40::/32")),
    f'-A OUTPUT {TAG.format("fw6-log")} -j NFLOG --nflog-prefix CODETAINER_DROP '
    "--nflog-group 100",
]
UPSTREAM_DNS = [
    *(f"-A OUTPUT -d {r}/32 -p udp -m udp --dport 53 -m owner --uid-owner 0 "
      f'{TAG.format("fw-dns-upstream")} -j ACCEPT' for r in ("8.8.8.8", "1.1.1.1")),
    *(f"-A OUTPUT -d {r}/32 -p udp -m udp --dport 53 "
      f'{TAG.format("fw-log-dns-upstream-others")} -j NFLOG --nflog-prefix CODETAINER_DROP '
      "--nflog-group 100" for r in ("8.8.8.8", "1.1.1.1")),
    *(f"-A OUTPUT -d {r}/32 -p udp -m udp --dport 53 "
      f'{TAG.format("fw-dns-upstream-others")} -j DROP' for r in ("8.8.8.8", "1.1.1.1")),
]
IPV6_STATES = ("fw6-output", "fw6-loopback", "fw6-icmp", "fw6-ssh-replies", "fw6-log")
NO_IPV6 = "this kernel has no IPv6 (test)"


class Machine:
    """The fake host, converged with the shipped states (phase network)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = FakeRunner()

    def converge(self, **overrides: Any) -> dict[str, Outcome]:
        program = loader.load([STATES], {"domains": [], **overrides}, environ={})
        host = Host(root=str(self.root), runner=self.runner)
        outcomes = Engine(program, host).converge(["network"])
        return {o.state.id: o for o in outcomes}

    def calls(self, tool: str) -> int:
        return sum(1 for c in self.runner.calls_made if c[0] == tool)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    root = tmp_path / "root"
    root.mkdir()
    return Machine(root)


def test_both_families_are_locked_down_in_one_converge_and_a_second_changes_nothing(
    machine: Machine,
) -> None:
    first = machine.converge()
    assert {o.status for o in first.values()} <= {"ok", "changed"}, first
    assert machine.runner.policy(family="ipv6") == "DROP"
    assert machine.runner.rules(family="ipv6") == IPV6_CHAIN
    assert machine.runner.policy() == "DROP"
    ipv4 = machine.runner.rules()
    at = ipv4.index(UPSTREAM_DNS[0])
    assert ipv4[at:at + len(UPSTREAM_DNS)] == UPSTREAM_DNS  # ESTABLISHED below the drop:
    assert "conntrack --ctstate RELATED,ESTABLISHED" in ipv4[at + len(UPSTREAM_DNS)]
    assert (machine.calls("iptables-restore"), machine.calls("ip6tables-restore")) == (1, 1)
    second = machine.converge()
    assert {o.status for o in second.values()} == {"ok"}
    assert (machine.calls("iptables-restore"), machine.calls("ip6tables-restore")) == (1, 1)


def test_the_ipv6_rules_need_no_conntrack(machine: Machine) -> None:
    machine.converge()
    rules = machine.runner.rules(family="ipv6")
    assert rules and not [r for r in rules if "-m conntrack" in r or "-m state" in r]


def test_opt_out_accepts_ipv6_again_and_removes_only_statekits_rules(machine: Machine) -> None:
    machine.converge()
    foreign = "-A OUTPUT -d fdaa::/16 -j ACCEPT"
    machine.runner.table("ipv6", "filter")["OUTPUT"].rules.insert(0, foreign)
    off = machine.converge(ipv6_lockdown=False)
    assert {off[s].status for s in IPV6_STATES} == {"changed"}
    assert machine.runner.policy(family="ipv6") == "ACCEPT"
    assert machine.runner.rules(family="ipv6") == [foreign]  # not purged any more
    assert machine.runner.policy() == "DROP"  # IPv4 untouched
    assert {o.status for o in machine.converge(ipv6_lockdown=False).values()} == {"ok"}
    machine.converge()  # and back on: purged, foreign rule gone
    assert machine.runner.rules(family="ipv6") == IPV6_CHAIN


def test_no_ssh_ranges_means_no_ssh_replies(machine: Machine) -> None:
    machine.converge(ssh_reply_ranges=[])
    rules = machine.runner.rules(family="ipv6")
    assert rules == [r for r in IPV6_CHAIN if "fw6-ssh-replies" not in r]


def test_a_kernel_without_ipv6_is_ok_with_a_note_and_runs_no_ip6tables(
    machine: Machine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(save, "family_missing",
                        lambda family: NO_IPV6 if family == "ipv6" else "")
    outcomes = machine.converge()
    for sid in IPV6_STATES:
        assert outcomes[sid].status == "ok", outcomes[sid]
        assert outcomes[sid].reason == f"ipv6: {NO_IPV6}", sid
    assert not [c for c in machine.runner.calls_made if c[0].startswith("ip6tables")]
    assert machine.runner.policy() == "DROP" and UPSTREAM_DNS[0] in machine.runner.rules()
    assert {o.status for o in outcomes.values()} <= {"ok", "changed"}


def test_ip6tables_failing_on_an_ipv6_kernel_fails_the_ipv6_states_only(
    machine: Machine,
) -> None:
    """IPv6 is up but cannot be filtered: an open door statekit cannot close is a failure
    (exit 1, the boot goes on), never an ok; the IPv4 lockdown is written all the same."""
    why = ("ip6tables-save v1.8.9 (nf_tables): Failed to initialize nft: "
           "Protocol not supported")
    machine.runner.broken["ipv6"] = why
    outcomes = machine.converge()
    for sid in IPV6_STATES:
        assert outcomes[sid].status == "failed", outcomes[sid]
        assert "Protocol not supported" in str(outcomes[sid].error), sid
    assert outcomes["fw-output"].status == "changed"
    assert machine.runner.policy() == "DROP" and UPSTREAM_DNS[0] in machine.runner.rules()


def test_family_missing_is_what_the_kernel_says_about_an_ipv6_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert save.family_missing("ipv4") == save.family_missing("ipv6") == ""  # this kernel

    def refused(*_args: Any) -> Any:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(_socket, "socket", refused)
    why = save.family_missing("ipv6")
    assert why.startswith("this kernel has no IPv6") and "not supported" in why
    assert save.family_missing("ipv4") == ""

    def busy(*_args: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_socket, "socket", busy)
    assert save.family_missing("ipv6") == ""  # not a missing family: ip6tables decides


@pytest.mark.parametrize(("value", "locked"), [
    (True, True), ("on", True), (1, True), ("", True), (False, False), ("no", False),
    ("OFF", False), (0, False)])
def test_ipv6_lockdown_is_read_as_a_flag(value: Any, locked: bool) -> None:
    program = loader.load([STATES], {"domains": [], "ipv6_lockdown": value}, environ={})
    chain = next(s for s in program.states if s.id == "fw6-output")
    assert (chain.spec.purge, chain.spec.policy) == (locked, "DROP" if locked else "ACCEPT")
    rules = [s for s in program.states if s.id.startswith("fw6-") and s.id != "fw6-output"]
    assert {s.ensure for s in rules} == {"present" if locked else "absent"}


@pytest.mark.parametrize(("overrides", "where", "message"), [
    ({"ipv6_lockdown": "maybe"}, "vars.ipv6_locked", "ipv6_lockdown: must be 1 or 0"),
    ({"ssh_reply_ranges": ["10.0.0.0/8"]}, ".destination", "IPv4 address, but family is"),
])
def test_bad_ipv6_vars_are_invalid_input(overrides: dict[str, Any], where: str,
                                         message: str) -> None:
    with pytest.raises(StateError) as caught:
        loader.load([STATES], {"domains": [], **overrides}, environ={})
    assert where in str(caught.value) and message in str(caught.value), str(caught.value)


# --- the kernel: IPv6 turned off by sysctl is still IPv6 -----------------------------------

def test_ipv6_disabled_by_sysctl_still_gets_the_lockdown(netns: str, tmp_path: Path) -> None:
    """With ``disable_ipv6=1`` the kernel still has IPv6 and its ip6tables works: the
    lockdown is written (it holds if IPv6 is turned back on), and a second converge is a
    no-op."""
    for scope in ("all", "default", "lo"):
        in_netns(netns, ["sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    root = tmp_path / "root"
    root.mkdir()
    argv = ["converge", "--phase", "network", "--root", str(root), "--var", "domains=[]",
            STATES]
    first = statekit(argv, netns=netns, cwd=REPO)
    assert first.returncode == 0, first.output
    assert ":OUTPUT DROP [0:0]" in saved(netns, family="ipv6")
    assert [ln for ln in saved(netns, family="ipv6") if ln.startswith("-A OUTPUT")] == \
        IPV6_CHAIN
    again = statekit([*argv[:1], "--detailed-exitcode", *argv[1:]], netns=netns, cwd=REPO)
    assert again.returncode == 0, again.output
    assert "changed=0" in again.output

