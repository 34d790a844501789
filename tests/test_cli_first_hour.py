"""What a new user meets first (issue 16): --version, readable `show`, JSON on exit 3,
STATEKIT_DEBUG tracebacks for input errors, `make demo` refusing non-root before building.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from statekit import __version__
from tests.conftest import REPO, statekit, write

pytestmark = pytest.mark.root

TELEMETRY_ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": "glc_first-hour-token",
                "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp"}
BAD_STATE = """\
phases: [main]
states:
  - id: conf
    type: env_file
    phase: main
    path: /etc/x.env
    mode: "0600"
    entries:
      A: "{{ nope }}"
"""


def test_version_is_the_package_version() -> None:
    run = statekit(["--version"])
    assert run.returncode == 0
    assert run.stdout.strip() == f"statekit {__version__}"
    project = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in project, "one source for the version"


def test_show_prints_modes_as_octal_strings_and_no_python_reprs() -> None:
    run = statekit(["show", "--format", "json", str(REPO / "states")], env=TELEMETRY_ON)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    env_file = next(s for s in doc["states"] if s["type"] == "env_file")
    assert (env_file["mode"], env_file["dir_mode"]) == ("0600", "0700")
    assert env_file["entries"]["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert not re.search(r'"(dir_)?mode": \d', run.stdout), "no decimal modes"
    assert "\"b'" not in run.stdout and '"b\\"' not in run.stdout, "no Python byte reprs"
    assert TELEMETRY_ON["GRAFANA_API_TOKEN"] not in run.stdout


def test_json_format_prints_the_error_on_exit_3(tmp_path: Path) -> None:
    state = write(tmp_path / "bad.yaml", BAD_STATE)
    root = tmp_path / "root"
    root.mkdir()
    run = statekit(["converge", "--check", "--format", "json", "--root", str(root),
                    str(state)])
    assert run.returncode == 3
    doc = json.loads(run.stdout)
    assert doc["format_version"] == 1
    assert doc["error"]["file"] == str(state)
    assert doc["error"]["line"] == 9
    assert doc["error"]["field"] == "states[conf].entries.A"
    assert "nope" in doc["error"]["message"]
    assert doc["error"]["exit_code"] == 3
    assert "Traceback" not in run.stderr


def test_json_format_usage_error_is_json_too() -> None:
    run = statekit(["converge", "--format", "json", "--no-such-option"])
    assert run.returncode == 3
    assert json.loads(run.stdout)["error"]["exit_code"] == 3


def test_debug_prints_a_masked_traceback_for_input_errors(tmp_path: Path) -> None:
    secret = "s3cr3t-token-value"
    state = write(tmp_path / "bad.yaml", "secrets: [TOKEN]\n" + BAD_STATE.replace(
        '"{{ nope }}"', '"{{ env.TOKEN }}{{ nope }}"'))
    quiet = statekit(["validate", str(state)], env={"TOKEN": secret})
    assert quiet.returncode == 3 and "Traceback" not in quiet.stderr
    run = statekit(["validate", str(state)], env={"TOKEN": secret, "STATEKIT_DEBUG": "1"})
    assert run.returncode == 3
    assert "Traceback (most recent call last)" in run.stderr
    assert "StateError" in run.stderr
    assert secret not in run.output


def test_make_demo_checks_root_before_building(tmp_path: Path) -> None:
    """As an unprivileged user in a fresh copy: refused at once, nothing built."""
    work = Path(tempfile.mkdtemp(prefix="sk-make-demo-"))  # /tmp: nobody can reach it
    shutil.copy(REPO / "Makefile", work / "Makefile")
    subprocess.run(["chown", "-R", "nobody", str(work)], check=True)
    try:
        refused(work)
    finally:
        shutil.rmtree(work)


def refused(work: Path) -> None:
    for target in ("demo", "try"):
        proc = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "make", "-C", str(work), target],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(work)})
        assert proc.returncode != 0
        assert "needs root" in proc.stderr
        assert "venv" not in proc.stdout, proc.stdout
        assert sorted(p.name for p in work.iterdir()) == ["Makefile"]
