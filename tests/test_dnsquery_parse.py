"""The DNS stub client's reply parser and receive path, against crafted datagrams.

Strictness (issue 19, item 9): one question as asked, the TC bit, data lengths by type,
names (labels, dots, lengths, compression), CNAMEs in one pass; and item 1: a datagram
never raises anything but DnsError/Mismatch out of the parser, and nothing at all out
of the receive path. The datagrams are built by tests/e2e/hostile_dns.py, the hostile
resolver the packet-level tests run. OS errors in words (issue 22, item 6).
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import socket
import struct
import time

import pytest

from statekit.netfilter import dnsquery
from statekit.netfilter.dnsquery import DnsError, Mismatch, parse_reply
from tests.e2e.hostile_dns import (
    AAAA,
    CNAME,
    QUESTION_PTR,
    A,
    address_reply,
    cname_chain,
    cname_flood,
    header,
    name,
    question,
    reply,
    rr,
    truncated_a,
)

Q = "a.example"
IP = socket.inet_aton("192.0.2.7")


def parse(data: bytes, qname: str = Q, qtype: int = A, ident: int = 7) -> list[str]:
    return parse_reply(data, ident, qname, qtype)


def malformed(data: bytes, why: str, qname: str = Q, qtype: int = A) -> None:
    with pytest.raises(DnsError) as err:
        parse(data, qname, qtype)
    assert not isinstance(err.value, Mismatch), err.value
    assert not err.value.final
    assert str(err.value).startswith("malformed reply"), err.value
    assert why in str(err.value), err.value


# --- item 1: the truncated A record ----------------------------------------------------

def test_an_a_record_cut_short_is_malformed_not_a_value_error() -> None:
    malformed(truncated_a(7, Q), "a record's data runs past the end")


@pytest.mark.parametrize(("rtype", "data", "kind"), [
    (A, b"\x01\x02\x03\x04\x05", "A record of 5 bytes"),
    (A, b"\x01\x02", "A record of 2 bytes"),
    (AAAA, IP, "AAAA record of 4 bytes"),
    (AAAA, bytes(17), "AAAA record of 17 bytes")])
def test_an_address_records_length_is_its_types(rtype: int, data: bytes, kind: str) -> None:
    malformed(reply(7, Q, A, [rr(QUESTION_PTR, rtype, data)]), kind)


def test_addresses_of_both_families_and_other_types_ignored() -> None:
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    records = [rr(QUESTION_PTR, A, IP), rr(QUESTION_PTR, AAAA, v6),
               rr(QUESTION_PTR, 16, b"\x03txt"), rr(QUESTION_PTR, A, IP, rclass=3)]
    assert parse(reply(7, Q, A, records)) == ["192.0.2.7"]
    assert parse(reply(7, Q, AAAA, records), qtype=AAAA) == ["2001:db8::7"]


# --- the question ------------------------------------------------------------------------

def test_the_reply_to_another_question_is_a_mismatch() -> None:
    good = address_reply(7, Q, A, ["192.0.2.7"])
    assert parse(good) == ["192.0.2.7"]
    assert parse(address_reply(7, "A.Example", A, ["192.0.2.7"])) == ["192.0.2.7"]  # 0x20
    cases = {
        "another id": address_reply(8, Q, A, ["192.0.2.7"]),
        "another name": address_reply(7, "b.example", A, ["192.0.2.7"]),
        "a longer name": address_reply(7, "x.a.example", A, ["192.0.2.7"]),
        "another type": address_reply(7, Q, AAAA, []),
        "another class": header(7) + name(Q) + struct.pack("!HH", A, 3),
        "a query, not a reply": reply(7, Q, A, [], flags=0x0100),
        "another opcode": reply(7, Q, A, [], flags=0x8180 | 0x2000),
        "no question": header(7, qd=0) + rr(name(Q), A, IP),
        "two questions": header(7, qd=2, an=0) + question(Q) + question(Q),
    }
    for what, data in cases.items():
        with pytest.raises(Mismatch):
            parse(data)
            pytest.fail(what)


def test_a_refusal_without_the_question_is_that_resolvers_error() -> None:
    with pytest.raises(DnsError, match=r"^REFUSED$") as err:
        parse(header(7, qd=0, rcode=5))
    assert not isinstance(err.value, Mismatch) and not err.value.final
    with pytest.raises(Mismatch):  # an NXDOMAIN must say for which name
        parse(header(7, qd=0, rcode=3))


def test_rcodes_nxdomain_is_final() -> None:
    with pytest.raises(DnsError) as nx:
        parse(reply(7, Q, A, [], rcode=3))
    assert nx.value.final and str(nx.value) == "NXDOMAIN"
    with pytest.raises(DnsError) as fail:
        parse(reply(7, Q, A, [], rcode=2))
    assert not fail.value.final and str(fail.value) == "SERVFAIL"


def test_a_truncated_reply_is_not_an_answer() -> None:
    data = reply(7, Q, A, [rr(QUESTION_PTR, A, IP)], flags=0x8180 | 0x0200)
    with pytest.raises(DnsError, match="truncated") as err:
        parse(data)
    assert not isinstance(err.value, Mismatch) and not err.value.final


# --- names ---------------------------------------------------------------------------------

def test_names_are_checked() -> None:
    body = question(Q)
    cases = {
        "a dot inside a label": (header(7, an=1) + body
                                 + rr(b"\x09a.example\x00", A, IP)),
        "a label longer than 63": (header(7, an=1) + body
                                   + rr(b"\x40" + b"x" * 64 + b"\x00", A, IP)),
        "a name longer than 255": (header(7, an=1) + body + rr(
            b"".join([b"\x3f" + b"x" * 63] * 4) + b"\x00", A, IP)),
        "does not point back": (header(7, an=1) + body + rr(b"\xc0\x40", A, IP)),
        "runs past the end": header(7, an=1) + body + b"\x05abc",
    }
    for why, data in cases.items():
        malformed(data, why.split(" 25")[0].split(" 63")[0])
    # the question's own name: a dot inside it, or a pointer to itself
    malformed(header(7) + b"\x09a.example\x00" + struct.pack("!HH", A, 1), "a dot inside")
    malformed(header(7) + b"\xc0\x0c" + struct.pack("!HH", A, 1), "does not point back")


def test_compression_pointers_only_point_back_and_are_bounded() -> None:
    body = question(Q)
    loop = header(7, an=1) + body + rr(b"\x01x\xc0\x1b", A, IP)  # points at itself
    malformed(loop, "does not point back")
    # a pointer to a pointer back to the question: fine
    data = header(7, an=2) + body + rr(QUESTION_PTR, A, IP)
    data += rr(struct.pack("!H", 0xC000 | (12 + len(body))), A, socket.inet_aton("192.0.2.8"))
    assert parse(data) == ["192.0.2.7", "192.0.2.8"]
    # a chain of pointers each one back: more than MAX_HOPS is refused
    hops = dnsquery.MAX_HOPS
    for count, ok in ((hops, True), (hops + 1, False)):
        records, at, previous = b"", 12 + len(body), 12
        for _ in range(count - 1):  # each: a pointer to the last, as a record's owner
            records += rr(struct.pack("!H", 0xC000 | previous), 99, b"")
            previous, at = at, at + 12
        records += rr(struct.pack("!H", 0xC000 | previous), A, IP)
        data = header(7, an=count) + body + records
        if ok:
            assert parse(data) == ["192.0.2.7"]
        else:
            malformed(data, "compression pointers")


# --- CNAMEs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_a_cname_chain_in_either_order(reverse: bool) -> None:
    data = cname_chain(7, Q, A, 20, "192.0.2.9", reverse=reverse)
    assert parse(data) == ["192.0.2.9"]


def test_cname_checks() -> None:
    target = name("b.example")
    short = rr(QUESTION_PTR, CNAME, target + b"\0", rdlength=len(target) + 1)
    malformed(reply(7, Q, A, [short]), "does not fill its data")
    long = rr(QUESTION_PTR, CNAME, target[:-1], rdlength=len(target) - 1)
    malformed(reply(7, Q, A, [long, rr(name("z"), A, IP)]), "")
    two = [rr(QUESTION_PTR, CNAME, name("b.example")), rr(QUESTION_PTR, CNAME, name("c.x"))]
    malformed(reply(7, Q, A, two), "two CNAMEs for one name")
    same = [rr(QUESTION_PTR, CNAME, name("b.example"))] * 2 + [rr(name("b.example"), A, IP)]
    assert parse(reply(7, Q, A, same)) == ["192.0.2.7"]
    loop = [rr(QUESTION_PTR, CNAME, name("b.example")), rr(name("b.example"), CNAME, name(Q))]
    malformed(reply(7, Q, A, loop), "a CNAME loop")
    stray = [rr(name("unrelated.example"), A, IP)]
    assert parse(reply(7, Q, A, stray)) == []


def test_too_many_records() -> None:
    records = [rr(QUESTION_PTR, A, IP)] * dnsquery.MAX_RECORDS
    assert len(parse(reply(7, Q, A, records))) == dnsquery.MAX_RECORDS
    malformed(reply(7, Q, A, [*records, records[0]]), "more than")


def test_the_worst_replies_take_under_a_millisecond_or_so() -> None:
    """Linear work: the 4 KB flood that took a loop-over-the-records parser 1.2 s of CPU,
    and the longest chain that is valid (128 records, names 31 pointers deep)."""
    worst = 0.0
    for data in (cname_flood(7, Q),
                 cname_flood(7, Q, records=dnsquery.MAX_RECORDS - 1, address="192.0.2.1")):
        start = time.process_time()
        for _ in range(20):
            with contextlib.suppress(DnsError):
                parse(data)
        worst = max(worst, (time.process_time() - start) / 20)
    assert parse(cname_flood(7, Q, records=127, address="192.0.2.1")) == ["192.0.2.1"]
    assert worst < 0.02, f"{worst * 1000:.1f} ms of CPU per reply"


# --- the receive path: nothing escapes ----------------------------------------------------

def receive(data: bytes, monkeypatch: pytest.MonkeyPatch | None = None,
            ) -> tuple[dnsquery._Question, dnsquery._Resolver]:
    """Feed ``data`` (its id set to the question's) to ``_receive`` through a socket."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        server = dnsquery._Resolver(0, "192.0.2.53")
        server.sock, server.connected = ours, True
        q = dnsquery._Question(Q, A)
        ids = {(0, 7): q}
        theirs.send(data)
        dnsquery._receive(server, ids, 2)
        return q, server
    finally:
        ours.close()
        theirs.close()


def test_receive_a_malformed_reply_is_that_resolvers_error_for_that_question() -> None:
    q, _ = receive(truncated_a(7, Q))
    assert not q.done and q.failed == {0}
    assert q.why == {0: "malformed reply (a record's data runs past the end)"}
    q, _ = receive(address_reply(7, Q, A, ["192.0.2.7"]))
    assert q.done and q.addresses == ["192.0.2.7"]
    q, _ = receive(address_reply(8, Q, A, ["192.0.2.7"]))  # not ours: ignored
    assert not q.done and not q.why
    q, _ = receive(reply(7, Q, A, [], rcode=3))
    assert q.done and q.nxdomain


def test_receive_a_datagram_over_the_cap_is_refused_not_cut() -> None:
    big = reply(7, Q, A, [rr(QUESTION_PTR, 16, b"x" * 250)] * 17)
    assert len(big) > dnsquery.MAX_REPLY
    q, _ = receive(big)
    assert not q.done and "over 4096 bytes" in q.why[0]


def test_receive_catches_whatever_the_parser_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> list[str]:
        raise ValueError("a bug the strict parser does not have")

    monkeypatch.setattr(dnsquery, "parse_reply", boom)
    q, _ = receive(address_reply(7, Q, A, ["192.0.2.7"]))
    assert not q.done and q.why == {0: "malformed reply (ValueError)"} and q.failed == {0}


# --- reasons in words -----------------------------------------------------------------------

@pytest.mark.parametrize(("code", "text"), [
    (errno.ENETUNREACH, "network unreachable"), (errno.EHOSTUNREACH, "host unreachable"),
    (errno.ECONNREFUSED, "connection refused (nothing listens on port 53)"),
    (errno.EPERM, "sending refused by the local firewall"),
    (errno.EDESTADDRREQ, "no route to it"), (errno.EIO, "input/output error")])
def test_os_errors_in_words(code: int, text: str) -> None:
    assert dnsquery.words(OSError(code, "Whatever The System Said")) == (
        text if code != errno.EIO else "whatever The System Said")
    if code == errno.EIO:
        assert dnsquery.words(OSError(code, None)) == text


def reason(outcomes: list[tuple[str, str, bool]], timeout: float = 5) -> str:
    """``_reason`` for resolvers ``(address, os_error, asked)``, the question unanswered."""
    servers = []
    for i, (address, os_error, asked) in enumerate(outcomes):
        server = dnsquery._Resolver(i, address)
        server.os_error, server.asked = os_error, asked
        servers.append(server)
    return dnsquery._reason(dnsquery._Question(Q, A), servers, timeout)


def test_reasons_name_the_resolvers() -> None:
    down = "network unreachable"
    assert reason([("8.8.8.8", down, False), ("1.1.1.1", down, False)]) == (
        "no resolver reachable (8.8.8.8, 1.1.1.1): network unreachable")
    assert reason([("8.8.8.8", down, False), ("1.1.1.1", "host unreachable", False)]) == (
        "no resolver reachable (8.8.8.8: network unreachable, 1.1.1.1: host unreachable)")
    assert reason([("8.8.8.8", "", True), ("1.1.1.1", "", True)], 2) == (
        "timed out: no reply from 8.8.8.8, 1.1.1.1 within 2 s")
    assert reason([("8.8.8.8", down, False), ("1.1.1.1", "", True)], 2) == (
        "8.8.8.8: network unreachable, 1.1.1.1: no reply within 2 s")


def test_the_caller_turns_even_a_client_bug_into_a_failure_per_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from statekit.netfilter import resolve

    def boom(*_: object) -> dict[str, list[str] | str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(dnsquery, "resolve_all", boom)
    out = resolve.resolve_each(["a.example", "b.example"], ["ipv4"], 1, ["192.0.2.53"])
    assert {n: str(f) for n, f in out.items()} == {
        n: f"cannot resolve {n!r}: the DNS client failed: RuntimeError: a bug"
        for n in ("a.example", "b.example")}
