"""Drift and repair on the real states: states/network.yaml + states/telemetry.yaml together.

One converge of both files (all phases, telemetry on) in a private network namespace,
with ``--var`` overrides and the names resolved through a hosts file bind-mounted over
/etc/hosts in a private mount namespace (the host's /etc is never written). Then each
managed thing is changed by hand; ``--check --diff --detailed-exitcode`` reports it
(exit 2) and changes nothing; a converge repairs it to exactly the first converge's
state; the next check says nothing is left (exit 0).

What test_env_file.py, test_coredns_zone.py and test_iptables_rule.py already cover on
small states (env file content/mode/owner, an owned Corefile block, deleted and moved
rules) is covered here again on the shipped states, plus the policy flipped by hand.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, in_netns, record_output, register_token, saved

pytestmark = pytest.mark.netns

TOKEN = "glc_drift_token_6f5e4d3c2b1a"
register_token(TOKEN)
HOSTS = "192.0.2.10 otlp.example.test\n192.0.2.20 a.example.test\n192.0.2.21 b.example.test\n"
VARS = ["domains=[a.example.test, b.example.test]", "upstream_resolvers=[192.0.2.53]",
        "resolve_timeout=2", "name_resolvers=[]"]  # names from the hosts file
ENV = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": TOKEN,
       "GRAFANA_OTLP_ENDPOINT": "https://otlp.example.test/otlp"}
ENV_FILE = "tmp/otel/otel-env"
COREFILE = "etc/coredns/Corefile"
_COUNTERS = re.compile(r" \[\d+:\d+\]$")


@dataclass
class Box:
    netns: str
    root: Path
    hosts: Path

    def statekit(self, *args: str) -> subprocess.CompletedProcess[str]:
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        argv = ["ip", "netns", "exec", self.netns, "unshare", "--mount",
                "--propagation", "private", "sh", "-c", script, str(self.hosts),
                sys.executable, "-m", "statekit", "converge", str(REPO / "states"),
                "--root", str(self.root), *[a for v in VARS for a in ("--var", v)], *args]
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "STATEKIT_NO_CACHE": "1", **ENV}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO,
                              env=env, check=False)
        record_output(proc.stdout, proc.stderr)
        return proc

    def state(self) -> tuple[object, ...]:
        files = []
        for rel in (ENV_FILE, COREFILE):
            st = os.stat(self.root / rel)
            files.append(((self.root / rel).read_bytes(), stat.S_IMODE(st.st_mode),
                          st.st_uid, st.st_gid))
        table = tuple(_COUNTERS.sub("", ln) for ln in saved(self.netns))
        return (*files, table)

    def rules(self) -> list[str]:
        return [ln for ln in saved(self.netns) if ln.startswith("-A OUTPUT ")]


@pytest.fixture
def box(netns: str, tmp_path: Path) -> Box:
    (tmp_path / "root").mkdir()
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    return Box(netns, tmp_path / "root", hosts)


def delete_rule(box: Box, tag: str) -> None:
    line = next(r for r in box.rules() if f'"statekit:{tag}' in r)
    in_netns(box.netns, ["iptables-restore", "--noflush"],
             input=f"*filter\n-D{line[2:]}\nCOMMIT\n")


def move_log_rule_to_top(box: Box) -> None:
    line = next(r for r in box.rules() if '"statekit:fw-log"' in r)
    in_netns(box.netns, ["iptables-restore", "--noflush"],
             input=f"*filter\n-D{line[2:]}\n-I OUTPUT 1{line[9:]}\nCOMMIT\n")


def edit_owned_block(box: Box) -> None:
    path = box.root / COREFILE
    text = path.read_text()
    aaaa = "    template IN AAAA {\n        rcode NOERROR\n    }\n"
    assert text.count(aaaa) == 3  # a, b and the otlp block
    path.write_text(text.replace(aaaa, "", 1))


def rewrite_env_file(box: Box) -> None:
    path = box.root / ENV_FILE
    path.write_text(path.read_text().replace("OTEL_LOG_USER_PROMPTS=1", "OTEL_LOG_USER_PROMPTS=0"))


Drift = Callable[[Box], object]
DRIFTS: list[tuple[str, Drift, str]] = [
    ("policy-flipped", lambda b: in_netns(b.netns, ["iptables", "-P", "OUTPUT", "ACCEPT"]),
     ":OUTPUT ACCEPT -> DROP"),
    ("allowlist-rule-deleted", lambda b: delete_rule(b, "fw-allowlist"),
     '+ -A OUTPUT -d 192.0.2.20/32 -m comment --comment "statekit:fw-allowlist a.example.test"'
     ' -j ACCEPT'),
    ("otlp-rule-deleted", lambda b: delete_rule(b, "otlp-firewall"),
     "+ -A OUTPUT -d 192.0.2.10/32 -p tcp -m tcp --dport 443"),
    ("log-rule-moved", move_log_rule_to_top,
     '~ -A OUTPUT -m comment --comment "statekit:fw-log" -j NFLOG'),
    ("corefile-block-edited", edit_owned_block, "+    template IN AAAA {"),
    ("env-file-content", rewrite_env_file, "+OTEL_LOG_USER_PROMPTS=1"),
    ("env-file-mode", lambda b: (b.root / ENV_FILE).chmod(0o644), "mode: 0644 -> 0600"),
    ("env-file-owner", lambda b: os.chown(b.root / ENV_FILE, 1000, 1000),
     "owner: 1000:1000 -> 0:0"),
    ("env-dir-mode", lambda b: (b.root / "tmp/otel").chmod(0o755),
     "directory mode: 0755 -> 0700"),
]


def network_order(table: tuple[str, ...]) -> list[str]:
    return [ln for ln in table if '"statekit:fw-' in ln]


def assert_repaired(box: Box, good: tuple[object, ...]) -> None:
    """Back to the first converge's files, policy and rules, in the same order: a rule
    moved by hand into another state's slot makes its block misplaced (only peers, the
    states sharing a position, may stand in a slot), so it is moved back."""
    now = box.state()
    assert now[:2] == good[:2]
    table, want = now[2], good[2]
    assert isinstance(table, tuple) and isinstance(want, tuple)
    assert table == want
    assert network_order(table) == network_order(want)


@pytest.mark.parametrize(("drift", "expected"), [(d, e) for _, d, e in DRIFTS],
                         ids=[n for n, _, _ in DRIFTS])
def test_hand_change_is_reported_then_repaired(box: Box, drift: Drift, expected: str) -> None:
    first = box.statekit()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "failed=0" in first.stdout
    good = box.state()
    drift(box)
    drifted = box.state()
    assert drifted != good or "directory" in expected
    check = box.statekit("--check", "--diff", "--detailed-exitcode")
    assert check.returncode == 2, check.stdout + check.stderr
    assert expected in check.stdout
    assert box.state() == drifted  # check mode changed nothing
    fixed = box.statekit("--detailed-exitcode")
    assert fixed.returncode == 2, fixed.stdout + fixed.stderr
    assert_repaired(box, good)
    assert stat.S_IMODE(os.stat(box.root / "tmp/otel").st_mode) == 0o700
    again = box.statekit("--check", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout


def test_everything_drifted_at_once_is_repaired_in_one_converge(box: Box) -> None:
    assert box.statekit().returncode == 0
    good = box.state()
    for _, drift, _ in DRIFTS:
        drift(box)
    check = box.statekit("--check", "--diff", "--detailed-exitcode")
    assert check.returncode == 2
    for _, _, expected in DRIFTS:
        assert expected in check.stdout
    assert box.statekit().returncode == 0
    assert_repaired(box, good)
    assert box.statekit("--detailed-exitcode").returncode == 0
