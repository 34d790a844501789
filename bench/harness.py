"""Private network namespaces, timed runs inside them, process counts, statistics.

Nothing here touches the host's network namespace: every command that reads or writes
netfilter runs under ``ip netns exec NS``, in a namespace created here and deleted here.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
STOPWATCH = BENCH / "stopwatch.py"


class BenchError(Exception):
    """A run failed or left the machine in an unexpected state."""


@dataclass(frozen=True)
class Sample:
    """One timed run: wall seconds, peak RSS of the process tree (KiB), exit code."""

    seconds: float
    maxrss_kb: int
    returncode: int
    log: str


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout, input=input)


def netns_add() -> str:
    """Create a fresh namespace (loopback up) and return its name."""
    name = f"skbench-{secrets.token_hex(4)}"
    _run(["ip", "netns", "add", name])
    _run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
    return name


def netns_del(name: str) -> None:
    """Kill what is left in the namespace and delete it."""
    pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        _run(["kill", "-9", pid], check=False)
    _run(["ip", "netns", "del", name], check=False)


@contextmanager
def namespace() -> Iterator[str]:
    """A fresh private network namespace, deleted afterwards whatever happens."""
    name = netns_add()
    try:
        yield name
    finally:
        netns_del(name)


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="skbench-") as tmp:
        yield Path(tmp)


def in_ns(ns: str, argv: Sequence[str], *, input: str | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``ns``."""
    return _run(["ip", "netns", "exec", ns, *argv], input=input, check=check)


def timed(ns: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
          timeout: float) -> Sample:
    """Run ``argv`` inside ``ns`` under the stopwatch; raise BenchError on failure."""
    with tempfile.TemporaryDirectory(prefix="skbench-sw-") as tmp:
        result, log = Path(tmp, "result.json"), Path(tmp, "log")
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(STOPWATCH), str(result),
               str(log), "--", *argv]
        try:
            subprocess.run(cmd, env=dict(env), cwd=cwd, check=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BenchError(f"timed out after {timeout:g} s: {argv[0]}") from None
        data = json.loads(result.read_text())
        sample = Sample(float(data["seconds"]), int(data["maxrss_kb"]),
                        int(data["returncode"]), log.read_text(errors="replace"))
    if sample.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} ... exited {sample.returncode}:\n"
                         + sample.log[-3000:])
    return sample


def count_execs(ns: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                timeout: float) -> int:
    """How many processes ``argv`` spawned: successful execve calls, less its own."""
    with tempfile.TemporaryDirectory(prefix="skbench-strace-") as tmp:
        trace = Path(tmp, "trace")
        cmd = ["ip", "netns", "exec", ns, "strace", "-f", "-qq", "-e",
               "trace=execve,execveat", "-o", str(trace), *argv]
        subprocess.run(cmd, env=dict(env), cwd=cwd, check=True, timeout=timeout,
                       capture_output=True)
        lines = [ln for ln in trace.read_text().splitlines()
                 if "execve" in ln and ln.rstrip().endswith("= 0")]
    return max(len(lines) - 1, 0)  # failed PATH probes are not counted, nor ARGV itself


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def have(program: str) -> bool:
    """Whether ``program`` is on PATH."""
    return any(os.access(Path(d, program), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep) if d)


@dataclass(frozen=True)
class Spread:
    """Median, min, max and quartiles of a list of numbers."""

    median: float
    low: float
    high: float
    q1: float
    q3: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        ordered = sorted(values)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), ordered[0], ordered[-1], q1, q3, len(ordered))
