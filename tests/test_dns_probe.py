"""tests/e2e/dns_probe.py, the tests' own DNS client, against dnspython.

The packet-level tests read DNS through dns_probe.py (stdlib only, to keep each probe
cheap). Here dnspython, the reference, judges it on generated messages: the query it
sends is the one dnspython would make, it reads the rcode and the answers of a reply
exactly as dnspython prints them, and it takes no reply to another query or question.
A real CoreDNS answers it in tests/test_coredns_zone.py and the e2e world.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e import dns_probe

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
NAMES = st.lists(LABEL, min_size=1, max_size=5).map(".".join)
V4 = st.ip_addresses(v=4).map(str)
V6 = st.ip_addresses(v=6).map(str)
RCODES = st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL,
                          dns.rcode.REFUSED])


def reply_to(query_wire: bytes, rcode: int, records: list[tuple[str, str, str]]) -> bytes:
    """dnspython's reply (with name compression) to the query dns_probe made."""
    query = dns.message.from_wire(query_wire)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    for owner, rdtype, text in records:
        response.answer.append(dns.rrset.from_text(owner.rstrip(".") + ".", 30, "IN",
                                                   rdtype, text))
    return response.to_wire()


def expected(wire: bytes) -> tuple[str, list[tuple[int, str]]]:
    message = dns.message.from_wire(wire)
    return (dns.rcode.to_text(message.rcode()),
            [(int(rrset.rdtype), rd.to_text()) for rrset in message.answer for rd in rrset])


@settings(max_examples=200, deadline=None)
@given(name=NAMES, rdtype=st.sampled_from(["A", "AAAA", "TXT", "MX"]))
def test_the_query_is_the_one_dnspython_makes(name: str, rdtype: str) -> None:
    qid, wire = dns_probe.make_query(name, rdtype)
    query = dns.message.from_wire(wire)
    ours = dns.message.make_query(name, rdtype)
    assert query.id == qid
    assert query.question == ours.question
    assert query.flags == ours.flags == dns.flags.RD
    assert query.edns == -1 and not query.answer and not query.additional


@settings(max_examples=200, deadline=None)
@given(name=NAMES, rcode=RCODES, v4=st.lists(V4, max_size=4, unique=True),
       v6=st.lists(V6, max_size=3, unique=True),
       alias=st.none() | NAMES)
def test_a_reply_reads_as_dnspython_reads_it(name: str, rcode: int, v4: list[str],
                                             v6: list[str], alias: str | None) -> None:
    rdtype = "AAAA" if v6 and not v4 else "A"
    qid, query = dns_probe.make_query(name, rdtype)
    records = [(name, "CNAME", alias + ".")] if alias else []
    owner = alias or name
    records += [(owner, "A", a) for a in v4] + [(owner, "AAAA", a) for a in v6]
    wire = reply_to(query, rcode, records)
    assert dns_probe.parse(wire, qid, query[12:]) == expected(wire)


def test_a_reply_to_another_query_or_question_is_not_taken() -> None:
    qid, query = dns_probe.make_query("a.example", "A")
    good = reply_to(query, dns.rcode.NOERROR, [("a.example", "A", "192.0.2.7")])
    assert dns_probe.parse(good, qid, query[12:]) == ("NOERROR", [(1, "192.0.2.7")])
    other_id = bytes([good[0] ^ 0xFF]) + good[1:]
    _, other_query = dns_probe.make_query("b.example", "A")
    other_question = reply_to(other_query, dns.rcode.NOERROR, [])
    not_a_reply = good[:2] + bytes([good[2] & 0x7F]) + good[3:]  # QR cleared
    for wire in (other_id, not_a_reply, good[:11], good[:-2]):
        with pytest.raises(dns_probe.BadReply):
            dns_probe.parse(wire, qid, query[12:])
    with pytest.raises(dns_probe.BadReply):
        dns_probe.parse(other_question, qid, query[12:])


@given(data=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_datagram_is_a_reply_or_bad_reply(data: bytes) -> None:
    qid, query = dns_probe.make_query("a.example", "A")
    wire = query[:2] + bytes([0x81, 0x80]) + data  # our ID and flags, then anything
    with contextlib.suppress(dns_probe.BadReply):
        dns_probe.parse(wire, qid, query[12:])


def serve_once(sock: socket.socket, answer: Any) -> threading.Thread:
    def run() -> None:
        data, peer = sock.recvfrom(512)
        for reply in answer(data):
            sock.sendto(reply, peer)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_ask_over_udp_skips_a_stray_reply_and_takes_the_real_one() -> None:
    """On loopback in this process (no namespace needed): a reply with the wrong ID comes
    first, then the real one; ask() reports only the real one, filtered by type."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def answer(query: bytes) -> list[bytes]:
            good = reply_to(query, dns.rcode.NOERROR, [("a.example", "A", "192.0.2.9"),
                                                       ("a.example", "AAAA", "2001:db8::9")])
            return [bytes([good[0] ^ 0xFF]) + good[1:], good]
        thread = serve_once(server, answer)
        got = dns_probe.ask("a.example", "A", "127.0.0.1", port, 5.0)
        thread.join(5)
    assert got == {"rcode": "NOERROR", "answers": ["192.0.2.9"]}


def test_ask_with_no_reply_is_a_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        got = dns_probe.ask("a.example", "A", "127.0.0.1", server.getsockname()[1], 0.3)
    assert got == {"rcode": "TIMEOUT", "answers": []}
