"""``iptables_rule``: owned rules (tagged ``statekit:<id>``).

One state may stand for several rules: sources x destinations (static and resolved
``destination_host``) x families. Desired rules are rendered as iptables-save prints
them and compared as strings with the one save per (table, family) the phase shares.

In a chain that an ``iptables_chain`` state purges (an exclusive chain), the chain state
writes every member's rules, in ``order``, in one transaction: a member only plans (its
own lines, for the report) and is verified after the commit. In any other chain, the
state's rules are placed as one block at ``position`` (:mod:`statekit.netfilter.block`)
and staged into the restore transaction of the (table, family).

Each name of ``destination_host`` is resolved on its own; its rules carry the name in
their tag (``statekit:<id> <name>``), so a name that fails to resolve keeps its
last-known addresses (its rules in the live table) while the other names' new addresses
go in. The state is then ``failed``, naming the name, with everything else applied.
"""

from __future__ import annotations

import time

from statekit.errors import ApplyError, FieldError, did_you_mean
from statekit.host.host import Host
from statekit.netfilter import fields as rule_fields
from statekit.netfilter import save, transaction
from statekit.netfilter.block import BlockPlan, Position, plan_block
from statekit.netfilter.rule import Rule, Target
from statekit.netfilter.rulediff import ACTIONS, marks, text
from statekit.netfilter.table import (
    BUILTIN,
    COMMENT_LIMIT,
    GONE,
    TAG_PREFIX,
    Chain,
    comment_of,
    name_tag,
    split_gone,
)
from statekit.resources.base import EMPTY, Change, Meta, Plan
from statekit.resources.iptables_table import TableResource
from statekit.resources.managed_file import parse_owner
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
    sources: tuple[rule_fields.Network, ...] = ()
    destinations: tuple[rule_fields.Network, ...] = ()
    hosts: tuple[str, ...] = ()
    position: Position = Position()
    resolve_timeout: float = 5.0
    resolvers: tuple[str, ...] = ()
    pin_grace: int = 0  # seconds an address that left a name's answers stays accepted
    order: int = 500
    #: the families in which this rule is a member of a purged chain (that chain writes
    #: its rules there: see iptables_chain); in the others it is placed by ``position``
    exclusive: frozenset[str] = frozenset()
    phase: str = ""
    #: (field, chain, family) of each chain it names (``jump``, ``chain``) that is not
    #: built in and no state declares: checked against the live table before anything
    #: is applied (:meth:`IptablesRule.preflight`), once linked
    foreign: tuple[tuple[str, str, str], ...] = ()


class RuleCurrent(Record):
    chains: Mapping[str, Chain | None]  # family -> snapshot (None: no such chain)
    resolved: Mapping[str, tuple[str, ...]] = EMPTY
    failed: Mapping[str, str] = EMPTY  # name -> why it did not resolve
    now: int = 0  # the converge's clock (Unix seconds), for the pins' grace
    missing: Mapping[str, str] = EMPTY  # family -> why this machine has none (skipped)


def _slot(spec: RuleSpec) -> tuple[str, str, str, str]:
    return (spec.table, spec.chain, spec.position.kind, spec.position.before)


def _position(value: Any) -> Position:
    if isinstance(value, dict):
        return Position("before", str(value["before"]))
    return Position(str(value))


def _target(fields: Mapping[str, Any], table: str) -> Target:
    if "jump" not in fields:
        raise FieldError("jump", "is required (unless ensure: absent)")
    jump = rule_fields.jump(fields["jump"], table)
    prefix, group = fields.get("log_prefix"), fields.get("nflog_group")
    if prefix is not None and jump not in ("LOG", "NFLOG"):
        raise FieldError("log_prefix", "only with jump LOG or NFLOG")
    if group is not None and jump != "NFLOG":
        raise FieldError("nflog_group", "only with jump NFLOG")
    limit = rule_fields.PREFIX_LIMIT.get(jump, 0)
    return Target(jump, rule_fields.text(prefix, "log_prefix", limit), group)


def _template(fields: Mapping[str, Any], meta: Meta, chain: str, table: str) -> Rule:
    protocol = str(fields["protocol"]).lower()
    _check_protocol(fields, protocol)
    comment = rule_fields.text(fields.get("comment"), "comment", 200)
    owner = fields.get("uid_owner")
    tag = TAG_PREFIX + meta.id + (f" {comment}" if comment else "")
    if len(tag) > COMMENT_LIMIT:
        raise FieldError("comment" if comment else "id", f"the tag (statekit:<id> "
                         f"<comment>) is {len(tag)} characters; iptables keeps "
                         f"{COMMENT_LIMIT}: shorten the {'comment' if comment else 'id'}")
    return Rule(
        chain=chain, family="", tag=tag,
        target=_target(fields, table), protocol=protocol,
        in_interface=rule_fields.interface(fields.get("in_interface"), "in_interface", chain),
        out_interface=rule_fields.interface(fields.get("out_interface"), "out_interface", chain),
        sport=rule_fields.port(fields["sport"], "sport") if "sport" in fields else None,
        dport=rule_fields.port(fields["dport"], "dport") if "dport" in fields else None,
        ctstate=tuple(fields["ctstate"]), syn=fields.get("syn"),
        icmpv6_types=rule_fields.icmpv6_types(fields.get("icmpv6_type")),
        uid_owner=None if owner is None else rule_fields.uid_owner(
            parse_owner(owner, "uid_owner"), chain),
    )


def _check_protocol(fields: Mapping[str, Any], protocol: str) -> None:
    """Ports and TCP flags need their protocol; ICMPv6 types need an ipv6-only rule."""
    for key, allowed in (("sport", _PORT_PROTOCOLS), ("dport", _PORT_PROTOCOLS),
                         ("syn", ("tcp",))):
        if key in fields and protocol not in allowed:
            raise FieldError(key, f"only with protocol {' or '.join(allowed)} (protocol "
                             f"is {protocol})")
    if "icmpv6_type" in fields and (protocol, fields["family"]) != ("icmp", "ipv6"):
        raise FieldError("icmpv6_type", "only with protocol icmp and family ipv6 (protocol "
                         f"is {protocol}, family {fields['family']})")


def _hosts(value: Any) -> tuple[tuple[str, ...], list[str]]:
    """(DNS names, IP literals) of ``destination_host``."""
    from statekit.netfilter.resolve import check_name

    names, literals = [], []
    for item in rule_fields.as_list(value):
        try:
            rule_fields.network(item, "destination_host")
            literals.append(str(item))
        except FieldError:
            try:
                names.append(check_name(str(item)))
            except ValueError as exc:
                raise FieldError("destination_host", str(exc)) from None
    return tuple(sorted(set(names))), literals


def expand(spec: RuleSpec, family: str, resolved: Mapping[str, Iterable[str]],
           live: Chain | None = None, now: int = 0) -> list[str]:
    """The desired lines of one family: the static destinations, then each name's
    addresses (names sorted): its pins, then the addresses in grace.

    A name's pins are its addresses in ``resolved``; a name missing from it keeps its
    pins in the ``live`` chain (its last-known addresses; none at first boot). An address
    that left the pins stays, tagged ``gone=<when>``, until ``pin_grace`` seconds after
    ``when`` (the first converge that no longer saw it), then goes."""
    if spec.template is None:
        return []
    want = f"ipv{6 if family == 'ipv6' else 4}"
    srcs = [str(n) for n in spec.sources if f"ipv{n.version}" == want]
    if spec.sources and not srcs:
        return []
    base = spec.template._replace(family=family)
    out: list[str] = []
    dsts = [str(n) for n in spec.destinations if f"ipv{n.version}" == want]
    if dsts or not (spec.destinations or spec.hosts):
        out += base.lines((s, d) for s in _or_any(srcs) for d in _or_any(dsts))
    index = pins_of(live, spec.id) if spec.hosts else {}
    for name in spec.hosts:
        tag = name_tag(base.tag, name)
        had = index.get(tag, {})
        if name in resolved:  # canonical text from the resolver, sorted, IPv4 first
            pins = [f"{a}/128" if ":" in a else f"{a}/32" for a in resolved[name]
                    if (":" in a) == (want == "ipv6")]
        else:
            pins = [dest for dest, gone in had.items() if gone is None]
        out += base._replace(tag=tag).lines((s, d) for s in _or_any(srcs) for d in pins)
        for dest, gone in had.items():
            when = now if gone is None else gone
            if dest not in pins and now < when + spec.pin_grace:
                out += base._replace(tag=f"{tag}{GONE}{when}").lines(
                    (s, dest) for s in _or_any(srcs))
    return out


def name_facts(spec: RuleSpec, lines: list[str],
               failed: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each name's pins and addresses in grace (``address -> gone`` time) in ``lines``,
    and why it failed (None: it resolved): the report's facts, `statekit status`'s and
    `statekit drops`' source."""
    if spec.template is None:
        return {}
    index = pins_of(Chain(rules=lines), spec.id)
    out: dict[str, dict[str, Any]] = {}
    for name in spec.hosts:
        found = index.get(name_tag(spec.template.tag, name), {})
        out[name] = {"pins": [_address(d) for d, gone in found.items() if gone is None],
                     "grace": {_address(d): gone for d, gone in found.items()
                               if gone is not None},
                     "failed": failed.get(name)}
    return out


def _address(dest: str) -> str:
    return dest.rsplit("/", 1)[0]


#: tag -> destination -> ``gone=`` time (None: a current pin)
Pins = dict[str, dict[str, int | None]]


def pins_of(live: Chain | None, state_id: str) -> Pins:
    """The destinations of ``state_id``'s rules in the live chain, by tag (a name's tag,
    ``gone=`` mark left out), in order, each with its mark's time (None: a current pin).
    One pass over the chain, whatever the number of names."""
    out: Pins = {}
    if live is None:
        return out
    for line, who in zip(live.rules, live.owners, strict=True):
        comment = comment_of(line) if who == state_id and " -d " in line else None
        if comment is None:
            continue
        tag, gone = split_gone(comment)
        dest = line.split(" -d ", 1)[1].split(" ", 1)[0]
        found = out.setdefault(tag, {})
        if dest not in found or gone is None:
            found[dest] = gone
    return out


def _placed(spec: RuleSpec) -> bool:
    """Whether the rule is placed by ``position`` in one of its families at least."""
    return bool(set(spec.families) - spec.exclusive)


def _or_any(values: list[str]) -> list[str | None]:
    return [*values] if values else [None]


class IptablesRule(TableResource[RuleSpec, RuleCurrent]):
    type_name = "iptables_rule"
    identity_fields = frozenset({"table", "chain", "family"})

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> RuleSpec:
        table = fields["table"]
        chain = rule_fields.chain(fields["chain"])
        families = rule_fields.FAMILIES[fields["family"]]
        if not meta.present:
            return RuleSpec(id=meta.id, table=table, chain=chain, families=families,
                            present=False, phase=meta.phase)
        names, literals = _hosts(fields.get("destination_host"))
        dests = [*rule_fields.as_list(fields.get("destination")), *literals]
        template = _template(fields, meta, chain, table)
        if names and len(name_tag(template.tag, "x" * 253)) > COMMENT_LIMIT:
            raise FieldError("comment", "the tag (statekit:<id> <comment> <host name>) "
                             "leaves no room for a host name in iptables' 255 characters: "
                             "shorten the comment")
        return RuleSpec(
            id=meta.id, table=table, chain=chain, families=families, present=True,
            template=template,
            sources=rule_fields.networks(fields.get("source"), "source", families),
            destinations=rule_fields.networks(dests, "destination", families), hosts=names,
            position=_position(fields["position"]),
            resolve_timeout=float(fields["resolve_timeout"]),
            resolvers=tuple(str(rule_fields.network(r, "resolvers")).split("/")[0]
                            for r in fields["resolvers"]),
            order=int(fields["order"]), phase=meta.phase,
            pin_grace=int(fields["pin_grace"]),
        )

    def link(self, specs: Sequence[RuleSpec],
             program: Mapping[str, Sequence[Any]] = EMPTY) -> list[RuleSpec]:
        """Mark the members of purged chains and the chains no state declares; tell
        each other rule which states share its slot (same chain and position)."""
        chains = program.get("iptables_chain", ())
        purged = {(c.table, c.chain, fam) for c in chains if c.purge for fam in c.families}
        declared = _declared(chains)
        slots: dict[tuple[str, str, str, str], set[str]] = {}
        out = [spec._replace(exclusive=frozenset(
                   fam for fam in spec.families if (spec.table, spec.chain, fam) in purged),
                             foreign=_foreign(spec, declared)) for spec in specs]
        for spec in out:
            if spec.present and _placed(spec):
                slots.setdefault(_slot(spec), set()).add(spec.id)
        return [spec._replace(position=spec.position._replace(
                    peers=frozenset(slots[_slot(spec)] - {spec.id})))
                if spec.present and _placed(spec) else spec for spec in out]

    def check(self, spec: RuleSpec,
              program: Mapping[str, Sequence[Any]] = EMPTY) -> Iterable[FieldError]:
        """A chain it names that no state declares: a typo of a target or of a chain
        the states declare (``ACCEPTT``), or one a state removes, is an error now; any
        other is checked against the live table before anything is applied."""
        chains = program.get("iptables_chain", ())
        removed = {(c.table, c.chain, fam) for c in chains if not c.present
                   for fam in c.families}
        declared = _declared(chains)
        for field, name in dict.fromkeys((fld, n) for fld, n, _ in spec.foreign):
            gone = [fam for fam in spec.families if (spec.table, name, fam) in removed]
            if gone:
                yield FieldError(field, f"chain {name!r} is removed by a state (ensure: "
                                 f"absent, {spec.table} {'/'.join(gone)})")
                continue
            known = [*(rule_fields.TARGETS if field == "jump" else BUILTIN[spec.table]),
                     *sorted({c for t, c, fam in declared if t == spec.table
                              and fam in spec.families})]
            near = rule_fields.typo_of(name, known)
            if near is not None:
                yield FieldError(field, f"{name!r} is neither {_what(field, spec.table)}; did "
                                 f"you mean {near!r}?")

    def preflight(self, spec: RuleSpec, host: Host) -> Iterable[FieldError]:
        """Each chain it names that no state declares must exist in the live table."""
        lacking: dict[tuple[str, str], list[str]] = {}
        live: set[str] = set()
        for field, name, family in spec.foreign:
            model = save.load(host, spec.table, family)
            live.update(model.chains)
            if not model.missing and name not in model.chains:
                lacking.setdefault((field, name), []).append(family)
        for (field, name), families in lacking.items():
            yield FieldError(field, f"chain {name!r} does not exist in table {spec.table} "
                             f"({', '.join(families)}) and no state declares it (an "
                             "iptables_chain state creates one)"
                             + did_you_mean(name, [*rule_fields.TARGETS, *sorted(live)]))

    def ordering(self, spec: RuleSpec) -> Iterable[str]:
        if not _placed(spec) or spec.position.kind != "before":
            return []
        return [spec.position.before]

    def cuts_traffic(self, spec: RuleSpec) -> bool:
        return (spec.present and (spec.table, spec.chain) == ("filter", "OUTPUT")
                and spec.template is not None and spec.template.target.jump in ("DROP", "REJECT"))

    def read(self, spec: RuleSpec, host: Host) -> RuleCurrent:
        chains, missing = {}, {}
        for family in spec.families:
            model = save.load(host, spec.table, family)
            if model.missing:
                missing[family] = model.missing
                continue
            chain = model.chains.get(spec.chain)
            chains[family] = chain.copy() if chain is not None else None
        if not (spec.present and spec.hosts and chains):
            return RuleCurrent(chains, missing=missing)
        resolved, failed = lookup(host, spec)
        return RuleCurrent(chains=chains, resolved=resolved, failed=failed, now=host.now,
                           missing=missing)

    def plan(self, spec: RuleSpec, current: RuleCurrent) -> Plan:
        blocks: list[tuple[str, BlockPlan]] = []
        faults: list[str] = []
        wanted: list[str] = []
        for family, chain in current.chains.items():  # the families this machine has
            member = family in spec.exclusive
            try:
                desired = expand(spec, family, current.resolved, chain, current.now)
            except Exception as exc:
                if not (member and chain is not None):
                    raise
                # the purged chain then writes this member's live rules unchanged
                # (iptables_chain._member_lines); this plan says why
                desired = [chain.rules[i] for i in chain.owned_by(spec.id)]
                faults.append(f"{type(exc).__name__}: {exc}; its rules in {spec.chain} "
                              "are kept as they are")
            if chain is None and desired and not member:
                raise ApplyError(f"chain {spec.chain} does not exist in table {spec.table} "
                                 f"({family})")
            wanted += desired
            if chain is None:
                continue
            if member:
                blocks.append((family, member_diff(chain, spec.id, desired)))
            else:
                blocks.append((family, plan_block(chain, spec.chain, spec.id, desired,
                                                  spec.position)))
        errors = tuple(f"cannot resolve {name!r}: {why}; its last-known addresses are kept"
                       for name, why in sorted(current.failed.items())) + tuple(faults)
        plan = _plan(spec, blocks, current.resolved, errors, current.now)
        plan = plan._replace(notes=tuple(f"{family}: {why}" for family, why
                                         in current.missing.items()))
        if not spec.hosts:
            return plan
        return plan._replace(facts={**plan.facts, "names": name_facts(spec, wanted,
                                                                      current.failed)})

    def stage(self, spec: RuleSpec, plan: Plan, host: Host) -> None:
        """Only the families in which the rule is placed: in a purged chain the chain
        writes its rules (a member's plan carries no ops)."""
        super().stage(spec, plan, host)


def _declared(chains: Iterable[Any]) -> set[tuple[str, str, str]]:
    """(table, chain, family) of every chain a present iptables_chain state declares."""
    return {(c.table, c.chain, fam) for c in chains if c.present for fam in c.families}


def _foreign(spec: RuleSpec, declared: set[tuple[str, str, str]]
             ) -> tuple[tuple[str, str, str], ...]:
    """(field, chain, family) of the user chains ``spec`` names that no state declares."""
    if not spec.present or spec.template is None:
        return ()
    named = [("chain", spec.chain)] if spec.chain not in BUILTIN[spec.table] else []
    if spec.template.target.jump not in rule_fields.TARGETS:
        named.append(("jump", spec.template.target.jump))
    return tuple((field, name, fam) for field, name in named for fam in spec.families
                 if (spec.table, name, fam) not in declared)


def _what(field: str, table: str) -> str:
    if field == "jump":
        return f"a target ({', '.join(rule_fields.TARGETS)}) nor a chain the states declare"
    return (f"a built-in chain of table {table} ({', '.join(BUILTIN[table])}) nor a "
            "chain the states declare")


def lookup(host: Host, spec: RuleSpec) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Each name's addresses, resolved once per phase (verify and the chain state reuse
    the answers: nothing is asked twice), and the names that failed, with why."""
    def key(name: str) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        return ("resolved", name, spec.families, spec.resolvers)

    missing = [n for n in spec.hosts if key(n) not in host.cache]
    if missing and not host.ask_names:
        return {}, dict.fromkeys(spec.hosts, "not asked")
    if missing:
        from statekit.netfilter import resolve  # a converge without names never loads it

        try:
            answers = resolve.resolve_each(missing, spec.families, spec.resolve_timeout,
                                           spec.resolvers)
        except Exception as exc:  # a fault of the resolver: every name keeps its rules
            why = f"{type(exc).__name__}: {exc}"
            answers = {name: resolve.Failure(name, why) for name in missing}
        for name in missing:
            host.cache[key(name)] = answers.get(name) or resolve.Failure(name, "no answer")
    resolved: dict[str, tuple[str, ...]] = {}
    failed: dict[str, str] = {}
    for name in spec.hosts:
        answer = host.cache[key(name)]
        if isinstance(answer, tuple):
            resolved[name] = answer
        else:
            failed[name] = answer.reason
    return resolved, failed


def member_diff(chain: Chain, state_id: str, desired: list[str]) -> BlockPlan:
    """A purged chain's member: its own lines now and wanted, no ops (the chain state
    writes them). Its lines only move when none comes or goes: then all of them."""
    current = [chain.rules[i] for i in chain.owned_by(state_id)]
    out = BlockPlan()
    if current != desired:
        out.diff = marks(current, desired) or marks(current, desired, moved=desired)
    return out


def pin_reason(mark: str, line: str, names: Mapping[str, str], spec: RuleSpec,
               now: int) -> str:
    """Why a line of a ``destination_host`` name comes or goes, in words (the dry run
    shows each pin change); ``""`` for other lines. ``names``: tag -> name."""
    comment = comment_of(line)
    for tag, name in names.items() if comment else ():
        mine, gone = split_gone(str(comment))
        if mine != tag:
            continue
        if gone is None:
            return f"{name}: in its answers" if mark == "+" else (
                f"{name}: no longer in its answers" + (
                    "" if spec.pin_grace else " (pin_grace 0: closed at once)"))
        until = _utc(gone + spec.pin_grace)
        if mark == "+":
            return (f"{name}: left its answers; accepted until {until} "
                    f"(pin_grace {spec.pin_grace} s)")
        return (f"{name}: its grace ran out at {until}" if now >= gone + spec.pin_grace
                else f"{name}: back in its answers")
    return ""


def _utc(when: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(when))


def _plan(spec: RuleSpec, blocks: list[tuple[str, BlockPlan]],
          resolved: Mapping[str, tuple[str, ...]], errors: tuple[str, ...] = (),
          now: int = 0) -> Plan:
    diff: list[str] = []
    changes: list[Change] = []
    names = {name_tag(spec.template.tag, n): n for n in spec.hosts} if spec.template else {}
    for family, block in blocks:
        prefix = transaction.table_prefix(family, spec.table)
        for mark, rule in block.diff:
            why = "misplaced" if mark == "~" else pin_reason(mark, rule, names, spec, now)
            diff.append(text(mark, prefix + rule) + (f"  # {why}" if why and mark != "~" else ""))
            changes.append(Change(ACTIONS[mark], prefix + rule, why))
    facts = {"resolved": {k: list(v) for k, v in resolved.items()}} if spec.hosts else {}
    payload = [(family, block.ops) for family, block in blocks if block.ops]
    return Plan(tuple(changes), "\n".join(diff), facts=facts, payload=payload,
                errors=errors)
