"""A no-op converge imports no heavy module.

What keeps the 5-minute refresh cheap is what it does not import: a no-op converge is
mostly interpreter start-up and imports (``make bench`` times it against
``python -c pass`` and the hand-written floor). This test guards the cause without timing
anything: after a converge that changes nothing, none of the modules below is loaded
beyond what the interpreter itself had loaded at start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.netns

HEAVY = ("typing", "re", "enum", "collections", "functools", "contextlib", "subprocess",
         "argparse", "gettext", "locale", "pickle", "_pickle", "hashlib", "_hashlib",
         "ipaddress", "signal", "threading", "selectors", "json", "difflib", "importlib",
         "importlib.util", "dataclasses", "inspect", "yaml", "jinja2", "jsonschema")

PROBE = ("import sys; before = set(sys.modules); from statekit.cli import main; "
         "code = main(sys.argv[1:]); "
         "print('LOADED', *sorted(set(sys.modules) - before), file=sys.stderr); "
         "raise SystemExit(code)")

RULES = """\
phases: [bench]
states:
  - id: rules
    type: iptables_rule
    phase: bench
    table: filter
    chain: OUTPUT
    protocol: tcp
    destination: [198.18.0.1, 198.18.0.2, 2001:db8::1]
    family: both
    dport: 443
    jump: ACCEPT
  - id: env
    type: env_file
    phase: bench
    path: /etc/statekit-test/agent.env
    mode: "0600"
    entries: {OTEL_METRICS_EXPORTER: otlp}
"""


def loaded_by_converge(netns: str, root: Path, state_file: Path) -> set[str]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, "converge",
            "--root", str(root), str(state_file)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED"))
    return set(line.split()[1:])


@pytest.mark.parametrize("states", ["telemetry", "rules"])
def test_no_op_converge_imports_nothing_heavy(netns: str, root: Path, tmp_path: Path,
                                              states: str) -> None:
    if states == "telemetry":
        state_file = REPO / "states" / "telemetry.yaml"
    else:
        state_file = tmp_path / "rules.yaml"
        state_file.write_text(RULES)
    first = loaded_by_converge(netns, root, state_file)
    assert "yaml" in first  # the first run loads the files (and fills the cache)
    again = loaded_by_converge(netns, root, state_file)
    assert "statekit.engine" in again  # it did converge
    assert sorted(set(HEAVY) & again) == []
