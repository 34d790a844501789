"""The tests' DNS client: one query, over UDP or TCP, from inside a namespace.

Standard library only, so that a probe costs a Python start-up (~20 ms of CPU) and not
dnspython's imports (~120 ms: the suite sends hundreds of probes). It is independent of
statekit's own resolver, and tests/test_dns_probe.py checks it against dnspython on
generated messages (what it sends, what it reads of a reply, what it refuses).

- ``dns_probe.py ask NAME RDTYPE SERVER PORT TIMEOUT TRANSPORT SOURCE_PORT``: prints
  ``{"rcode": ..., "answers": [...]}``, the answers of type RDTYPE as text; rcode
  ``TIMEOUT`` when no reply came, ``ERROR`` (with ``error``) when the socket failed.
- ``dns_probe.py wait SERVER PORT NAME RDTYPE WANT TIMEOUT``: asks every 0.1 s until the
  reply is WANT (JSON ``[rcode, sorted answers]``, ``null``: the first reply) or TIMEOUT
  seconds passed; prints ``[rcode, sorted answers of every type]``.

A reply counts only when it comes from the server asked, carries the query's ID and
asks the same question (as dnspython checks); anything else is ignored (UDP) or an error.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import struct
import sys
import time
from collections.abc import Callable

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "ANY": 255}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
          10: "NOTZONE"}
_NAMED = {2, 5, 12}  # rdata that is one domain name


class BadReply(Exception):
    """A reply that is not one to this query."""


def encode_name(name: str) -> bytes:
    labels = [label for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"


def make_query(name: str, rdtype: str) -> tuple[int, bytes]:
    """A recursive query (RD set, no EDNS: as dnspython's make_query); (id, wire)."""
    qid = secrets.randbelow(65536)
    question = encode_name(name) + struct.pack("!HH", TYPES[rdtype], 1)
    return qid, struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question


def read_name(wire: bytes, at: int) -> tuple[str, int]:
    """The name at ``at`` (compression followed, loops refused); (text, offset after)."""
    labels: list[str] = []
    end, hops = -1, 0
    while True:
        if at >= len(wire):
            raise BadReply("name past the end")
        size = wire[at]
        if size & 0xC0 == 0xC0:
            if at + 1 >= len(wire) or hops > 64:
                raise BadReply("bad compression pointer")
            if end < 0:
                end = at + 2
            at, hops = ((size & 0x3F) << 8) | wire[at + 1], hops + 1
            continue
        if size == 0:
            return ".".join(labels) + ".", (at + 1 if end < 0 else end)
        labels.append(wire[at + 1:at + 1 + size].decode("ascii", "backslashreplace"))
        at += 1 + size


def rdata_text(wire: bytes, rtype: int, start: int, size: int) -> str:
    data = wire[start:start + size]
    if rtype == 1 and size == 4:
        return socket.inet_ntop(socket.AF_INET, data)
    if rtype == 28 and size == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    if rtype in _NAMED:
        return read_name(wire, start)[0]
    return f"\\# {size} {data.hex()}"  # RFC 3597's generic form


def parse(wire: bytes, qid: int, question: bytes) -> tuple[str, list[tuple[int, str]]]:
    """(rcode text, [(type, text)] of the answer section) of a reply to ``qid``."""
    if len(wire) < 12:
        raise BadReply("shorter than a header")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", wire[:12])
    if rid != qid or not flags & 0x8000:
        raise BadReply("not a reply to this query")
    if qdcount != 1 or wire[12:12 + len(question)].lower() != question.lower():
        raise BadReply("a reply to another question")
    at, answers = 12 + len(question), []
    for _ in range(ancount):
        _, at = read_name(wire, at)
        if at + 10 > len(wire):
            raise BadReply("record past the end")
        rtype, _, _, size = struct.unpack("!HHIH", wire[at:at + 10])
        at += 10
        if at + size > len(wire):
            raise BadReply("rdata past the end")
        answers.append((rtype, rdata_text(wire, rtype, at, size)))
        at += size
    return RCODES.get(flags & 0xF, str(flags & 0xF)), answers


Answer = tuple[str, list[tuple[int, str]]]


def _socket(server: str, kind: socket.SocketKind, source_port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, kind)
    if source_port:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port))
    return sock


def _udp(wire: bytes, server: str, port: int, deadline: float, source_port: int,
         read: Callable[[bytes], Answer]) -> Answer:
    with _socket(server, socket.SOCK_DGRAM, source_port) as sock:
        sock.sendto(wire, (server, port))
        while True:  # unconnected, as dnspython's: an ICMP error is a timeout, not a reply
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            reply, source = sock.recvfrom(65535)
            if source[0] == server and source[1] == port:
                with contextlib.suppress(BadReply):  # not a reply to us: ignored
                    return read(reply)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise BadReply("connection closed mid-message")
        data += chunk
    return data


def _tcp(wire: bytes, server: str, port: int, deadline: float, source_port: int) -> bytes:
    with _socket(server, socket.SOCK_STREAM, source_port) as sock:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.connect((server, port))
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        (size,) = struct.unpack("!H", _recv_exactly(sock, 2))
        return _recv_exactly(sock, size)


def _exchange(name: str, rdtype: str, server: str, port: int, timeout: float,
              transport: str = "udp", source_port: int = 0) -> Answer:
    """One query and its reply, read (TimeoutError, OSError: none came)."""
    qid, wire = make_query(name, rdtype)
    deadline = time.monotonic() + timeout

    def read(reply: bytes) -> Answer:
        return parse(reply, qid, wire[12:])

    if transport == "tcp":
        return read(_tcp(wire, server, port, deadline, source_port))
    return _udp(wire, server, port, deadline, source_port, read)


def ask(name: str, rdtype: str, server: str, port: int, timeout: float,
        transport: str = "udp", source_port: int = 0) -> dict[str, object]:
    try:
        rcode, answers = _exchange(name, rdtype, server, port, timeout, transport,
                                   source_port)
    except TimeoutError:
        return {"rcode": "TIMEOUT", "answers": []}
    except OSError as exc:
        return {"rcode": "ERROR", "answers": [], "error": str(exc)}
    return {"rcode": rcode, "answers": [text for rtype, text in answers
                                        if rtype == TYPES[rdtype]]}


def wait(server: str, port: int, name: str, rdtype: str, want: object,
         timeout: float) -> list[object]:
    """[rcode, sorted answers of every type], asked over UDP (1 s each) until ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rcode, answers = _exchange(name, rdtype, server, port, 1.0)
            got: list[object] = [rcode, sorted(text for _, text in answers)]
        except Exception as exc:  # told as the answer, and asked again
            got = ["ERROR " + type(exc).__name__, []]
        if want is None or got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    if argv[0] == "ask":
        name, rdtype, server, port, timeout, transport, source_port = argv[1:8]
        print(json.dumps(ask(name, rdtype, server, int(port), float(timeout), transport,
                             int(source_port))))
    else:
        server, port, name, rdtype, want, timeout = argv[1:7]
        print(json.dumps(wait(server, int(port), name, rdtype, json.loads(want),
                              float(timeout))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
