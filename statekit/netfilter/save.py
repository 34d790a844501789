"""Reading: one ``iptables-save -t TABLE`` (or ``ip6tables-save``) per (table, family) per
phase, parsed into a :class:`~statekit.netfilter.table.Table` and kept in ``host.cache``.

Staged changes update the cached model (so later states plan against the predicted
table); committing or discarding a transaction drops it, so the next read saves afresh.
"""

from __future__ import annotations

from statekit.errors import ApplyError
from statekit.host.host import Host
from statekit.netfilter.table import Chain, Table, empty_table, owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable

SAVE = {"ipv4": "iptables-save", "ipv6": "ip6tables-save"}


def cache_key(table: str, family: str) -> Hashable:
    return ("netfilter", table, family)


def load(host: Host, table: str, family: str) -> Table:
    """The (possibly staged-upon) model of ``table``: saved once per phase. On a machine
    that has no such family at all, a table with no chains that says why
    (``Table.missing``), and no tool is run."""
    key = cache_key(table, family)
    if key not in host.cache:
        missing = _missing(host, family)
        if missing:
            host.cache[key] = Table(table, family, {}, missing=missing)
        else:
            result = host.run([SAVE[family], "-t", table])
            host.cache[key] = parse_save(result.stdout, table, family)
    model: Table = host.cache[key]
    return model


def reads(host: Host, table: str, families: Iterable[str]) -> list[tuple[str, ...]]:
    """The saves :func:`load` will run for ``table`` in ``families`` (for ``Host.start``):
    none for a table already read this phase, or a family this machine lacks."""
    return [(SAVE[family], "-t", table) for family in families
            if cache_key(table, family) not in host.cache and not _missing(host, family)]


def _missing(host: Host, family: str) -> str:
    """:func:`family_missing`, asked of the kernel once per phase."""
    key = ("netfilter", "missing", family)
    if key not in host.cache:
        host.cache[key] = family_missing(family)
    found: str = host.cache[key]
    return found


def family_missing(family: str) -> str:
    """Why this machine has no ``family`` at all, or ``""``.

    IPv6 is missing when the kernel refuses an IPv6 socket (EAFNOSUPPORT: built without
    IPv6, or booted with ``ipv6.disable=1``): then no process, the agent included, can
    send an IPv6 packet, and there is nothing to filter. IPv6 turned off with the
    ``disable_ipv6`` sysctl is not missing: its tables work and are written, so the
    lockdown holds if it is turned back on. A kernel that has IPv6 but whose ip6tables
    fails is not missing either: that is an open door statekit cannot close, and the
    save's failure fails the states (docs/failure-model.md)."""
    if family != "ipv6":
        return ""
    import _socket  # the C module: the socket module would import enum and selectors
    import errno  # builtin

    try:
        _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM).close()
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return "this kernel has no IPv6 (an IPv6 socket is refused: " \
                   f"{exc.strerror}): no IPv6 packet can leave, nothing to filter"
    return ""


def forget(host: Host, table: str, family: str) -> None:
    host.cache.pop(cache_key(table, family), None)


def parse_save(text: str, table: str, family: str) -> Table:
    """Parse ``iptables-save -t table`` output; empty output is the fresh table."""
    model = empty_table(table, family)
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            model.chains.setdefault(name, Chain()).policy = policy
        elif line.startswith("-A "):
            name = line.split()[1]
            chain = model.chains.get(name)
            if chain is None:
                raise ApplyError(f"{SAVE[family]}: rule in undeclared chain: {line}")
            chain.rules.append(line)
            chain.owners.append(owner(line))
    return model
