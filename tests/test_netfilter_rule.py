"""Canonical rendering: every rendered rule is byte-identical to what iptables-save prints.

Each case is inserted with the real iptables-restore in a private network namespace and
read back with the real iptables-save (nf_tables backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from statekit.netfilter.rule import Rule, Target, save_string
from tests.conftest import delete_netns, in_netns, make_netns, saved

RESTORE = {"ipv4": "iptables-restore", "ipv6": "ip6tables-restore"}
BASE = Rule(chain="FORWARD", family="ipv4", tag="statekit:t", target=Target("ACCEPT"))

CASES: list[tuple[str, dict[str, Any]]] = [
    ("bare", {}),
    ("tcp", {"protocol": "tcp"}),
    ("udp-dport", {"protocol": "udp", "dport": "53"}),
    ("tcp-sport-range", {"protocol": "tcp", "sport": "1024:65535"}),
    ("tcp-both-ports", {"protocol": "tcp", "sport": "10:20", "dport": "443"}),
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
                    "dport": "443", "ctstate": ("NEW",), "target": Target("REJECT")}),
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


def test_ipv6_icmp_is_printed_as_ipv6_icmp() -> None:
    assert " -p ipv6-icmp " in BASE._replace(family="ipv6", protocol="icmp").line
    assert " -p icmp " in BASE._replace(protocol="icmp").line


@pytest.mark.parametrize(("value", "shown"), [
    ("abc_-09", "abc_-09"), ("statekit:x", '"statekit:x"'), ("a b", '"a b"'), ("", '""'),
])
def test_save_string_quotes_like_iptables(value: str, shown: str) -> None:
    assert save_string(value) == shown
