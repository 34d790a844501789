"""The iptables planners as data: one small file per case under tests/planner_cases/<type>/
(as pyinfra keeps tests/operations/iptables.rule/*.json), each run on the fake host
(tests/fakehost.py): no root, no namespace, milliseconds.

A case says what goes in (the ``saved`` tables, the ``states``, the ``resolve`` answers,
the clock ``now``) and what comes out (the ``restore`` input the engine sends, per family,
or ``noop`` and why; optionally each state's ``status``, ``errors`` and ``diff``). The
keys are described in docs/development.md ("Planner cases"). Every case also checks what
holds for all of them: a dry run first sends nothing and shows the same diffs, no state
fails unless the case says so, and a second converge (same answers, same clock) sends
nothing.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from statekit.engine.engine import Engine, Outcome
from statekit.host.host import Host
from statekit.host.runner import Result
from statekit.load import loader
from statekit.netfilter import resolve
from tests.fakehost import FakeChain, FakeRunner

CASES = Path(__file__).parent / "planner_cases"
FAMILIES = ("ipv4", "ipv6")
KEYS = {"states", "vars", "saved", "resolve", "now", "check", "restore", "noop", "status",
        "errors", "diff", "known_bug"}
T0 = 1_800_000_000  # the clock when a case does not set ``now``


class CaseError(Exception):
    """A case file that does not say what it must (its path and the key in the message)."""


@dataclass
class Case:
    name: str
    states: list[dict[str, Any]]
    vars: dict[str, Any] = field(default_factory=dict)
    saved: dict[str, str] = field(default_factory=dict)
    resolve: dict[str, Any] = field(default_factory=dict)
    now: int = T0
    check: bool = False
    restore: dict[str, str] = field(default_factory=dict)
    noop: str | None = None
    status: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    diff: dict[str, str] = field(default_factory=dict)
    known_bug: str | None = None  # the case says what must happen; statekit does not yet


def read_case(path: Path) -> Case:
    name = str(path.relative_to(CASES))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "states" not in data:
        raise CaseError(f"{name}: a mapping with at least `states`")
    unknown = set(data) - KEYS
    if unknown:
        raise CaseError(f"{name}: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}")
    if ("restore" in data) == ("noop" in data):
        raise CaseError(f"{name}: say what is sent (`restore`) or why nothing is (`noop`)")
    for key in ("saved", "restore"):
        if set(data.get(key, {})) - set(FAMILIES):
            raise CaseError(f"{name}: `{key}` is keyed by family: {FAMILIES}")
    return Case(name=name, **data)


def all_cases() -> list[Path]:
    return sorted(CASES.glob("*/*.yaml"))


def params() -> list[Any]:
    """Each case; one with a ``known_bug`` must fail (strict xfail): fixing the bug makes
    it pass, and the test then fails until the key is removed."""
    out = []
    for path in all_cases():
        bug = read_case(path).known_bug
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        out.append(pytest.param(path, id=str(path.relative_to(CASES)), marks=marks))
    return out


class RecordingRunner(FakeRunner):
    """The fake host, also keeping each restore's input: ``(family, text)``."""

    def __init__(self) -> None:
        super().__init__()
        self.restores: list[tuple[str, str]] = []

    def run(self, argv: Any, *, input: str | None = None, timeout: float = 60.0,
            check: bool = True) -> Result:
        tool = str(argv[0]).rsplit("/", 1)[-1]
        if tool.endswith("-restore"):
            self.restores.append(("ipv6" if tool.startswith("ip6") else "ipv4", input or ""))
        return super().run(argv, input=input, timeout=timeout, check=check)

    def load(self, family: str, text: str) -> None:
        """Set the tables from ``iptables-save`` text; a built-in chain the text does not
        list stays as a fresh namespace has it (policy ACCEPT, no rules)."""
        chains: dict[str, FakeChain] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("*"):
                chains = self.table(family, line[1:])
            elif line.startswith(":"):
                name, policy = line[1:].split()[:2]
                chains[name] = FakeChain(policy)
            elif line.startswith("-A "):
                if line.split()[1] not in chains:
                    raise CaseError(f"a rule of an undeclared chain: {line!r}")
                chains[line.split()[1]].rules.append(line)
            elif line and line != "COMMIT" and not line.startswith("#"):
                raise CaseError(f"not iptables-save output: {line!r}")


class Run:
    """One case's machine: the fake host, the state file, the fake resolver's answers."""

    def __init__(self, case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.case = case
        self.runner = RecordingRunner()
        for family, text in case.saved.items():
            self.runner.load(family, text)
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.file = tmp_path / "states.yaml"
        states = [{"phase": "network", **s} for s in case.states]
        self.file.write_text(json.dumps({"phases": ["network"], "vars": case.vars,
                                         "states": states}, indent=1))
        monkeypatch.setattr(resolve, "resolve_each", self.answer)

    def answer(self, names: Any, families: Any, timeout: float,
               resolvers: Any = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            if name not in self.case.resolve:
                raise CaseError(f"{self.case.name}: `resolve` has no answer for {name!r}")
            got = self.case.resolve[name]
            out[name] = (resolve.Failure(name, got) if isinstance(got, str)
                         else tuple(str(a) for a in got))
        return out

    def converge(self, *, check: bool) -> dict[str, Outcome]:
        program = loader.load([str(self.file)], environ={})
        host = Host(root=str(self.root), runner=self.runner, now=self.case.now)
        seen: list[Outcome] = []
        Engine(program, host, check=check, on_outcome=seen.append).converge()
        return {o.state.id: o for o in seen}

    def sent(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for family, text in self.runner.restores:
            if family in out:
                raise AssertionError(f"{self.case.name}: two restores for {family}")
            out[family] = text
        return out


def same(what: str, want: str, got: str) -> None:
    """Fail with a unified diff of the two texts (and nothing else) unless equal."""
    if got != want:
        lines = difflib.unified_diff(want.splitlines(), got.splitlines(), "expected", "got",
                                     lineterm="", n=2)
        pytest.fail(f"{what} differs (- expected, + got):\n" + "\n".join(lines),
                    pytrace=False)


def check_outcomes(case: Case, outcomes: dict[str, Outcome]) -> None:
    named = set(case.status) | set(case.errors) | set(case.diff)
    assert named <= set(outcomes), f"{case.name}: no such state: {named - set(outcomes)}"
    for sid, outcome in outcomes.items():
        want = case.status.get(sid)
        if want is None:
            assert outcome.status in ("ok", "changed"), \
                f"{case.name}: {sid} is {outcome.status} ({outcome.error}); say so in `status`"
        else:
            assert outcome.status == want, f"{case.name}: {sid} is {outcome.status}, not {want}"
    for sid, words in case.errors.items():
        assert words in str(outcomes[sid].error), \
            f"{case.name}: {sid}'s error {outcomes[sid].error!r} does not say {words!r}"
    for sid, want in case.diff.items():
        same(f"{case.name}: {sid}'s diff", want.rstrip("\n"), outcomes[sid].plan.diff)


def check_sent(case: Case, sent: dict[str, str], outcomes: dict[str, Outcome]) -> None:
    if case.noop is not None:
        assert not sent, f"{case.name}: a no-op ({case.noop}) sent:\n" + "\n".join(sent.values())
        changed = [sid for sid, o in outcomes.items() if o.status == "changed"]
        assert not changed, f"{case.name}: a no-op ({case.noop}) says changed: {changed}"
    for family in FAMILIES:
        want, got = case.restore.get(family), sent.get(family)
        if want is None:
            assert got is None, f"{case.name}: an {family} restore was sent:\n{got}"
        else:
            assert got is not None, f"{case.name}: no {family} restore was sent"
            same(f"{case.name}: the {family} restore", want, got)


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run, then the converge the case describes, then a second one (a no-op)."""
    run = Run(case, tmp_path, monkeypatch)
    dry = run.converge(check=True)
    assert run.runner.restores == [], f"{case.name}: the dry run sent a restore"
    if case.check:
        assert case.noop is not None, f"{case.name}: a dry run sends nothing: use `noop`"
        check_outcomes(case, dry)
        return
    outcomes = run.converge(check=False)
    check_outcomes(case, outcomes)
    for sid, outcome in outcomes.items():
        same(f"{case.name}: {sid}'s dry-run diff", outcome.plan.diff, dry[sid].plan.diff)
    check_sent(case, run.sent(), outcomes)
    run.runner.restores.clear()
    again = run.converge(check=False)
    assert run.runner.restores == [], \
        f"{case.name}: a second converge is not a no-op:\n{run.runner.restores}"
    assert "changed" not in {o.status for o in again.values()}, f"{case.name}: {again}"


@pytest.mark.parametrize("path", params())
def test_case(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(read_case(path), tmp_path, monkeypatch)


def test_there_are_cases_for_each_planner() -> None:
    kinds = {p.parent.name for p in all_cases()}
    assert kinds == {"iptables_rule", "iptables_chain"}
    assert len(all_cases()) >= 30
