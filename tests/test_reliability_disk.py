"""Full disk: converges into a small tmpfs ``--root`` that is (or becomes) full.

The tmpfs is mounted on a temporary directory and unmounted in teardown (nothing else
is mounted). A write that runs out of space (blocks or inodes) fails the state with the
system's message and exit 1; the old file is intact, no temporary file is left behind,
and once space is freed the next converge completes.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Run, register_token, statekit, write

pytestmark = pytest.mark.root

TOKEN = "glc_disk_token_3c9b8a7f6e"
register_token(TOKEN)
STATES = """\
phases: [network, auth]
secrets: [TOKEN]
states:
  - id: dns
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: "{{ env.ZONES.split() }}"
    bind: [127.0.0.53]
    forward: [192.0.2.53]
  - id: otel-env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    entries:
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Basic%20{{ ('42:' ~ env.TOKEN) | b64encode }}"
      PADDING: "{{ env.PADDING }}"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
"""
NO_SPACE = os.strerror(errno.ENOSPC)


@pytest.fixture
def small_root(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs with at most 32 inodes, unmounted (lazily if busy) afterwards."""
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=32,mode=0755",
                    "statekit-test", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def converge(states: Path, root: Path, padding: str = "", zones: str = "a.example.test",
             ) -> Run:
    env = {"TOKEN": TOKEN, "PADDING": padding, "ZONES": zones, "STATEKIT_NO_CACHE": "1"}
    return statekit(["converge", "--root", str(root), str(states)], env=env)


def fill(root: Path, name: str = "filler") -> None:
    """Write zeros into ``root/name`` until the filesystem has no block left."""
    with open(root / name, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def use_up_inodes(root: Path) -> int:
    made = 0
    try:
        while True:
            (root / f"inode-{made}").touch()
            made += 1
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return made


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".statekit-tmp-" in p.name]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {rel: ((root / rel).read_bytes(), stat.S_IMODE((root / rel).stat().st_mode))
            for rel in ("tmp/otel/otel-env", "etc/coredns/Corefile")}


@pytest.fixture
def states(tmp_path: Path) -> Path:
    return write(tmp_path / "states" / "s.yaml", STATES)


def test_full_disk_fails_clearly_and_keeps_the_old_files(states: Path,
                                                          small_root: Path) -> None:
    assert converge(states, small_root).returncode == 0
    old = snapshot(small_root)
    fill(small_root)
    run = converge(states, small_root, padding="x" * 8192, zones="b.example.test")
    assert run.returncode == 1, run.output
    assert f"/etc/coredns/Corefile: {NO_SPACE}" in run.stdout
    assert f"/tmp/otel/otel-env: {NO_SPACE}" in run.stdout
    assert "failed=2" in run.stdout and "Traceback" not in run.output
    assert snapshot(small_root) == old
    assert temporaries(small_root) == []
    (small_root / "filler").unlink()
    again = converge(states, small_root, padding="x" * 8192, zones="b.example.test")
    assert again.returncode == 0, again.output
    assert "PADDING=" + "x" * 8192 in (small_root / "tmp/otel/otel-env").read_text()
    assert temporaries(small_root) == []


def test_a_file_bigger_than_the_disk_fails_and_keeps_the_old_one(states: Path,
                                                                  small_root: Path) -> None:
    assert converge(states, small_root).returncode == 0
    old = snapshot(small_root)
    run = converge(states, small_root, padding="y" * 96 * 1024)
    assert run.returncode == 1, run.output
    assert f"/tmp/otel/otel-env: {NO_SPACE}" in run.stdout
    assert snapshot(small_root) == old
    assert temporaries(small_root) == []


def test_no_inode_left_fails_clearly(states: Path, small_root: Path) -> None:
    assert converge(states, small_root).returncode == 0
    old = snapshot(small_root)
    assert use_up_inodes(small_root) > 0
    run = converge(states, small_root, padding="z", zones="c.example.test")
    assert run.returncode == 1, run.output
    assert f"/tmp/otel/otel-env: {NO_SPACE}" in run.stdout
    assert snapshot(small_root) == old
    assert temporaries(small_root) == []


def test_a_first_converge_on_a_full_disk_fails_without_a_traceback(states: Path,
                                                                   small_root: Path) -> None:
    fill(small_root)
    use_up_inodes(small_root)
    run = converge(states, small_root)
    assert run.returncode == 1, run.output
    assert NO_SPACE in run.output and "Traceback" not in run.output
    assert len(run.stderr.splitlines()) <= 1
    assert temporaries(small_root) == []
