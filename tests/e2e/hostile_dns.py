"""A hostile upstream DNS resolver for the "internet" namespace, and the replies it sends.

Run by the harness (:meth:`tests.e2e.harness.Sandbox.start_hostile_dns`)::

    hostile_dns.py --listen 9.9.9.9:53 --answer a.allowed.test=198.18.0.30 \\
        --truncated truncated.hostile.test --cnames cnames.hostile.test --ready-file READY

Over UDP it answers an ``--answer`` name's A question with its address (AAAA: no data),
a ``--truncated`` name with :func:`truncated_a` (an A record whose RDLENGTH says 4 and
whose datagram ends 2 bytes later), a ``--cnames`` name with :func:`cname_flood` (4 KB
of CNAMEs, the worst case of a parser that follows CNAMEs in a loop over the records),
and every other name with NXDOMAIN. With ``--delay``, the healthy answers (and the
NXDOMAINs) go that much later: the hostile replies come first, whatever order the
questions came in. READY is written once it is bound; SIGTERM stops it.

The builders are also the unit tests' and the fuzz corpus's (tests/test_dnsquery_*.py);
the file imports nothing outside the standard library (the harness runs it with ``-I``).
"""

from __future__ import annotations

import argparse
import heapq
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

A, AAAA, CNAME, IN = 1, 28, 5, 1
QUESTION_PTR = b"\xc0\x0c"  # a compression pointer to the question's name


def name(text: str) -> bytes:
    """``text`` in DNS wire form, uncompressed."""
    out = b""
    for label in text.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def header(ident: int, *, qd: int = 1, an: int = 0, rcode: int = 0,
           flags: int = 0x8180) -> bytes:
    """A reply's header (QR, RD and RA set, and ``rcode``)."""
    return struct.pack("!HHHHHH", ident, flags | rcode, qd, an, 0, 0)


def question(qname: str, qtype: int = A) -> bytes:
    return name(qname) + struct.pack("!HH", qtype, IN)


def rr(owner: bytes, rtype: int, rdata: bytes, *, rclass: int = IN, ttl: int = 60,
       rdlength: int | None = None) -> bytes:
    """One resource record; ``rdlength`` overrides the real data length."""
    length = len(rdata) if rdlength is None else rdlength
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, length) + rdata


def reply(ident: int, qname: str, qtype: int, answers: list[bytes], *, rcode: int = 0,
          flags: int = 0x8180) -> bytes:
    return header(ident, an=len(answers), rcode=rcode, flags=flags) + question(
        qname, qtype) + b"".join(answers)


def address_reply(ident: int, qname: str, qtype: int, addresses: list[str]) -> bytes:
    """The answer a healthy resolver gives: the addresses of ``qtype``, owner compressed."""
    family = socket.AF_INET if qtype == A else socket.AF_INET6
    return reply(ident, qname, qtype, [rr(QUESTION_PTR, qtype, socket.inet_pton(family, a))
                                       for a in addresses])


def truncated_a(ident: int, qname: str, qtype: int = A) -> bytes:
    """The reply of issue 19, item 1: an A record whose RDLENGTH says 4, and the datagram
    ends after 2 bytes of it."""
    return reply(ident, qname, qtype, [rr(QUESTION_PTR, A, b"\xc6\x12", rdlength=4)])


def cname_flood(ident: int, qname: str, qtype: int = A, *, size: int = 4000,
                records: int | None = None, address: str | None = None) -> bytes:
    """A chain of CNAMEs from ``qname``, about ``size`` bytes (or ``records`` of them),
    built for the most work per byte: the first 30 targets are each one label and a
    pointer back to the name before (a stem 31 pointers deep, nothing longer is
    valid), every later one a short label and a pointer to the stem's end. Each record
    is ~17 bytes and each name read follows ~31 pointers: a parser that follows CNAMEs
    in a loop over the records spends O(records^2 x name length) on it (1.2 to 3 s of
    CPU for 4 KB, 234 records). With ``address``, the last name has that A record."""
    first = len(header(0)) + len(question(qname, qtype))
    body = b""
    previous, stem, count = 12, 12, 0
    while (len(body) < size - first - 30) if records is None else count < records:
        label = b"x" if count < 30 else b"%x" % count
        data = bytes([len(label)]) + label + struct.pack("!H", 0xC000 | stem)
        record = rr(struct.pack("!H", 0xC000 | previous), CNAME, data)
        previous = first + len(body) + len(record) - len(data)
        if count < 30:
            stem = previous
        body += record
        count += 1
    if address is not None:
        body += rr(struct.pack("!H", 0xC000 | previous), A, socket.inet_aton(address))
        count += 1
    return header(ident, an=count) + question(qname, qtype) + body


def cname_chain(ident: int, qname: str, qtype: int, links: int, address: str,
                *, reverse: bool = False) -> bytes:
    """A well-formed chain: ``qname`` -> c1.chain.test -> ... -> c<links>, which has
    ``address`` (owners and targets written in full: no compression). ``reverse`` lists
    the records from the end of the chain back."""
    chain = [qname] + [f"c{i}.chain.test" for i in range(1, links + 1)]
    records = [rr(name(chain[i]), CNAME, name(chain[i + 1])) for i in range(links)]
    family = socket.AF_INET if qtype == A else socket.AF_INET6
    records.append(rr(name(chain[-1]), qtype, socket.inet_pton(family, address)))
    if reverse:
        records.reverse()
    return reply(ident, qname, qtype, records)


def parse_query(data: bytes) -> tuple[int, str, int] | None:
    """``(id, qname, qtype)`` of a query, or None."""
    if len(data) < 17:
        return None
    ident, flags, qd = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qd != 1:
        return None
    labels, at = [], 12
    while at < len(data) and data[at]:
        length = data[at]
        if length > 63:
            return None
        labels.append(data[at + 1:at + 1 + length].decode("ascii", "replace").lower())
        at += 1 + length
    if at + 5 > len(data):
        return None
    qtype = struct.unpack("!H", data[at + 1:at + 3])[0]
    return ident, ".".join(labels), qtype


def answer(data: bytes, answers: dict[str, str], truncated: set[str],
           cnames: set[str]) -> bytes | None:
    """The hostile resolver's reply to one query datagram."""
    parsed = parse_query(data)
    if parsed is None:
        return None
    ident, qname, qtype = parsed
    if qname in truncated:
        return truncated_a(ident, qname, qtype)
    if qname in cnames:
        return cname_flood(ident, qname, qtype)
    if qname in answers:
        return address_reply(ident, qname, qtype, [answers[qname]] if qtype == A else [])
    return reply(ident, qname, qtype, [], rcode=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--answer", action="append", default=[])
    parser.add_argument("--truncated", action="append", default=[])
    parser.add_argument("--cnames", action="append", default=[])
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds before an --answer reply is sent (the hostile "
                             "ones go at once: they come first)")
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    answers = dict(item.split("=", 1) for item in args.answer)
    hostile = {*args.truncated, *args.cnames}
    addr, _, port = args.listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, int(port)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    args.ready_file.write_text("ready\n")
    later: list[tuple[float, bytes, tuple[str, int]]] = []
    while True:
        now = time.monotonic()
        while later and later[0][0] <= now:
            _, due, to = heapq.heappop(later)
            sock.sendto(due, to)
        wait = max(0.0, later[0][0] - now) if later else None
        if not select.select([sock], [], [], wait)[0]:
            continue
        data, peer = sock.recvfrom(4096)
        out = answer(data, answers, set(args.truncated), set(args.cnames))
        parsed = parse_query(data)
        if out is None or parsed is None:
            continue
        if parsed[1] in hostile or not args.delay:
            sock.sendto(out, peer)
        else:
            heapq.heappush(later, (time.monotonic() + args.delay, out, peer))


if __name__ == "__main__":
    sys.exit(main())
