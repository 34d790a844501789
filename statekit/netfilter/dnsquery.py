"""A minimal DNS stub client: A/AAAA questions over UDP to given resolvers (RFC 1035).

Only what :mod:`statekit.netfilter.resolve` needs. Every question (each name, each
family) is asked at once, from one connected UDP socket per resolver (only that address
and port can answer it), each with its own random id: of the first resolver at once, of
the next one only if no answer came within :data:`STAGGER` (so a healthy upstream is
asked each name once), and so on; unanswered questions are asked again every second.
One ``select`` loop waits for all of them and stops at the deadline. No thread, and
only C modules (``_socket``, ``select``): this runs on every 5-minute refresh. A reply is
taken only if its id and question match; the answer section is read for the asked name
and the CNAME chain behind it. The first good answer for a question wins; NXDOMAIN is an
answer (the name does not exist), SERVFAIL or REFUSED from one resolver waits for the
others.
"""

from __future__ import annotations

import _socket
import os
import select
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_TYPES = {"ipv4": 1, "ipv6": 28}  # A, AAAA
_CNAME = 5
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_REPLY = 4096
RESEND = 1.0  # seconds between asking a resolver again
STAGGER = 0.3  # seconds before the next resolver is asked too


class DnsError(LookupError):
    """A reply that is not an address: NXDOMAIN (``final``), SERVFAIL, a malformed one."""

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


def reply_id(data: bytes) -> int:
    if len(data) < 12:
        raise Mismatch("malformed reply")
    ident: int = struct.unpack("!H", data[:2])[0]
    return ident


def parse_reply(data: bytes, ident: int, name: str, qtype: int) -> list[str]:
    """The addresses of ``name`` (of ``qtype``) in a reply; DnsError for a bad rcode."""
    if len(data) < 12:
        raise DnsError("malformed reply")
    rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
    if rid != ident or not flags & 0x8000:
        raise Mismatch("reply does not match the query")
    at = 12
    for _ in range(qd):
        qname, at = _read_name(data, at)
        if qname != name.rstrip(".").lower():
            raise Mismatch("reply does not match the query")
        at += 4
    rcode = flags & 0x0F
    if rcode:
        raise DnsError(_RCODES.get(rcode, f"rcode {rcode}"))
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
            family = _socket.AF_INET if length == 4 else _socket.AF_INET6
            found.append(_socket.inet_ntop(family, data[start:start + length]))
    return found


class _Question:
    __slots__ = ("addresses", "done", "error", "failed", "name", "qtype")

    def __init__(self, name: str, qtype: int) -> None:
        self.name = name
        self.qtype = qtype
        self.done = False
        self.addresses: list[str] = []
        self.error = "timed out"  # why, while not done (or done with NXDOMAIN)
        self.failed: set[int] = set()  # resolvers (socket fds) that answered an error


def resolve_all(names: Sequence[str], families: Sequence[str], resolvers: Sequence[str],
                timeout: float) -> dict[str, list[str] | str]:
    """Each name's addresses of ``families``, or why it has none (``NXDOMAIN``,
    ``timed out``, ...), all asked at once of every resolver, within ``timeout``."""
    deadline = time.monotonic() + timeout
    questions = [_Question(n, _TYPES[f]) for n in names for f in families]
    socks: list[_socket.socket] = []
    try:
        for server in resolvers:
            family = _socket.AF_INET6 if ":" in server else _socket.AF_INET
            sock = _socket.socket(family, _socket.SOCK_DGRAM)
            socks.append(sock)
            try:  # noqa: SIM105 -- contextlib stays off the refresh path
                sock.connect((server, 53))
            except OSError:
                pass  # no route: sending fails too, and the others may answer
        _ask_until(questions, socks, deadline)
    finally:
        for sock in socks:
            sock.close()
    out: dict[str, list[str] | str] = {}
    for name in names:
        mine = [q for q in questions if q.name == name]
        failed = [q.error for q in mine if not q.done or q.error == "NXDOMAIN"]
        out[name] = failed[0] if failed else [a for q in mine for a in q.addresses]
    return out


def _ask_until(questions: list[_Question], socks: list[_socket.socket],
               deadline: float) -> None:
    ids: dict[tuple[int, int], _Question] = {}
    for sock in socks:
        for q in questions:
            ident = struct.unpack("!H", os.urandom(2))[0]
            while (sock.fileno(), ident) in ids:
                ident = (ident + 1) & 0xFFFF
            ids[(sock.fileno(), ident)] = q
    start = time.monotonic()
    due = {sock.fileno(): start + i * STAGGER for i, sock in enumerate(socks)}
    by_fd = {sock.fileno(): sock for sock in socks}
    while not all(q.done for q in questions):
        now = time.monotonic()
        if now >= deadline:
            return
        for fd in [fd for fd, when in due.items() if when <= now]:
            _send(ids, by_fd, fd)
            due[fd] = now + RESEND
        wake = min([deadline, *due.values()])
        ready, _, _ = select.select(socks, [], [], max(0.0, wake - now))
        for sock in ready:
            _receive(sock, ids, len(socks))


def _send(ids: dict[tuple[int, int], _Question], by_fd: dict[int, _socket.socket],
          fd: int) -> None:
    """Ask resolver ``fd`` every question still open (that it has not refused)."""
    for (qfd, ident), q in ids.items():
        if qfd == fd and not q.done and fd not in q.failed:
            try:
                by_fd[fd].send(query(q.name, q.qtype, ident))
            except OSError as exc:
                q.error = exc.strerror or str(exc)


def _receive(sock: _socket.socket, ids: dict[tuple[int, int], _Question],
             resolvers: int) -> None:
    fd = sock.fileno()
    try:
        data = sock.recv(MAX_REPLY)
    except OSError as exc:  # ICMP unreachable from that resolver, say
        for (qfd, _), waiting in ids.items():
            if qfd == fd and not waiting.done:
                waiting.error = exc.strerror or str(exc)
        return
    try:
        ident = reply_id(data)
    except DnsError:
        return
    q = ids.get((fd, ident))
    if q is None or q.done:
        return
    try:
        q.addresses = parse_reply(data, ident, q.name, q.qtype)
        q.done = True
    except Mismatch:
        return
    except DnsError as exc:
        q.error = str(exc)
        if exc.final:  # the name does not exist: no need to ask anyone again
            q.done = True
            return
        q.failed.add(fd)
        if len(q.failed) >= resolvers:
            q.failed.clear()  # every resolver failed: ask them all again next round
