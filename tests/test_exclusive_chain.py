"""Purged chains' fields, the DNS stub client, coredns_zone adopt and invalid telemetry
input, pure (no kernel).

What a purged chain and its members plan (order, foreign and ignored rules, failed names)
is in the planner cases (tests/planner_cases/, run by tests/test_planner_cases.py); the
kernel, CoreDNS and the packets are tested in tests/test_lockdown_*.py.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from statekit.load import loader
from statekit.load.schema_check import with_defaults
from statekit.netfilter import dnsquery
from statekit.resources.base import Meta
from statekit.resources.coredns_zone import CorednsZone, desired
from statekit.resources.iptables_chain import IptablesChain

REPO = Path(__file__).resolve().parents[1]
CHAIN = IptablesChain()


def test_bad_ignore_pattern_and_ignore_without_purge_are_field_errors() -> None:
    from statekit.errors import FieldError

    with pytest.raises(FieldError, match="regular expression"):
        CHAIN.parse(with_defaults("iptables_chain", {"chain": "OUTPUT", "purge": True,
                                                     "ignore": ["("]}), Meta("c"))
    with pytest.raises(FieldError, match="only with purge"):
        CHAIN.parse(with_defaults("iptables_chain", {"chain": "OUTPUT", "ignore": ["x"]}),
                    Meta("c"))


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
