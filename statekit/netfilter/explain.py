"""What the live filter tables say about one destination address (pure: lines in).

For ``statekit drops``: which allowlisted name an address is pinned for, which ACCEPT
rules hold it only for another protocol or port, and which DROP rule's range holds it.

A ``destination_host`` rule carries its name in its owner tag (read with
:mod:`statekit.netfilter.table`'s ``owner`` and ``split_gone``, which say its form):
``statekit:<id> [<comment>] <name>``, and ``gone=<epoch>`` after it while the pin is in
its grace period. The last word (before ``gone=``) is the name when it is one of the
owning state's ``destination_host`` names (``hosts``, from the loaded states), or, for a
state the caller does not know, when it is a DNS name with a dot.

An address that left a name (its grace over, no rule any more) is known only to the pin
history: ``history`` maps the address to ``(name, left_at)`` (see
:func:`statekit.commands.drops.read_history`).
"""

from __future__ import annotations

import _socket

from statekit.netfilter.table import owner, split_gone
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

_ROUTING = frozenset({"-d", "-p", "-m", "--dport", "--comment"})
_PLAIN_MODULES = frozenset({"comment", "tcp", "udp", "sctp", "udplite"})
_FAMILIES = {4: _socket.AF_INET, 6: _socket.AF_INET6}
MAX_LINE = 8192  # longer rule lines are skipped (iptables allows 255 characters a tag)


class Pin(Record):
    """A name an address was resolved for."""

    name: str
    state: str = ""  # the owning state ("" when only the history knows it)
    gone: float | None = None  # in grace since (the tag's ``gone=``): still accepted
    left: float | None = None  # left the name's answers (history): no longer accepted

    @property
    def status(self) -> str:
        return "left" if self.left is not None else "grace" if self.gone is not None \
            else "pinned"


class Opening(Record):
    """An ACCEPT rule whose destination holds the address."""

    state: str | None
    protocol: str = "all"
    dport: str | None = None
    conditions: bool = False  # more matches: owner, conntrack, interface, source, ...

    @property
    def unconditional(self) -> bool:
        return self.protocol == "all" and self.dport is None and not self.conditions

    def describe(self) -> str:
        """``tcp/443``, ``udp``, ``all traffic``; `` under conditions`` when more matches."""
        what = "all traffic" if self.protocol == "all" else self.protocol
        if self.dport is not None:
            what += f"/{self.dport}"
        return what + (" under conditions" if self.conditions else "")


class Blocked(Record):
    """A DROP or REJECT rule whose destination range holds the address."""

    network: str
    state: str | None


class Line(Record):
    """The parts of one ``-A`` line this module reads."""

    destination: str | None
    protocol: str
    dport: str | None
    target: str
    comment: str
    conditions: bool


def split_save(line: str) -> list[str]:
    """The words of an iptables-save line: ``"..."`` quoted, with backslash escapes
    inside (as ``xtables_save_string`` writes them)."""
    words: list[str] = []
    word: list[str] = []
    quoted = escaped = started = False
    for char in line[:MAX_LINE]:
        if escaped:
            word.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted, started = not quoted, True
        elif char == " " and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
    if started:
        words.append("".join(word))
    return words


def read_line(line: str) -> Line | None:
    """The destination, protocol, port, target and comment of an ``-A`` line; any
    other match (or a negation) is a condition. None for anything else."""
    words = split_save(line)
    if len(words) < 2 or words[0] != "-A":
        return None
    values: dict[str, str] = {}
    conditions = False
    index = 2
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else ""
        if word == "-j":  # what follows are the target's options
            values["-j"] = value
            break
        if word == "!":  # a negated match: a condition, never the destination
            conditions = True
            index += 3
            continue
        if word in _ROUTING and not (word == "-m" and value not in _PLAIN_MODULES):
            values.setdefault(word, value)
            index += 2
            continue
        conditions = True  # "!", -s, -o, -m owner, --uid-owner 0, ...
        index += 1
    return Line(destination=values.get("-d"), protocol=values.get("-p", "all"),
                dport=values.get("--dport"), target=values.get("-j", ""),
                comment=values.get("--comment", ""), conditions=conditions)


def network(text: str) -> tuple[int, int, int] | None:
    """(version, first address as a number, prefix length) of ``a.b.c.d[/n]`` or an IPv6
    address; None if it is neither."""
    address, _, length = text.partition("/")
    found = address_number(address)
    if found is None:
        return None
    version, value = found
    bits = 32 if version == 4 else 128
    if not length:
        return version, value, bits
    if not length.isdigit() or int(length) > bits:
        return None
    prefix = int(length)
    return version, value >> (bits - prefix) << (bits - prefix), prefix


def address_number(text: str) -> tuple[int, int] | None:
    """(version, number) of an IP address in any spelling; None if it is none."""
    for version, family in _FAMILIES.items():
        try:
            return version, int.from_bytes(_socket.inet_pton(family, text), "big")
        except (OSError, ValueError):
            continue
    return None


def canonical(text: str) -> str | None:
    """An address as ``inet_ntop`` spells it (``2001:db8::1``), None if it is none."""
    found = address_number(text)
    if found is None:
        return None
    version, value = found
    return _socket.inet_ntop(_FAMILIES[version], value.to_bytes(4 if version == 4 else 16,
                                                                 "big"))


def holds(net: tuple[int, int, int], address: tuple[int, int]) -> bool:
    version, first, prefix = net
    bits = 32 if version == 4 else 128
    return version == address[0] and address[1] >> (bits - prefix) == first >> (bits - prefix)


def tag_pin(line: str, comment: str, hosts: Mapping[str, Collection[str]]) -> Pin | None:
    """The pin an owner tag names (see the module docstring), or None."""
    state = owner(line)
    tag, gone = split_gone(comment)
    words = tag.split(" ")
    if state is None or len(words) < 2:
        return None
    name = words[-1].lower()
    known = hosts.get(state)
    if not (name in known if known is not None else _dns_name(name)):
        return None
    return Pin(name, state, None if gone is None else float(gone))


def _dns_name(name: str) -> bool:
    from statekit import dnsname

    try:
        norm = dnsname.normalise(name)
    except ValueError:
        return False
    return "." in norm and not norm.rsplit(".", 1)[-1].isdigit()


class View:
    """The live filter tables' lines (both families), read for addresses; and the pin
    history for addresses that no rule holds any more."""

    def __init__(self, lines: Iterable[str],
                 hosts: Mapping[str, Collection[str]] | None = None,
                 history: Mapping[str, tuple[str, float]] | None = None) -> None:
        self._pins: dict[str, list[Pin]] = {}
        self._rules: list[tuple[tuple[int, int, int], Line, str | None]] = []
        for text in lines:
            self._add(text, hosts or {})
        self._history = _history(history or {})

    def _add(self, text: str, hosts: Mapping[str, Collection[str]]) -> None:
        line = read_line(text)
        if line is None or line.destination is None:
            return
        net = network(line.destination)
        if net is None:
            return
        self._rules.append((net, line, owner(text)))
        full = net[2] == (32 if net[0] == 4 else 128)
        pin = tag_pin(text, line.comment, hosts) if line.target == "ACCEPT" and full \
            else None
        address = canonical(line.destination.partition("/")[0])
        if pin is not None and address is not None:
            known = self._pins.setdefault(address, [])
            if pin not in known:
                known.append(pin)

    def pins(self, address: str) -> list[Pin]:
        """The names ``address`` is pinned for: current pins, then those in grace, then
        (only when no rule holds it) the history's."""
        key = canonical(address) or address
        live = sorted(self._pins.get(key, []), key=lambda p: (p.gone is not None, p.name))
        if live:
            return live
        left = self._history.get(key)
        return [left] if left is not None else []

    def openings(self, address: str) -> list[Opening]:
        """The ACCEPT rules whose destination holds ``address``, in table order."""
        found = address_number(address)
        return [Opening(state, line.protocol, line.dport, line.conditions)
                for net, line, state in self._rules
                if found is not None and line.target == "ACCEPT" and holds(net, found)]

    def blocked(self, address: str) -> Blocked | None:
        """The first DROP/REJECT rule for all traffic to a range holding ``address``."""
        found = address_number(address)
        for net, line, state in self._rules:
            if found is not None and line.target in ("DROP", "REJECT") and holds(net, found) \
                    and line.protocol == "all" and not line.dport and not line.conditions:
                return Blocked(line.destination or "", state)
        return None


def _history(history: Mapping[str, tuple[str, float]]) -> dict[str, Pin]:
    """The history's usable entries, by canonical address (others are skipped)."""
    out = {}
    for address, entry in history.items():
        key = canonical(str(address))
        if key is None or not isinstance(entry, tuple) or len(entry) != 2:
            continue
        name, left = entry
        if isinstance(name, str) and isinstance(left, int | float) and \
                not isinstance(left, bool) and 0 <= left < 1e12:
            out[key] = Pin(name, "", None, float(left))
    return out
