"""docs/telemetry.md shows what statekit really does: its samples are run and compared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.netns

DOC = (REPO / "docs" / "telemetry.md").read_text(encoding="utf-8")
FENCES = re.findall(r"^```(\w+)\n(.*?)^```$", DOC, flags=re.S | re.M)
BIN = str(Path(sys.executable).parent)
ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": "glc_docs_token_0123456789",
      "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp"}


def fences(kind: str) -> list[str]:
    return [body for lang, body in FENCES if lang == kind]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=60, env={"PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8",
                                           **env})


def test_the_env_file_sample_is_what_statekit_writes(tmp_path: Path) -> None:
    [script] = fences("sh")
    written = fences("text")[0]
    proc = run(["/bin/sh", "-c", script], {"TMPDIR": str(tmp_path)})  # mktemp -d: in here
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == written


def test_the_state_sample_is_the_shipped_state() -> None:
    [state] = fences("yaml")
    assert state in (REPO / "states" / "telemetry.yaml").read_text(encoding="utf-8")


def test_the_refusal_samples_are_what_statekit_prints(tmp_path: Path, netns: str) -> None:
    """Telemetry stays off: its states converge absent (in a private namespace: phase
    network reads the firewall), nothing of it is written, exit 3."""
    samples = fences("text")[1:]
    cases = [({"OTEL_RESOURCE_ATTRIBUTES": "owner=a=b"}, "auth"),
             ({"GRAFANA_OTLP_ENDPOINT": "https://2130706433/otlp"}, "network")]
    assert len(samples) == len(cases)
    for sample, (env, phase) in zip(samples, cases, strict=True):
        proc = run(["ip", "netns", "exec", netns, "statekit", "converge", "--phase", phase,
                    "--root", str(tmp_path), "states/telemetry.yaml"], {**ON, **env})
        assert (proc.returncode, proc.stderr) == (3, sample)
    assert sorted(os.listdir(tmp_path)) in ([], ["run"])  # at most statekit's lock dir
