"""Exclusive (purged) chains, per-name rules and the DNS stub client, pure (no kernel).

The kernel, CoreDNS and the packets are tested in tests/test_lockdown_*.py; here the
planning logic: what a purged chain must hold, what a member reports, what a failed name
keeps, how a reply is read, and how a file with an invalid input is loaded.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from statekit.load import loader
from statekit.load.schema_check import with_defaults
from statekit.netfilter import dnsquery
from statekit.netfilter.table import Chain, Table
from statekit.resources.base import Meta, Plan
from statekit.resources.coredns_zone import CorednsZone, desired
from statekit.resources.iptables_chain import ChainSpec, ChainState, IptablesChain
from statekit.resources.iptables_rule import IptablesRule, RuleCurrent, RuleSpec, expand

REPO = Path(__file__).resolve().parents[1]
RULE, CHAIN = IptablesRule(), IptablesChain()


def rule(sid: str, order: int = 500, **fields: Any) -> RuleSpec:
    return RULE.parse(with_defaults("iptables_rule", {"chain": "OUTPUT", "jump": "ACCEPT",
                                                      "order": order, **fields}),
                      Meta(sid, phase="network"))


def chain_spec(rules: list[RuleSpec], **fields: Any) -> tuple[ChainSpec, list[RuleSpec]]:
    spec = CHAIN.parse(with_defaults("iptables_chain", {"chain": "OUTPUT", "policy": "DROP",
                                                        "purge": True, **fields}),
                       Meta("out", phase="network"))
    program: dict[str, list[Any]] = {"iptables_rule": rules, "iptables_chain": [spec]}
    return CHAIN.link([spec], program)[0], RULE.link(rules, program)


def chain(*lines: str, policy: str = "ACCEPT") -> Chain:
    c = Chain(policy)
    for ln in lines:
        c.insert(len(c.rules), ln)
    return c


def test_members_are_ordered_by_order_then_declaration() -> None:
    rules = [rule("late", 900, protocol="udp"), rule("lo", 100, out_interface="lo"),
             rule("b", 500, destination="10.0.0.2"), rule("a", 500, destination="10.0.0.1")]
    spec, linked = chain_spec(rules)
    assert [m.id for m in spec.members] == ["lo", "b", "a", "late"]
    assert all(r.exclusive for r in linked)
    assert list(CHAIN.ordering(spec)) == ["late", "lo", "b", "a"]  # all of the phase


def test_absent_rules_and_other_chains_are_not_members() -> None:
    gone = RULE.parse(with_defaults("iptables_rule", {"chain": "OUTPUT"}), Meta("gone", "absent"))
    other = rule("in", chain="INPUT")
    spec, linked = chain_spec([gone, other, rule("x")])
    assert [m.id for m in spec.members] == ["x"]
    assert linked[0].exclusive and not linked[1].exclusive


def plan_chain(spec: ChainSpec, live: Chain) -> Plan:
    lines = []
    for member in spec.members:
        lines += expand(member, "ipv4", {}, live)
    state = ChainState(exists=True, policy=live.policy, rules=len(live.rules),
                       desired=tuple(lines), live=tuple(live.rules))
    if spec.ignore:
        from statekit.resources.iptables_chain import _desired

        state = state._replace(desired=tuple(_desired(spec, "ipv4", live, None)))  # type: ignore[arg-type]
    return CHAIN.plan(spec, {"ipv4": state})


def play(plan: Plan, live: Chain) -> Chain:
    table = Table("filter", "ipv4", {"OUTPUT": live})
    for _family, ops in plan.payload:
        for op in ops:
            table.apply(op)
    return table.chains["OUTPUT"]


def test_a_purged_chain_is_rewritten_whole_with_policy_and_order() -> None:
    spec, _ = chain_spec([rule("drop", 900, jump="DROP"), rule("lo", 100, out_interface="lo")])
    foreign = "-A OUTPUT -d 10.9.9.9/32 -j ACCEPT"
    live = chain(foreign, "-A OUTPUT -m comment --comment \"statekit:stale\" -j ACCEPT")
    plan = plan_chain(spec, live)
    ops = plan.payload[0][1]
    assert [o.restore for o in ops][:2] == ["-P OUTPUT DROP", "-F OUTPUT"]
    after = play(plan, live)
    assert after.policy == "DROP"
    assert after.rules == [
        '-A OUTPUT -o lo -m comment --comment "statekit:lo" -j ACCEPT',
        '-A OUTPUT -m comment --comment "statekit:drop" -j DROP']
    assert f"- {foreign}" in plan.diff.splitlines()
    assert not plan_chain(spec, after).changed  # idempotent


def test_ignored_foreign_rules_are_kept_on_top() -> None:
    spec, _ = chain_spec([rule("lo", 100, out_interface="lo")], ignore=["DOCKER"])
    live = chain('-A OUTPUT -o lo -m comment --comment "statekit:lo" -j ACCEPT',
                 "-A OUTPUT -j DOCKER-USER", "-A OUTPUT -d 10.9.9.9/32 -j ACCEPT",
                 policy="DROP")
    after = play(plan_chain(spec, live), live)
    assert after.rules == ["-A OUTPUT -j DOCKER-USER",
                           '-A OUTPUT -o lo -m comment --comment "statekit:lo" -j ACCEPT']


def test_reordering_alone_is_a_change() -> None:
    spec, _ = chain_spec([rule("a", 1, destination="10.0.0.1"),
                          rule("b", 2, destination="10.0.0.2")])
    good = play(plan_chain(spec, chain(policy="DROP")), chain(policy="DROP"))
    swapped = chain(*reversed(good.rules), policy="DROP")
    plan = plan_chain(spec, swapped)
    assert plan.changed and all(line.startswith("~ ") and line.endswith(" (moved)")
                                for line in plan.diff.splitlines())
    assert play(plan, swapped).rules == good.rules


def test_bad_ignore_pattern_and_ignore_without_purge_are_field_errors() -> None:
    from statekit.errors import FieldError

    with pytest.raises(FieldError, match="regular expression"):
        CHAIN.parse(with_defaults("iptables_chain", {"chain": "OUTPUT", "purge": True,
                                                     "ignore": ["("]}), Meta("c"))
    with pytest.raises(FieldError, match="only with purge"):
        CHAIN.parse(with_defaults("iptables_chain", {"chain": "OUTPUT", "ignore": ["x"]}),
                    Meta("c"))


# --- per-name rules: a failed name keeps its last-known addresses ---------------------


def hosts_rule() -> RuleSpec:
    spec = rule("allow", 600, destination_host=["a.example", "b.example"])
    return RULE.link([spec], {"iptables_chain": [chain_spec([spec])[0]]})[0]


def test_each_name_has_its_own_tagged_rules() -> None:
    spec = hosts_rule()
    lines = expand(spec, "ipv4", {"a.example": ("192.0.2.1",), "b.example": ("192.0.2.2",
                                                                            "192.0.2.3")})
    assert lines == [
        '-A OUTPUT -d 192.0.2.1/32 -m comment --comment "statekit:allow a.example" -j ACCEPT',
        '-A OUTPUT -d 192.0.2.2/32 -m comment --comment "statekit:allow b.example" -j ACCEPT',
        '-A OUTPUT -d 192.0.2.3/32 -m comment --comment "statekit:allow b.example" -j ACCEPT']


def test_a_failed_name_keeps_its_lines_while_the_others_change() -> None:
    spec = hosts_rule()
    old = expand(spec, "ipv4", {"a.example": ("192.0.2.1",), "b.example": ("192.0.2.2",)})
    live = chain(*old, policy="DROP")
    now = expand(spec, "ipv4", {"b.example": ("192.0.2.9",)}, live)  # a.example failed
    assert now == [old[0], old[1].replace("192.0.2.2", "192.0.2.9")]
    assert expand(spec, "ipv4", {"b.example": ("192.0.2.9",)}, None) == [now[1]]  # boot
    plan = RULE.plan(spec, RuleCurrent(chains={"ipv4": live},
                                       resolved={"b.example": ("192.0.2.9",)},
                                       failed={"a.example": "NXDOMAIN"}))
    assert plan.errors == ("cannot resolve 'a.example': NXDOMAIN; its last-known "
                           "addresses are kept",)
    assert plan.payload == []  # a member stages nothing: the chain writes
    assert {c.action for c in plan.changes} == {"add", "remove"}


# --- the DNS stub client ------------------------------------------------------------


def reply(ident: int, name: str, records: list[tuple[str, int, bytes]], rcode: int = 0,
          qname: str | None = None) -> bytes:
    head = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(records), 0, 0)
    body = dnsquery.encode_name(qname or name) + struct.pack("!HH", 1, 1)
    for owner, rtype, data in records:
        owner_bytes = b"\xc0\x0c" if owner == name else dnsquery.encode_name(owner)
        body += owner_bytes + struct.pack("!HHIH", rtype, 1, 60, len(data)) + data
    return head + body


def test_reply_with_a_cname_chain_and_compression() -> None:
    data = reply(7, "a.example", [
        ("a.example", 5, dnsquery.encode_name("edge.example")),
        ("edge.example", 1, socket.inet_aton("192.0.2.7")),
        ("unrelated.example", 1, socket.inet_aton("192.0.2.66"))])
    assert dnsquery.parse_reply(data, 7, "a.example", 1) == ["192.0.2.7"]


def test_reply_checks() -> None:
    good = reply(7, "a.example", [("a.example", 1, socket.inet_aton("192.0.2.7"))])
    with pytest.raises(dnsquery.Mismatch):
        dnsquery.parse_reply(good, 8, "a.example", 1)
    with pytest.raises(dnsquery.Mismatch):
        dnsquery.parse_reply(reply(7, "a.example", [], qname="b.example"), 7, "a.example", 1)
    with pytest.raises(dnsquery.DnsError) as nx:
        dnsquery.parse_reply(reply(7, "a.example", [], rcode=3), 7, "a.example", 1)
    assert nx.value.final
    with pytest.raises(dnsquery.DnsError):
        dnsquery.parse_reply(good[:20], 7, "a.example", 1)
    loop = good[:12] + b"\xc0\x0c"  # a name that points at itself
    with pytest.raises(dnsquery.DnsError):
        dnsquery.parse_reply(loop, 7, "a.example", 1)


def test_query_is_a_recursive_question_with_edns() -> None:
    data = dnsquery.query("a.example", 28, 0x1234)
    assert struct.unpack("!HHHHHH", data[:12]) == (0x1234, 0x0100, 1, 0, 0, 1)
    assert data[12:12 + 11] == b"\x01a\x07example\x00"


# --- coredns_zone adopt ---------------------------------------------------------------

TEMPLATE = (b". {\n    bind 127.0.0.53\n    log\n    errors\n    template IN A . {\n"
            b"        rcode NXDOMAIN\n    }\n}\n")


def test_adopt_takes_over_an_unowned_block_for_the_zone() -> None:
    fields = {"corefile": "/etc/coredns/Corefile", "zone": ".", "bind": ["127.0.0.53"],
              "answer": "nxdomain", "log": True}
    from statekit.errors import ApplyError

    zone = CorednsZone()
    with pytest.raises(ApplyError, match="adopt: true"):
        desired(TEMPLATE, zone.parse(with_defaults("coredns_zone", fields), Meta("catch")))
    adopting = with_defaults("coredns_zone", {**fields, "adopt": True})
    out = desired(TEMPLATE, zone.parse(adopting, Meta("catch")))
    assert out.startswith(b"# statekit:catch\n.:53 {\n    bind 127.0.0.53\n")
    assert out.count(b"{\n    bind") == 1 and b"rcode NXDOMAIN" in out and b"    log\n" in out
    again = desired(out, zone.parse(adopting, Meta("catch")))
    assert again == out


# --- on_invalid_input: absent -------------------------------------------------------


def test_invalid_telemetry_input_leaves_its_file_absent_and_the_rest_loaded() -> None:
    env = {"GRAFANA_INSTANCE_ID": "1", "GRAFANA_API_TOKEN": "t0ken-value",
           "GRAFANA_OTLP_ENDPOINT": "http://gw.example/otlp"}
    program = loader.load([str(REPO / "states")], environ=env)
    assert [e.field for e in program.input_errors] == ["vars.otlp_endpoint"]
    assert "GRAFANA_OTLP_ENDPOINT" in str(program.input_errors[0])
    telemetry = [s for s in program.states if s.file.endswith("telemetry.yaml")]
    assert {s.id: s.ensure for s in telemetry if s.type != "signal"} == {
        "otlp-dns": "absent", "otlp-firewall": "absent", "otlp-env": "absent"}
    network = [s for s in program.states if s.file.endswith("network.yaml")]
    assert all(s.ensure == "present" for s in network)
    out = next(s for s in network if s.id == "fw-output")
    assert "otlp-firewall" not in [m.id for m in out.spec.members]


def test_an_empty_allowlist_is_valid() -> None:
    program = loader.load([str(REPO / "states")], {"domains": []}, environ={})
    by_id = {s.id: s for s in program.states}
    assert by_id["fw-allowlist"].ensure == "absent"
    assert by_id["dns-allowlist"].ensure == "absent"
