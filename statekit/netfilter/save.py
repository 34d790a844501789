"""Reading: one ``iptables-save -t TABLE`` (or ``ip6tables-save``) per (table, family) per
phase, parsed into a :class:`~statekit.netfilter.table.Table` and kept in ``host.cache``.

Staged changes update the cached model (so later states plan against the predicted
table); committing or discarding a transaction drops it, so the next read saves afresh.
"""

from __future__ import annotations

from statekit.errors import ApplyError
from statekit.netfilter.table import Chain, Table, empty_table, owner
from statekit.run.host import Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable

SAVE = {"ipv4": "iptables-save", "ipv6": "ip6tables-save"}


def cache_key(table: str, family: str) -> Hashable:
    return ("netfilter", table, family)


def load(host: Host, table: str, family: str) -> Table:
    """The (possibly staged-upon) model of ``table``: saved once per phase."""
    key = cache_key(table, family)
    if key not in host.cache:
        result = host.run([SAVE[family], "-t", table])
        host.cache[key] = parse_save(result.stdout, table, family)
    model: Table = host.cache[key]
    return model


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
