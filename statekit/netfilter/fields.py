"""Validating the fields of the iptables resource types (raise FieldError: exit 3).

Each check returns the value in the form the renderer needs (a canonical network, a
normalised port range), so that nothing invalid ever reaches iptables-restore.
"""

from __future__ import annotations

from statekit.digits import digits
from statekit.errors import FieldError
from statekit.netfilter.table import BUILTIN
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

FAMILIES = {"ipv4": ("ipv4",), "ipv6": ("ipv6",), "both": ("ipv4", "ipv6")}
#: The targets a rule may jump to: the schema's ``jump`` enum (tests/test_schema_errors.py
#: keeps the two equal). REJECT exists in table filter only, DROP in every table but nat.
TARGETS = ("ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "NFLOG")
_TARGET_TABLES = {"REJECT": ("filter",), "DROP": ("filter", "mangle", "raw")}
#: Names no user chain may have: iptables refuses the verdicts' (and QUEUE); statekit
#: also the other targets', whose ``-j`` would be read as the target.
RESERVED = (*TARGETS, "QUEUE")
#: Prefix limits: the LOG target keeps 29 characters; NFLOG 63 with iptables-legacy (127
#: with iptables-nft): longer, the kernel cuts it, and the rule never reads back as written.
PREFIX_LIMIT = {"LOG": 29, "NFLOG": 63}
# Checked at load only: ``re`` and ``ipaddress`` are imported there, not on the no-op path.
# The schema has the same patterns (tests/test_schema_errors.py keeps them equal).
_CHAIN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}"
_IFACE = r"[A-Za-z0-9_.-]+\+?"
IFACE_LIMIT = 15  # IFNAMSIZ - 1, the trailing + included
_TEXT = r"[ !#-&(-\[\]-~]*"  # printable ASCII without quotes and backslash
_NO_IN = ("OUTPUT", "POSTROUTING")
_NO_OUT = ("INPUT", "PREROUTING")
#: Where a packet's local owner is known: it leaves a socket of this machine.
OWNER_CHAINS = _NO_IN
#: ip6tables' ICMPv6 type names (``ip6tables -p ipv6-icmp -h``) and the numbers
#: ip6tables-save prints for them.
ICMPV6_TYPES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "ttl-exceeded": 3, "parameter-problem": 4, "echo-request": 128, "ping": 128,
    "echo-reply": 129, "pong": 129, "router-solicitation": 133,
    "router-advertisement": 134, "neighbour-solicitation": 135,
    "neighbor-solicitation": 135, "neighbour-advertisement": 136,
    "neighbor-advertisement": 136, "redirect": 137,
}


class Network(Record):
    """A parsed network, as plain data: it sorts IPv4 first, then by address and prefix
    length (block order), and prints as ``iptables-save`` does (``10.0.0.1/32``)."""

    version: int
    address: int
    prefixlen: int
    text: str

    def __str__(self) -> str:
        return self.text


def _matches(pattern: str, value: str) -> bool:
    import re

    return re.fullmatch(pattern, value) is not None


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def chain(value: str, name: str = "chain") -> str:
    if not _matches(_CHAIN, value):
        raise FieldError(name, f"{value!r} is not a valid chain name (letters, digits, "
                         "_ . -; at most 28 characters)")
    return value


def user_chain(value: str) -> str:
    """A chain an ``iptables_chain`` state creates: not named like a target."""
    if value in RESERVED:
        raise FieldError("chain", f"{value!r} is a target: a user chain may not be named "
                         f"like one ({', '.join(RESERVED)})")
    return value


def typo_of(name: str, known: Iterable[str]) -> str | None:
    """The name of ``known`` that ``name`` is one slip away from (a letter added,
    dropped, changed or two swapped; any case), or None: ``ACCEPTT`` -> ``ACCEPT``."""
    word = name.upper()
    for candidate in known:
        if candidate != name and _one_slip(word, candidate.upper()):
            return candidate
    return None


def _one_slip(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are at most one edit apart (a transposition counts one)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def network(value: str, name: str) -> Network:
    import ipaddress

    try:
        net = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise FieldError(name, f"{value!r} is not an IP address or CIDR network") from None
    if net.prefixlen == 0:
        raise FieldError(name, f"{value!r} matches every address: leave the field out")
    return Network(net.version, int(net.network_address), net.prefixlen, str(net))


def networks(value: Any, name: str, wanted: tuple[str, ...]) -> tuple[Network, ...]:
    nets = [network(v, name) for v in as_list(value)]
    for net in nets:
        if f"ipv{net.version}" not in wanted:
            raise FieldError(name, f"{net} is an IPv{net.version} address, but family is "
                             f"{'/'.join(wanted)}")
    return ordered(nets)


def ordered(nets: Iterable[Network]) -> tuple[Network, ...]:
    """Unique, in the order written (the rules of a state come in its declared order, as
    in the reference container's ruleset: 8.8.8.8 before 1.1.1.1)."""
    return tuple(dict.fromkeys(nets))


def port(value: Any, name: str) -> str:
    text = str(value)
    low, _, high = text.partition(":")
    if not digits(low) or (high and not digits(high)):
        raise FieldError(name, f"{text!r} is not a port or a range a:b")
    lo, hi = int(low), int(high or low)
    if hi > 65535 or lo > hi:
        raise FieldError(name, f"{text!r}: ports are 0-65535 and a range is low:high")
    if (lo, hi) == (0, 65535):
        raise FieldError(name, "0:65535 matches every port: leave the field out")
    return str(lo) if lo == hi else f"{lo}:{hi}"


def icmpv6_types(value: Any) -> tuple[str, ...]:
    """ICMPv6 types (numbers 0-255 or ip6tables' names) as ip6tables-save prints them:
    numbers, unique, in the order written."""
    out: list[str] = []
    for item in as_list(value):
        number = item if isinstance(item, int) else ICMPV6_TYPES.get(str(item))
        if number is None or not 0 <= number <= 255:
            raise FieldError("icmpv6_type", f"{item!r} is not an ICMPv6 type: a number "
                             f"0-255 or one of {', '.join(sorted(ICMPV6_TYPES))}")
        out.append(str(number))
    return tuple(dict.fromkeys(out))


def uid_owner(uid: int, chain_name: str) -> int:
    if chain_name not in OWNER_CHAINS:
        raise FieldError("uid_owner", f"cannot be used in chain {chain_name}: a packet's "
                         f"owner is known only in {' and '.join(OWNER_CHAINS)}")
    return uid


def interface(value: str | None, name: str, chain_name: str) -> str | None:
    if value is None:
        return None
    if not _matches(_IFACE, value) or len(value) > IFACE_LIMIT:
        raise FieldError(name, f"{value!r} is not an interface name (letters, digits, "
                         f"_ . -, optional trailing +; at most {IFACE_LIMIT} characters "
                         "in all)")
    banned = _NO_IN if name == "in_interface" else _NO_OUT
    if chain_name in banned:
        raise FieldError(name, f"cannot be used in chain {chain_name}")
    return value


def text(value: str | None, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not _matches(_TEXT, value) or len(value) > limit:
        raise FieldError(name, f"must be printable ASCII without quotes, backslashes or "
                         f"newlines, at most {limit} characters")
    return value


def jump(value: str, table: str) -> str:
    if value in TARGETS:
        tables = _TARGET_TABLES.get(value, (table,))
        if table not in tables:
            raise FieldError("jump", f"{value} cannot be used in table {table} (the kernel "
                             f"refuses it; only in {', '.join(tables)})")
        return value
    if value.upper() in TARGETS:  # "accept" would read as a chain: check and apply disagree
        raise FieldError("jump", f"{value!r}: targets are upper case, write "
                         f"{value.upper()!r} (a chain may not be named like a target)")
    if value in BUILTIN.get(table, ()):
        raise FieldError("jump", f"cannot jump to the built-in chain {value}")
    if not _matches(_CHAIN, value):
        raise FieldError("jump", f"{value!r} is neither a target ({', '.join(TARGETS)}) "
                         "nor a valid chain name")
    return value
