"""`statekit status` in the two-namespace world (issue 21): healthy, then a name that
fails, then drift (a foreign rule inserted by hand), then CoreDNS killed; each in text and
in JSON, with its exit code, and never a secret (telemetry on, its token registered with
the session's secrets check)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import record_output, register_token
from tests.e2e.harness import ALLOWED_HOSTS, ENDPOINT, GATEWAY, GATEWAY_ADDR, Sandbox
from tests.e2e.lockdown import STATES, VARS, Lockdown

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

TOKEN = "glc_status_token_0c8e1f6a27"
register_token(TOKEN)
ON = {"GRAFANA_INSTANCE_ID": "424242", "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": ENDPOINT}
A, B, C = ALLOWED_HOSTS


@pytest.fixture
def world(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Lockdown]:
    clean_sandbox.reset_hosts()
    root = tmp_path / "root"
    root.mkdir()
    yield Lockdown(clean_sandbox, root)
    clean_sandbox.reset_hosts()


def status(world: Lockdown) -> tuple[int, str, dict[str, Any]]:
    """`statekit status` in text and in JSON: the exit code (the same for both), the
    text, the JSON document."""
    base = ["status", "--root", str(world.root), *VARS]
    text = world.box.statekit([*base, STATES], env=ON, resolver="local")
    data = world.box.statekit([*base, "--format", "json", STATES], env=ON, resolver="local")
    for proc in (text, data):
        record_output(proc.stdout, proc.stderr)
        assert TOKEN not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    assert text.returncode == data.returncode, (text.stderr, data.stderr)
    return text.returncode, text.stdout, json.loads(data.stdout)


def names(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in doc["names"]}


def test_status_healthy_then_a_failed_name_then_drift_then_coredns_down(
        world: Lockdown) -> None:
    assert world.boot(ON).rc == 0
    assert world.converge(env=ON, phase="auth").rc == 0
    assert world.refresh(ON).rc == 0

    rc, text, doc = status(world)
    assert rc == 0, text
    assert doc["healthy"] is True and doc["problems"] == []
    assert "health        healthy" in text
    assert names(doc)[A]["pins"] == [ALLOWED_HOSTS[A]]
    assert names(doc)[GATEWAY]["pins"] == [GATEWAY_ADDR]
    assert doc["telemetry"] == {"on": True, "endpoint_host": GATEWAY,
                                "env_file": "/tmp/otel/otel-env"}
    assert doc["coredns"]["alive"] is True and doc["coredns"]["answers"] is True
    assert doc["drift"] == [] and "drift         none" in text
    assert doc["last_run"]["exit_code"] == 0 and doc["last_run"]["phases"] == ["network"]

    world.box.set_hosts({C: None})
    assert world.refresh(ON).rc == 1
    rc, text, doc = status(world)
    assert rc == 1
    failing = names(doc)[C]
    assert failing["failing"] == "NXDOMAIN" and isinstance(failing["failing_since"], int)
    assert failing["pins"] == [ALLOWED_HOSTS[C]]  # kept
    assert f"{C} fails: NXDOMAIN" in doc["problems"]
    assert "NXDOMAIN, since" in text and "degraded" in text
    first_since = failing["failing_since"]
    assert world.refresh(ON).rc == 1
    assert names(status(world)[2])[C]["failing_since"] == first_since  # since when

    world.box.reset_hosts()
    assert world.refresh(ON).rc == 0
    world.iptables("-I", "OUTPUT", "1", "-d", "198.18.0.40", "-j", "ACCEPT")
    rc, text, doc = status(world)
    assert rc == 1
    drift = {d["id"]: d for d in doc["drift"]}
    assert list(drift) == ["fw-output"], doc["drift"]
    assert drift["fw-output"]["changes"] == [
        "remove -A OUTPUT -d 198.18.0.40/32 -j ACCEPT (not declared)"]
    assert "drift         fw-output [iptables_chain]: remove -A OUTPUT -d 198.18.0.40/32" \
        in text

    assert world.refresh(ON).rc == 0
    world.box.stop_container_coredns()
    rc, text, doc = status(world)
    assert rc == 1
    assert doc["coredns"]["alive"] is False and doc["coredns"]["answers"] is False
    assert "CoreDNS is not running" in doc["problems"]
    assert "coredns       not running" in text


def test_status_before_any_converge_is_degraded_and_says_so(world: Lockdown) -> None:
    rc, text, doc = status(world)
    assert rc == 1
    assert doc["last_run"] is None and "no converge recorded yet" in doc["problems"]
    assert "none recorded" in text
