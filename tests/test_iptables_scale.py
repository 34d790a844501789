"""Scale: 5,000 owned rules converge; a no-op converge of them costs exactly one
iptables-save and no iptables-restore (process counts, not timing: timing is for bench)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ToolLog, saved, statekit

pytestmark = pytest.mark.netns

N = 5000


def addresses(n: int, offset: int = 0) -> list[str]:
    return [f"10.{(i + offset) // 65536}.{(i + offset) // 256 % 256}.{(i + offset) % 256}"
            for i in range(n)]


def write(path: Path, dests: list[str]) -> None:
    path.write_text(json.dumps({"phases": ["network"], "states": [
        {"id": "many", "type": "iptables_rule", "phase": "network", "chain": "OUTPUT",
         "protocol": "tcp", "dport": 443, "destination": dests, "jump": "ACCEPT"}]}))


def test_5000_rules_converge_then_noop_costs_one_save(
    netns: str, tmp_path: Path, tool_log: ToolLog,
) -> None:
    file, root = tmp_path / "s.yaml", tmp_path / "root"
    root.mkdir()
    write(file, addresses(N))
    argv = ["converge", str(file), "--root", str(root)]
    env = tool_log.env
    first = statekit(argv, netns=netns, env=env, timeout=300)
    assert first.returncode == 0, first.output
    owned = [ln for ln in saved(netns) if '"statekit:many"' in ln]
    assert len(owned) == N
    assert owned[0].startswith("-A OUTPUT -d 10.0.0.0/32 -p tcp -m tcp --dport 443 ")
    tool_log.reset()
    second = statekit(argv, netns=netns, env=env, timeout=300)
    assert second.returncode == 0 and "changed=0" in second.output, second.output
    assert tool_log.calls() == ["iptables-save"]
    write(file, addresses(N, offset=1))  # one address gone, one new
    tool_log.reset()
    third = statekit([*argv, "--diff"], netns=netns, env=env, timeout=300)
    assert third.returncode == 0, third.output
    assert tool_log.calls() == ["iptables-save", "iptables-restore", "iptables-save"]
    assert third.output.count("\n    - -A OUTPUT") == 1
    assert third.output.count("\n    + -A OUTPUT") == 1
    assert len([ln for ln in saved(netns) if '"statekit:many"' in ln]) == N
