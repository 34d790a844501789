"""Is the lockdown in place? The check behind ``converge --require-lockdown``.

The container's entrypoint starts the agent only when this says yes (exit 4 otherwise),
so it reads the kernel's tables afresh, after the converge, whatever the converge did: a
state file that did not load, a failed restore, an exception, or statekit's own exit.

With the program loaded, each enabled, present, purged chain with policy DROP of the
selected phases (states/network.yaml's OUTPUT, IPv4 and IPv6) must have policy DROP and
every rule of its members that does not depend on a name (loopback, the DNS rules, the
drops, the log): those are what make it a lockdown with DNS working; a name that failed
to resolve is the converge's to report, not a reason to stop the boot. Without a program
(the files did not load), the IPv4 filter OUTPUT chain must have policy DROP and at least
one rule of statekit's. A family the kernel lacks (no IPv6: ``save.family_missing``) has
nothing to lock down; an ip6tables that fails on a kernel with IPv6 is a door left open,
so the lockdown is not in place.
"""

from __future__ import annotations

from statekit.errors import ApplyError
from statekit.host.host import Host
from statekit.netfilter import save
from statekit.program import Program, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def problems(host: Host, program: Program | None, phases: Iterable[str] = ()) -> list[str]:
    """Why the machine is not locked down; empty when it is."""
    if program is None:
        return _generic(host)
    selected = set(phases) or set(program.phases)
    chains = [s for s in program.states if s.phase in selected and _locks(s)]
    if not chains:
        return ["no state of the selected phases sets a purged chain's policy to DROP "
                "(nothing to check: is this the lockdown's state directory?)"]
    out: list[str] = []
    for state in chains:
        out += _chain_problems(host, state)
    return out


def _locks(state: State) -> bool:
    spec = state.spec
    return (state.type == "iptables_chain" and state.enabled and spec is not None
            and spec.present and spec.purge and spec.policy == "DROP")


def _chain_problems(host: Host, state: State) -> list[str]:
    from statekit.resources import iptables_rule

    spec = state.spec
    out: list[str] = []
    for family in spec.families:
        where = f"{spec.chain} ({family} {spec.table})"
        try:
            model = save.load(host, spec.table, family)
        except ApplyError as exc:
            out.append(f"{where}: cannot be read: {exc}")
            continue
        if model.missing:
            continue  # no IPv6 in this kernel: nothing to reach over it
        chain = model.chains.get(spec.chain)
        if chain is None or chain.policy != spec.policy:
            policy = chain.policy if chain is not None else "missing"
            out.append(f"{where}: policy is {policy}, not {spec.policy}")
            continue
        live = set(chain.rules)
        for member in spec.members:
            if member.hosts:
                continue
            missing = [ln for ln in iptables_rule.expand(member, family, {}) if ln not in live]
            if missing:
                out.append(f"{where}: the rules of {member.id!r} are missing")
    return out


def _generic(host: Host) -> list[str]:
    try:
        chain = save.load(host, "filter", "ipv4").chains.get("OUTPUT")
    except ApplyError as exc:
        return [f"OUTPUT (ipv4 filter): cannot be read: {exc}"]
    if chain is None or chain.policy != "DROP":
        return [f"OUTPUT (ipv4 filter): policy is {chain.policy if chain else 'missing'}, "
                "not DROP"]
    if not any(chain.owners):
        return ["OUTPUT (ipv4 filter): no rule of statekit's (no loopback, no DNS)"]
    return []
