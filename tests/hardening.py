"""Shared by the hardening tests: an unprivileged attacker and the checks every run passes.

A test module imports ``attacker_fixture`` and ``arena_fixture`` to get the ``attacker``
and ``arena`` fixtures (named so that the import does not shadow the argument).

The attacker is a real system user (created once, ``useradd``) who acts through
``setpriv``; the arena is a root-owned 0755 directory under /tmp that the attacker can
reach (pytest's own temporary directories are 0700), removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Run

ATTACKER = "statekit-attacker"


@dataclass(frozen=True)
class Attacker:
    uid: int
    gid: int

    def run(self, argv: Sequence[str], cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        """``argv`` as the attacker (no capabilities, no supplementary groups)."""
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                               "--clear-groups", "--", *argv], capture_output=True,
                              text=True, check=False, timeout=60, cwd=cwd)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                                 "--clear-groups", "--", *argv], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def own(self, *paths: Path) -> None:
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)


@pytest.fixture(scope="session", name="attacker")
def attacker_fixture() -> Attacker:
    """The unprivileged user, created in the test setup when missing."""
    try:
        entry = pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", ATTACKER], check=True, capture_output=True)
        entry = pwd.getpwnam(ATTACKER)
    assert entry.pw_uid != 0
    return Attacker(entry.pw_uid, entry.pw_gid)


@pytest.fixture(name="arena")
def arena_fixture() -> Iterator[Path]:
    """A root-owned 0755 directory the attacker can reach (but not write)."""
    path = Path(tempfile.mkdtemp(prefix="statekit-arena-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clean(run: Run, code: int, *messages: str) -> None:
    """The run exited ``code``, printed each of ``messages``, and never a traceback or an
    internal error."""
    assert run.returncode == code, run.output
    assert "internal error" not in run.output, run.output
    assert "Traceback" not in run.output, run.output
    for message in messages:
        assert message in run.output, run.output


def tree(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``path``: mode, owner and content (for "nothing changed")."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath, name)
            st = full.lstat()
            data = full.read_bytes() if full.is_file() and not full.is_symlink() else b""
            out[str(full.relative_to(path))] = (st.st_mode, st.st_uid, data)
    return out
