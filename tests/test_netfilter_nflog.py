"""The NFLOG reader: the parser on built, captured, truncated and hostile messages (it
must never raise), and the socket against the real kernel in a private namespace."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekit.netfilter import nflog
from statekit.netfilter.nflog import Drop, Packet, parse_datagram, parse_packet
from tests.conftest import REPO

# --- building messages as the kernel does ------------------------------------------------


def attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def message(attrs: bytes, *, group: int = 100, family: int = 2,
            kind: int = nflog.MSG_PACKET, seq: int = 0) -> bytes:
    body = struct.pack("!BBH", family, 0, group) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def ipv4(proto: int, transport: bytes, *, src: str = "198.18.0.2",
         dst: str = "198.18.0.40", frag: int = 0, ihl: int = 5) -> bytes:
    import socket

    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(transport), 1, frag, 64,
                         proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return header + b"\0" * (ihl * 4 - 20) + transport


def ipv6(next_header: int, rest: bytes, *, src: str = "2001:db8::2",
         dst: str = "2001:db8::40") -> bytes:
    import socket

    return struct.pack("!IHBB16s16s", 0x60000000, len(rest), next_header, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + rest


def tcp(sport: int = 40000, dport: int = 443) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 64240, 0, 0)


def udp(sport: int = 40000, dport: int = 53) -> bytes:
    return struct.pack("!HHHH", sport, dport, 9, 0) + b"x"


def logged(payload: bytes, *, prefix: bytes = b"CODETAINER_DROP\0", uid: int | None = 1000,
           gid: int | None = 1000, hw: int = 0x0800, family: int = 2,
           stamp: tuple[int, int] | None = None) -> bytes:
    attrs = attr(nflog.NFULA_PACKET_HDR, struct.pack("!HBB", hw, 3, 0))
    attrs += attr(nflog.NFULA_PREFIX, prefix)
    if stamp is not None:
        attrs += attr(nflog.NFULA_TIMESTAMP, struct.pack("!QQ", *stamp))
    if uid is not None:
        attrs += attr(nflog.NFULA_UID, struct.pack("!I", uid))
    if gid is not None:
        attrs += attr(nflog.NFULA_GID, struct.pack("!I", gid))
    attrs += attr(nflog.NFULA_PAYLOAD, payload)
    return message(attrs, family=family)


# A datagram from Linux 6.18 (little-endian): group 7, prefix TESTP, uid and gid 1000, a
# UDP datagram 127.0.0.1:43738 -> 127.0.0.1:9 (no timestamp: a locally made packet).
CAPTURED = bytes.fromhex(
    "640000000004000000000000000000000200000708000100080003000a000a005445535450000000"
    "080005000000000108000b00000003e808000e00000003e8210009004500001d07db400040113"
    "4f37f0000017f000001aada00090009fe1c78000000")


def test_a_datagram_captured_from_the_kernel_reads_whole() -> None:
    [drop] = parse_datagram(CAPTURED, received=12.5)
    assert drop == Drop(time=12.5, group=7, prefix="TESTP", uid=1000, gid=1000,
                        hw_protocol=0x0800, packet=Packet(
                            version=4, protocol=17, source="127.0.0.1",
                            destination="127.0.0.1", sport=43738, dport=9))


def test_tcp_udp_and_icmp_over_ipv4() -> None:
    datagram = (logged(ipv4(6, tcp())) + logged(ipv4(17, udp(dport=9999)), uid=None, gid=None)
                + logged(ipv4(1, bytes([8, 0, 0, 0]), dst="169.254.169.254"), uid=0, gid=0))
    first, second, third = parse_datagram(datagram, received=1.0)
    assert (first.uid, first.gid, first.prefix) == (1000, 1000, "CODETAINER_DROP")
    assert first.packet == Packet(version=4, protocol=6, source="198.18.0.2",
                                  destination="198.18.0.40", sport=40000, dport=443)
    assert first.packet.protocol_name == "tcp"
    assert (second.uid, second.packet.protocol_name, second.packet.dport) == (None, "udp", 9999)
    assert third.packet.protocol_name == "icmp"
    assert (third.packet.destination, third.packet.icmp_type, third.uid) == (
        "169.254.169.254", 8, 0)


def test_the_kernel_timestamp_wins_over_the_time_of_reading() -> None:
    [drop] = parse_datagram(logged(ipv4(6, tcp()), stamp=(1733472000, 250000)), received=5.0)
    assert drop.time == 1733472000.25
    [drop] = parse_datagram(logged(ipv4(6, tcp()), stamp=(0, 0)), received=5.0)
    assert drop.time == 5.0  # an empty stamp is no stamp


def test_ipv4_options_fragments_and_a_bad_header_length() -> None:
    assert parse_packet(ipv4(6, tcp(dport=22), ihl=7)).dport == 22  # options skipped
    later = parse_packet(ipv4(6, tcp(), frag=185))  # a later fragment: no ports in it
    assert (later.protocol, later.dport) == (6, None)
    bad = parse_packet(ipv4(6, tcp(), ihl=2))
    assert (bad.destination, bad.dport) == ("198.18.0.40", None)


def test_ipv6_with_extension_headers() -> None:
    plain = parse_packet(ipv6(6, tcp(dport=443)))
    assert plain == Packet(version=6, protocol=6, source="2001:db8::2",
                           destination="2001:db8::40", sport=40000, dport=443)
    hop = bytes([43, 0, 0, 0, 0, 0, 0, 0])  # hop-by-hop (8 bytes), next: routing
    routing = bytes([44, 1]) + b"\0" * 14  # routing (16 bytes), next: fragment
    fragment = bytes([17, 0, 0, 0, 0, 0, 0, 1])  # first fragment, next: UDP
    found = parse_packet(ipv6(0, hop + routing + fragment + udp(dport=53)))
    assert (found.protocol_name, found.dport) == ("udp", 53)
    ah = bytes([58, 1, 0, 0]) + b"\0" * 8  # AH: (1 + 2) * 4 = 12 bytes, next: ICMPv6
    icmp = parse_packet(ipv6(51, ah + bytes([128, 0, 0, 0])))
    assert (icmp.protocol_name, icmp.icmp_type) == ("icmpv6", 128)
    later = parse_packet(ipv6(44, bytes([6, 0, 0, 8, 0, 0, 0, 1]) + tcp()))
    assert (later.protocol, later.dport) == (6, None)


def test_an_ipv6_extension_chain_is_followed_only_so_deep() -> None:
    deep = bytes([60, 0]) + b"\0" * 6  # destination options pointing at another one
    packet = parse_packet(ipv6(60, deep * 50 + tcp()))
    assert (packet.destination, packet.protocol, packet.dport) == ("2001:db8::40", None, None)
    cut = parse_packet(ipv6(0, bytes([6, 200])))  # says 1608 bytes, has 2
    assert (cut.protocol, cut.sport) == (None, None)


def test_the_ip_version_comes_from_the_packet_or_else_the_message() -> None:
    [drop] = parse_datagram(logged(ipv6(17, udp()), hw=0x86DD, family=10), received=0)
    assert drop.packet.version == 6
    [empty] = parse_datagram(logged(b"", hw=0x86DD, family=10), received=0)
    assert empty.packet == Packet(6)
    assert parse_packet(b"\x50" + b"\0" * 40) == Packet()  # version 5: unknown


def test_control_characters_in_a_prefix_are_shown_escaped() -> None:
    [drop] = parse_datagram(logged(ipv4(6, tcp()), prefix=b"\x1b[31mRED\x07\0junk"), 0)
    assert drop.prefix == "\\x1b[31mRED\\x07"


def test_acks_errors_and_other_messages_are_skipped() -> None:
    error = struct.pack("=IHHII", 36, nflog.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", 0) + \
        b"\0" * 16
    done = struct.pack("=IHHII", 16, nflog.NLMSG_DONE, 0, 0, 0)
    datagram = error + logged(ipv4(6, tcp())) + done + message(b"", kind=nflog.MSG_CONFIG)
    assert [d.packet.dport for d in parse_datagram(datagram, 0)] == [443]


def test_the_config_message_binds_the_group_and_copies_the_headers() -> None:
    raw = nflog.config_message(100, 7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, seq) == (len(raw), nflog.MSG_CONFIG, 1 | 4, 7)
    assert raw[16:20] == bytes([0, 0, 0, 100])  # AF_UNSPEC, version 0, group 100 (BE)
    attrs = nflog.attributes(raw[16:], 4)
    assert attrs == {nflog.NFULA_CFG_CMD: bytes([nflog.CFG_CMD_BIND]),
                     nflog.NFULA_CFG_MODE: struct.pack("!IBB", nflog.COPY_RANGE, 2, 0)}


def test_bound_groups_and_what_to_do_when_a_bind_fails(tmp_path: Path) -> None:
    proc = tmp_path / "nfnetlink_log"
    proc.write_text("  100  23632     0 2   256    100  1\n    7   4242     0 2 65535   100  1\n"
                    "garbage\n")
    assert nflog.bound_groups(str(proc)) == {100: 23632, 7: 4242}
    assert nflog.bound_groups(str(tmp_path / "missing")) == {}
    assert "needs root" in nflog.bind_problem(5, 1)  # EPERM, the group is free
    assert "No such device" in nflog.bind_problem(5, 19)


# --- hostile input: never an exception, always bounded ------------------------------------

VALID = (logged(ipv4(6, tcp()), stamp=(1733472000, 1)) + logged(ipv6(0, bytes(
    [44, 0, 0, 0, 0, 0, 0, 0]) + bytes([6, 0, 0, 0, 0, 0, 0, 1]) + tcp()), hw=0x86DD,
    family=10) + logged(ipv4(17, udp())))


def survives(data: bytes) -> list[Drop]:
    drops = parse_datagram(data, received=0.0)
    assert len(drops) <= nflog.MAX_MESSAGES
    for drop in drops:
        assert isinstance(drop.prefix, str) and len(drop.prefix) <= 4 * nflog.MAX_PREFIX
        _ = drop.packet.protocol_name
    return drops


def test_every_truncation_of_a_valid_datagram() -> None:
    for end in range(len(VALID) + 1):
        survives(VALID[:end])
    assert len(survives(VALID)) == 3


def test_seeded_mutations_of_a_valid_datagram() -> None:
    rng = random.Random(21)
    for _ in range(20000):
        data = bytearray(VALID)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            data[at] = rng.choice((0, 1, 3, 4, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        survives(bytes(data))


def test_hostile_lengths() -> None:
    zero_attr = message(struct.pack("=HH", 0, nflog.NFULA_PREFIX) * 100)  # nla_len 0
    short_attr = message(struct.pack("=HH", 3, nflog.NFULA_PAYLOAD) + b"\0" * 8)
    huge_attr = message(struct.pack("=HH", 0xFFFF, nflog.NFULA_PAYLOAD) + b"\0" * 8)
    huge_msg = struct.pack("=IHHII", 0xFFFFFFFF, nflog.MSG_PACKET, 0, 0, 0) + b"\0" * 64
    zero_msg = struct.pack("=IHHII", 0, nflog.MSG_PACKET, 0, 0, 0) * 10
    for data in (zero_attr, short_attr, huge_attr, huge_msg, zero_msg, b"", b"\0" * 15):
        assert all(d.packet in (Packet(), Packet(4)) for d in survives(data))


def test_nested_and_repeated_attributes_stay_opaque_and_bounded() -> None:
    nested = attr(nflog.NFULA_PAYLOAD | 0x8000, attr(1, attr(2, b"\xff" * 8)))
    assert survives(message(nested * 3, family=0))[0].packet == Packet()
    many = message(attr(nflog.NFULA_UID, struct.pack("!I", 7)) * 100_000)
    [drop] = survives(many)
    assert drop.uid == 7  # the first wins; the walk stops after MAX_ATTRIBUTES
    messages = logged(ipv4(6, tcp())) * (nflog.MAX_MESSAGES + 50)
    assert len(survives(messages)) == nflog.MAX_MESSAGES


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    survives(data)
    parse_packet(data)
    parse_packet(data, 6)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(
    max_size=80)), max_size=12), st.binary(max_size=4))
def test_random_attribute_lists_never_raise(items: list[tuple[int, int, bytes]],
                                            head: bytes) -> None:
    """Attributes with any type and any claimed length, after any nfgenmsg header."""
    body = head + b"".join(struct.pack("=HH", length, kind) + value
                           for length, kind, value in items)
    survives(struct.pack("=IHHII", 16 + len(body), nflog.MSG_PACKET, 0, 0, 0) + body)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([4, 6]), st.integers(0, 255), st.binary(max_size=200))
def test_random_ip_packets_never_raise(version: int, proto: int, rest: bytes) -> None:
    data = ipv4(proto, rest) if version == 4 else ipv6(proto, rest)
    packet = parse_packet(data)
    assert packet.version == version and packet.destination


# --- the socket, against the kernel (a private network namespace) --------------------------

SEND = """\
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
if sys.argv[2] == "udp":
    socket.socket(family, socket.SOCK_DGRAM).sendto(b"x", (sys.argv[1], int(sys.argv[3])))
else:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(0.3)
    try:
        s.connect((sys.argv[1], int(sys.argv[3])))
    except OSError:
        pass
"""
READ = """\
import json, sys, time
from statekit.netfilter.nflog import Listener
with Listener((7,)) as listener:
    print("bound", flush=True)
    deadline, got = time.monotonic() + 10, []
    while len(got) < int(sys.argv[1]) and time.monotonic() < deadline:
        got += listener.read(0.5)
    for drop in got:
        print(json.dumps([*drop[:6], *drop.packet]), flush=True)
"""


def in_ns(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          text=True, timeout=60, check=False)


def as_user(netns: str, script: str, *args: str, uid: int = 1000, gid: int = 1000) -> None:
    proc = in_ns(netns, "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                 "/usr/bin/python3", "-I", "-c", script, *args)
    assert proc.returncode == 0, proc.stderr


def start_reader(netns: str, count: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", READ,
                             str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "bound", proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.mark.netns
def test_the_kernel_gives_uid_gid_prefix_and_headers_for_both_families(netns: str) -> None:
    for tool, rule in (("iptables", ["-p", "udp", "--dport", "9"]),
                       ("iptables", ["-p", "tcp", "--dport", "10"]),
                       ("ip6tables", ["-p", "udp", "--dport", "9"])):
        proc = in_ns(netns, tool, "-A", "OUTPUT", *rule, "-j", "NFLOG", "--nflog-group", "7",
                     "--nflog-prefix", f"P {tool}")
        assert proc.returncode == 0, proc.stderr
    reader = start_reader(netns, 3)
    as_user(netns, SEND, "127.0.0.1", "udp", "9")
    as_user(netns, SEND, "127.0.0.1", "tcp", "10", gid=1001)
    as_user(netns, SEND, "::1", "udp", "9", uid=1002, gid=1003)
    out, err = reader.communicate(timeout=30)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r[0] > time.time() - 60, *r[1:5], *r[6:10]) for r in rows] == [
        (True, 7, "P iptables", 1000, 1000, 4, 17, "127.0.0.1", "127.0.0.1"),
        (True, 7, "P iptables", 1000, 1001, 4, 6, "127.0.0.1", "127.0.0.1"),
        (True, 7, "P ip6tables", 1002, 1003, 6, 17, "::1", "::1")], err
    assert [r[11] for r in rows] == [9, 10, 9]  # the destination ports


@pytest.mark.netns
def test_a_second_listener_and_a_listener_without_cap_net_admin_are_refused(
        netns: str) -> None:
    reader = start_reader(netns, 1)
    try:
        probe = ("from statekit.netfilter.nflog import Listener, ListenError\n"
                 "try:\n    Listener((7,)).open()\nexcept ListenError as exc:\n"
                 "    print(exc)\n")
        second = in_ns(netns, sys.executable, "-c", probe)
        assert "NFLOG group 7 is already read by another listener (netlink port" in \
            second.stdout, second.stderr
        other = in_ns(netns, sys.executable, "-c", probe.replace("(7,)", "(8,)"))
        assert other.stdout == "", other.stdout  # another group is free
        unprivileged = in_ns(netns, "setpriv", "--reuid=1000", "--regid=1000",
                             "--clear-groups", sys.executable, "-c",
                             probe.replace("(7,)", "(9,)"))
        assert "reading NFLOG group 9 needs root" in unprivileged.stdout, unprivileged.stderr
    finally:
        reader.kill()
        reader.communicate()


def test_a_kernel_without_netlink_netfilter_is_a_listen_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import _socket
    import errno

    def no_netlink(*args: object) -> None:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(_socket, "socket", no_netlink)
    with pytest.raises(nflog.ListenError) as raised:
        nflog.Listener((100,)).open()
    assert str(raised.value) == ("cannot open a netlink socket for NFLOG: Address family "
                                 "not supported by protocol")
