"""The benchmark works: one run at N=50 of statekit and the floor (no timing asserted).

The peers (pyinfra, ansible-core) are ``make bench``'s business, in their own venv; here
they are left out explicitly, and the table must say so rather than drop them silently.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "bench" / "run.py"

pytestmark = [pytest.mark.netns]


def _row(table: str, work: str, tool: str) -> str:
    for line in table.splitlines():
        cols = line.split()
        if line.startswith(work) and tool in line and "50" in cols:
            return line
    raise AssertionError(f"no {work} row for {tool} at N=50 in:\n{table}")


def test_benchmark_runs_once_at_n50_and_writes_a_table(tmp_path: Path) -> None:
    out, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = [sys.executable, str(RUN), "--sizes", "50", "--runs", "1", "--warmup", "0",
            "--peers", "statekit,floor", "--no-install", "--out", str(out),
            "--plot", str(tmp_path / "results.png"), "--json", str(raw)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for work in ("first", "no-op"):
        for tool in ("statekit", "floor"):
            assert " ms" in _row(proc.stdout, work, tool) or " s " in _row(proc.stdout, work,
                                                                           tool)
    for peer in ("pyinfra", "ansible"):
        assert any(peer in ln and ("skipped" in ln or "not" in ln)
                   for ln in proc.stdout.splitlines()), proc.stdout
    text = out.read_text()
    assert "## Machine" in text and "| statekit |" in text and "make bench" in text
    assert raw.exists()
