"""A minimal DNS stub client: A/AAAA questions over UDP to given resolvers (RFC 1035).

Only what :mod:`statekit.netfilter.resolve` needs. Every question (each name, each
family) is asked at once, from one connected UDP socket per resolver (only that address
and port can answer it), each with its own random id: of the first resolver at once, of
the next one only if no answer came within :data:`STAGGER` (so a healthy upstream is
asked each name once), and so on; unanswered questions are asked again every second.
One ``select`` loop waits for all of them and stops at the deadline. No thread, and
only C modules (``_socket``, ``select``, ``errno``): this runs on every 5-minute refresh.

Every datagram is hostile until proven otherwise (it faces the network, and the firewall
is built from it). :func:`parse_reply` is strict and bounded:

- the id, the QR bit, opcode 0, exactly one question with the qname, qtype and qclass
  asked; anything else is :class:`Mismatch` (not the reply to this question: ignored);
- the TC bit: a truncated reply is not an answer (TCP is not used: the firewall lets
  only UDP reach the resolvers), so it is that resolver's failure for that question;
- names: labels of at most 63 bytes without a ``.`` inside, at most 255 bytes in all,
  compression pointers only backwards (each before the last) and at most
  :data:`MAX_HOPS` of them;
- records: at most :data:`MAX_RECORDS` answers, each inside the datagram; an A record's
  data is 4 bytes, an AAAA's 16, a CNAME's name fills its data exactly;
- CNAMEs followed in one pass (a dict, no loop over the records per link); a CNAME loop
  or two CNAMEs for one name is malformed.

So the work per datagram is linear in its size (at most :data:`MAX_REPLY` bytes) and
the ``select`` loop's deadline holds. Any other exception a datagram could still raise
is caught too, in :func:`_receive`: a malformed reply is that resolver's error for that
question, the other resolvers are still asked, and the resolution goes on to the
deadline. The first good answer for a question wins; NXDOMAIN is an answer (the name
does not exist), SERVFAIL, REFUSED or a malformed reply from one resolver waits for the
others.

Operating system errors are said in words and per resolver (``no resolver reachable
(8.8.8.8, 1.1.1.1): network unreachable``). Where the system refuses to send to every
resolver (no route, a firewall), the resolution ends at once instead of at the deadline.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_TYPES = {"ipv4": 1, "ipv6": 28}  # A, AAAA
_SIZES = {1: 4, 28: 16}  # the data length of an A and an AAAA record
_CNAME = 5
_IN = 1
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_REPLY = 4096  # bytes read of a datagram; a longer one is refused, not cut
MAX_RECORDS = 128  # answer records in one reply (a 1232-byte reply holds at most 76)
MAX_HOPS = 32  # compression pointers followed in one name
MAX_NAME = 255  # bytes of a name on the wire (RFC 1035)
RESEND = 1.0  # seconds between asking a resolver again
STAGGER = 0.3  # seconds before the next resolver is asked too

#: OS errors in words, for "cannot resolve 'NAME': ...".
_WORDS = {
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNREFUSED: "connection refused (nothing listens on port 53)",
    errno.EDESTADDRREQ: "no route to it",
    errno.EPERM: "sending refused by the local firewall",
    errno.EACCES: "sending refused by the local firewall",
    errno.EADDRNOTAVAIL: "no local address to send from",
    errno.EAFNOSUPPORT: "address family not supported here",
    errno.ENOBUFS: "out of buffer space",
}
#: Errors the local system gives on connect or send: asking again will not help.
_LOCAL = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EDESTADDRREQ,
                    errno.EPERM, errno.EACCES, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


class DnsError(LookupError):
    """A reply that is not an address: NXDOMAIN (``final``), SERVFAIL, a malformed one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.final = message == "NXDOMAIN"


class Mismatch(DnsError):
    """A datagram that is not the reply to our query (wrong id or question)."""


def _malformed(why: str) -> DnsError:
    return DnsError(f"malformed reply ({why})")


def words(exc: OSError) -> str:
    """An OS error in words (lower case, no errno number)."""
    if exc.errno in _WORDS:
        return _WORDS[exc.errno]
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return text[:1].lower() + text[1:]


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
    return header + encode_name(name) + struct.pack("!HH", qtype, _IN) + opt


def _read_name(data: bytes, at: int, memo: dict[int, tuple[bytes, int, int]],
               ) -> tuple[bytes, int]:
    """The name at ``at`` (lower case, labels joined by ``.``) and the offset after it in
    place. Each compression pointer must point before the last place one pointed to (or
    before the name): so no loop, and at most :data:`MAX_HOPS` of them. ``memo`` keeps
    the name behind each pointer target already read (name, wire bytes, pointers), so
    each suffix of a reply is read once however many names point at it."""
    size = len(data)
    labels: list[bytes] = []
    targets: list[tuple[int, int, int, int]] = []  # target, labels before, wire, hops
    wire = hops = 0
    end = -1
    lowest = at
    tail = b""
    while True:
        if at >= size:
            raise _malformed("a name runs past the end")
        length = data[at]
        if length < 0xC0:
            label = _label(data, at)
            at += 1 + len(label)
            if not label:
                break
            wire += len(label) + 1
            labels.append(label.lower())
            continue
        low = data[at + 1:at + 2]
        if not low:
            raise _malformed("a name runs past the end")
        if end < 0:
            end = at + 2
        target = ((length & 0x3F) << 8) | low[0]
        hops += 1
        if target >= lowest:
            raise _malformed("a compression pointer that does not point back")
        if target in memo:
            tail, more_wire, more_hops = memo[target]
            wire += more_wire
            hops += more_hops
            break
        targets.append((target, len(labels), wire, hops))
        at = lowest = target
    if hops > MAX_HOPS:
        raise _malformed(f"a name behind more than {MAX_HOPS} compression pointers")
    if wire + 1 > MAX_NAME:
        raise _malformed(f"a name longer than {MAX_NAME} bytes")
    for target, before, at_wire, at_hops in targets:
        memo[target] = (b".".join([*labels[before:], tail] if tail else labels[before:]),
                        wire - at_wire, hops - at_hops)
    return (b".".join([*labels, tail] if tail else labels)), (end if end >= 0 else at)


def _label(data: bytes, at: int) -> bytes:
    """The label whose length byte is at ``at`` (empty: the root, the name's end)."""
    length = data[at]
    if length > 63:
        raise _malformed("a label longer than 63 bytes")
    label = data[at + 1:at + 1 + length]
    if len(label) < length:
        raise _malformed("a name runs past the end")
    if b"." in label:
        raise _malformed("a dot inside a label")
    return label


def parse_reply(data: bytes, ident: int, name: str, qtype: int) -> list[str]:
    """The addresses of ``name`` (of ``qtype``) in a reply, following its CNAMEs.

    :class:`Mismatch` if the datagram is not the reply to this question, DnsError for an
    error rcode (``final`` for NXDOMAIN), a truncated or a malformed reply. Never any
    other exception, and linear work in ``len(data)``."""
    if len(data) < 12:
        raise Mismatch("not a DNS reply (shorter than its header)")
    rid, flags, qd, an = struct.unpack_from("!HHHH", data)
    rcode = flags & 0x0F
    if rid != ident or not flags & 0x8000 or flags & 0x7800:
        raise Mismatch("reply does not match the query")
    if qd == 0 and rcode in (1, 2, 4, 5):  # a refusal that does not repeat the question
        raise DnsError(_RCODES[rcode])
    if qd != 1:
        raise Mismatch("reply does not match the query (not one question)")
    want = name.rstrip(".").lower().encode("ascii", "replace")
    memo: dict[int, tuple[bytes, int, int]] = {}
    qname, at = _read_name(data, 12, memo)
    if at + 4 > len(data):
        raise _malformed("the question runs past the end")
    if qname != want or struct.unpack_from("!HH", data, at) != (qtype, _IN):
        raise Mismatch("reply does not match the query")
    at += 4
    if flags & 0x0200:
        raise DnsError("truncated reply (the TC bit; only UDP is used)")
    if rcode:
        raise DnsError(_RCODES.get(rcode, f"rcode {rcode}"))
    if an > MAX_RECORDS:
        raise _malformed(f"{an} answer records, more than {MAX_RECORDS}")
    return _answers(data, at, an, want, qtype, memo)


def _answers(data: bytes, at: int, count: int, want: bytes, qtype: int,
             memo: dict[int, tuple[bytes, int, int]]) -> list[str]:
    """Read ``count`` answer records from ``at``: the addresses of ``want`` and of the
    names its CNAME chain leads to, in one pass over the records and one along the chain."""
    size = len(data)
    cnames: dict[bytes, bytes] = {}
    addresses: dict[bytes, list[str]] = {}
    family = _socket.AF_INET if qtype == 1 else _socket.AF_INET6
    for _ in range(count):
        owner, at = _read_name(data, at, memo)
        if at + 10 > size:
            raise _malformed("a record runs past the end")
        rtype, rclass, _ttl, length = struct.unpack_from("!HHIH", data, at)
        at += 10
        end = at + length
        if end > size:
            raise _malformed("a record's data runs past the end")
        if rclass == _IN and rtype == _CNAME:
            target, after = _read_name(data, at, memo)
            if after != end:
                raise _malformed("a CNAME whose name does not fill its data")
            if cnames.setdefault(owner, target) != target:
                raise _malformed("two CNAMEs for one name")
        elif rclass == _IN and rtype in _SIZES:
            if length != _SIZES[rtype]:
                kind = "A" if rtype == 1 else "AAAA"
                raise _malformed(f"an {kind} record of {length} bytes")
            if rtype == qtype:
                addresses.setdefault(owner, []).append(
                    _socket.inet_ntop(family, data[at:end]))
        at = end
    found = list(addresses.get(want, ()))
    seen = {want}
    current = want
    while current in cnames:
        current = cnames[current]
        if current in seen:
            raise _malformed("a CNAME loop")
        seen.add(current)
        found += addresses.get(current, ())
    return found


# --- asking -----------------------------------------------------------------------------


class _Question:
    __slots__ = ("addresses", "done", "failed", "name", "nxdomain", "qtype", "why")

    def __init__(self, name: str, qtype: int) -> None:
        self.name = name
        self.qtype = qtype
        self.done = False
        self.nxdomain = False
        self.addresses: list[str] = []
        self.why: dict[int, str] = {}  # resolver index -> its error for this question
        self.failed: set[int] = set()  # resolvers not to ask again (until all failed)


class _Resolver:
    """One resolver: its socket, when it is asked next, and what the system said."""

    __slots__ = ("address", "asked", "connected", "due", "index", "local", "os_error",
                 "sock")

    def __init__(self, index: int, address: str) -> None:
        self.index = index
        self.address = address
        self.sock: _socket.socket | None = None
        self.connected = False
        self.asked = False
        self.due = 0.0
        self.os_error = ""  # the last OS error for it (cleared by a datagram from it)
        self.local = False  # the system refused the last connect or send (no route...)

    def fail(self, exc: OSError) -> None:
        self.os_error = words(exc)
        self.local = exc.errno in _LOCAL

    def connect(self) -> bool:
        """Open and connect the socket (again); False, with why, if the system says no."""
        try:
            if self.sock is None:
                family = _socket.AF_INET6 if ":" in self.address else _socket.AF_INET
                self.sock = _socket.socket(family, _socket.SOCK_DGRAM)
            self.sock.connect((self.address, 53))
        except OSError as exc:
            self.fail(exc)
            return False
        self.connected = True
        return True


def resolve_all(names: Sequence[str], families: Sequence[str], resolvers: Sequence[str],
                timeout: float) -> dict[str, list[str] | str]:
    """Each name's addresses of ``families``, or why it has none (``NXDOMAIN``,
    ``timed out: ...``, ``no resolver reachable (...): ...``), all asked at once of every
    resolver, within ``timeout``."""
    deadline = time.monotonic() + timeout
    questions = [_Question(n, _TYPES[f]) for n in names for f in families]
    servers = [_Resolver(i, address) for i, address in enumerate(resolvers)]
    try:
        for server in servers:
            server.connect()
        _ask_until(questions, servers, deadline)
    finally:
        for server in servers:
            if server.sock is not None:
                server.sock.close()
    out: dict[str, list[str] | str] = {}
    for name in names:
        mine = [q for q in questions if q.name == name]
        failed = [q for q in mine if not q.done or q.nxdomain]
        out[name] = (_reason(failed[0], servers, timeout) if failed
                     else [a for q in mine for a in q.addresses])
    return out


def _reason(q: _Question, servers: list[_Resolver], timeout: float) -> str:
    """Why ``q`` has no answer, in words, naming the resolvers."""
    if q.nxdomain:
        return "NXDOMAIN"
    if not servers:
        return "no resolver to ask"
    each = [(s.address, q.why.get(s.index) or s.os_error or
             (f"no reply within {timeout:g} s" if s.asked else "not asked in time"))
            for s in servers]
    listed = ", ".join(address for address, _ in each)
    unreachable = all(s.os_error and s.index not in q.why for s in servers)
    if len({why for _, why in each}) > 1:
        listed = ", ".join(f"{address}: {why}" for address, why in each)
        return f"no resolver reachable ({listed})" if unreachable else listed
    why = each[0][1]
    if why.startswith("no reply"):
        return f"timed out: no reply from {listed} within {timeout:g} s"
    if unreachable:
        return f"no resolver reachable ({listed}): {why}"
    return f"{why} (from {listed})"


def _ids(questions: list[_Question], servers: list[_Resolver],
         ) -> dict[tuple[int, int], _Question]:
    """A random id for each question to each resolver: (resolver index, id) -> question."""
    ids: dict[tuple[int, int], _Question] = {}
    for server in servers:
        for q in questions:
            ident = struct.unpack("!H", os.urandom(2))[0]
            while (server.index, ident) in ids:
                ident = (ident + 1) & 0xFFFF
            ids[(server.index, ident)] = q
    return ids


def _ask_until(questions: list[_Question], servers: list[_Resolver],
               deadline: float) -> None:
    ids = _ids(questions, servers)
    start = time.monotonic()
    for i, server in enumerate([s for s in servers if s.connected]):
        server.due = start + i * STAGGER
    for server in servers:
        if not server.connected:
            server.due = start + RESEND
    while not all(q.done for q in questions):
        now = time.monotonic()
        if now >= deadline or all(s.local for s in servers):
            return  # the deadline, or the system will not send to any resolver
        for server in [s for s in servers if s.due <= now]:
            server.due = now + RESEND
            if _send(ids, server):
                continue
            for other in servers:  # this one cannot be asked: ask the next one now
                if not other.asked and other.connected:
                    other.due = min(other.due, now)
        socks = {s.sock.fileno(): s for s in servers if s.sock is not None and s.connected}
        wake = min([deadline, *(s.due for s in servers)])
        ready, _, _ = select.select(list(socks), [], [], max(0.0, wake - now))
        for fd in ready:
            _receive(socks[fd], ids, len(servers))


def _send(ids: dict[tuple[int, int], _Question], server: _Resolver) -> bool:
    """Ask ``server`` every question still open (that it has not failed); False if the
    system refused (no route, a firewall...)."""
    if not server.connected and not server.connect():
        return False
    assert server.sock is not None
    for (index, ident), q in ids.items():
        if index == server.index and not q.done and index not in q.failed:
            try:
                server.sock.send(query(q.name, q.qtype, ident))
            except OSError as exc:
                server.fail(exc)
                if server.local:
                    return False
                continue  # a pending error (an ICMP reply to an earlier query), say
            server.asked = True
            server.local = False
    return True


def _receive(server: _Resolver, ids: dict[tuple[int, int], _Question],
             resolvers: int) -> None:
    """Read one datagram from ``server``. Whatever it holds, nothing but a note on one
    question comes of it: no exception leaves here."""
    assert server.sock is not None
    try:
        data = server.sock.recv(MAX_REPLY + 1)
    except OSError as exc:  # ICMP unreachable from that resolver, say
        server.fail(exc)
        server.local = False  # the network said no, not the system: ask again later
        return
    if len(data) < 12:
        return
    q = ids.get((server.index, (data[0] << 8) | data[1]))
    if q is None or q.done:
        return
    try:
        if len(data) > MAX_REPLY:
            raise _malformed(f"over {MAX_REPLY} bytes")
        q.addresses = parse_reply(data, (data[0] << 8) | data[1], q.name, q.qtype)
        q.done = True
        server.os_error = ""  # it answered: reachable after all
        return
    except Mismatch:
        return
    except DnsError as exc:
        why, final = str(exc), exc.final
    except Exception as exc:  # defence in depth: a datagram never ends the resolution
        why, final = f"malformed reply ({type(exc).__name__})", False
    server.os_error = ""
    q.why[server.index] = why
    if final:  # the name does not exist: no need to ask anyone again
        q.done = q.nxdomain = True
        return
    q.failed.add(server.index)
    if len(q.failed) >= resolvers:
        q.failed.clear()  # every resolver failed: ask them all again next round
