"""examples/launch-agent.sh, run for real with /bin/sh: what the agent's environment gets.

The agent here is ``env -0`` (NUL-separated, so values are compared byte for byte).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

LAUNCHER = REPO / "examples" / "launch-agent.sh"
ALLOWED = ("CLAUDE_CODE_ENABLE_TELEMETRY", "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA",
           "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_TRACES_EXPORTER",
           "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT",
           "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_LOG_USER_PROMPTS", "OTEL_LOG_TOOL_DETAILS",
           "OTEL_LOG_TOOL_CONTENT", "OTEL_RESOURCE_ATTRIBUTES")
GRAFANA = {"GRAFANA_INSTANCE_ID": "987654", "GRAFANA_API_TOKEN": "glc_secret==",
           "GRAFANA_OTLP_ENDPOINT": "https://otlp.example.net/otlp"}


def launch(env_file: Path, extra: dict[str, str] | None = None) -> dict[bytes, bytes]:
    """Run the launcher with ``env -0`` as the agent; the agent's environment."""
    env = {"PATH": "/usr/bin:/bin", "OTEL_ENV_FILE": str(env_file), **(extra or {})}
    proc = subprocess.run(["/bin/sh", str(LAUNCHER), "env", "-0"], env=env,
                          capture_output=True, check=False, timeout=10)
    assert proc.returncode == 0, proc.stderr
    out: dict[bytes, bytes] = {}
    for item in proc.stdout.split(b"\0"):
        if item:
            key, _, value = item.partition(b"=")
            out[key] = value
    return out


@pytest.mark.parametrize("value", [
    "Authorization=Basic OTg3NjU0OmdsY19zZWNyZXQ=",  # one '=' of padding
    "Authorization=Basic OTg3NjU0OmdsYw==",  # two
    "a=b,c=d=",
    "==",
    "=",
    "x = y  ",  # spaces kept, trailing ones too
    "back\\slash\\n and $HOME `id` $(id) 'q' \"q\" *",
    "Zürich ✓",
    "",
])
def test_values_reach_the_agent_byte_for_byte(tmp_path: Path, value: str) -> None:
    envf = tmp_path / "otel-env"
    envf.write_bytes(f"OTEL_EXPORTER_OTLP_HEADERS={value}\nOTEL_RESOURCE_ATTRIBUTES={value}\n"
                     .encode())
    got = launch(envf)
    assert got[b"OTEL_EXPORTER_OTLP_HEADERS"] == value.encode()
    assert got[b"OTEL_RESOURCE_ATTRIBUTES"] == value.encode()


def test_last_line_without_newline_is_read(tmp_path: Path) -> None:
    envf = tmp_path / "otel-env"
    envf.write_bytes(b"OTEL_LOG_USER_PROMPTS=0\nOTEL_LOG_TOOL_DETAILS=0==")
    got = launch(envf)
    assert got[b"OTEL_LOG_USER_PROMPTS"] == b"0"
    assert got[b"OTEL_LOG_TOOL_DETAILS"] == b"0=="


def test_only_allowlisted_keys_pass(tmp_path: Path) -> None:
    envf = tmp_path / "otel-env"
    lines = [f"{key}=v-{key}" for key in ALLOWED]
    lines += ["LD_PRELOAD=/evil.so", "PATH=/nowhere", "NODE_OPTIONS=--require=/evil.js",
              "OTEL_LOG_USER_PROMPTS OTEL_LOG_TOOL_DETAILS=1", "OTEL_SOMETHING_ELSE=1",
              "*=1", "no equals sign", "GRAFANA_API_TOKEN=from-the-file", " OTEL_LOGS_EXPORTER=x"]
    envf.write_text("\n".join(lines) + "\n")
    got = launch(envf)
    for key in ALLOWED:
        assert got[key.encode()] == f"v-{key}".encode()
    assert set(got) == {k.encode() for k in (*ALLOWED, "PATH", "OTEL_ENV_FILE", "PWD")}
    assert got[b"PATH"] == b"/usr/bin:/bin"


def test_no_grafana_input_reaches_the_agent(tmp_path: Path) -> None:
    envf = tmp_path / "otel-env"
    envf.write_text("OTEL_LOG_USER_PROMPTS=1\n")
    got = launch(envf, GRAFANA)  # exported by the entrypoint, as statekit's inputs
    assert not [key for key in got if key.startswith(b"GRAFANA_")]
    assert b"glc_secret" not in b"".join(got.values())
    assert got[b"OTEL_LOG_USER_PROMPTS"] == b"1"


def test_no_file_starts_the_agent_unchanged_but_without_grafana(tmp_path: Path) -> None:
    got = launch(tmp_path / "none", {**GRAFANA, "HOME": "/root"})
    assert set(got) == {b"PATH", b"OTEL_ENV_FILE", b"HOME", b"PWD"}


def test_agent_arguments_pass_unchanged(tmp_path: Path) -> None:
    proc = subprocess.run(["/bin/sh", str(LAUNCHER), "printf", "%s|", "-u", "a b", "--"],
                          env={"PATH": "/usr/bin:/bin", "OTEL_ENV_FILE": str(tmp_path / "x")},
                          capture_output=True, text=True, check=False, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "-u|a b|--|"
