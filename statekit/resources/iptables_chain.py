"""``iptables_chain``: a built-in chain's policy, a user chain that exists (or not), and
with ``purge: true`` an exclusive chain.

It shares the restore transaction of its (table, family) with ``iptables_rule``, so a
policy change and the rules that go with it reach the kernel together. Deleting a user
chain that still has rules, or that a rule jumps to, fails with the reason.

A purged chain (the idea of Puppet's ``firewallchain { purge => true }``) holds exactly
the ``iptables_rule`` states declared for it, in ``order`` (ties: declaration order),
plus its policy; foreign rules matching an ``ignore`` regex are kept, at the top, in their
current order; everything else is removed. The chain is written whole (flush, policy,
every rule) in the one ``iptables-restore --noflush`` transaction of its table, so the
kernel never holds the DROP policy without the accepts, nor the accepts without the DROP.
Every member's rules that can be computed are written, whatever else failed: a member
whose name did not resolve keeps its last-known addresses, and a member skipped for a
failed requirement is still written as declared.
"""

from __future__ import annotations

from statekit.errors import ApplyError, FieldError
from statekit.host.host import Host
from statekit.netfilter import fields as rule_fields
from statekit.netfilter import save, transaction
from statekit.netfilter.rulediff import ACTIONS, marks, out_of_order, text
from statekit.netfilter.table import BUILTIN, Chain, Op, owner
from statekit.resources import iptables_rule
from statekit.resources.base import EMPTY, Change, Meta, Plan
from statekit.resources.iptables_table import TableResource
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    from statekit.resources.iptables_rule import RuleSpec


class ChainSpec(Record):
    id: str
    table: str
    chain: str
    families: tuple[str, ...]
    builtin: bool
    present: bool = True
    policy: str | None = None
    purge: bool = False
    ignore: tuple[str, ...] = ()
    members: tuple[RuleSpec, ...] = ()  # purge: the declared rules, in chain order
    phase: str = ""
    after: tuple[str, ...] = ()  # purge: the chain's rule states of its phase, absent too


class ChainState(Record):
    """One family's view of the chain."""

    exists: bool
    policy: str = "-"  # as iptables-save prints it: a built-in chain's, "-" for a user chain
    rules: int = 0
    references: tuple[str, ...] = ()
    desired: tuple[str, ...] = ()  # purge: the whole chain as it must be
    live: tuple[str, ...] = ()  # purge: the whole chain as it is
    missing: str = ""  # why this machine has no such family (nothing to write)


class IptablesChain(TableResource[ChainSpec, dict[str, ChainState]]):
    type_name = "iptables_chain"
    identity_fields = frozenset({"table", "chain", "family"})

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> ChainSpec:
        table = fields["table"]
        chain = rule_fields.chain(fields["chain"])
        builtin = chain in BUILTIN[table]
        if not builtin:
            rule_fields.user_chain(chain)
        policy = fields.get("policy")
        if builtin and not meta.present:
            raise FieldError("ensure", f"{chain} is a built-in chain of {table}: it cannot "
                             "be deleted")
        if policy is not None and not builtin:
            raise FieldError("policy", f"only built-in chains have a policy ({chain} is a "
                             f"user chain; built-in in {table}: {', '.join(BUILTIN[table])})")
        families = rule_fields.FAMILIES[fields["family"]]
        if not meta.present:  # only the identity fields are given
            return ChainSpec(id=meta.id, table=table, chain=chain, families=families,
                             builtin=builtin, present=False, phase=meta.phase)
        ignore = tuple(str(p) for p in fields["ignore"])
        for pattern in ignore:
            _compile(pattern)
        if ignore and not fields["purge"]:
            raise FieldError("ignore", "only with purge: true (it names foreign rules that "
                             "purging keeps)")
        return ChainSpec(id=meta.id, table=table, chain=chain, families=families,
                         builtin=builtin, present=True, policy=policy,
                         purge=bool(fields["purge"]), ignore=ignore, phase=meta.phase)

    def link(self, specs: Sequence[ChainSpec],
             program: Mapping[str, Sequence[Any]] = EMPTY) -> list[ChainSpec]:
        """A purged chain learns its members: the present rules declared for it."""
        rules = list(program.get("iptables_rule", ()))
        return [spec._replace(members=_members(spec, rules), after=tuple(
                    r.id for r in rules if (r.table, r.chain, r.phase) ==
                    (spec.table, spec.chain, spec.phase)
                    and set(r.families) & set(spec.families))) if spec.purge else spec
                for spec in specs]

    def ordering(self, spec: ChainSpec) -> Iterable[str]:
        """A purged chain runs after its phase's rule states of its families (their plans
        and answers, and the removals they report, come first); it does not wait for their
        success. Only its families: waiting for another family's staged rules would
        commit that family, and verify this one's members, before this chain is staged."""
        return spec.after

    def cuts_traffic(self, spec: ChainSpec) -> bool:
        return spec.present and (spec.table, spec.chain, spec.policy) == (
            "filter", "OUTPUT", "DROP")

    def read(self, spec: ChainSpec, host: Host) -> dict[str, ChainState]:
        out = {}
        for family in spec.families:
            model = save.load(host, spec.table, family)
            chain = model.chains.get(spec.chain)
            if model.missing:
                out[family] = ChainState(exists=False, missing=model.missing)
                continue
            if chain is None:  # a purged chain to create: written whole, members too
                out[family] = ChainState(exists=False, desired=tuple(
                    _desired(spec, family, Chain(), host)) if spec.purge and spec.present
                    else ())
                continue
            state = ChainState(exists=True, policy=chain.policy, rules=len(chain.rules),
                               references=tuple(model.references(spec.chain)))
            if spec.purge:
                state = state._replace(desired=tuple(_desired(spec, family, chain, host)),
                                       live=tuple(chain.rules))
            out[family] = state
        return out

    def plan(self, spec: ChainSpec, current: dict[str, ChainState]) -> Plan:
        diff: list[str] = []
        changes: list[Change] = []
        payload: list[tuple[str, list[Op]]] = []
        notes = [f"{family}: {state.missing}" for family, state in current.items()
                 if state.missing]
        for family, state in current.items():
            if state.missing:
                continue
            prefix = transaction.table_prefix(family, spec.table)
            ops: list[Op] = []
            op, shown = _op(spec, state, family)
            if op is not None:
                diff.append(prefix + shown)
                changes.append(Change(op.kind.replace("_", " "), prefix + spec.chain, shown))
                ops.append(op)
            if spec.purge and (state.live != state.desired or (
                    op is not None and op.kind == "new_chain")):
                # the chain's rule states of its phase, absent ones too: each prints its
                # own rules' + and - lines, so the chain prints those of the other rules
                # (foreign ones), and every move
                members = {m.id for m in spec.members} | set(spec.after)
                moved = out_of_order(state.live, state.desired)
                for mark, rule in marks(state.live, state.desired, moved):
                    who = owner(rule)
                    if mark == "~" or who not in members:
                        diff.append(text(mark, prefix + rule))
                    changes.append(Change(ACTIONS[mark], prefix + rule,
                                          _why(mark, who, members)))
                ops = _rewrite(spec.chain, ops, state.desired)
            if ops:
                payload.append((family, ops))
        return Plan(tuple(changes), "\n".join(diff), tuple(notes), payload=payload)


def _why(mark: str, who: str | None, members: set[str]) -> str:
    """A purged chain's change, in words: its own (a rule nobody declared goes, a rule
    moves back into order) or a member's (shown in the member's own diff)."""
    if mark == "~":
        return "misplaced"
    if who in members:
        return f"the rules of {who}"
    return "not declared" if mark == "-" else ""


def _members(spec: ChainSpec, rules: list[RuleSpec]) -> tuple[RuleSpec, ...]:
    """The present rules of ``spec``'s table and chain, by order (``rules`` are in
    declaration order, and the sort is stable: ties keep it)."""
    return tuple(sorted(
        (r for r in rules if r.present and (r.table, r.chain) == (spec.table, spec.chain)
         and set(r.families) & set(spec.families)),
        key=lambda r: r.order))


def _compile(pattern: str) -> Any:
    """A linear-time matcher (never ``re``: a backtracking pattern would hang the
    converge while it holds the lock); a pattern it refuses is a FieldError (exit 3)."""
    from statekit.netfilter import linear_regex

    try:
        return linear_regex.compile(pattern)
    except linear_regex.PatternError as exc:
        raise FieldError("ignore", f"{pattern[:80]!r}: {exc}") from None


def _desired(spec: ChainSpec, family: str, chain: Chain, host: Host) -> list[str]:
    """The whole chain as it must be: kept foreign rules, then every member's rules."""
    members = {m.id for m in spec.members}
    kept: list[str] = []
    if spec.ignore:
        patterns = [_compile(p) for p in spec.ignore]
        kept = [line for line, who in zip(chain.rules, chain.owners, strict=True)
                if who not in members and any(p.search(line) for p in patterns)]
    lines = list(kept)
    for member in spec.members:
        lines += _member_lines(member, family, chain, host)
    return lines


def _member_lines(member: RuleSpec, family: str, chain: Chain, host: Host) -> list[str]:
    """One member's rules; if computing them fails in any way, its rules in the live
    chain (its last-known rules; none at first boot): one member's fault never keeps the
    chain, its policy or the other members from being written. The member's own plan
    reports the fault (it fails the same way)."""
    try:
        resolved = iptables_rule.lookup(host, member)[0] if member.hosts else {}
        return iptables_rule.expand(member, family, resolved, chain, host.now)
    except Exception:
        return [chain.rules[i] for i in chain.owned_by(member.id)]


def _rewrite(name: str, ops: list[Op], desired: Sequence[str]) -> list[Op]:
    """Flush and refill: the chain's whole content, after a policy or -N op."""
    flush = [] if any(o.kind == "new_chain" for o in ops) else [Op("flush", name, f"-F {name}")]
    return [*ops, *flush, *(Op(kind="append", chain=name, restore=line, line=line)
                            for line in desired)]


def _op(spec: ChainSpec, state: ChainState, family: str) -> tuple[Op | None, str]:
    name = spec.chain
    if spec.builtin:
        if spec.policy is None or (state.exists and state.policy == spec.policy):
            return None, ""
        return (Op(kind="policy", chain=name, restore=f"-P {name} {spec.policy}",
                   line=spec.policy),
                f":{name} {state.policy} -> {spec.policy}")
    if spec.present:
        if state.exists:
            return None, ""
        return Op("new_chain", name, f"-N {name}"), f"+ :{name} - [0:0]"
    if not state.exists:
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
