"""Item 3 of the hardening pass: unbounded reads.

A 768 MiB sparse file where statekit reads (the env file, the Corefile, a state file,
the program cache) must never be read into memory: the converge's peak RSS (the child's,
from ``wait4``) stays under 200 MiB. The env file, which statekit owns whole, is
replaced as drift; a Corefile (which holds others' blocks) fails its state with a clear
message and is left as it was; an oversized state file or a FIFO is invalid input
(exit 3). Nothing is written outside the root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, Run, record_output, write
from tests.hardening import clean, tree

pytestmark = pytest.mark.root

BIG = 768 << 20
RSS_LIMIT_KIB = 200 << 10
STATES = """\
phases: [network, auth]
states:
  - id: dns
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: a.example.test
    bind: [127.0.0.53]
    forward: [192.0.2.53]
  - id: otel-env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    entries: {OTEL_LOG_TOOL_CONTENT: "0"}
"""


# statekit's own peak: the kernel's VmHWM of the process's memory since its exec, read
# just before it exits. (wait4's ru_maxrss would also count the image the child had
# between fork and exec: a copy of this pytest process, which grows over the suite.)
PEAK = """\
import sys
from statekit.cli import main
try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as out:
        out.write(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")))
raise SystemExit(code)
"""


def measured(args: list[str], env: dict[str, str] | None = None) -> tuple[Run, int]:
    """statekit ARGS (its ``main``, as ``python -m statekit`` runs it) and its peak RSS in
    KiB."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr, \
            tempfile.NamedTemporaryFile("r") as peak:
        proc = subprocess.run([sys.executable, "-c", PEAK, peak.name, *args], stdout=stdout,
                              stderr=stderr, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                                                  **(env or {})}, cwd=REPO, check=False,
                              timeout=120)
        stdout.seek(0)
        stderr.seek(0)
        run = Run(proc.returncode, stdout.read(), stderr.read())
        kib = int(peak.read().split()[1])  # "VmHWM:   12345 kB"
    record_output(run.stdout, run.stderr)
    return run, kib


def sparse(path: Path, size: int = BIG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    path.chmod(0o600)
    return path


def test_a_huge_env_file_is_replaced_without_reading_it(root: Path, tmp_path: Path) -> None:
    states = write(tmp_path / "s.yaml", STATES)
    sparse(root / "tmp/otel/otel-env")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    before = tree(outside)
    run, rss = measured(["converge", "--root", str(root), "--phase", "auth", "--diff",
                         str(states)], {"STATEKIT_NO_CACHE": "1"})
    clean(run, 0, "previous content not read: 805306368 bytes, over the read limit")
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
    print(f"peak RSS {rss} KiB")
    assert (root / "tmp/otel/otel-env").read_text() == "OTEL_LOG_TOOL_CONTENT=0\n"
    again, _ = measured(["converge", "--root", str(root), "--phase", "auth",
                         "--detailed-exitcode", str(states)], {"STATEKIT_NO_CACHE": "1"})
    clean(again, 0)
    assert tree(outside) == before


def test_a_huge_corefile_fails_its_state_and_is_left_alone(root: Path, tmp_path: Path) -> None:
    states = write(tmp_path / "s.yaml", STATES)
    corefile = sparse(root / "etc/coredns/Corefile")
    run, rss = measured(["converge", "--root", str(root), "--phase", "network", str(states)],
                        {"STATEKIT_NO_CACHE": "1"})
    clean(run, 1, "/etc/coredns/Corefile: 805306368 bytes, over the 4194304-byte limit")
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
    print(f"peak RSS {rss} KiB")
    assert corefile.stat().st_size == BIG
    assert corefile.stat().st_blocks == 0  # never written


def test_a_huge_state_file_or_a_fifo_is_invalid_input(root: Path, tmp_path: Path) -> None:
    huge = sparse(tmp_path / "huge.yaml")
    run, rss = measured(["converge", "--root", str(root), str(huge)])
    clean(run, 3, f"{huge}: cannot read: 805306368 bytes, over the 16777216-byte limit")
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
    print(f"peak RSS {rss} KiB")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    run, _ = measured(["validate", str(fifo)])
    clean(run, 3, str(fifo))  # refused, never waited on
    assert list(root.iterdir()) == []


def test_a_huge_program_cache_is_a_miss(root: Path, tmp_path: Path) -> None:
    states = write(tmp_path / "s.yaml", STATES)
    cache = sparse(root / "run/statekit/program.cache")
    cache.parent.chmod(0o700)
    run, rss = measured(["converge", "--root", str(root), "--phase", "auth", str(states)])
    clean(run, 0)
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
    print(f"peak RSS {rss} KiB")
    assert cache.stat().st_size < BIG  # rewritten by the converge (the miss)
