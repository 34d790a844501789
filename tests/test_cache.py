"""The compiled-program cache: hits when nothing changed, never holds a secret."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import statekit, write

STATES = """\
phases: [a]
secrets: [TOKEN]
states:
  - id: f
    type: env_file
    phase: a
    path: /etc/f
    entries: {A: "{{ env.VALUE }}"}
"""


def cache_file(root: Path) -> Path:
    return root / "run/statekit/program.cache"


def test_cache_written_and_invalidated(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    assert statekit(args, env={"VALUE": "1"}).returncode == 0
    cached = cache_file(root)
    assert cached.exists() and (cached.stat().st_mode & 0o777) == 0o600
    first = cached.stat().st_ino
    assert "ok=1" in statekit(args, env={"VALUE": "1"}).stdout
    assert cached.stat().st_ino == first  # a hit rewrites nothing (a write is a rename)
    assert "changed=1" in statekit(args, env={"VALUE": "2"}).stdout  # env change: a miss
    assert (root / "etc/f").read_text() == "A=2\n"
    write(path, STATES.replace("A:", "B:"))  # file change: a miss
    assert "changed=1" in statekit(args, env={"VALUE": "2"}).stdout
    assert (root / "etc/f").read_text() == "B=2\n"


def test_no_cache_when_a_secret_is_set(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    statekit(["converge", "--root", str(root), str(path)], env={"TOKEN": "s3cr3t-token"})
    assert not cache_file(root).exists()


def test_check_mode_writes_no_cache(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    statekit(["converge", "--check", "--root", str(root), str(path)])
    assert list(root.iterdir()) == []


def test_untrusted_cache_is_ignored(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    statekit(args, env={"VALUE": "1"})
    cached = cache_file(root)
    os.chmod(cached, 0o666)
    cached.write_bytes(cached.read_bytes()[:-20] + b"garbage-garbage-garb")
    result = statekit(args, env={"VALUE": "1"})
    assert result.returncode == 0 and "ok=1" in result.stdout


def test_unrelated_environment_does_not_miss(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    statekit(args, env={"VALUE": "1", "UNRELATED": "a"})
    first = cache_file(root).read_bytes()
    assert first.split(b"\n")[2] == b"TOKEN\0VALUE"  # the variables read, secrets too
    inode = cache_file(root).stat().st_ino
    statekit(args, env={"VALUE": "1", "UNRELATED": "b"})
    assert cache_file(root).stat().st_ino == inode  # a hit: not rewritten
