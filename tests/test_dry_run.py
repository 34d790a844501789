"""The dry run of the shipped states, read by a person (issue 22, items 7 and 8): each
change is printed once, and each Corefile state's diff is against the file as the states
before it would have left it, as in a real converge. The JSON report stays complete.

Run in a private network namespace with nothing reachable (every name fails, which is
fine for a dry run) and a temporary --root; nothing is written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO, statekit

pytestmark = pytest.mark.netns

ARGS = ("--var", "domains=[a.example.com, b.example.com]", "--var", "resolve_timeout=0.5",
        "--phase", "network")


def test_each_rule_is_printed_once(netns: str, root: Path) -> None:
    run = statekit(["converge", "--check", "--diff", "--root", str(root), *ARGS,
                    str(REPO / "states")], netns=netns)
    assert run.returncode == 1, run.output  # the names do not resolve here
    rules = Counter(ln.strip()[2:] for ln in run.stdout.splitlines()
                    if ln.strip().startswith(("+ -A ", "- -A ")))
    assert rules and max(rules.values()) == 1, [r for r, n in rules.items() if n > 1]
    assert ":OUTPUT ACCEPT -> DROP" in run.stdout  # the chain's own change is shown
    assert not (root / "etc").exists()


def test_each_corefile_state_diffs_against_what_the_states_before_it_leave(
        netns: str, root: Path) -> None:
    run = statekit(["converge", "--check", "--diff", "--root", str(root), *ARGS,
                    str(REPO / "states")], netns=netns)
    created = run.stdout.count("--- /dev/null\n    +++ /etc/coredns/Corefile (after)")
    assert created == 1, run.stdout  # the first one creates it
    allowlist = run.stdout.split("network/dns-allowlist [coredns_zone]", 1)[1]
    assert allowlist.splitlines()[1].strip() == "--- /etc/coredns/Corefile (before)"
    assert "+# statekit:dns-catch-all" not in allowlist.split("would change", 1)[0]


def test_the_json_report_keeps_every_change_of_the_chain(netns: str, root: Path) -> None:
    run = statekit(["converge", "--check", "--format", "json", "--root", str(root), *ARGS,
                    str(REPO / "states")], netns=netns)
    report = json.loads(run.stdout)
    states = {s["id"]: s for s in report["states"]}
    chain = [c["target"] for c in states["fw-output"]["changes"]]
    loopback = [c["target"] for c in states["fw-loopback"]["changes"]]
    assert loopback and set(loopback) <= set(chain)
    reasons = {c["reason"] for c in states["fw-output"]["changes"]}
    assert "the rules of fw-loopback" in reasons
