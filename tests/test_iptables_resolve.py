"""destination_host: names resolved through a hosts file bind-mounted over /etc/hosts in a
private mount namespace (inside the test's network namespace; the host's /etc is never
written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, saved

pytestmark = pytest.mark.netns

STATE = """phases: [network]
states:
  - id: gw
    type: iptables_rule
    phase: network
    chain: OUTPUT
    protocol: tcp
    dport: 443
    destination_host: GW.example.test.
    resolve_timeout: 1
    jump: ACCEPT
"""
TAIL = ('-p tcp -m tcp --dport 443 -m comment --comment "statekit:gw gw.example.test" '
        '-j ACCEPT')


def converge(netns: str, tmp: Path, hosts: str) -> subprocess.CompletedProcess[str]:
    hosts_file, root = tmp / "hosts", tmp / "root"
    hosts_file.write_text(hosts)
    root.mkdir(exist_ok=True)
    (tmp / "s.yaml").write_text(STATE)
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    argv = ["ip", "netns", "exec", netns, "unshare", "--mount", "sh", "-c", script,
            str(hosts_file), sys.executable, "-m", "statekit", "converge", str(tmp / "s.yaml"),
            "--root", str(root), "--format", "json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO,
                          check=False)


def rules(netns: str) -> list[str]:
    return [ln for ln in saved(netns) if ln.startswith("-A OUTPUT")]


def test_rules_follow_resolved_addresses(netns: str, tmp_path: Path) -> None:
    run = converge(netns, tmp_path, "192.0.2.11 gw.example.test\n192.0.2.10 gw.example.test\n")
    assert run.returncode == 0, run.stdout + run.stderr
    state = json.loads(run.stdout)["states"][0]
    assert state["facts"]["resolved"] == {"gw.example.test": ["192.0.2.10", "192.0.2.11"]}
    assert rules(netns) == [f"-A OUTPUT -d 192.0.2.10/32 {TAIL}",
                            f"-A OUTPUT -d 192.0.2.11/32 {TAIL}"]
    run = converge(netns, tmp_path, "192.0.2.11 gw.example.test\n192.0.2.12 gw.example.test\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert rules(netns) == [f"-A OUTPUT -d 192.0.2.11/32 {TAIL}",
                            f"-A OUTPUT -d 192.0.2.12/32 {TAIL}"]
    diff = json.loads(run.stdout)["states"][0]["diff"]
    assert f"- -A OUTPUT -d 192.0.2.10/32 {TAIL}" in diff
    assert f"+ -A OUTPUT -d 192.0.2.12/32 {TAIL}" in diff


def test_failed_resolution_keeps_rules_and_fails_state(netns: str, tmp_path: Path) -> None:
    assert converge(netns, tmp_path, "192.0.2.10 gw.example.test\n").returncode == 0
    before = saved(netns)
    run = converge(netns, tmp_path, "192.0.2.99 other.example.test\n")
    assert run.returncode == 1, run.stdout + run.stderr
    state = json.loads(run.stdout)["states"][0]
    assert state["status"] == "failed"
    assert "cannot resolve 'gw.example.test'" in state["error"]
    assert "last-known addresses are kept" in state["error"]
    assert saved(netns) == before


def test_failed_resolution_without_rules_fails_too(netns: str, tmp_path: Path) -> None:
    run = converge(netns, tmp_path, "192.0.2.99 other.example.test\n")
    assert run.returncode == 1
    assert "cannot resolve" in json.loads(run.stdout)["states"][0]["error"]
    assert rules(netns) == []
