"""Canonical rendering: one rule exactly as ``iptables-save`` prints it.

The order of options, the spelling of protocols (``tcp``, ``ipv6-icmp``), addresses
(``/32``, ``/128``), port ranges (``a:b``), TCP flags (``--syn`` is printed as
``--tcp-flags FIN,SYN,RST,ACK SYN``), ICMPv6 types (a name is printed as its number),
the owner match, conntrack states and quoting were all checked against the real
iptables-save and ip6tables-save (see tests/test_netfilter_rule.py), so desired and
current rules compare as plain strings.
"""

from __future__ import annotations

from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: Conntrack states in the order iptables-save prints them.
CTSTATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REJECT_WITH = {"ipv4": "icmp-port-unreachable", "ipv6": "icmp6-port-unreachable"}
#: ``--syn`` as iptables-save prints it: SYN set, FIN, RST and ACK clear.
SYN_FLAGS = ("--tcp-flags", "FIN,SYN,RST,ACK", "SYN")


def save_string(value: str) -> str:
    """A string argument as iptables-save prints it (xtables_save_string)."""
    if value and set(value) <= _NO_QUOTE:
        return value
    if "\"" not in value and "\\" not in value and "'" not in value:
        return f'"{value}"'
    escaped = "".join("\\" + c if c in "\"\\'" else c for c in value)
    return f'"{escaped}"'


def protocol_name(protocol: str, family: str) -> str:
    """``icmp`` means ICMPv6 in an ipv6 rule, printed as ``ipv6-icmp``."""
    return "ipv6-icmp" if protocol == "icmp" and family == "ipv6" else protocol


class Target(Record):
    """``-j`` and its options."""

    jump: str
    log_prefix: str | None = None
    nflog_group: int | None = None

    def render(self, family: str) -> list[str]:
        out = ["-j", self.jump]
        if self.jump == "REJECT":
            out += ["--reject-with", _REJECT_WITH[family]]
        prefix_opt = {"LOG": "--log-prefix", "NFLOG": "--nflog-prefix"}.get(self.jump)
        if prefix_opt and self.log_prefix:
            out += [prefix_opt, save_string(self.log_prefix)]
        if self.jump == "NFLOG" and self.nflog_group:
            out += ["--nflog-group", str(self.nflog_group)]
        return out


class Rule(Record):
    """One concrete rule of one family (addresses already expanded); with several ICMPv6
    types, one rule per type (:meth:`lines`)."""

    chain: str
    family: str
    tag: str
    target: Target
    protocol: str = "all"
    source: str | None = None
    destination: str | None = None
    in_interface: str | None = None
    out_interface: str | None = None
    sport: str | None = None
    dport: str | None = None
    ctstate: tuple[str, ...] = ()
    syn: bool | None = None  # True: SYN-only packets (--syn); False: all others (! --syn)
    icmpv6_types: tuple[str, ...] = ()  # type numbers: one rule each
    uid_owner: int | None = None

    @property
    def line(self) -> str:
        """``-A CHAIN ...`` as iptables-save prints this rule (its first ICMPv6 type)."""
        return self._line(self.source, self.destination, self._tails()[0])

    def lines(self, addresses: Iterable[tuple[str | None, str | None]]) -> list[str]:
        """:attr:`line` with each (source, destination) in turn, and each ICMPv6 type:
        what follows the addresses is rendered once (a state may stand for thousands of
        rules)."""
        tails = self._tails()
        return [self._line(source, destination, tail)
                for source, destination in addresses for tail in tails]

    def _line(self, source: str | None, destination: str | None, tail: str) -> str:
        head = f"-A {self.chain}"
        if source:
            head += f" -s {source}"
        if destination:
            head += f" -d {destination}"
        return f"{head} {tail}"

    def _tails(self) -> list[str]:
        """Everything after the addresses (the other matches, the tag and the target),
        once per ICMPv6 type."""
        head, rest = " ".join(self._head()), " ".join([*self._rest(),
                                                       *self.target.render(self.family)])
        if not self.icmpv6_types:
            return [f"{head} {rest}".lstrip()]
        return [f"{head} -m icmp6 --icmpv6-type {t} {rest}" for t in self.icmpv6_types]

    def _head(self) -> list[str]:
        """Interfaces, protocol, ports and TCP flags (the tcp/udp match)."""
        out: list[str] = []
        for opt, value in (("-i", self.in_interface), ("-o", self.out_interface)):
            if value:
                out += [opt, value]
        if self.protocol != "all":
            out += ["-p", protocol_name(self.protocol, self.family)]
        if self.sport or self.dport or self.syn is not None:
            out += ["-m", self.protocol]
            out += ["--sport", self.sport] if self.sport else []
            out += ["--dport", self.dport] if self.dport else []
            if self.syn is not None:
                out += [*([] if self.syn else ["!"]), *SYN_FLAGS]
        return out

    def _rest(self) -> list[str]:
        """The owner and conntrack matches and the tag."""
        out: list[str] = []
        if self.uid_owner is not None:
            out += ["-m", "owner", "--uid-owner", str(self.uid_owner)]
        if self.ctstate:
            ordered = [s for s in CTSTATES if s in self.ctstate]
            out += ["-m", "conntrack", "--ctstate", ",".join(ordered)]
        return [*out, "-m", "comment", "--comment", save_string(self.tag)]
