"""Item 9 of the hardening pass: the lock file.

In a sticky world-writable directory (like /tmp) the attacker pre-creates the lock file
and holds ``flock`` on it, or plants a symlink or a FIFO there, or pre-creates the
default lock's directory. statekit must never block on their lock for more than a
moment, never follow their symlink, never open their FIFO for long, and keep its
default lock in a root-only directory.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Run, statekit, write
from tests.hardening import Attacker, arena_fixture, attacker_fixture, clean  # noqa: F401

pytestmark = pytest.mark.root

STATES = """\
phases: [p]
states:
  - id: env
    type: env_file
    phase: p
    path: /etc/app/env
    entries: {A: "1"}
"""


@pytest.fixture
def box(arena: Path) -> Path:
    """A root with ``tmp`` and ``run`` sticky and world-writable, as the attacker sees /tmp."""
    root = arena / "root"
    for sub in ("tmp", "run"):
        (root / sub).mkdir(parents=True)
        (root / sub).chmod(0o1777)
    return root


@pytest.fixture
def states(tmp_path: Path) -> Path:
    return write(tmp_path / "s.yaml", STATES)


def timed(args: list[str]) -> tuple[Run, float]:
    start = time.monotonic()
    run = statekit(args, timeout=60)
    return run, time.monotonic() - start


@pytest.fixture
def held_lock(box: Path, attacker: Attacker) -> Iterator[Path]:
    lock = box / "tmp/sk.lock"
    holder = attacker.popen(["flock", str(lock), "sleep", "60"])
    deadline = time.monotonic() + 10
    while not lock.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    yield lock
    holder.kill()
    holder.wait()


def test_a_lock_held_by_the_attacker_is_refused_at_once(
        box: Path, states: Path, held_lock: Path, attacker: Attacker) -> None:
    assert held_lock.stat().st_uid == attacker.uid
    for extra in ([], ["--check"]):
        run, elapsed = timed(["converge", "--root", str(box), "--lock-file", "/tmp/sk.lock",
                              "--lock-timeout", "30", *extra, str(states)])
        clean(run, 1, "/tmp/sk.lock: ")
        assert ("refusing a lock file (owned by uid" in run.stderr
                or "cannot open the lock file: Permission denied" in run.stderr)
        assert elapsed < 10
    assert not (box / "etc").exists()


def test_a_symlink_or_fifo_lock_is_never_followed_nor_waited_on(
        box: Path, states: Path, attacker: Attacker, arena: Path) -> None:
    victim = arena / "victim"
    victim.write_text("precious\n")
    before = victim.read_bytes()
    assert attacker.run(["ln", "-s", str(victim), str(box / "tmp/link.lock")]).returncode == 0
    assert attacker.run(["mkfifo", str(box / "tmp/fifo.lock")]).returncode == 0
    # The kernel (fs.protected_regular / protected_fifos) may refuse root's O_CREAT open
    # of another user's file in a sticky directory first: either refusal is clear.
    refusals = ("refusing a symlink at the lock file", "refusing a lock file (not a regular",
                "cannot open the lock file: Permission denied")
    for name in ("link.lock", "fifo.lock"):
        for extra in ([], ["--check"]):
            run, elapsed = timed(["converge", "--root", str(box), "--lock-file", f"/tmp/{name}",
                                  "--lock-timeout", "30", *extra, str(states)])
            clean(run, 1, f"/tmp/{name}: ")
            assert any(r in run.stderr for r in refusals), run.stderr
            assert elapsed < 10
    assert victim.read_bytes() == before
    assert not (box / "etc").exists()


def test_the_default_lock_lives_in_a_root_only_directory(box: Path, states: Path,
                                                          attacker: Attacker) -> None:
    planted = box / "run/statekit"
    assert attacker.run(["mkdir", "-m", "0777", str(planted)]).returncode == 0
    assert attacker.run(["touch", str(planted / "lock")]).returncode == 0
    run = statekit(["converge", "--root", str(box), str(states)])
    clean(run, 0)
    st = planted.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o700)
    lock = (planted / "lock").stat()
    assert (lock.st_uid, lock.st_mode & 0o777) == (0, 0o600)
    asides = [p for p in (box / "run").iterdir() if ".statekit-aside-" in p.name]
    assert len(asides) == 1 and asides[0].stat().st_uid == attacker.uid
    assert os.stat(box / "etc/app/env").st_uid == 0
    subprocess.run(["true"], check=True)
