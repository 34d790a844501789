"""Canonical rendering: every rendered rule is byte-identical to what iptables-save prints.

Each case is inserted with the real iptables-restore in a private network namespace and
read back with the real iptables-save (nf_tables backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from statekit.netfilter.fields import ICMPV6_TYPES
from statekit.netfilter.rule import Rule, Target, save_string
from tests.conftest import delete_netns, in_netns, make_netns, saved

pytestmark = pytest.mark.netns

RESTORE = {"ipv4": "iptables-restore", "ipv6": "ip6tables-restore"}
BASE = Rule(chain="FORWARD", family="ipv4", tag="statekit:t", target=Target("ACCEPT"))

CASES: list[tuple[str, dict[str, Any]]] = [
    ("bare", {}),
    ("tcp", {"protocol": "tcp"}),
    ("udp-dport", {"protocol": "udp", "dport": "53"}),
    ("tcp-sport-range", {"protocol": "tcp", "sport": "1024:65535"}),
    ("tcp-both-ports", {"protocol": "tcp", "sport": "10:20", "dport": "443"}),
    ("tcp-syn", {"protocol": "tcp", "syn": True}),
    ("tcp-not-syn", {"protocol": "tcp", "syn": False}),
    ("tcp-ports-not-syn", {"protocol": "tcp", "sport": "22", "dport": "1024:65535",
                           "syn": False}),
    ("icmp", {"protocol": "icmp"}),
    ("source", {"source": "SRC"}),
    ("destination", {"destination": "DST"}),
    ("net", {"destination": "NET"}),
    ("interfaces", {"in_interface": "eth0", "out_interface": "veth+"}),
    ("ctstate", {"ctstate": ("ESTABLISHED", "RELATED")}),
    ("ctstate-all", {"ctstate": ("DNAT", "SNAT", "UNTRACKED", "ESTABLISHED", "RELATED",
                                 "NEW", "INVALID")}),
    ("comment-text", {"tag": "statekit:t grafana gateway"}),
    ("drop", {"target": Target("DROP")}),
    ("reject", {"target": Target("REJECT")}),
    ("return", {"target": Target("RETURN")}),
    ("log", {"target": Target("LOG")}),
    ("log-prefix", {"target": Target("LOG", log_prefix="statekit-drop: ")}),
    ("log-prefix-plain", {"target": Target("LOG", log_prefix="drop")}),
    ("nflog", {"target": Target("NFLOG", log_prefix="statekit-drop: ", nflog_group=100)}),
    ("nflog-group0", {"target": Target("NFLOG", nflog_group=0)}),
    ("jump-chain", {"target": Target("SK-CHAIN")}),
    ("everything", {"source": "SRC", "destination": "DST", "in_interface": "lo",
                    "out_interface": "eth0", "protocol": "tcp", "sport": "1:2",
                    "dport": "443", "syn": True, "ctstate": ("NEW",),
                    "target": Target("REJECT")}),
]
#: Matches only the OUTPUT chain takes (the owner), and ICMPv6 types (ipv6 only).
OUTPUT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("owner", "ipv4", {"uid_owner": 0}),
    ("owner-udp-dport", "ipv4", {"protocol": "udp", "dport": "53", "uid_owner": 0,
                                 "destination": "DST"}),
    ("owner-v6-tcp-syn", "ipv6", {"protocol": "tcp", "dport": "53", "syn": True,
                                  "uid_owner": 1000}),
    ("owner-everything", "ipv4", {"out_interface": "eth0", "protocol": "tcp",
                                  "sport": "22", "syn": False, "uid_owner": 4294967294,
                                  "ctstate": ("ESTABLISHED",)}),
    ("icmpv6-types", "ipv6", {"protocol": "icmp", "icmpv6_types": ("133", "134", "135",
                                                                   "136", "2")}),
    ("icmpv6-type-dst-owner", "ipv6", {"protocol": "icmp", "icmpv6_types": ("128",),
                                       "destination": "NET", "out_interface": "eth0",
                                       "uid_owner": 0}),
    ("ssh-replies", "ipv6", {"protocol": "tcp", "sport": "22", "syn": False,
                             "destination": "NET"}),
    ("nflog-v6", "ipv6", {"target": Target("NFLOG", log_prefix="CODETAINER_DROP",
                                           nflog_group=100)}),
]
ADDR = {"ipv4": {"SRC": "10.1.2.3/32", "DST": "192.0.2.7/32", "NET": "10.0.0.0/8"},
        "ipv6": {"SRC": "fd00::1/128", "DST": "2001:db8::7/128", "NET": "2001:db8::/32"}}


@pytest.fixture(scope="module")
def shared_ns() -> Iterator[str]:
    name = make_netns()
    try:
        for restore in RESTORE.values():
            in_netns(name, [restore, "--noflush"], input="*filter\n-N SK-CHAIN\nCOMMIT\n")
        yield name
    finally:
        delete_netns(name)


def _rule(family: str, changes: dict[str, Any]) -> Rule:
    values: dict[str, Any] = {k: ADDR[family].get(v, v) if isinstance(v, str) else v
              for k, v in changes.items()}
    rule: Rule = BASE._replace(family=family, **values)
    return rule


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize(("name", "changes"), CASES, ids=[c[0] for c in CASES])
def test_rendered_rule_is_what_iptables_save_prints(
    shared_ns: str, family: str, name: str, changes: dict[str, Any],
) -> None:
    line = _rule(family, changes).line
    in_netns(shared_ns, [RESTORE[family], "--noflush"], input=f"*filter\n{line}\nCOMMIT\n")
    try:
        rules = [ln for ln in saved(shared_ns, family=family) if ln.startswith("-A FORWARD")]
        assert rules == [line]
    finally:
        in_netns(shared_ns, [RESTORE[family], "--noflush"],
                 input=f"*filter\n-D{line[2:]}\nCOMMIT\n")


@pytest.mark.parametrize(("name", "family", "changes"), OUTPUT_CASES,
                         ids=[c[0] for c in OUTPUT_CASES])
def test_rendered_output_rule_is_what_iptables_save_prints(
    shared_ns: str, name: str, family: str, changes: dict[str, Any],
) -> None:
    """Every line a rule stands for (one per ICMPv6 type), in the OUTPUT chain."""
    rule = _rule(family, changes)._replace(chain="OUTPUT")
    lines = rule.lines([(rule.source, rule.destination)])
    assert len(lines) == max(1, len(rule.icmpv6_types))
    body = "".join(f"{line}\n" for line in lines)
    in_netns(shared_ns, [RESTORE[family], "--noflush"], input=f"*filter\n{body}COMMIT\n")
    try:
        assert [ln for ln in saved(shared_ns, family=family)
                if ln.startswith("-A OUTPUT")] == lines
    finally:
        in_netns(shared_ns, [RESTORE[family], "--noflush"],
                 input="*filter\n-F OUTPUT\nCOMMIT\n")


def test_icmpv6_type_names_are_saved_as_the_numbers_statekit_writes(shared_ns: str) -> None:
    """A name written by hand (ip6tables' own) reads back as the number statekit renders."""
    body = "".join(f"-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type {name} -j ACCEPT\n"
                   for name in ICMPV6_TYPES)
    in_netns(shared_ns, ["ip6tables-restore", "--noflush"],
             input=f"*filter\n{body}COMMIT\n")
    try:
        got = [ln for ln in saved(shared_ns, family="ipv6") if ln.startswith("-A OUTPUT")]
        assert got == [f"-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type {number} -j ACCEPT"
                       for number in ICMPV6_TYPES.values()]
    finally:
        in_netns(shared_ns, ["ip6tables-restore", "--noflush"],
                 input="*filter\n-F OUTPUT\nCOMMIT\n")


def test_not_syn_is_printed_as_iptables_save_spells_it() -> None:
    tcp = BASE._replace(protocol="tcp", sport="22")
    assert " -m tcp --sport 22 ! --tcp-flags FIN,SYN,RST,ACK SYN " in tcp._replace(
        syn=False).line
    assert " -m tcp --sport 22 --tcp-flags FIN,SYN,RST,ACK SYN " in tcp._replace(
        syn=True).line


def test_ipv6_icmp_is_printed_as_ipv6_icmp() -> None:
    assert " -p ipv6-icmp " in BASE._replace(family="ipv6", protocol="icmp").line
    assert " -p icmp " in BASE._replace(protocol="icmp").line


@pytest.mark.parametrize(("value", "shown"), [
    ("abc_-09", "abc_-09"), ("statekit:x", '"statekit:x"'), ("a b", '"a b"'), ("", '""'),
])
def test_save_string_quotes_like_iptables(value: str, shown: str) -> None:
    assert save_string(value) == shown
