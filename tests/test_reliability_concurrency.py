"""Concurrency: 20 converges started at once on one root and one network namespace.

The boot and the refresh loop (``--phase network``) race, with check-mode runs among
them: converges serialise on the lock (check mode takes it shared), every run succeeds,
and the end state is exactly one converge's: each rule once, each Corefile block once,
the env file whole. With a short ``--lock-timeout`` against a held lock, the runs that
cannot wait time out with the clear message (exit 1) and change nothing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, record_output, register_token, saved

pytestmark = pytest.mark.netns

TOKEN = "glc_concurrency_token_5a4b3c2d1e"
register_token(TOKEN)
RUNS = 20
STATES = """\
phases: [network, auth]
secrets: [TOKEN]
states:
  - id: dns
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: [a.example.test, b.example.test]
    bind: [127.0.0.53]
    forward: [192.0.2.53]
  - id: fw-web
    type: iptables_rule
    phase: network
    chain: OUTPUT
    family: both
    protocol: tcp
    dport: 443
    destination: [192.0.2.1, 192.0.2.2, "2001:db8::1"]
    jump: ACCEPT
  - id: fw-log
    type: iptables_rule
    phase: network
    chain: OUTPUT
    position: last
    jump: NFLOG
    nflog_group: 100
  - id: fw-policy
    type: iptables_chain
    phase: network
    requires: [fw-web, fw-log]
    chain: OUTPUT
    policy: DROP
  - id: otel-env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    entries:
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Basic%20{{ ('42:' ~ env.TOKEN) | b64encode }}"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
"""
EXPECTED_V4 = [
    '-A OUTPUT -d 192.0.2.1/32 -p tcp -m tcp --dport 443 -m comment --comment '
    '"statekit:fw-web" -j ACCEPT',
    '-A OUTPUT -d 192.0.2.2/32 -p tcp -m tcp --dport 443 -m comment --comment '
    '"statekit:fw-web" -j ACCEPT',
    '-A OUTPUT -m comment --comment "statekit:fw-log" -j NFLOG --nflog-group 100',
]


def argv(netns: str, states: Path, root: Path, i: int, *extra: str) -> list[str]:
    """Run i: a boot (all phases), a refresh (phase network) or a check, in turn."""
    kind = [[], ["--phase", "network"], ["--phase", "network", "--check"]][i % 3]
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "statekit", "converge",
            "--root", str(root), *kind, *extra, str(states)]


def spawn(commands: list[list[str]]) -> list[subprocess.Popen[str]]:
    """Start every command at once."""
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "TOKEN": TOKEN}
    return [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=REPO) for c in commands]


def finish(procs: list[subprocess.Popen[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Wait for each process; what it printed goes to the secrets capture."""
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        record_output(out, err)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def start_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    return finish(spawn(commands))


def check_end_state(netns: str, root: Path) -> None:
    rules = [ln for ln in saved(netns) if ln.startswith("-A ")]
    assert rules == EXPECTED_V4
    assert any(ln.startswith(":OUTPUT DROP ") for ln in saved(netns))
    assert [ln for ln in saved(netns, family="ipv6") if ln.startswith("-A ")] == [
        '-A OUTPUT -d 2001:db8::1/128 -p tcp -m tcp --dport 443 -m comment --comment '
        '"statekit:fw-web" -j ACCEPT']
    corefile = (root / "etc/coredns/Corefile").read_text()
    assert corefile.count("# statekit:dns\n") == 2
    assert corefile.count("a.example.test:53 {") == 1
    assert corefile.count("b.example.test:53 {") == 1
    env = (root / "tmp/otel/otel-env").read_text().splitlines()
    assert len(env) == 1 and env[0].startswith("OTEL_EXPORTER_OTLP_HEADERS=Authorization=")
    assert [p for p in root.rglob("*") if ".statekit-tmp-" in p.name] == []


@pytest.fixture
def states(tmp_path: Path) -> Path:
    path = tmp_path / "states.yaml"
    path.write_text(STATES)
    return path


def test_twenty_converges_at_once_serialise_and_all_succeed(netns: str, states: Path,
                                                            root: Path) -> None:
    runs = start_all([argv(netns, states, root, i) for i in range(RUNS)])
    failed = [(r.returncode, r.stderr) for r in runs if r.returncode != 0]
    assert failed == []
    applied = [r for r in runs if "--check" not in r.args and "changed=0" not in r.stdout]
    assert len(applied) >= 1
    check_end_state(netns, root)
    again = start_all([argv(netns, states, root, 0, "--detailed-exitcode")])[0]
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout


def test_short_lock_timeout_times_out_clearly_and_changes_nothing(netns: str, states: Path,
                                                                  root: Path) -> None:
    """While another program holds the lock, the 10 runs with a 0.3 s timeout give up
    with the message and change nothing; the 10 with the default timeout wait for it
    to be released, then succeed."""
    lock = root / "run/statekit/lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        patient = spawn([argv(netns, states, root, i) for i in range(RUNS // 2)])
        short = start_all([argv(netns, states, root, i, "--lock-timeout", "0.3")
                           for i in range(RUNS // 2)])
        assert [p.poll() for p in patient] == [None] * len(patient)  # all still waiting
        assert not (root / "etc").exists() and not (root / "tmp").exists()
        assert [ln for ln in saved(netns) if ln.startswith("-A ")] == []
    for r in short:
        assert r.returncode == 1
        assert r.stderr == ("statekit: another converge holds /run/statekit/lock; gave up "
                            "after 0.3 s (--lock-timeout)\n")
        assert r.stdout == ""
    waited = finish(patient)
    assert [r.returncode for r in waited] == [0] * len(waited), [r.stderr for r in waited]
    check_end_state(netns, root)


def test_lock_held_by_another_program_is_waited_for_within_the_bound(states: Path,
                                                                      root: Path) -> None:
    """``flock(1)`` holds statekit's lock: a converge gives up after --lock-timeout (not
    before, and not long after), and one with a longer bound gets it once released."""
    lock = root / "run/statekit/lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "4"])
    try:
        time.sleep(0.3)
        base = [sys.executable, "-m", "statekit", "converge", "--root", str(root),
                "--phase", "auth", str(states)]
        started = time.monotonic()
        gave_up = finish(spawn([[*base, "--lock-timeout", "1.5"]]))[0]
        elapsed = time.monotonic() - started
        assert gave_up.returncode == 1
        assert "gave up after 1.5 s (--lock-timeout)" in gave_up.stderr
        assert 1.5 <= elapsed < 3.5
        waited = finish(spawn([[*base, "--lock-timeout", "20"]]))[0]
        assert waited.returncode == 0, waited.stderr
        assert holder.poll() == 0  # it waited for the holder to finish
    finally:
        holder.kill()
        holder.wait()
    assert (root / "tmp/otel/otel-env").exists()
