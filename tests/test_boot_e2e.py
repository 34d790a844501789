"""The container's boot, for real: the shipped states in an "internet" and a "container"
network namespace (tests/e2e/harness.py), real iptables, real CoreDNS, a real OTLP
receiver over TLS and the real OpenTelemetry SDK as the client.

Boot order, as the entrypoint runs it: phase network before CoreDNS runs (names resolve
through the upstream resolver the machine had then), CoreDNS starts on the Corefile
statekit wrote, phase auth; the refresh loop then converges phase network again with
names resolving through the container's CoreDNS.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.e2e.harness import (
    ALLOWED,
    ALLOWED_ADDR,
    ENDPOINT,
    GATEWAY,
    GATEWAY_ADDR,
    OTHER,
    OTHER_ADDR,
    OTHER_PORT,
    UPSTREAM_DNS,
    DnsAnswer,
    Sandbox,
    basic_auth,
    read_env_file,
)

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns", "node")]

TOKEN = "glc_e2eTOKENmustNEVERbePRINTED_0123456789"
INSTANCE = "987654"
ON = {"GRAFANA_INSTANCE_ID": INSTANCE, "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": ENDPOINT}
B64 = base64.b64encode(f"{INSTANCE}:{TOKEN}".encode()).decode()
STATES = str(REPO / "states")


@dataclass
class Boot:
    """One container's boot and refreshes, with the test's own vars."""

    box: Sandbox
    root: Path

    @property
    def corefile(self) -> Path:
        return self.root / "etc/coredns/Corefile"

    @property
    def pidfile(self) -> Path:
        return self.root / "run/coredns.pid"

    @property
    def env_file(self) -> Path:
        return self.root / "tmp/otel/otel-env"

    def converge(self, env: dict[str, str], *args: str,
                 resolver: str = "local") -> dict[str, Any]:
        argv = ["converge", "--root", str(self.root), "--format", "json",
                "--var", f"upstream_resolvers=[{UPSTREAM_DNS}]",
                "--var", f"domains=[{ALLOWED}]", *args, STATES]
        proc = self.box.statekit(argv, env=env, resolver=resolver)  # type: ignore[arg-type]
        assert proc.returncode in (0, 1, 2), proc.stderr
        assert TOKEN not in proc.stdout + proc.stderr and B64 not in proc.stdout + proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        report["rc"] = proc.returncode
        return report

    def boot(self, env: dict[str, str]) -> tuple[Any, Any]:
        """Phase network (no CoreDNS yet), start CoreDNS, phase auth."""
        network = self.converge(env, "--phase", "network", resolver="upstream")
        self.box.start_container_coredns(self.corefile, self.pidfile)
        auth = self.converge(env, "--phase", "auth")
        return network, auth

    def rules(self) -> list[str]:
        out = self.box.run_in_container(["iptables-save", "-t", "filter"], resolver=None)
        return [line for line in out.stdout.splitlines() if line.startswith(("-A", ":"))]


def states(report: Any) -> dict[str, Any]:
    return {s["id"]: s for s in report["states"]}


@pytest.fixture
def boot(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Boot]:
    root = tmp_path / "root"
    root.mkdir()
    yield Boot(clean_sandbox, root)


def wait_rcode(box: Sandbox, name: str, rcode: str, timeout: float = 10.0) -> DnsAnswer:
    deadline = time.monotonic() + timeout
    while True:
        answer = box.dns_query(name)
        if answer.rcode == rcode or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


@pytest.mark.parametrize("missing", [*ON, "all"])
def test_1_no_credentials_no_telemetry(boot: Boot, missing: str) -> None:
    env = {} if missing == "all" else {k: v for k, v in ON.items() if k != missing}
    first, _ = boot.boot(env)
    assert first["summary"]["failed"] == 0, first
    for sid in ("otlp-dns", "otlp-dns-reload", "otlp-firewall"):
        assert states(first)[sid]["status"] == "ok"
    again = boot.converge(env)  # both phases, the refresh loop's resolver
    assert again["summary"]["changed"] == 0 and again["summary"]["failed"] == 0, again
    assert states(again)["otlp-firewall"]["facts"] == {}  # nothing resolved
    assert boot.box.dns_query(GATEWAY).rcode == "NXDOMAIN"
    assert boot.box.tcp_probe(GATEWAY_ADDR, 443) == "timeout"
    assert not boot.env_file.exists()
    assert GATEWAY not in boot.corefile.read_text()
    assert not any("otlp" in rule for rule in boot.rules())
    # the allowlist itself works: the network layer is not telemetry's
    assert boot.box.dns_query(ALLOWED).answers == [ALLOWED_ADDR]


def test_2_credentials_open_exactly_the_gateway(boot: Boot) -> None:
    network, auth = boot.boot(ON)
    assert network["summary"]["failed"] == 0 and auth["summary"]["failed"] == 0
    assert states(network)["otlp-firewall"]["facts"]["resolved"] == {GATEWAY: [GATEWAY_ADDR]}
    assert boot.box.dns_query(GATEWAY).answers == [GATEWAY_ADDR]
    assert boot.box.dns_query(GATEWAY, "AAAA").rcode == "NOERROR"
    assert boot.box.dns_query(GATEWAY, "AAAA").answers == []
    assert boot.box.tcp_probe(GATEWAY_ADDR, 443) == "connected"
    assert boot.box.tcp_probe(GATEWAY_ADDR, OTHER_PORT) == "timeout"
    assert boot.box.dns_query(OTHER).rcode == "NXDOMAIN"
    assert boot.box.tcp_probe(OTHER_ADDR, 443) == "timeout"
    rule = [r for r in boot.rules() if "statekit:otlp-firewall" in r]
    assert rule == [f'-A OUTPUT -d {GATEWAY_ADDR}/32 -p tcp -m tcp --dport 443 -m comment '
                    f'--comment "statekit:otlp-firewall grafana-otlp {GATEWAY}" -j ACCEPT']
    st = os.stat(boot.env_file)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    dst = os.stat(boot.env_file.parent)
    assert (stat.S_IMODE(dst.st_mode), dst.st_uid) == (0o700, 0)
    assert read_env_file(boot.env_file) == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp", "OTEL_TRACES_EXPORTER": "otlp",
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "1",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Basic {B64}",
        "OTEL_LOG_USER_PROMPTS": "1", "OTEL_LOG_TOOL_DETAILS": "1",
        "OTEL_LOG_TOOL_CONTENT": "0",
    }


# Odd but carried values: the operator's are percent-encoded already, FLY_* are raw.
ATTRS_ENV = {"FLY_APP_NAME": "agent-app", "FLY_MACHINE_ID": "148e%4d,55",
             "OTEL_RESOURCE_ATTRIBUTES": "fly.app_name=operator-app, team=my%20team,"
                                         "city=Z%C3%BCrich,expr=a%3Db%2Cc%25,pad=eA%3D%3D"}
ATTRS_MEANT = {"fly.app_name": "operator-app", "fly.machine_id": "148e%4d,55",
               "team": "my team", "city": "Zürich", "expr": "a=b,c%", "pad": "eA=="}


def exported(box: Sandbox) -> dict[str, Any]:
    """The receiver's requests by path (the first one that carried data), each request
    checked: accepted, exact Authorization, one resource whose every key appears once.
    (An SDK may also send an empty export, e.g. the JS metric reader at shutdown.)"""
    got: dict[str, Any] = {}
    for request in box.requests():
        assert request["status"] == 200, request
        assert request["headers"]["authorization"] == f"Basic {B64}"  # a literal space
        if not request["resource_keys"]:
            continue
        [keys] = request["resource_keys"]  # one resource per request
        assert len(keys) == len(set(keys)), keys  # each key once
        got.setdefault(request["path"], request)
    assert set(got) == {"/otlp/v1/traces", "/otlp/v1/metrics", "/otlp/v1/logs"}, \
        [(r["path"], r["status"], r.get("resource_keys")) for r in box.requests()]
    return got


@pytest.mark.parametrize("consumer", ["python", "js"])
def test_3_real_sdk_consumer_through_the_launcher(boot: Boot, consumer: str) -> None:
    env = {**ON, **ATTRS_ENV}
    boot.boot(env)
    boot.box.set_expected_auth(basic_auth(INSTANCE, TOKEN))
    client = boot.box.run_via_launcher(boot.env_file, consumer, inherited=env)
    assert client.returncode == 0, client.stdout + client.stderr
    assert json.loads(client.stdout.splitlines()[-1])["grafana"] == []
    got = exported(boot.box)
    for request in got.values():
        [attributes] = request["resource_attributes"]
        assert {k: attributes.get(k) for k in ATTRS_MEANT} == ATTRS_MEANT  # byte-exact
    assert got["/otlp/v1/traces"]["span_names"]
    assert got["/otlp/v1/metrics"]["metric_names"]
    assert got["/otlp/v1/logs"]["log_bodies"]


def test_3b_both_consumers_agree(boot: Boot) -> None:
    env = {**ON, **ATTRS_ENV}
    boot.boot(env)
    boot.box.set_expected_auth(basic_auth(INSTANCE, TOKEN))
    seen = {}
    for consumer in ("python", "js"):
        boot.box.clear_requests()
        client = boot.box.run_via_launcher(boot.env_file, consumer, inherited=env)
        assert client.returncode == 0, client.stdout + client.stderr
        got = exported(boot.box)
        seen[consumer] = {path: {k: v for k, v in r["resource_attributes"][0].items()
                                 if k in ATTRS_MEANT or k.startswith("fly.")}
                          for path, r in got.items()}
    assert seen["python"] == seen["js"]
    assert seen["js"]["/otlp/v1/logs"] == ATTRS_MEANT


def test_4_second_converge_changes_nothing(boot: Boot) -> None:
    boot.boot(ON)
    again = boot.converge(ON)  # both phases, resolving through the container's CoreDNS
    assert again["summary"] == {"ok": again["summary"]["ok"], "changed": 0, "failed": 0,
                                "skipped": 0}, again
    assert states(again)["otlp-firewall"]["facts"]["resolved"] == {GATEWAY: [GATEWAY_ADDR]}


def test_5_credentials_removed_closes_everything(boot: Boot) -> None:
    boot.boot(ON)
    assert boot.box.tcp_probe(GATEWAY_ADDR, 443) == "connected"
    off = boot.converge({})
    by_id = states(off)
    for sid in ("otlp-dns", "otlp-dns-reload", "otlp-firewall", "otlp-env"):
        assert by_id[sid]["status"] == "changed", by_id[sid]
    assert by_id["otlp-dns-reload"]["facts"]["signal"] == "SIGUSR1"
    assert GATEWAY not in boot.corefile.read_text()
    assert not any("otlp" in rule for rule in boot.rules())
    assert not boot.env_file.exists()
    assert wait_rcode(boot.box, GATEWAY, "NXDOMAIN").rcode == "NXDOMAIN"  # reloaded
    assert boot.box.tcp_probe(GATEWAY_ADDR, 443) == "timeout"
    assert boot.converge({})["summary"]["changed"] == 0


def test_6_privacy_knobs_reach_the_file(boot: Boot) -> None:
    boot.boot({**ON, "OTEL_LOG_USER_PROMPTS": "0", "OTEL_LOG_TOOL_DETAILS": "0"})
    env = read_env_file(boot.env_file)
    assert env["OTEL_LOG_USER_PROMPTS"] == "0"
    assert env["OTEL_LOG_TOOL_DETAILS"] == "0"
    assert env["OTEL_LOG_TOOL_CONTENT"] == "0"


def test_7_check_diff_on_a_fresh_container(boot: Boot) -> None:
    argv = ["converge", "--root", str(boot.root), "--check", "--diff",
            "--var", f"upstream_resolvers=[{UPSTREAM_DNS}]", "--var", f"domains=[{ALLOWED}]",
            STATES]
    proc = boot.box.statekit(argv, env=ON, resolver="upstream")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"+{GATEWAY}:53 {{" in out
    assert f"+ -A OUTPUT -d {GATEWAY_ADDR}/32 -p tcp -m tcp --dport 443" in out
    assert "+OTEL_EXPORTER_OTLP_HEADERS=<secret>" in out  # check mode: no key made, no hash
    assert f"+OTEL_EXPORTER_OTLP_ENDPOINT={ENDPOINT}" in out
    assert TOKEN not in out and B64 not in out and B64[:20] not in out
    assert list(boot.root.iterdir()) == []
    rules = boot.rules()
    assert not [r for r in rules if r.startswith("-A")]
    assert not [r for r in rules if r.startswith(":OUTPUT") and "ACCEPT" not in r]


def test_coredns_down_during_refresh_keeps_the_firewall(boot: Boot) -> None:
    """The firewall's names are asked of the upstream resolvers directly: the container's
    CoreDNS being gone (or squatted) changes nothing (tests/test_reliability_dns.py has
    the upstream failing)."""
    boot.boot(ON)
    before = [r for r in boot.rules() if r.startswith("-A")]
    boot.box.stop_container_coredns()
    refresh = boot.converge(ON, "--phase", "network")
    assert refresh["rc"] == 0, refresh
    assert states(refresh)["otlp-firewall"]["status"] == "ok"
    assert [r for r in boot.rules() if r.startswith("-A")] == before
    assert boot.box.tcp_probe(GATEWAY_ADDR, 443) == "connected"
