"""The firewall's NFLOG messages, read from the kernel: a netlink socket and a bounded parser.

``-j NFLOG --nflog-group N`` hands each matching packet to ``nfnetlink_log``, which sends
it to the one netlink socket bound to group N (NETLINK_NETFILTER, subsystem ULOG). The
kernel never writes those packets to its log: only a listener sees them.

:class:`Listener` binds groups (one ``NFULNL_MSG_CONFIG`` per group: ``CFG_CMD_BIND`` and
``CFG_MODE`` copy-packet with :data:`COPY_RANGE` bytes, enough for the IP and transport
headers) and yields :class:`Drop` records. Two things the headers do not say:

- The sender's uid and gid (``NFULA_UID``, ``NFULA_GID``) come unasked whenever the
  packet has a full socket with an open file (a process's connect or sendto; not a
  kernel-made RST or a time-wait socket's ACK). ``NFULNL_CFG_F_UID_GID`` exists only for
  NFQUEUE (``NFQA_CFG_F_UID_GID``); nfnetlink_log has no such flag (its flags are SEQ,
  SEQ_GLOBAL and CONNTRACK), so none is sent.
- ``CFG_CMD_PF_BIND``/``PF_UNBIND`` are not sent: since Linux 3.17 the NFLOG target reaches
  nfnetlink_log without them, and they would change the network namespace's default
  logger for the whole family, which is not ours to touch.

A group already bound by another socket answers ``EPERM``, the same as a caller without
CAP_NET_ADMIN; ``/proc/net/netfilter/nfnetlink_log`` (this namespace's bound groups)
tells the two apart.

The parser (:func:`parse_datagram`) takes whatever the socket gives and never raises:
every length is checked before it is read, loops advance by at least 4 bytes and stop
after a fixed number of items, IPv6 extension headers are followed at most
:data:`MAX_EXTENSIONS` deep. What cannot be read is left unknown (None, ``""``). Only C
modules are imported (``_socket``, ``select``, ``struct``), as in
:mod:`statekit.netfilter.dnsquery`.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import struct
import time

from statekit.errors import StatekitError
from statekit.typeshim import Record

AF_NETLINK = 16
NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ULOG = 4
MSG_PACKET = _NFNL_SUBSYS_ULOG << 8 | 0  # NFULNL_MSG_PACKET
MSG_CONFIG = _NFNL_SUBSYS_ULOG << 8 | 1  # NFULNL_MSG_CONFIG
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
# nfulnl_attr_type
NFULA_PACKET_HDR, NFULA_TIMESTAMP, NFULA_PAYLOAD, NFULA_PREFIX = 1, 3, 9, 10
NFULA_UID, NFULA_GID = 11, 14
# nfulnl_attr_config, nfulnl_msg_config_cmds, copy modes
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
CFG_CMD_BIND = 1
COPY_PACKET = 2

COPY_RANGE = 256  # bytes of each packet: IPv6 with extension headers and TCP fit
RECV_SIZE = 1 << 16
RCVBUF = 1 << 20
MAX_MESSAGES = 512  # per datagram
MAX_ATTRIBUTES = 64  # per message
MAX_EXTENSIONS = 8  # IPv6 extension headers followed
MAX_PREFIX = 64  # NFLOG prefixes are at most 63 characters
ACK_TIMEOUT = 5.0
PROC_GROUPS = "/proc/net/netfilter/nfnetlink_log"

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PORTS = (6, 17, 132, 136)
_ICMP = (1, 58)
# hop-by-hop, routing, fragment, AH, destination options, mobility, HIP, shim6
_EXTENSIONS = (0, 43, 44, 51, 60, 135, 139, 140)
_FRAGMENT, _AH = 44, 51


class ListenError(StatekitError):
    """The group cannot be read: no CAP_NET_ADMIN, or another listener holds it."""


class Packet(Record):
    """What the copied bytes say (IPv4 or IPv6 and the transport header); unknown: None."""

    version: int | None = None  # 4 or 6
    protocol: int | None = None  # the IP protocol number (after IPv6 extension headers)
    source: str = ""
    destination: str = ""
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def protocol_name(self) -> str:
        if self.protocol is None:
            return "unknown"
        return PROTOCOLS.get(self.protocol, f"proto-{self.protocol}")


class Drop(Record):
    """One packet the firewall logged to an NFLOG group."""

    time: float  # the kernel's timestamp, else when it was read (seconds since the epoch)
    group: int
    prefix: str = ""
    uid: int | None = None
    gid: int | None = None
    hw_protocol: int | None = None  # the ethertype: 0x0800 IPv4, 0x86dd IPv6
    packet: Packet = Packet()


# --- the parser: bytes in, records out, never an exception ------------------------------

def netlink_messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, sequence number, payload) of each netlink message of one datagram; the
    first malformed header ends the list."""
    out: list[tuple[int, int, bytes]] = []
    at = 0
    while at + 16 <= len(data) and len(out) < MAX_MESSAGES:
        length, kind, _flags, seq, _port = struct.unpack_from("=IHHII", data, at)
        if length < 16 or length > len(data) - at:
            break
        out.append((kind, seq, data[at + 16:at + length]))
        at += (length + 3) & ~3
    return out


def attributes(data: bytes, start: int = 0) -> dict[int, bytes]:
    """Each attribute's value by type (flag bits masked; the first of a type wins); a
    malformed length ends the walk. Nested attributes stay opaque bytes."""
    out: dict[int, bytes] = {}
    at = start
    for _ in range(MAX_ATTRIBUTES):
        if at + 4 > len(data):
            break
        length, kind = struct.unpack_from("=HH", data, at)
        if length < 4 or length > len(data) - at:
            break
        out.setdefault(kind & _NLA_TYPE_MASK, data[at + 4:at + length])
        at += (length + 3) & ~3
    return out


def parse_datagram(data: bytes, received: float | None = None) -> list[Drop]:
    """The logged packets of one datagram (acks, errors and other messages skipped)."""
    now = time.time() if received is None else received
    drops = []
    for kind, _seq, payload in netlink_messages(data):
        if kind == MSG_PACKET:
            drop = parse_message(payload, now)
            if drop is not None:
                drops.append(drop)
    return drops


def parse_message(payload: bytes, received: float) -> Drop | None:
    """One ``NFULNL_MSG_PACKET`` (after its netlink header), or None if it has no
    nfgenmsg header."""
    if len(payload) < 4:
        return None
    family, _version, group = struct.unpack_from("!BBH", payload)
    attrs = attributes(payload, 4)
    header = attrs.get(NFULA_PACKET_HDR, b"")
    hw = struct.unpack_from("!H", header)[0] if len(header) >= 2 else None
    return Drop(
        time=_timestamp(attrs.get(NFULA_TIMESTAMP, b"")) or received, group=group,
        prefix=_text(attrs.get(NFULA_PREFIX, b"")), uid=_u32(attrs.get(NFULA_UID)),
        gid=_u32(attrs.get(NFULA_GID)), hw_protocol=hw,
        packet=parse_packet(attrs.get(NFULA_PAYLOAD, b""), _family_version(family, hw)))


def _timestamp(value: bytes) -> float | None:
    if len(value) < 16:
        return None
    sec, usec = (int(x) for x in struct.unpack_from("!QQ", value))
    if not 0 < sec < 1 << 40 or usec >= 1_000_000:
        return None
    return sec + usec / 1e6


def _u32(value: bytes | None) -> int | None:
    return struct.unpack_from("!I", value)[0] if value is not None and len(value) >= 4 \
        else None


def _text(value: bytes) -> str:
    """A NUL-terminated string; control characters shown as ``\\xNN`` (a prefix is
    printed on a terminal)."""
    raw = value.split(b"\0", 1)[0][:MAX_PREFIX].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in raw)


def _family_version(family: int, hw: int | None) -> int | None:
    """The IP version the message's family (or ethertype) announces."""
    if family == _socket.AF_INET or hw == 0x0800:
        return 4
    if family == _socket.AF_INET6 or hw == 0x86DD:
        return 6
    return None


def parse_packet(data: bytes, expected: int | None = None) -> Packet:
    """The IP header and the transport header of a copied packet; the version nibble
    decides (``expected`` when the copy is empty)."""
    version = data[0] >> 4 if data else expected
    if version == 4:
        return _ipv4(data)
    if version == 6:
        return _ipv6(data)
    return Packet()


def _ipv4(data: bytes) -> Packet:
    if len(data) < 20:
        return Packet(4)
    header = (data[0] & 0x0F) * 4
    packet = Packet(version=4, protocol=data[9],
                    source=_socket.inet_ntop(_socket.AF_INET, data[12:16]),
                    destination=_socket.inet_ntop(_socket.AF_INET, data[16:20]))
    fragment = struct.unpack_from("!H", data, 6)[0] & 0x1FFF
    if header < 20 or fragment:  # a later fragment carries no transport header
        return packet
    return _transport(packet, data, header)


def _ipv6(data: bytes) -> Packet:
    if len(data) < 40:
        return Packet(6)
    source = _socket.inet_ntop(_socket.AF_INET6, data[8:24])
    destination = _socket.inet_ntop(_socket.AF_INET6, data[24:40])
    following, at = data[6], 40
    for _ in range(MAX_EXTENSIONS):
        if following not in _EXTENSIONS or at + 8 > len(data):
            break
        if following == _FRAGMENT:
            if struct.unpack_from("!H", data, at + 2)[0] >> 3:  # not the first fragment
                return Packet(version=6, protocol=data[at], source=source,
                              destination=destination)
            length = 8
        elif following == _AH:
            length = (data[at + 1] + 2) * 4
        else:
            length = (data[at + 1] + 1) * 8
        following, at = data[at], at + length
    if following in _EXTENSIONS:  # cut short, or too deep to follow
        return Packet(version=6, source=source, destination=destination)
    return _transport(Packet(version=6, protocol=following, source=source,
                             destination=destination), data, at)


def _transport(packet: Packet, data: bytes, at: int) -> Packet:
    if packet.protocol in _PORTS and at + 4 <= len(data):
        sport, dport = struct.unpack_from("!HH", data, at)
        return packet._replace(sport=sport, dport=dport)
    if packet.protocol in _ICMP and at + 2 <= len(data):
        return packet._replace(icmp_type=data[at], icmp_code=data[at + 1])
    return packet


# --- the socket --------------------------------------------------------------------------

def config_message(group: int, seq: int, copy_range: int = COPY_RANGE) -> bytes:
    """``NFULNL_MSG_CONFIG`` for ``group``: bind it, copy ``copy_range`` bytes of each
    packet; an ack is asked for."""
    attrs = _attribute(NFULA_CFG_CMD, bytes([CFG_CMD_BIND])) + _attribute(
        NFULA_CFG_MODE, struct.pack("!IBB", copy_range, COPY_PACKET, 0))
    body = struct.pack("!BBH", _socket.AF_UNSPEC, 0, group) + attrs
    return struct.pack("=IHHII", 16 + len(body), MSG_CONFIG, _NLM_F_REQUEST | _NLM_F_ACK,
                       seq, 0) + body


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def bound_groups(path: str = PROC_GROUPS) -> dict[int, int]:
    """The groups bound in this network namespace: group -> the listener's netlink port
    (``/proc/net/netfilter/nfnetlink_log``: group, port, queue length, ...)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.read(1 << 16).splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines[:4096]:
        words = line.split()
        if len(words) >= 2 and words[0].isdigit() and words[1].isdigit():
            out[int(words[0])] = int(words[1])
    return out


class Listener:
    """A netlink socket bound to NFLOG groups; :meth:`read` gives their drops."""

    def __init__(self, groups: tuple[int, ...], copy_range: int = COPY_RANGE) -> None:
        self.groups = groups
        self.copy_range = copy_range
        self.lost = 0  # times the kernel dropped messages (the socket's buffer was full)
        self._pending: list[Drop] = []
        self._sock: _socket.socket | None = None

    def __enter__(self) -> Listener:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Bind every group or raise :class:`ListenError` (nothing stays bound)."""
        try:
            self._sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                        NETLINK_NETFILTER)
            self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, RCVBUF)
            self._sock.bind((0, 0))
            for seq, group in enumerate(self.groups, 1):
                self._sock.send(config_message(group, seq, self.copy_range))
                self._await_ack(seq, group)
        except OSError as exc:  # no netlink here (a sandboxed kernel), no descriptor left
            self.close()
            raise ListenError(f"cannot open a netlink socket for NFLOG: {exc.strerror or exc}"
                              ) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Closing the socket unbinds its groups (the kernel drops them with the port)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _await_ack(self, seq: int, group: int) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT
        while True:
            data = self._receive(max(deadline - time.monotonic(), 0))
            if data is None:
                raise ListenError(f"NFLOG group {group}: the kernel did not answer the bind "
                                  f"within {ACK_TIMEOUT:g} s")
            for kind, got, payload in netlink_messages(data):
                if kind == MSG_PACKET:
                    drop = parse_message(payload, time.time())
                    if drop is not None:
                        self._pending.append(drop)
                elif kind == NLMSG_ERROR and got == seq and len(payload) >= 4:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise ListenError(bind_problem(group, code))
                    return

    def _receive(self, timeout: float) -> bytes | None:
        """One datagram, or None when nothing came within ``timeout`` seconds."""
        sock = self._sock
        if sock is None:
            raise ListenError("the NFLOG socket is closed")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(max(0, int(min(timeout, 86400.0) * 1000))):
            return None
        try:
            return sock.recv(RECV_SIZE, _socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped messages; read on
                self.lost += 1
                return b""
            raise ListenError(f"reading NFLOG: {exc.strerror or exc}") from exc

    def read(self, timeout: float) -> list[Drop]:
        """The drops that arrived within ``timeout`` seconds (at most one datagram's)."""
        if self._pending:
            pending, self._pending = self._pending, []
            return pending
        data = self._receive(timeout)
        return parse_datagram(data) if data else []


def bind_problem(group: int, code: int) -> str:
    """What to do when binding ``group`` failed with errno ``code``."""
    if code == errno.EPERM:  # another socket has the group, or no CAP_NET_ADMIN
        port = bound_groups().get(group)
        if port is not None:
            return (f"NFLOG group {group} is already read by another listener (netlink "
                    f"port {port}: another `statekit drops`, ulogd, a tcpdump on "
                    f"nflog:{group}?): stop it, or give --group to read another group")
        return (f"reading NFLOG group {group} needs root (CAP_NET_ADMIN in this network "
                "namespace): run statekit drops as root")
    return f"cannot bind NFLOG group {group}: {os.strerror(code)}"
