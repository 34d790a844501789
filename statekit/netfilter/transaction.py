"""One ``iptables-restore --noflush --wait`` (or ip6tables-restore) per (table, family).

Every state of a phase stages its lines here; the engine commits them at once, so the
kernel takes all deletes and inserts of a table together or none of them. Committing or
discarding drops the cached model, so verify reads the table back with one fresh save.
"""

from __future__ import annotations

from statekit.errors import ApplyError
from statekit.host.host import Host, Transaction
from statekit.netfilter import save
from statekit.netfilter.table import Op

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

RESTORE = {"ipv4": "iptables-restore", "ipv6": "ip6tables-restore"}
RESTORE_TIMEOUT = 60.0  # bounds --wait for the xtables lock too


class RestoreTransaction(Transaction):
    def __init__(self, table: str, family: str) -> None:
        self.table = table
        self.family = family
        self.lines: list[str] = []

    def input(self) -> str:
        return "".join(f"{line}\n" for line in [f"*{self.table}", *self.lines, "COMMIT"])

    def commit(self, host: Host) -> None:
        try:
            if self.lines:
                host.run([RESTORE[self.family], "--noflush", "--wait"], input=self.input(),
                         timeout=RESTORE_TIMEOUT)
        finally:
            self.discard(host)

    def discard(self, host: Host) -> None:
        self.lines.clear()
        save.forget(host, self.table, self.family)


def stage(host: Host, table: str, family: str, ops: Iterable[Op]) -> None:
    """Play ``ops`` on the cached model and add their lines to the open transaction."""
    model = save.load(host, table, family)
    txn = host.transaction((table, family), lambda: RestoreTransaction(table, family))
    if not isinstance(txn, RestoreTransaction):
        raise ApplyError(f"transaction {(table, family)} is not an iptables-restore one")
    for op in ops:
        model.apply(op)
        txn.lines.append(op.restore)


def table_prefix(family: str, table: str) -> str:
    """How a diff line or a change's target names a table other than the default IPv4
    filter table: ``[ipv6 filter] `` before the rule."""
    return "" if (family, table) == ("ipv4", "filter") else f"[{family} {table}] "

