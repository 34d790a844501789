"""A no-op converge imports no heavy module.

What keeps the 5-minute refresh cheap is what it does not import: a no-op converge is
mostly interpreter start-up and imports (``make bench`` times it against
``python -c pass`` and the hand-written floor). This test guards the cause without timing
anything: after a converge that changes nothing, none of the modules below is loaded
beyond what the interpreter itself had loaded at start (``python -X importtime`` lists
every import, and ``sys.modules`` is compared before and after). The real paths: the
telemetry states, a rule set, and the full lockdown (states/network.yaml and
states/telemetry.yaml with telemetry on: a secret is set) as the refresh loop runs it,
for real and in check mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, dns_query

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

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


def loaded_by_converge(netns: str, root: Path, state_file: Path, *extra: str,
                       env: dict[str, str] | None = None) -> set[str]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-X", "importtime", "-c", PROBE,
            "converge", "--root", str(root), str(state_file), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False,
                          timeout=120, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED"))
    timed = {x.rsplit("|", 1)[1].strip() for x in proc.stderr.splitlines()
             if x.startswith("import time:") and "|" in x}
    assert timed, "python -X importtime printed no import"
    return set(line.split()[1:]) | timed  # what sys.modules and importtime both saw


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
    assert "statekit.engine.engine" in again  # it did converge
    assert sorted(set(HEAVY) & again) == []


LOCKDOWN_ENV = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": "glc_lean_token_0000",
                "GRAFANA_OTLP_ENDPOINT": "https://otlp.example.test/otlp"}
UPSTREAM = """\
.:53 {
    bind 127.0.0.11
    hosts {
        192.0.2.10 otlp.example.test
        192.0.2.20 a.example.test
    }
}
"""


def test_the_lockdown_refresh_with_telemetry_on_imports_nothing_heavy(
        netns: str, root: Path, tmp_path: Path, coredns: Callable[..., Any]) -> None:
    """The 5-minute refresh: both shipped files, telemetry on (a secret is set), names
    asked of a real upstream CoreDNS: after the boot's load, the cache serves it."""
    corefile = tmp_path / "Upstream"
    corefile.write_text(UPSTREAM)
    coredns(corefile)
    ready = ("NOERROR", ["192.0.2.20"])
    assert dns_query(netns, "127.0.0.11", "a.example.test", expect=ready, timeout=15) == ready
    args = ["--phase", "network", "--var", "domains=[a.example.test]",
            "--var", "upstream_resolvers=[127.0.0.11]"]
    first = loaded_by_converge(netns, root, REPO / "states", *args, env=LOCKDOWN_ENV)
    assert "yaml" in first
    auth = loaded_by_converge(netns, root, REPO / "states", "--phase", "auth", *args[2:],
                              env=LOCKDOWN_ENV)
    assert "yaml" in auth  # the env file holds the secret: its state is sealed, loaded
    for extra in ([], ["--check"]):
        again = loaded_by_converge(netns, root, REPO / "states", *args, *extra,
                                   env=LOCKDOWN_ENV)
        assert "statekit.engine.engine" in again
        assert sorted(set(HEAVY) & again) == []
