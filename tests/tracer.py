"""A packet tracer over the fake host's tables (tests/fakehost.py), like kube-proxy's
``nftablesTracer`` (pkg/proxy/nftables/helpers_test.go): it runs one packet through a
chain's rules in order, as the kernel would, and says which rules it hit and the verdict.

It understands only the matches statekit writes, as ``iptables-save`` prints them:

- ``-s``/``-d`` with an address or CIDR, ``-o`` (``+`` as a trailing wildcard), ``-p``
  ``tcp``/``udp``/``icmp``/``ipv6-icmp``;
- ``-m tcp``/``-m udp`` with ``--sport``/``--dport`` (a port or ``low:high``) and
  ``[!] --tcp-flags MASK COMP``; ``-m icmp6 --icmpv6-type N``; ``-m conntrack --ctstate
  A,B``; ``-m owner --uid-owner N``; ``-m comment --comment X`` (no effect);
- ``-j ACCEPT``/``DROP``/``REJECT`` (the verdict), ``RETURN`` (back to the calling chain;
  in a built-in chain, its policy), ``NFLOG``/``LOG`` (logged, and the packet goes on),
  and ``-j`` to a user chain of the same table; at the end of a built-in chain, its policy.

Anything else (another match, another option, a negation other than ``! --tcp-flags``,
``-g``, an unknown target) raises :class:`Unsupported` before the packet is traced, for
every rule the traced chain can reach: the tracer never says ACCEPT for a rule it cannot
read. The namespace tests check that the kernel agrees with what statekit writes.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from statekit.netfilter.table import owner
from tests.fakehost import FakeRunner

TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
CTSTATES = ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED")
VERDICTS = ("ACCEPT", "DROP", "REJECT")
_LOGS = ("NFLOG", "LOG")
_MODULE_OF = {"--sport": ("tcp", "udp"), "--dport": ("tcp", "udp"), "--tcp-flags": ("tcp",),
              "--icmpv6-type": ("icmp6",), "--ctstate": ("conntrack",),
              "--uid-owner": ("owner",), "--comment": ("comment",)}
_TARGET_OPTIONS = {"REJECT": ("--reject-with",), "NFLOG": ("--nflog-prefix", "--nflog-group"),
                   "LOG": ("--log-prefix",)}


class Unsupported(Exception):
    """A rule the tracer cannot read: it refuses to guess."""


@dataclass(frozen=True)
class Packet:
    """One packet on its way out of this machine (the OUTPUT chain's view).

    ``uid`` is the owner of the sending socket (None: none, as for a packet the kernel
    makes itself); ``tcp_flags`` default to SYN for a NEW connection and ACK otherwise."""

    dst: str
    proto: str = "tcp"  # tcp, udp or icmp (ICMPv6 in an IPv6 packet)
    dport: int | None = None
    sport: int | None = None
    src: str | None = None
    uid: int | None = 1000
    ctstate: str = "NEW"
    oif: str = "eth0"
    tcp_flags: frozenset[str] | None = None
    icmpv6_type: int | None = None

    def __post_init__(self) -> None:
        if self.proto not in ("tcp", "udp", "icmp"):
            raise ValueError(f"protocol {self.proto!r}: tcp, udp or icmp")
        if self.ctstate not in CTSTATES:
            raise ValueError(f"ctstate {self.ctstate!r}: one of {CTSTATES}")
        if self.proto in ("tcp", "udp") and self.dport is None:
            raise ValueError(f"a {self.proto} packet needs a dport")
        if self.icmpv6_type is not None and (self.proto, self.family) != ("icmp", "ipv6"):
            raise ValueError("icmpv6_type: only for an ICMPv6 packet")

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.dst else "ipv4"

    def __str__(self) -> str:
        """``tcp 22->fdaa::5:51000 [SYN] uid=1000 NEW oif=eth0``, say (a test's id)."""
        port = "" if self.dport is None else f":{self.dport}"
        where = f"{'' if self.sport is None else self.sport}->{self.dst}{port}"
        what = (f" type={self.icmpv6_type}" if self.icmpv6_type is not None else
                f" [{','.join(sorted(self.flags))}]" if self.proto == "tcp" else "")
        return f"{self.proto} {where}{what} uid={self.uid} {self.ctstate} oif={self.oif}"

    @property
    def protocol(self) -> str:
        """As ``-p`` names it in this family."""
        return "ipv6-icmp" if (self.proto, self.family) == ("icmp", "ipv6") else self.proto

    @property
    def source(self) -> str:
        return self.src or ("fd00::2" if self.family == "ipv6" else "10.0.0.2")

    @property
    def source_port(self) -> int:
        return 40000 if self.sport is None else self.sport

    @property
    def flags(self) -> frozenset[str]:
        if self.tcp_flags is not None:
            return self.tcp_flags
        return frozenset({"SYN"} if self.ctstate == "NEW" else {"ACK"})


Match = Callable[[Packet], bool]


@dataclass
class TracedRule:
    """One rule, read: its matches (all must hold), its target and the target's options."""

    line: str
    chain: str
    matches: list[Match] = field(default_factory=list)
    target: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Trace:
    """What became of one packet: every rule it matched, in order (logs and jumps
    included), the NFLOG/LOG prefixes it was logged with, and the verdict with what gave
    it (the rule line, or ``policy <chain> <verdict>``)."""

    verdict: str = ""
    by: str = ""
    hits: list[str] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)

    @property
    def path(self) -> list[str]:
        """The ids of the states whose rules the packet matched, in order (``?`` for a
        foreign rule), then the verdict: ``["fw-log", "DROP"]``."""
        return [*(owner(h) or "?" for h in self.hits), self.verdict]

    @property
    def decided_by(self) -> str:
        """The id of the state whose rule gave the verdict; ``policy`` for the chain's
        policy, ``?`` for a foreign rule."""
        if self.by.startswith("policy "):
            return "policy"
        return owner(self.by) or "?"


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        raise Unsupported(f"not a network: {value!r}") from None


def _ports(value: str) -> tuple[int, int]:
    low, _, high = value.partition(":")
    if not low.isdigit() or not (high or low).isdigit():
        raise Unsupported(f"not a port or port range: {value!r}")
    return int(low), int(high or low)


def _flag_set(value: str) -> frozenset[str]:
    if value == "ALL":
        return frozenset(TCP_FLAGS)
    if value == "NONE":
        return frozenset()
    flags = frozenset(value.split(","))
    if not flags <= set(TCP_FLAGS):
        raise Unsupported(f"not TCP flags: {value!r}")
    return flags


class _Reader:
    """Reads one ``-A`` line into a :class:`TracedRule`, refusing what it does not know."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.words = shlex.split(line)
        if self.words[:1] != ["-A"] or len(self.words) < 2:
            raise Unsupported(f"not a rule line: {line!r}")
        self.rule = TracedRule(line, self.words[1])
        self.at = 2
        self.modules: set[str] = set()
        self.protocol = "all"

    def take(self) -> str:
        if self.at >= len(self.words):
            raise Unsupported(f"{self.line!r}: an option without its value")
        self.at += 1
        return self.words[self.at - 1]

    def take_number(self, option: str) -> int:
        """The option's value, which must be a decimal number."""
        value = self.take()
        if not value.isdigit():
            raise Unsupported(f"{self.line!r}: {option} {value} (a number only)")
        return int(value)

    def read(self) -> TracedRule:
        while self.at < len(self.words):
            word = self.take()
            negate = word == "!"
            if negate:
                word = self.take()
                if word != "--tcp-flags":
                    raise Unsupported(f"{self.line!r}: ! {word} (only ! --tcp-flags)")
            if word == "-j":
                self.target()
            else:
                self.match(word, negate)
        if not self.rule.target:
            raise Unsupported(f"{self.line!r}: no -j (a rule without a target)")
        return self.rule

    def match(self, word: str, negate: bool) -> None:
        if self.rule.target:
            raise Unsupported(f"{self.line!r}: {word} after the target")
        if word in _MODULE_OF and not self.modules & set(_MODULE_OF[word]):
            raise Unsupported(f"{self.line!r}: {word} without -m {'/'.join(_MODULE_OF[word])}")
        add = self.rule.matches.append
        if word in ("-s", "-d"):
            net = _network(self.take())
            add((lambda p: ipaddress.ip_address(p.source) in net) if word == "-s"
                else (lambda p: ipaddress.ip_address(p.dst) in net))
        elif word == "-o":
            name = self.take()
            add((lambda p: p.oif.startswith(name[:-1])) if name.endswith("+")
                else (lambda p: p.oif == name))
        elif word == "-p":
            self.protocol = self.take()
            if self.protocol not in ("tcp", "udp", "icmp", "ipv6-icmp"):
                raise Unsupported(f"{self.line!r}: protocol {self.protocol}")
            proto = self.protocol
            add(lambda p: p.protocol == proto)
        elif word == "-m":
            self.module(self.take())
        elif word in ("--sport", "--dport"):
            low, high = _ports(self.take())
            add((lambda p: low <= p.source_port <= high) if word == "--sport"
                else (lambda p: p.dport is not None and low <= p.dport <= high))
        elif word == "--tcp-flags":
            mask, comp = _flag_set(self.take()), _flag_set(self.take())
            add(lambda p: ((p.flags & mask) == comp) != negate)
        elif word == "--icmpv6-type":
            icmpv6_type = self.take_number(word)
            add(lambda p: p.icmpv6_type == icmpv6_type)
        elif word == "--ctstate":
            states = set(self.take().split(","))
            if not states <= set(CTSTATES):
                raise Unsupported(f"{self.line!r}: --ctstate {','.join(sorted(states))}")
            add(lambda p: p.ctstate in states)
        elif word == "--uid-owner":
            uid = self.take_number(word)
            add(lambda p: p.uid == uid)
        elif word == "--comment":
            self.take()
        else:
            raise Unsupported(f"{self.line!r}: {word}")

    def module(self, name: str) -> None:
        needs = {"tcp": "tcp", "udp": "udp", "icmp6": "ipv6-icmp"}
        if name in needs and self.protocol != needs[name]:
            raise Unsupported(f"{self.line!r}: -m {name} without -p {needs[name]}")
        if name not in (*needs, "conntrack", "owner", "comment"):
            raise Unsupported(f"{self.line!r}: -m {name}")
        self.modules.add(name)

    def target(self) -> None:
        self.rule.target = self.take()
        allowed = _TARGET_OPTIONS.get(self.rule.target, ())
        while self.at < len(self.words):
            option = self.take()
            if option not in allowed:
                raise Unsupported(f"{self.line!r}: {option} after -j {self.rule.target}")
            self.rule.options[option] = self.take()


def read_rule(line: str) -> TracedRule:
    return _Reader(line).read()


class Tracer:
    """The tables of one family of a :class:`FakeRunner`, read for tracing."""

    def __init__(self, runner: FakeRunner, family: str, table: str = "filter") -> None:
        self.family = family
        self.chains = runner.table(family, table)

    def _rules(self, chain: str, seen: dict[str, list[TracedRule]]) -> None:
        """Read ``chain`` and every chain it jumps to (each once)."""
        if chain in seen:
            return
        if chain not in self.chains:
            raise Unsupported(f"no chain {chain} in the {self.family} table")
        seen[chain] = [read_rule(line) for line in self.chains[chain].rules]
        for rule in seen[chain]:
            if rule.target in self.chains:
                self._rules(rule.target, seen)
            elif rule.target not in (*VERDICTS, "RETURN", *_LOGS):
                raise Unsupported(f"{rule.line!r}: target {rule.target}")

    def trace(self, packet: Packet, chain: str = "OUTPUT") -> Trace:
        if packet.family != self.family:
            raise ValueError(f"an {packet.family} packet in the {self.family} table")
        rules: dict[str, list[TracedRule]] = {}
        self._rules(chain, rules)
        out = Trace()
        if not self._walk(packet, chain, rules, out, depth=0):
            policy = self.chains[chain].policy
            out.verdict, out.by = policy, f"policy {chain} {policy}"
        return out

    def _walk(self, packet: Packet, chain: str, rules: dict[str, list[TracedRule]],
              out: Trace, depth: int) -> bool:
        """True when a rule gave the verdict; False at the chain's end or a RETURN."""
        if depth > 16:
            raise Unsupported(f"jumps nested too deep (a loop?) at {chain}")
        for rule in rules[chain]:
            if not all(match(packet) for match in rule.matches):
                continue
            out.hits.append(rule.line)
            if rule.target in VERDICTS:
                out.verdict, out.by = rule.target, rule.line
                return True
            if rule.target == "RETURN":
                return False
            if rule.target in _LOGS:
                out.logged.append(rule.options.get("--nflog-prefix",
                                                   rule.options.get("--log-prefix", "")))
                continue
            if self._walk(packet, rule.target, rules, out, depth + 1):
                return True
        return False


def trace(runner: FakeRunner, packet: Packet, chain: str = "OUTPUT") -> Trace:
    """Run ``packet`` through ``chain`` of the filter table of its family."""
    return Tracer(runner, packet.family).trace(packet, chain)
