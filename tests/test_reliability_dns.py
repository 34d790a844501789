"""DNS failure during a refresh keeps the existing rules, in the full boot harness.

The end-to-end sandbox (tests/e2e/harness.py): an "internet" namespace with the upstream
DNS and the OTLP receiver, a "container" namespace where the entrypoint's sequence runs
for real with the shipped states (network.yaml + telemetry.yaml): the network phase, the
container's CoreDNS started on the Corefile statekit wrote, the auth phase, then refresh
converges. The firewall's names are asked of the upstream resolvers directly, so the
container's CoreDNS going away changes nothing. When the upstream stops answering, the
refresh fails clearly (exit 1, each name named, its last-known addresses kept), the filter
table is exactly what it was and the gateway stays reachable; once DNS is back, the
refresh is a no-op again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, record_output, register_token
from tests.e2e.harness import (
    ENDPOINT,
    GATEWAY,
    GATEWAY_ADDR,
    OTHER,
    OTHER_PORT,
    OTLP_PORT,
    UPSTREAM_DNS,
    Resolver,
    Sandbox,
)

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

TOKEN = "glc_dns_refresh_token_1a2b3c4d5e"
register_token(TOKEN)
ENV = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": TOKEN,
       "GRAFANA_OTLP_ENDPOINT": ENDPOINT, "STATEKIT_NO_CACHE": "1"}
_COUNTERS = re.compile(r" \[\d+:\d+\]$")


def converge(box: Sandbox, root: Path, resolver: Resolver, *args: str,
             ) -> subprocess.CompletedProcess[str]:
    argv = ["converge", str(REPO / "states"), "--root", str(root),
            "--var", f"domains=[{OTHER}]", "--var", f"upstream_resolvers=[{UPSTREAM_DNS}]",
            "--var", "resolve_timeout=3", *args]
    proc = box.statekit(argv, env=ENV, resolver=resolver)
    record_output(proc.stdout, proc.stderr)
    return proc


def table(box: Sandbox) -> list[str]:
    out = box.run_in_container(["iptables-save", "-t", "filter"], resolver=None).stdout
    return [_COUNTERS.sub("", ln) for ln in out.splitlines() if not ln.startswith("#")]


def boot(box: Sandbox, root: Path) -> None:
    """The entrypoint: phase network, start the container's DNS, phase auth."""
    network = converge(box, root, "upstream", "--phase", "network")
    assert network.returncode == 0, network.stdout + network.stderr
    box.start_container_coredns(root / "etc/coredns/Corefile", root / "run/coredns.pid")
    auth = converge(box, root, "local", "--phase", "auth")
    assert auth.returncode == 0, auth.stdout + auth.stderr


def test_dns_failure_during_refresh_keeps_rules_in_the_boot_harness(
    clean_sandbox: Sandbox, tmp_path: Path,
) -> None:
    box, root = clean_sandbox, tmp_path / "root"
    root.mkdir()
    boot(box, root)
    refresh = converge(box, root, "local", "--phase", "network", "--detailed-exitcode")
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    before = table(box)
    assert any(GATEWAY_ADDR in ln and "otlp-firewall" in ln for ln in before)
    assert box.tcp_probe(GATEWAY_ADDR, OTLP_PORT) == "connected"
    assert box.tcp_probe(GATEWAY_ADDR, OTHER_PORT, timeout=1) == "timeout"  # DROP in force

    box.stop_container_coredns()  # the container's DNS is gone: the firewall needs it not
    alone = converge(box, root, "local", "--phase", "network", "--detailed-exitcode")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert table(box) == before

    drop_dns = ["iptables", "-I", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"]
    box.run_in_internet(drop_dns)  # the upstream stops answering (its own namespace)
    failed = converge(box, root, "local", "--phase", "network")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    for state, name in (("otlp-firewall", GATEWAY), ("fw-allowlist", OTHER)):
        line = next(ln for ln in failed.stdout.splitlines() if f"/{state} [" in ln)
        assert line.startswith("failed") and f"cannot resolve '{name}'" in line
        assert "its last-known addresses are kept" in line
    assert "Traceback" not in failed.stdout + failed.stderr
    assert table(box) == before
    assert box.tcp_probe(GATEWAY_ADDR, OTLP_PORT) == "connected"

    box.run_in_internet(["iptables", "-D", *drop_dns[2:]])
    back = converge(box, root, "local", "--phase", "network", "--detailed-exitcode")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "changed=0" in back.stdout
    assert table(box) == before
