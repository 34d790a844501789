"""Item 4 of the hardening pass: the signal state and its pidfile.

The pidfile says ``0`` (kill(0) would signal statekit's whole process group), ``1``
(init), a pid past the kernel's range (an OverflowError before), the pid of the
attacker's own process, or it is the attacker's file, group/world-writable, or a
symlink. statekit must refuse each with a clear message (exit 1, the state failed)
and signal nothing; only a root-owned pidfile naming a live ``coredns`` is signalled,
through a pidfd. statekit runs in its own session, so a kill(0) would hit only itself
(its exit would be -10, not 1).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekit.errors import ApplyError
from statekit.host.host import Host
from tests.conftest import REPO, Run, record_output, write
from tests.hardening import Attacker, arena_fixture, attacker_fixture, clean  # noqa: F401

pytestmark = pytest.mark.root

STATES = """\
phases: [p]
states:
  - id: reload
    type: signal
    phase: p
    signal: USR1
    pidfile: /run/coredns.pid
    process_name: coredns
    missing_ok: {missing_ok}
"""


def converge(root: Path, states: Path) -> Run:
    proc = subprocess.run([sys.executable, "-m", "statekit", "converge", "--root", str(root),
                           str(states)], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, timeout=60,
                          start_new_session=True, check=False)
    record_output(proc.stdout, proc.stderr)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def fake_coredns(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A root process named ``coredns`` (a copy of sleep): USR1 kills it."""
    binary = tmp_path / "coredns"
    shutil.copy("/bin/sleep", binary)
    proc = subprocess.Popen([str(binary), "60"])
    time.sleep(0.1)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def victim(attacker: Attacker) -> Iterator[subprocess.Popen[str]]:
    """The attacker's own process (sleep): USR1 would kill it."""
    proc = attacker.popen(["sleep", "60"])
    time.sleep(0.1)
    yield proc
    proc.kill()
    proc.wait()


def pidfile(root: Path, text: str, mode: int = 0o644) -> Path:
    path = write(root / "run/coredns.pid", text)
    path.chmod(mode)
    return path


def states(tmp_path: Path, missing_ok: bool = False) -> Path:
    return write(tmp_path / "s.yaml", STATES.format(missing_ok=str(missing_ok).lower()))


@pytest.mark.parametrize(("text", "message"), [
    ("0", "refusing pid 0 (a pid is above 1"),
    ("1", "refusing pid 1 (a pid is above 1"),
    ("99999999999999999999999", "refusing pid 99999999999999999999"),
    ("4194305", "refusing pid 4194305"),
    ("-5", "not a pid: '-5'"),
])
def test_a_bad_pid_is_refused(root: Path, tmp_path: Path, text: str, message: str) -> None:
    pidfile(root, f"{text}\n")
    run = converge(root, states(tmp_path))
    clean(run, 1, f"/run/coredns.pid: {message}")


def test_a_pidfile_the_attacker_owns_or_can_write_is_refused(
        root: Path, tmp_path: Path, attacker: Attacker,
        fake_coredns: subprocess.Popen[bytes]) -> None:
    path = pidfile(root, f"{fake_coredns.pid}\n")
    attacker.own(path)
    clean(converge(root, states(tmp_path)), 1,
          f"refusing a pidfile owned by uid {attacker.uid}")
    path.unlink()
    pidfile(root, f"{fake_coredns.pid}\n", 0o666)
    clean(converge(root, states(tmp_path)), 1, "with mode 0666 (it must be root's")
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.pid")
    write(tmp_path / "elsewhere.pid", f"{fake_coredns.pid}\n")
    clean(converge(root, states(tmp_path)), 1, "refusing a symlink at the file's path")
    assert fake_coredns.poll() is None  # never signalled


def test_an_unrelated_process_is_never_signalled(
        root: Path, tmp_path: Path, victim: subprocess.Popen[str]) -> None:
    pidfile(root, f"{victim.pid}\n")
    clean(converge(root, states(tmp_path)), 1,
          f"pid {victim.pid} is 'sleep', not 'coredns' (a stale pidfile?)")
    run = converge(root, states(tmp_path, missing_ok=True))
    clean(run, 0, "no such process")
    time.sleep(0.1)
    assert victim.poll() is None


def test_the_real_target_is_signalled(root: Path, tmp_path: Path,
                                      fake_coredns: subprocess.Popen[bytes]) -> None:
    pidfile(root, f"{fake_coredns.pid}\n")
    clean(converge(root, states(tmp_path)), 0, "changed")
    assert fake_coredns.wait(timeout=5) == -signal.SIGUSR1


def test_send_signal_checks_the_name_through_the_pidfd(victim: subprocess.Popen[str]) -> None:
    with pytest.raises(ApplyError, match="is 'sleep', not 'coredns': not signalled"):
        Host().send_signal(victim.pid, signal.SIGUSR1, "coredns")
    assert victim.poll() is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(ProcessLookupError):
        Host().send_signal(dead.pid, signal.SIGUSR1, "true")
