"""An in-process test host: a runner that plays iptables-save/iptables-restore on an
in-memory ruleset, like kube-proxy's ``pkg/util/iptables/testing/fake.go``.

It answers only the commands it knows (``iptables-save -t T``, ``iptables-restore
--noflush --wait`` and their ip6tables twins) and fails the test on any other, as
invoke's ``MockContext`` does. A restore is parsed line by line and applied to a copy of
the table, which replaces the table only at ``COMMIT``: an unknown line, a missing chain or
a ``-D`` of an absent rule fails the whole restore and changes nothing, as the kernel
does. Rules are kept as the text ``iptables-save`` would print; statekit only ever writes
that canonical form, so the fake need not canonicalise.

Use it for the engine, the planner and each resource's diff in milliseconds, without root.
What only the kernel can tell (does iptables accept this rule? do packets flow?) stays in
the namespace tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from statekit.errors import ApplyError
from statekit.host.runner import Result, Runner, Started

BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
           "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
           "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
           "raw": ("PREROUTING", "OUTPUT")}
_SAVE = {"iptables-save": "ipv4", "ip6tables-save": "ipv6"}
_RESTORE = {"iptables-restore": "ipv4", "ip6tables-restore": "ipv6"}


class FakeChain:
    """A chain's policy (``-`` for a user chain) and its rule lines."""

    def __init__(self, policy: str, rules: list[str] | None = None) -> None:
        self.policy = policy
        self.rules: list[str] = list(rules or [])


Chains = dict[str, FakeChain]


class RestoreError(Exception):
    pass


class FakeRunner(Runner):
    """Records every argv (``calls_made``) and keeps the rulesets in ``tables``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_made: list[tuple[str, ...]] = []
        self.tables: dict[tuple[str, str], Chains] = {}
        self.fail_restore: str | None = None  # set to make the next restore fail
        #: family -> stderr: its save and restore fail, as on a machine whose ip6tables
        #: cannot work (e.g. "Address family not supported by protocol")
        self.broken: dict[str, str] = {}

    def table(self, family: str, name: str) -> Chains:
        key = (family, name)
        if key not in self.tables:
            self.tables[key] = {c: FakeChain("ACCEPT") for c in BUILTIN[name]}
        return self.tables[key]

    def rules(self, chain: str = "OUTPUT", family: str = "ipv4",
              table: str = "filter") -> list[str]:
        return list(self.table(family, table)[chain].rules)

    def policy(self, chain: str = "OUTPUT", family: str = "ipv4", table: str = "filter") -> str:
        return self.table(family, table)[chain].policy

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
            check: bool = True) -> Result:
        args = tuple(argv)
        self.calls_made.append(args)
        self.calls += 1
        tool = args[0].rsplit("/", 1)[-1]
        family = _SAVE.get(tool) or _RESTORE.get(tool)
        if family in self.broken and (tool in _SAVE or tool in _RESTORE):
            if check:
                raise ApplyError("command failed", argv=args, returncode=1,
                                 stderr=self.broken[family])
            return Result(args, 1, "", self.broken[family])
        if tool in _SAVE and len(args) == 3 and args[1] == "-t":
            return Result(args, 0, self.save(_SAVE[tool], args[2]), "")
        if tool in _RESTORE and args[1:] == ("--noflush", "--wait"):
            try:
                if self.fail_restore:
                    raise RestoreError(self.fail_restore)
                self.restore(_RESTORE[tool], input or "")
            except RestoreError as exc:
                if check:
                    raise ApplyError("command failed", argv=args, returncode=1,
                                     stderr=str(exc)) from None
                return Result(args, 1, "", str(exc))
            return Result(args, 0, "", "")
        raise AssertionError(f"FakeRunner: unexpected command {args!r}")

    def start(self, argv: Sequence[str], *, input: str | None = None) -> Started:
        """Nothing runs ahead on the fake host: :meth:`finish` runs the command, as the
        real runner's result would be collected (a subclass's ``run`` included)."""
        return Started(tuple(argv))

    def finish(self, started: Started, *, timeout: float = 60.0,
               check: bool = True) -> Result:
        return self.run(started.argv, timeout=timeout, check=check)

    def cancel(self, started: Started) -> None:
        """It never ran."""

    def save(self, family: str, name: str) -> str:
        chains = self.table(family, name)
        out = [f"*{name}"]
        out += [f":{name} {chain.policy} [0:0]" for name, chain in chains.items()]
        for chain in chains.values():
            out += chain.rules
        return "\n".join([*out, "COMMIT", ""])

    def restore(self, family: str, text: str) -> None:
        current: str | None = None
        work: Chains = {}
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                current = line[1:]
                table = self.table(family, current)
                work = {c: FakeChain(v.policy, v.rules) for c, v in table.items()}
            elif line == "COMMIT":
                if current is None:
                    raise RestoreError("COMMIT outside a table")
                self.tables[(family, current)] = work
                current = None
            elif current is None:
                raise RestoreError(f"line outside a table: {line}")
            else:
                _apply(work, line)
        if current is not None:
            raise RestoreError("no COMMIT")


def _rules(work: Chains, chain: str) -> list[str]:
    if chain not in work:
        raise RestoreError(f"no chain {chain}")
    return work[chain].rules


#: Built-in chains where the kernel refuses an owner match (the owner of a packet is
#: known only on its way out of a local socket).
_NO_OWNER = ("INPUT", "FORWARD", "PREROUTING")


def _apply(work: Chains, line: str) -> None:
    words = line.split(" ", 3)
    op, chain = words[0], words[1] if len(words) > 1 else ""
    if op in ("-A", "-I") and chain in _NO_OWNER and " -m owner " in line:
        raise RestoreError(f"RULE_APPEND failed (Invalid argument): rule in chain {chain}")
    if op == "-A":
        _rules(work, chain).append(line)
    elif op == "-I":
        index, spec = line.split(" ", 3)[2:]
        _rules(work, chain).insert(int(index) - 1, f"-A {chain} {spec}")
    elif op == "-D":
        target = "-A" + line[2:]
        rules = _rules(work, chain)
        if target not in rules:
            raise RestoreError(f"-D: no such rule: {line}")
        rules.remove(target)
    elif op == "-F":
        _rules(work, chain).clear()
    elif op == "-P":
        _rules(work, chain)
        work[chain].policy = words[2]
    elif op == "-N":
        if chain in work:
            raise RestoreError(f"chain {chain} exists")
        work[chain] = FakeChain("-")
    elif op == "-X":
        if _rules(work, chain):
            raise RestoreError(f"chain {chain} not empty")
        del work[chain]
    elif op.startswith(":"):
        work.setdefault(op[1:], FakeChain(chain)).policy = chain
    else:
        raise RestoreError(f"unknown line: {line}")
