"""``iptables_rule``: owned rules (tagged ``statekit:<id>``), placed as one block.

One state may stand for several rules: sources x destinations (static and resolved
``destination_host``) x families. Desired rules are rendered as iptables-save prints
them and compared as strings with the one save per (table, family) the phase shares;
changes go to the one restore transaction of that (table, family).
"""

from __future__ import annotations

from statekit.errors import ApplyError, FieldError
from statekit.host import Host
from statekit.netfilter import fields as f
from statekit.netfilter import save, transaction
from statekit.netfilter.block import BlockPlan, Position, plan_block
from statekit.netfilter.model import TAG_PREFIX, Chain
from statekit.netfilter.rule import Rule, Target
from statekit.resources.base import EMPTY, Change, Meta, Plan
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

_PORT_PROTOCOLS = ("tcp", "udp")


class RuleSpec(Record):
    id: str
    table: str
    chain: str
    families: tuple[str, ...]
    present: bool = True
    template: Rule | None = None  # family, source and destination filled per rule
    sources: tuple[f.Network, ...] = ()
    destinations: tuple[f.Network, ...] = ()
    hosts: tuple[str, ...] = ()
    position: Position = Position()
    resolve_timeout: float = 5.0


class RuleCurrent(Record):
    chains: Mapping[str, Chain | None]  # family -> snapshot (None: no such chain)
    resolved: Mapping[str, tuple[str, ...]] = EMPTY


def _resolve() -> Any:
    """The resolver module, imported only by states that resolve names (it pulls in
    socket and threading: a no-op converge without names does without them)."""
    from statekit.netfilter import resolve

    return resolve


def _slot(spec: RuleSpec) -> tuple[str, str, str, str]:
    return (spec.table, spec.chain, spec.position.kind, spec.position.before)


def _position(value: Any) -> Position:
    if isinstance(value, dict):
        return Position("before", str(value["before"]))
    return Position(str(value))


def _target(fields: Mapping[str, Any], table: str) -> Target:
    if "jump" not in fields:
        raise FieldError("jump", "is required (unless ensure: absent)")
    jump = f.jump(fields["jump"], table)
    prefix, group = fields.get("log_prefix"), fields.get("nflog_group")
    if prefix is not None and jump not in ("LOG", "NFLOG"):
        raise FieldError("log_prefix", "only with jump LOG or NFLOG")
    if group is not None and jump != "NFLOG":
        raise FieldError("nflog_group", "only with jump NFLOG")
    limit = 29 if jump == "LOG" else 64
    return Target(jump, f.text(prefix, "log_prefix", limit), group)


def _template(fields: Mapping[str, Any], meta: Meta, chain: str, table: str) -> Rule:
    protocol = str(fields.get("protocol", "all")).lower()
    for key in ("sport", "dport"):
        if key in fields and protocol not in _PORT_PROTOCOLS:
            raise FieldError(key, f"only with protocol tcp or udp (protocol is {protocol})")
    comment = f.text(fields.get("comment"), "comment", 200)
    return Rule(
        chain=chain, family="", tag=TAG_PREFIX + meta.id + (f" {comment}" if comment else ""),
        target=_target(fields, table), protocol=protocol,
        in_interface=f.interface(fields.get("in_interface"), "in_interface", chain),
        out_interface=f.interface(fields.get("out_interface"), "out_interface", chain),
        sport=f.port(fields["sport"], "sport") if "sport" in fields else None,
        dport=f.port(fields["dport"], "dport") if "dport" in fields else None,
        ctstate=tuple(fields.get("ctstate", ())),
    )


def _hosts(value: Any) -> tuple[tuple[str, ...], list[str]]:
    """(DNS names, IP literals) of ``destination_host``."""
    names, literals = [], []
    for item in f.as_list(value):
        try:
            f.network(item, "destination_host")
            literals.append(str(item))
        except FieldError:
            try:
                names.append(_resolve().check_name(str(item)))
            except ValueError as exc:
                raise FieldError("destination_host", str(exc)) from None
    return tuple(sorted(set(names))), literals


def expand(spec: RuleSpec, family: str, resolved: Mapping[str, Iterable[str]]) -> list[str]:
    """The desired lines of one family, in block order (sorted addresses)."""
    if spec.template is None:
        return []
    extra = [a for name in spec.hosts for a in resolved.get(name, ())]
    dests = spec.destinations  # parsed once, at load; only resolved addresses are new
    if extra:
        dests = f.ordered([*dests, *f.networks(extra, "destination", spec.families)])
    want = f"ipv{6 if family == 'ipv6' else 4}"
    srcs = [str(n) for n in spec.sources if f"ipv{n.version}" == want]
    dsts = [str(n) for n in dests if f"ipv{n.version}" == want]
    if (spec.sources and not srcs) or ((spec.destinations or spec.hosts) and not dsts):
        return []
    base = spec.template._replace(family=family)
    return base.lines((s, d) for s in _or_any(srcs) for d in _or_any(dsts))


def _or_any(values: list[str]) -> list[str | None]:
    return [*values] if values else [None]


class IptablesRule(transaction.TableResource[RuleSpec, RuleCurrent]):
    type_name = "iptables_rule"
    identity_fields = frozenset({"table", "chain", "family"})

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> RuleSpec:
        table = fields.get("table", "filter")
        chain = f.chain(fields["chain"])
        families = f.FAMILIES[fields.get("family", "ipv4")]
        if not meta.present:
            return RuleSpec(meta.id, table, chain, families, present=False)
        names, literals = _hosts(fields.get("destination_host"))
        dests = [*f.as_list(fields.get("destination")), *literals]
        return RuleSpec(
            meta.id, table, chain, families, True, _template(fields, meta, chain, table),
            sources=f.networks(fields.get("source"), "source", families),
            destinations=f.networks(dests, "destination", families), hosts=names,
            position=_position(fields.get("position", "first")),
            resolve_timeout=float(fields.get("resolve_timeout", 5.0)),
        )

    def link(self, specs: Sequence[RuleSpec]) -> list[RuleSpec]:
        """Tell each rule which states share its slot (same chain and position)."""
        slots: dict[tuple[str, str, str, str], set[str]] = {}
        for spec in specs:
            if spec.present:
                slots.setdefault(_slot(spec), set()).add(spec.id)
        return [spec._replace(position=spec.position._replace(
                    peers=frozenset(slots[_slot(spec)] - {spec.id})))
                if spec.present else spec for spec in specs]

    def ordering(self, spec: RuleSpec) -> Iterable[str]:
        return [spec.position.before] if spec.position.kind == "before" else []

    def read(self, spec: RuleSpec, host: Host) -> RuleCurrent:
        chains = {}
        for family in spec.families:
            chain = save.load(host, spec.table, family).chains.get(spec.chain)
            chains[family] = chain.copy() if chain is not None else None
        if not (spec.present and spec.hosts):
            return RuleCurrent(chains)
        resolver = _resolve()
        try:
            resolved = resolver.resolve(spec.hosts, spec.families, spec.resolve_timeout)
        except resolver.ResolveError as exc:
            raise ApplyError(f"{exc}; its rules are left as they are") from None
        return RuleCurrent(chains, resolved)

    def plan(self, spec: RuleSpec, current: RuleCurrent) -> Plan:
        blocks: list[tuple[str, BlockPlan]] = []
        for family in spec.families:
            desired = expand(spec, family, current.resolved)
            chain = current.chains[family]
            if chain is None and desired:
                raise ApplyError(f"chain {spec.chain} does not exist in table {spec.table} "
                                 f"({family})")
            if chain is not None:
                blocks.append((family, plan_block(chain, spec.chain, spec.id, desired,
                                                  spec.position)))
        return _plan(spec, blocks, current.resolved)


_ACTIONS = {"-": "remove", "+": "add", "~": "move"}


def _plan(spec: RuleSpec, blocks: list[tuple[str, BlockPlan]],
          resolved: Mapping[str, tuple[str, ...]]) -> Plan:
    diff: list[str] = []
    changes: list[Change] = []
    for family, block in blocks:
        where = transaction.where(family, spec.table)
        for line in block.diff:
            mark, text = line[0], line[2:]
            diff.append(f"{mark} {where}{text}")
            changes.append(Change(_ACTIONS[mark], where + text.removesuffix(" (moved)"),
                                  "misplaced" if mark == "~" else ""))
    facts = {"resolved": {k: list(v) for k, v in resolved.items()}} if spec.hosts else {}
    payload = [(family, block.ops) for family, block in blocks if block.ops]
    return Plan(tuple(changes), "\n".join(diff), facts=facts, payload=payload)
