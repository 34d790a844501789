"""`statekit show`: the states as they were written, rendered, and the vars.

No internal data (resolved-address integers, empty defaults, positions a purged chain's
rules do not use): each state's own fields exactly as it gives them, after rendering,
in its own order. YAML by default (a valid state file again), JSON with ``--format json``,
``--id`` to pick states, secrets masked, and nothing of it in the program cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, statekit, write

pytestmark = pytest.mark.root

TOKEN = "glc_show_never_printed_5d4c3b"
ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp"}
STATES = str(REPO / "states")
GRAPH = ("id", "type", "phase", "requires", "onchanges")


def written() -> dict[str, dict[str, Any]]:
    """The shipped states as their files hold them, by id."""
    out = {}
    for path in sorted((REPO / "states").glob("*.yaml")):
        for state in yaml.safe_load(path.read_text())["states"]:
            out[state["id"]] = state
    return out


def shown(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    run = statekit(["show", *args, STATES], env=env or ON)
    assert run.returncode == 0, run.output
    assert TOKEN not in run.output
    doc = yaml.safe_load(run.stdout)
    assert isinstance(doc, dict)
    return doc


def test_each_state_shows_the_fields_it_wrote_in_its_order() -> None:
    doc = shown()
    source = written()
    assert [s["id"] for s in doc["states"]] == list(source)
    for state in doc["states"]:
        wrote = source[state["id"]]
        own = [k for k in wrote if k not in GRAPH]
        assert list(state)[:3] == ["id", "type", "phase"]
        assert [k for k in state if k not in GRAPH] == own, state["id"]


def test_fields_are_rendered_and_nothing_internal_is_shown() -> None:
    run = statekit(["show", STATES], env=ON)
    doc = yaml.safe_load(run.stdout)
    states = {s["id"]: s for s in doc["states"]}
    assert states["fw-allowlist"]["destination_host"][0] == "api.anthropic.com"
    assert states["otlp-firewall"]["dport"] == 443 and states["otlp-firewall"]["ensure"] \
        == "present"
    assert states["otlp-env"]["mode"] == "0600"
    for internal in ("address", "family: ''", 'family: ""', "position", "exclusive",
                     "members", "spec", "3405803786"):
        assert internal not in run.stdout, internal
    written = {s["id"]: s for s in doc["states"] if "family" in s}
    assert set(written) == {s for s in states if s.startswith("fw6-")}  # as they wrote it
    assert f"# {REPO}/states/network.yaml:" in run.stdout  # where each state is
    assert len(run.stdout.splitlines()) < 500  # 27 states and the vars, not 1,294 lines


def test_vars_are_resolved_and_secrets_masked() -> None:
    doc = shown()
    assert doc["phases"] == ["network", "auth"]
    assert doc["secrets"] == ["GRAFANA_API_TOKEN"]
    assert doc["vars"]["otlp_host"] == "otlp-gateway-prod-us-west-2.grafana.net"
    assert doc["vars"]["telemetry"] is True
    assert doc["vars"]["api_token"].startswith("<secret")
    headers = next(s for s in doc["states"] if s["id"] == "otlp-env")["entries"]
    assert headers["OTEL_EXPORTER_OTLP_HEADERS"].startswith("Authorization=Basic <secret")


def test_json_is_the_same_document() -> None:
    run = statekit(["show", "--format", "json", STATES], env=ON)
    assert run.returncode == 0 and TOKEN not in run.output
    assert json.loads(run.stdout) == shown()


def test_id_picks_states_and_a_typo_is_named() -> None:
    doc = shown("--id", "otlp-env", "--id", "fw-log")
    assert list(doc) == ["states"]
    assert [s["id"] for s in doc["states"]] == ["fw-log", "otlp-env"]
    run = statekit(["show", "--id", "fw-lgo", STATES])
    assert run.returncode == 3
    assert "--id 'fw-lgo': no such state; did you mean 'fw-log'?" in run.stderr


def test_absent_and_disabled_states_show_only_what_they_use(tmp_path: Path) -> None:
    """Their other fields are not checked, so they may hold a secret no one declared."""
    path = write(tmp_path / "s.yaml", """\
phases: [main]
states:
  - id: gone
    type: env_file
    phase: main
    ensure: absent
    path: /etc/gone.env
    entries: {TOKEN: "{{ env.LOOSE }}"}
  - id: disabled
    type: env_file
    phase: main
    when: false
    path: /etc/disabled.env
    entries: {TOKEN: "{{ env.LOOSE }}"}
""")
    run = statekit(["show", str(path)], env={"LOOSE": "loose-value-9f8e"})
    assert run.returncode == 0, run.output
    assert "loose-value-9f8e" not in run.stdout
    states = yaml.safe_load(run.stdout)["states"]
    assert states[0] == {"id": "gone", "type": "env_file", "phase": "main",
                         "ensure": "absent", "path": "/etc/gone.env"}
    assert states[1] == {"id": "disabled", "type": "env_file", "phase": "main", "when": False,
                         "path": "/etc/disabled.env"}


def test_the_output_is_a_valid_state_file_again(tmp_path: Path) -> None:
    run = statekit(["show", STATES], env=ON)
    again = write(tmp_path / "shown.yaml", run.stdout)
    check = statekit(["validate", str(again)], env=ON)
    assert check.returncode == 0, check.output
    assert check.stdout == statekit(["validate", STATES], env=ON).stdout


def test_what_show_prints_is_never_cached(tmp_path: Path, root: Path) -> None:
    """The cache holds specs (secrets sealed); the vars and given fields stay out."""
    path = write(tmp_path / "s.yaml", """\
phases: [main]
vars:
  only_shown: zz-only-in-show-zz
states:
  - id: app
    type: env_file
    phase: main
    path: /etc/app.env
    entries: {A: "1"}
""")
    assert "zz-only-in-show-zz" in statekit(["show", str(path)]).stdout
    run = statekit(["converge", "--root", str(root), str(path)])
    assert run.returncode == 0, run.output
    cache = root / "run/statekit/program.cache"
    assert cache.is_file()
    assert b"zz-only-in-show-zz" not in cache.read_bytes()


def test_refused_input_shows_the_states_absent_and_says_why() -> None:
    run = statekit(["show", "--id", "otlp-env", STATES],
                   env={**ON, "GRAFANA_INSTANCE_ID": "12x"})
    assert run.returncode == 3
    assert yaml.safe_load(run.stdout)["states"][0]["ensure"] == "absent"
    assert "GRAFANA_INSTANCE_ID: must be digits only (its file's states would be converged " \
        "absent;" in run.stderr
