"""``iptables_chain``: a built-in chain's policy, or a user chain that exists (or not).

It shares the restore transaction of its (table, family) with ``iptables_rule``, so a
policy change and the rules that go with it reach the kernel together. Deleting a user
chain that still has rules, or that a rule jumps to, fails with the reason.
"""

from __future__ import annotations

from statekit.errors import ApplyError, FieldError
from statekit.host import Host
from statekit.netfilter import fields as f
from statekit.netfilter import save, transaction
from statekit.netfilter.model import BUILTIN, Op
from statekit.resources.base import Change, Meta, Plan
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


class ChainSpec(Record):
    id: str
    table: str
    chain: str
    families: tuple[str, ...]
    builtin: bool
    present: bool = True
    policy: str | None = None


class ChainState(Record):
    """One family's view of the chain: None policy means it does not exist."""

    policy: str | None
    rules: int = 0
    references: tuple[str, ...] = ()


class IptablesChain(transaction.TableResource[ChainSpec, dict[str, ChainState]]):
    type_name = "iptables_chain"
    identity_fields = frozenset({"table", "chain", "family"})

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> ChainSpec:
        table = fields.get("table", "filter")
        chain = f.chain(fields["chain"])
        builtin = chain in BUILTIN[table]
        policy = fields.get("policy")
        if builtin and not meta.present:
            raise FieldError("ensure", f"{chain} is a built-in chain of {table}: it cannot "
                             "be deleted")
        if policy is not None and not builtin:
            raise FieldError("policy", f"only built-in chains have a policy ({chain} is a "
                             f"user chain; built-in in {table}: {', '.join(BUILTIN[table])})")
        families = f.FAMILIES[fields.get("family", "ipv4")]
        return ChainSpec(meta.id, table, chain, families, builtin, meta.present, policy)

    def read(self, spec: ChainSpec, host: Host) -> dict[str, ChainState]:
        out = {}
        for family in spec.families:
            model = save.load(host, spec.table, family)
            chain = model.chains.get(spec.chain)
            out[family] = ChainState(None) if chain is None else ChainState(
                chain.policy, len(chain.rules), tuple(model.references(spec.chain)))
        return out

    def plan(self, spec: ChainSpec, current: dict[str, ChainState]) -> Plan:
        diff: list[str] = []
        changes: list[Change] = []
        payload: list[tuple[str, list[Op]]] = []
        for family, state in current.items():
            op, text = _op(spec, state, family)
            if op is not None:
                where = transaction.where(family, spec.table)
                diff.append(where + text)
                changes.append(Change(op.kind.replace("_", " "), where + spec.chain, text))
                payload.append((family, [op]))
        return Plan(tuple(changes), "\n".join(diff), payload=payload)


def _op(spec: ChainSpec, state: ChainState, family: str) -> tuple[Op | None, str]:
    name = spec.chain
    if spec.builtin:
        if spec.policy is None or state.policy == spec.policy:
            return None, ""
        return (Op("policy", name, f"-P {name} {spec.policy}", spec.policy),
                f":{name} {state.policy} -> {spec.policy}")
    if spec.present:
        if state.policy is not None:
            return None, ""
        return Op("new_chain", name, f"-N {name}"), f"+ :{name} - [0:0]"
    if state.policy is None:
        return None, ""
    _check_deletable(spec, state, family)
    return Op("delete_chain", name, f"-X {name}"), f"- :{name} - [0:0]"


def _check_deletable(spec: ChainSpec, state: ChainState, family: str) -> None:
    where = f"{spec.chain} ({family} {spec.table})"
    if state.rules:
        raise ApplyError(f"cannot delete chain {where}: it still has {state.rules} rule(s)")
    if state.references:
        raise ApplyError(f"cannot delete chain {where}: referenced by "
                         + "; ".join(state.references[:3]))
