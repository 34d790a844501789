"""The end-to-end harness itself, with no statekit involved.

These prove that what the telemetry end-to-end tests rely on is real: the upstream DNS
answers from inside the container, the receiver checks credentials and decodes what the
real OpenTelemetry SDK sends, the blocked addresses are reachable when no firewall is in
the way (so a blocked connect later means something), and everything is removed after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.util.re import parse_env_headers

from tests.e2e.harness import (
    ENDPOINT,
    GATEWAY,
    GATEWAY_ADDR,
    LOCAL_DNS,
    OTHER,
    OTHER_ADDR,
    OTHER_PORT,
    OTLP_PORT,
    REPO,
    UPSTREAM_DNS,
    Sandbox,
    SandboxError,
    basic_auth,
    netns_exists,
    netns_pids,
    read_env_file,
)

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

AUTH = basic_auth("123456", "glc_test-token")
ENV = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
    "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=" + AUTH.replace(" ", "%20"),
    "OTEL_RESOURCE_ATTRIBUTES": "fly.app_name=a,fly.machine_id=m1,team=platform",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
}
CONTAINER_COREFILE = f"""\
{GATEWAY} {{
    bind {LOCAL_DNS}
    template IN AAAA {{
        rcode NOERROR
    }}
    forward . {UPSTREAM_DNS}
    log
    cache 300
}}
. {{
    bind {LOCAL_DNS}
    template IN A {{
        rcode NXDOMAIN
    }}
    template IN AAAA {{
        rcode NXDOMAIN
    }}
}}
"""


# --- pure helpers ------------------------------------------------------------------------

def test_python_sdk_decodes_percent_encoded_space_in_headers() -> None:
    assert parse_env_headers("Authorization=Basic%20MTIzOmFiYw==", liberal=True) == {
        "authorization": "Basic MTIzOmFiYw=="}


def test_basic_auth_and_env_file_reader(tmp_path: Path) -> None:
    assert basic_auth("123", "abc") == "Basic MTIzOmFiYw=="
    path = tmp_path / "otel-env"
    path.write_text("A=1\nOTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20x==\n\nB=\n")
    assert read_env_file(path) == {
        "A": "1", "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20x==", "B": ""}


# --- the internet, seen from the container ------------------------------------------------

def test_upstream_dns_answers_from_the_container(sandbox: Sandbox) -> None:
    assert sandbox.dns_query(GATEWAY, server=UPSTREAM_DNS).answers == [GATEWAY_ADDR]
    assert sandbox.dns_query(OTHER, server=UPSTREAM_DNS).answers == [OTHER_ADDR]
    aaaa = sandbox.dns_query(GATEWAY, "AAAA", server=UPSTREAM_DNS)
    assert (aaaa.rcode, aaaa.answers) == ("NOERROR", [])
    assert sandbox.dns_query("unknown.example.org", server=UPSTREAM_DNS).rcode == "NXDOMAIN"


def test_resolver_is_bind_mounted_privately(sandbox: Sandbox) -> None:
    host_before = Path("/etc/resolv.conf").read_bytes()
    upstream = sandbox.run_in_container(["getent", "ahostsv4", GATEWAY], resolver="upstream")
    assert upstream.returncode == 0, upstream.stderr
    assert upstream.stdout.split()[0] == GATEWAY_ADDR
    local = sandbox.run_in_container(["cat", "/etc/resolv.conf"], resolver="local")
    assert f"nameserver {LOCAL_DNS}" in local.stdout
    assert Path("/etc/resolv.conf").read_bytes() == host_before
    assert not Path(f"/etc/netns/{sandbox.container}").exists()


def test_statekit_runs_in_the_container(sandbox: Sandbox) -> None:
    proc = sandbox.statekit(["--help"])
    assert proc.returncode == 0, proc.stderr
    assert "converge" in proc.stdout


def test_blocked_addresses_are_reachable_without_a_firewall(clean_sandbox: Sandbox) -> None:
    assert clean_sandbox.tcp_probe(OTHER_ADDR, OTLP_PORT) == "connected"
    assert clean_sandbox.tcp_probe(GATEWAY_ADDR, OTHER_PORT) == "connected"
    assert clean_sandbox.tcp_probe(GATEWAY_ADDR, 9) == "refused"


def test_a_firewall_drop_in_the_container_is_seen(clean_sandbox: Sandbox) -> None:
    drop = ["iptables", "-A", "OUTPUT", "-d", OTHER_ADDR, "-j", "DROP"]
    assert clean_sandbox.run_in_container(drop, resolver=None).returncode == 0
    assert clean_sandbox.tcp_probe(OTHER_ADDR, OTLP_PORT, timeout=1) == "timeout"
    dropped_dns = clean_sandbox.dns_query(GATEWAY, server=OTHER_ADDR, timeout=1)
    assert (dropped_dns.rcode, dropped_dns.error) == ("ERROR", "[Errno 1] Operation not permitted")
    assert clean_sandbox.tcp_connect(GATEWAY_ADDR, OTLP_PORT)
    clean_sandbox.reset_container()
    assert clean_sandbox.tcp_connect(OTHER_ADDR, OTLP_PORT)


# --- the receiver ------------------------------------------------------------------------

def test_receiver_checks_authorization(clean_sandbox: Sandbox) -> None:
    url = f"{ENDPOINT}/v1/traces"
    assert clean_sandbox.https_post(url, headers={"Authorization": AUTH}) == 401  # none set
    clean_sandbox.set_expected_auth(AUTH)
    assert clean_sandbox.https_post(url, headers={"Authorization": AUTH}) == 200
    assert clean_sandbox.https_post(url, headers={"Authorization": "Basic wrong"}) == 401
    assert clean_sandbox.https_post(url) == 401
    assert clean_sandbox.https_post(f"{ENDPOINT}/v1/other",
                                    headers={"Authorization": AUTH}) == 404
    seen = [(r["path"], r["status"]) for r in clean_sandbox.requests()]
    assert seen == [("/otlp/v1/traces", 401), ("/otlp/v1/traces", 200),
                    ("/otlp/v1/traces", 401), ("/otlp/v1/traces", 401),
                    ("/otlp/v1/other", 404)]


def by_signal(sandbox: Sandbox) -> dict[str, dict[str, object]]:
    """The last accepted request per signal."""
    return {r["signal"]: r for r in sandbox.requests() if r["status"] == 200}


def test_real_sdk_client_exports_all_three_signals(clean_sandbox: Sandbox) -> None:
    clean_sandbox.set_expected_auth(AUTH)
    proc = clean_sandbox.run_otel_client(ENV, resolver="upstream")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = by_signal(clean_sandbox)
    assert {s: r["path"] for s, r in got.items()} == {
        "traces": "/otlp/v1/traces", "metrics": "/otlp/v1/metrics", "logs": "/otlp/v1/logs"}
    for record in got.values():
        assert record["headers"]["authorization"] == AUTH  # type: ignore[index]
        assert record["headers"]["content-type"] == "application/x-protobuf"  # type: ignore[index]
        attrs = record["resource_attributes"][0]  # type: ignore[index]
        assert {k: attrs[k] for k in ("fly.app_name", "fly.machine_id", "team")} == {
            "fly.app_name": "a", "fly.machine_id": "m1", "team": "platform"}
        assert record["listener"] == f"{GATEWAY_ADDR}:{OTLP_PORT}"
    assert got["traces"]["span_names"] == ["statekit.e2e.span"]
    assert got["metrics"]["metric_names"] == ["statekit.e2e.counter"]
    assert got["logs"]["log_bodies"] == ["statekit e2e log record"]


def test_sdk_client_fails_on_rejected_credentials(clean_sandbox: Sandbox) -> None:
    clean_sandbox.set_expected_auth(basic_auth("123456", "another-token"))
    proc = clean_sandbox.run_otel_client(ENV, resolver="upstream")
    assert proc.returncode == 1
    assert {r["status"] for r in clean_sandbox.requests()} == {401}


def test_sdk_client_refuses_other_protocols(clean_sandbox: Sandbox) -> None:
    proc = clean_sandbox.run_otel_client({**ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert proc.returncode == 2
    assert clean_sandbox.requests() == []


# --- the container's own CoreDNS ---------------------------------------------------------

def test_container_coredns_start_query_stop(clean_sandbox: Sandbox, tmp_path: Path) -> None:
    corefile, pidfile = tmp_path / "Corefile", tmp_path / "run" / "coredns.pid"
    corefile.write_text(CONTAINER_COREFILE)
    pid = clean_sandbox.start_container_coredns(corefile, pidfile)
    assert int(pidfile.read_text()) == pid
    assert pid in netns_pids(clean_sandbox.container)
    assert clean_sandbox.dns_query(GATEWAY).answers == [GATEWAY_ADDR]
    assert clean_sandbox.dns_query(OTHER).rcode == "NXDOMAIN"
    assert clean_sandbox.dns_query(GATEWAY, "AAAA").answers == []
    local = clean_sandbox.run_in_container(["getent", "ahostsv4", GATEWAY], resolver="local")
    assert local.stdout.split()[0] == GATEWAY_ADDR
    clean_sandbox.stop_container_coredns()
    assert not pidfile.exists()
    assert pid not in netns_pids(clean_sandbox.container)
    assert clean_sandbox.dns_query(GATEWAY, timeout=0.5).rcode == "TIMEOUT"


def test_container_coredns_bad_corefile_raises(clean_sandbox: Sandbox, tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n    no_such_plugin\n}\n")
    with pytest.raises(SandboxError, match="container-coredns exited"):
        clean_sandbox.start_container_coredns(corefile, tmp_path / "coredns.pid", timeout=5)
    assert clean_sandbox.container_coredns_pid() is None


# --- lifecycle -----------------------------------------------------------------------------

def gone(box: Sandbox) -> bool:
    """Neither namespace exists any more."""
    return not netns_exists(box.internet) and not netns_exists(box.container)


def test_down_removes_namespaces_processes_and_workdir(tmp_path: Path) -> None:
    box = Sandbox().up()
    corefile = tmp_path / "Corefile"
    corefile.write_text(CONTAINER_COREFILE)
    box.start_container_coredns(corefile, tmp_path / "coredns.pid")
    started = [p.pid for p in box.procs.values()]
    assert netns_exists(box.internet) and netns_exists(box.container)
    box.down()
    assert gone(box)
    assert not box.workdir.exists()
    assert all(not Path(f"/proc/{pid}").exists() for pid in started)
    box.down()  # idempotent


def test_failed_up_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Sandbox, timeout: float = 15.0) -> None:
        raise SandboxError("receiver broken on purpose")

    monkeypatch.setattr(Sandbox, "start_receiver", broken)
    box = Sandbox()
    with pytest.raises(SandboxError, match="on purpose"):
        box.up()
    assert gone(box)
    assert not box.workdir.exists()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``scripts/sandbox.py ARGS``."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sandbox.py"), *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "GRAFANA_INSTANCE_ID": "123456",
                               "GRAFANA_API_TOKEN": "glc_test-token"})


def test_cli_up_exec_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = cli("up", "--state-dir", str(state), "--auth-from-env", "--format", "json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        assert netns_exists(info["container"])
        assert "glc_test-token" not in up.stdout + up.stderr
        run = cli("exec", "--state-dir", str(state), "--", "cat", "/etc/resolv.conf")
        assert f"nameserver {UPSTREAM_DNS}" in run.stdout
        dns = cli("dns", "--state-dir", str(state), "--server", UPSTREAM_DNS, GATEWAY)
        assert dns.stdout.split() == ["NOERROR", GATEWAY_ADDR]
        conn = cli("connect", "--state-dir", str(state), OTHER_ADDR, str(OTLP_PORT))
        assert (conn.returncode, conn.stdout.strip()) == (0, "connected")
        env_file = tmp_path / "otel-env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in ENV.items()))
        client = cli("otel-client", "--state-dir", str(state), "--env-file", str(env_file),
                     "--resolver", "upstream")
        assert client.returncode == 0, client.stdout + client.stderr
    finally:
        down = cli("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert not netns_exists(info["container"]) and not netns_exists(info["internet"])
