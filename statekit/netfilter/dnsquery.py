"""A minimal DNS stub client: A/AAAA questions over UDP to given resolvers (RFC 1035).

Only what :mod:`statekit.netfilter.resolve` needs: one question per datagram, a random
id, a connected socket per resolver (so only that address and port can answer), the
answer section read for the asked name and the CNAME chain behind it. All resolvers are
asked at once; the first good answer wins. NXDOMAIN is an answer (:class:`DnsError`).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_TYPES = {"ipv4": 1, "ipv6": 28}  # A, AAAA
_CNAME = 5
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_REPLY = 4096


class DnsError(LookupError):
    """The resolvers answered, but not with an address (NXDOMAIN, SERVFAIL, ...).

    ``final``: the name does not exist (NXDOMAIN); asking again will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.final = message == "NXDOMAIN"


class Mismatch(DnsError):
    """A datagram that is not the reply to our query (wrong id or question)."""


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query(name: str, qtype: int, ident: int) -> bytes:
    """A recursive query with an EDNS0 OPT record (1232-byte replies, no truncation)."""
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1)
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, 1) + opt


def _read_name(data: bytes, at: int, depth: int = 0) -> tuple[str, int]:
    """The name at ``at`` (compression followed, bounded) and the offset after it."""
    labels: list[str] = []
    end = None
    while True:
        if at >= len(data) or depth > 32:
            raise DnsError("malformed reply")
        length = data[at]
        if length & 0xC0 == 0xC0:
            if at + 1 >= len(data):
                raise DnsError("malformed reply")
            if end is None:
                end = at + 2
            at = ((length & 0x3F) << 8) | data[at + 1]
            depth += 1
            continue
        at += 1
        if length == 0:
            break
        labels.append(data[at:at + length].decode("ascii", "replace").lower())
        at += length
    return ".".join(labels), (end if end is not None else at)


def parse_reply(data: bytes, ident: int, name: str, qtype: int) -> list[str]:
    """The addresses of ``name`` (of ``qtype``) in a reply; DnsError for a bad rcode."""
    if len(data) < 12:
        raise DnsError("malformed reply")
    rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
    if rid != ident or not flags & 0x8000:
        raise Mismatch("reply does not match the query")
    rcode = flags & 0x0F
    if rcode:
        raise DnsError(_RCODES.get(rcode, f"rcode {rcode}"))
    at = 12
    for _ in range(qd):
        qname, at = _read_name(data, at)
        if qname != name.rstrip(".").lower():
            raise Mismatch("reply does not match the query")
        at += 4
    names = {name.rstrip(".").lower()}
    found: list[str] = []
    records = []
    for _ in range(an):
        owner, at = _read_name(data, at)
        if at + 10 > len(data):
            raise DnsError("malformed reply")
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[at:at + 10])
        at += 10
        records.append((owner, rtype, at, length))
        at += length
    for _ in range(len(records) + 1):  # CNAME chains, in whatever order they come
        for owner, rtype, start, _length in records:
            if owner in names and rtype == _CNAME:
                names.add(_read_name(data, start)[0])
    for owner, rtype, start, length in records:
        if owner in names and rtype == qtype and length in (4, 16):
            family = socket.AF_INET if length == 4 else socket.AF_INET6
            found.append(socket.inet_ntop(family, data[start:start + length]))
    return found


def addresses(name: str, families: Sequence[str], resolvers: Sequence[str],
              timeout: float) -> list[str]:
    """``name``'s addresses of ``families``, asked of every resolver at once."""
    found: list[str] = []
    for family in families:
        found += _ask_all(name, _TYPES[family], resolvers, timeout)
    return found


def _ask_all(name: str, qtype: int, resolvers: Sequence[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    pending: dict[socket.socket, int] = {}
    last: Exception = DnsError("no answer")
    try:
        for server in resolvers:
            ident = struct.unpack("!H", os.urandom(2))[0]
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            pending[sock] = ident
            try:
                sock.connect((server, 53))
                sock.send(query(name, qtype, ident))
            except OSError as exc:
                last = exc
                sock.close()
                del pending[sock]
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DnsError("timed out")
            ready, _, _ = select.select(list(pending), [], [], remaining)
            for sock in ready:
                try:
                    return parse_reply(sock.recv(MAX_REPLY), pending[sock], name, qtype)
                except Mismatch:
                    continue  # not the answer to this query: keep waiting for it
                except DnsError as exc:
                    if exc.final:
                        raise
                    last = exc
                except OSError as exc:  # ICMP unreachable, say: the others may answer
                    last = exc
                sock.close()
                del pending[sock]
        raise last
    finally:
        for sock in pending:
            sock.close()
