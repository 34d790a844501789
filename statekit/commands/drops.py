"""``statekit drops``: the lockdown's drops, live from NFLOG, one line each.

Each line says when, the NFLOG prefix, who sent it (uid and gid of the sending socket),
what (protocol, destination, port or ICMP type), the allowlisted name the address was
pinned for, if any, and what to do (:func:`explain`). ``--format json`` prints the same
as one object per line.

Where it comes from:

- the groups: ``--group``, else every NFLOG rule of the loaded states (their
  ``nflog_group``; iptables' default is group 0);
- the names: the live filter tables (``iptables-save`` and ``ip6tables-save`` through the
  runner, so only trusted tool paths), read again at most every :data:`VIEW_TTL` seconds
  while drops come; the owner tags of their ACCEPT rules name the ``destination_host``
  each address was resolved for (:mod:`statekit.netfilter.explain`), and the states'
  own ``destination_host`` lists tell a name from a comment;
- the addresses that left a name: :func:`read_history` (the pin history);
- the local resolver: the ``bind`` addresses of the states' ``coredns_zone`` blocks.

Exit codes: 0 when ``--count`` or ``--timeout`` ended it, or Ctrl-C; 1 when the group
cannot be read (not root, or another listener has it: one line says what to do); 3 for
bad input (the state files, ``--root``, no NFLOG rule in the states and no ``--group``).

Not on the converge's path: :mod:`statekit.commands.subcommands` imports this module only for
``drops``.
"""

from __future__ import annotations

import sys
import time

from statekit.contract import EXIT_OK
from statekit.errors import ApplyError, StateError, StatekitError
from statekit.host.host import Host
from statekit.masking import Masker
from statekit.netfilter import nflog, save
from statekit.netfilter.explain import Pin, View
from statekit.program import Program
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Any

FORMAT_VERSION = 1
VIEW_TTL = 5.0  # seconds a read of the tables (and the history) is used for
DNS_PORT = 53
FAMILIES = ("ipv4", "ipv6")
_ICMP_TYPES = {
    4: {0: "echo-reply", 3: "destination-unreachable", 5: "redirect", 8: "echo-request",
        11: "time-exceeded"},
    6: {1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
        128: "echo-request", 129: "echo-reply", 133: "router-solicitation",
        134: "router-advertisement", 135: "neighbor-solicitation",
        136: "neighbor-advertisement"}}


def read_history(root: str) -> Mapping[str, tuple[str, float]]:
    """The pin history under ``root``: each address that was pinned for a name and left
    it (its grace is over, no rule holds it), as ``address -> (name, left_at)``, with
    ``left_at`` in seconds since the epoch (any spelling of the address; entries that are
    not a (str, number) pair are skipped).

    The store is the last converge's record (:mod:`statekit.report.last_run`,
    ``<root>/run/statekit/last-run.json``: read-only, bounded, no symlink followed), read
    at most every :data:`VIEW_TTL` seconds while drops come. A missing or damaged record
    is no history.
    """
    from statekit.host.files import FileSystem
    from statekit.report import last_run

    record = last_run.read(FileSystem(root)) or {}
    out: dict[str, tuple[str, float]] = {}
    for addr, entry in (record.get("history") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) \
                and isinstance(entry.get("left"), int | float):
            out[str(addr)] = (entry["name"], float(entry["left"]))
    return out


class Setup(Record):
    """What the loaded states tell ``drops``."""

    groups: tuple[int, ...] = ()
    hosts: Mapping[str, frozenset[str]] = {}
    resolvers: tuple[str, ...] = ()  # where DNS must go: the coredns_zone binds


class Shown(Record):
    """One drop, explained."""

    drop: nflog.Drop
    pins: tuple[Pin, ...] = ()
    reason: str = "unlisted"
    hint: str = ""


def setup(program: Program | None) -> Setup:
    """The NFLOG groups, ``destination_host`` names and resolver addresses of the states."""
    if program is None:
        return Setup()
    groups: list[int] = []
    hosts: dict[str, frozenset[str]] = {}
    resolvers: list[str] = []
    for state in program.states:
        spec = state.spec
        if not state.enabled or spec is None or state.ensure != "present":
            continue
        if state.type == "iptables_rule" and spec.template is not None:
            hosts[state.id] = frozenset(spec.hosts)
            if spec.template.target.jump == "NFLOG":
                groups.append(spec.template.target.nflog_group or 0)
        elif state.type == "coredns_zone":
            resolvers += spec.bind
    return Setup(tuple(dict.fromkeys(groups)), hosts, tuple(dict.fromkeys(resolvers)))


def run(args: argparse.Namespace, program: Program | None, masker: Masker,
        history: Callable[[str], Mapping[str, tuple[str, float]]] | None = None) -> int:
    """Follow the drops until ``--count``, ``--timeout`` or Ctrl-C (``history``: the
    pin history's reader, :func:`read_history` by default)."""
    found = setup(program)
    groups = (args.group,) if args.group is not None else found.groups
    if not groups:
        raise StateError("the states have no NFLOG rule (jump: NFLOG): give --group N, "
                         "the NFLOG group to read")
    emit = _json_line if args.format == "json" else _text_line
    explainer = Explainer(Host(root=args.root), found, history or read_history)
    listener = nflog.Listener(groups)
    try:
        listener.open()
        sys.stderr.write(f"statekit: reading NFLOG group {', '.join(map(str, groups))} "
                         "(Ctrl-C to stop)\n")
        sys.stderr.flush()
        _follow(listener, explainer, args, emit, masker)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `statekit drops | head -3`: the reader has gone
        _quiet_stdout()
    finally:
        listener.close()
    if listener.lost:
        sys.stderr.write(f"statekit: the kernel dropped {listener.lost} batch(es) of "
                         "messages: this reader was too slow\n")
    return EXIT_OK


def _follow(listener: nflog.Listener, explainer: Explainer, args: argparse.Namespace,
            emit: Callable[[Shown, Masker], str], masker: Masker) -> None:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    shown = 0
    while args.count is None or shown < args.count:
        wait = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
        if wait <= 0:
            return
        for drop in listener.read(wait):
            if kernel_signalling(drop):
                continue
            sys.stdout.write(emit(explainer.explain(drop), masker) + "\n")
            sys.stdout.flush()
            shown += 1
            if shown == args.count:
                return


def kernel_signalling(drop: nflog.Drop) -> bool:
    """The kernel's own IPv6 link-local signalling, which the IPv6 lockdown drops and
    logs: ICMPv6 (MLD reports, router solicitations) from no process (no uid) to a
    link-local multicast group (ff02::/16). Not a connection anyone made: not shown."""
    packet = drop.packet
    return (drop.uid is None and packet.version == 6 and packet.protocol == 58
            and packet.destination.lower().startswith("ff02:"))


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail too."""
    import os

    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


class Explainer:
    """Drops to :class:`Shown`: the live tables and the history, read again when stale."""

    def __init__(self, host: Host, found: Setup,
                 history: Callable[[str], Mapping[str, tuple[str, float]]]) -> None:
        self.host, self.found, self.history = host, found, history
        self.view = View(())
        self.read_at: float | None = None
        self.warned: set[str] = set()

    def current(self) -> View:
        now = time.monotonic()
        if self.read_at is None or now - self.read_at > VIEW_TTL:
            self.view = View(self._lines(), self.found.hosts, self._history())
            self.read_at = now
        return self.view

    def _history(self) -> Mapping[str, tuple[str, float]]:
        try:
            return self.history(self.host.root)
        except (OSError, ValueError, StatekitError) as exc:
            self._warn("history", f"cannot read the pin history ({exc}): addresses "
                       "that left their name are not named")
            return {}

    def _warn(self, kind: str, text: str) -> None:
        """Say ``text`` on stderr, once per ``kind`` (the tables are read again often)."""
        if kind not in self.warned:
            self.warned.add(kind)
            sys.stderr.write(f"statekit: {text}\n")

    def _lines(self) -> list[str]:
        lines: list[str] = []
        for family in FAMILIES:
            save.forget(self.host, "filter", family)
            try:
                table = save.load(self.host, "filter", family)
            except ApplyError as exc:
                if family == "ipv4":  # IPv6 may be absent: no word about it
                    self._warn("tables", f"cannot read the firewall ({exc}): names are not "
                               "shown")
                continue
            lines += [line for chain in table.chains.values() for line in chain.rules]
        return lines

    def explain(self, drop: nflog.Drop) -> Shown:
        view = self.current()
        pins = tuple(view.pins(drop.packet.destination)) if drop.packet.destination else ()
        reason, hint = explain(drop.packet, pins, view, self.found.resolvers)
        return Shown(drop, pins, reason, hint)


class Case(Record):
    """A dropped packet and what is known about its destination."""

    packet: nflog.Packet
    pins: tuple[Pin, ...]
    view: View
    resolvers: tuple[str, ...]

    @property
    def who(self) -> str:
        return self.pins[0].name if self.pins else self.packet.destination


def explain(packet: nflog.Packet, pins: tuple[Pin, ...], view: View,
            resolvers: tuple[str, ...]) -> tuple[str, str]:
    """(reason, what to do) for a dropped packet: the first of :data:`HINTS` that
    applies."""
    case = Case(packet, pins, view, resolvers)
    for hint in HINTS:
        found = hint(case)
        if found is not None:
            return found
    return "unlisted", ("on no list: to allow it, add its host name to `domains` "
                        "(and reach it by name)")


def _unreadable(case: Case) -> tuple[str, str] | None:
    if case.packet.destination:
        return None
    return "unknown", "the packet's header could not be read"


def _ipv6(case: Case) -> tuple[str, str] | None:
    if case.packet.version != 6:
        return None
    return "ipv6", ("IPv6 egress is locked down: connect over IPv4 (allowlisted names get "
                    "no AAAA answer)")


def _dns(case: Case) -> tuple[str, str] | None:
    packet = case.packet
    if packet.dport != DNS_PORT or packet.protocol not in (6, 17) or \
            packet.destination in case.resolvers:
        return None
    where = " or ".join(case.resolvers) or "the local resolver"
    return "dns", f"DNS must go through {where}: it answers the allowlisted names only"


def _blocked(case: Case) -> tuple[str, str] | None:
    blocked = case.view.blocked(case.packet.destination)
    if blocked is None:
        return None
    return "blocked_range", (f"blocked range {blocked.network} ({_by(blocked.state)}; "
                             "`blocked_ranges` in the shipped states): private and "
                             "metadata space stays closed")


def _open(case: Case) -> tuple[str, str] | None:
    openings = case.view.openings(case.packet.destination)
    if not openings:
        return None
    now = [o for o in openings if o.unconditional]
    if now:
        return "accepted_now", (f"{case.who} is accepted now ({_by(now[0].state)}): the "
                                "firewall changed after this packet")
    what = ", ".join(dict.fromkeys(o.describe() for o in openings))
    states = ", ".join(dict.fromkeys(_by(o.state) for o in openings))
    return "other_port", f"{case.who} is open for {what} only ({states})"


def _left(case: Case) -> tuple[str, str] | None:
    left = case.pins[0].left if case.pins else None
    if left is None:
        return None
    return "left", (f"{case.who} stopped resolving to {case.packet.destination} at "
                    f"{_clock(left)}: the client holds a stale address and must look "
                    f"{case.who} up again (or raise `pin_grace`)")


#: The hints, in the order they are tried (the first that applies is shown).
HINTS: tuple[Callable[[Case], tuple[str, str] | None], ...] = (
    _unreadable, _ipv6, _dns, _blocked, _open, _left)


def _by(state: str | None) -> str:
    return f"state {state}" if state else "a rule statekit does not own"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _iso(epoch: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{stamp}.{int(epoch % 1 * 1000):03d}Z"


def target(packet: nflog.Packet) -> str:
    """``198.18.0.40:443``, ``[2001:db8::1]:443``, ``198.18.0.40 echo-request``."""
    dst = packet.destination or "?"
    if packet.dport is not None:
        return f"[{dst}]:{packet.dport}" if ":" in dst else f"{dst}:{packet.dport}"
    if packet.icmp_type is not None:
        names = _ICMP_TYPES.get(packet.version or 0, {})
        return f"{dst} {names.get(packet.icmp_type, f'type {packet.icmp_type}')}"
    return dst


def _names(pins: tuple[Pin, ...]) -> str:
    shown = []
    for pin in pins:
        if pin.left is not None:
            shown.append(f"{pin.name} (left {_clock(pin.left)})")
        elif pin.gone is not None:
            shown.append(f"{pin.name} (in grace since {_clock(pin.gone)})")
        else:
            shown.append(pin.name)
    return ", ".join(shown)


def _id(value: int | None) -> str:
    return "?" if value is None else str(value)


def _text_line(shown: Shown, masker: Masker) -> str:
    drop, packet = shown.drop, shown.drop.packet
    words = [_clock(drop.time), drop.prefix or "-", f"uid={_id(drop.uid)}",
             f"gid={_id(drop.gid)}", packet.protocol_name, target(packet)]
    if shown.pins:
        words.append(_names(shown.pins))
    return masker(" ".join(words) + " -- " + shown.hint)


def as_dict(shown: Shown) -> dict[str, Any]:
    """One drop as the JSON line prints it."""
    drop, packet = shown.drop, shown.drop.packet
    return {
        "format_version": FORMAT_VERSION, "time": _iso(drop.time), "group": drop.group,
        "prefix": drop.prefix, "uid": drop.uid, "gid": drop.gid,
        "family": f"ipv{packet.version}" if packet.version else None,
        "protocol": packet.protocol_name, "source": packet.source or None,
        "destination": packet.destination or None, "sport": packet.sport,
        "dport": packet.dport, "icmp_type": packet.icmp_type, "icmp_code": packet.icmp_code,
        "names": [{"name": p.name, "status": p.status, "state": p.state or None,
                   "since": _since(p)} for p in shown.pins],
        "reason": shown.reason, "hint": shown.hint}


def _since(pin: Pin) -> str | None:
    """When a pin went into grace or left its name (None while it is current)."""
    since = pin.left if pin.left is not None else pin.gone
    return None if since is None else _iso(since)


def _json_line(shown: Shown, masker: Masker) -> str:
    import json

    from statekit.report.report import masked_tree

    return json.dumps(masked_tree(as_dict(shown), masker))
