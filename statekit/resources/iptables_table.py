"""What ``iptables_rule`` and ``iptables_chain`` share: one restore transaction per
(table, family), their plans' payloads ``[(family, [Op, ...]), ...]`` staged into it.
"""

from __future__ import annotations

from statekit.host.host import Host
from statekit.netfilter import save, transaction
from statekit.netfilter.table import Op
from statekit.resources.base import Plan, Transactional
from statekit.typeshim import TypeVar

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Sequence
    from typing import Protocol

    class TableSpec(Protocol):
        """What a netfilter spec has: its table and families."""

        @property
        def table(self) -> str: ...

        @property
        def families(self) -> tuple[str, ...]: ...

SpecT = TypeVar("SpecT", bound="TableSpec")
CurrentT = TypeVar("CurrentT")


class TableResource(Transactional[SpecT, CurrentT]):
    """What iptables_rule and iptables_chain share: their plans' payloads are
    ``[(family, [Op, ...]), ...]``, staged into one transaction per (table, family)."""

    def reads(self, spec: SpecT, host: Host) -> Iterable[Sequence[str]]:
        return save.reads(host, spec.table, spec.families)

    def transaction_keys(self, spec: SpecT) -> frozenset[Hashable]:
        return frozenset((spec.table, family) for family in spec.families)

    def stage(self, spec: SpecT, plan: Plan, host: Host) -> None:
        payload: list[tuple[str, list[Op]]] = plan.payload
        for family, ops in payload:
            transaction.stage(host, spec.table, family, ops)


