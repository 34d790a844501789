"""The engine through the CLI: requisites, onchanges, actions, exit codes, JSON, lock."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import statekit, write

pytestmark = pytest.mark.root

FLOW = """\
phases: [one, two]
states:
  - id: conf
    type: env_file
    phase: one
    path: /etc/app/conf
    entries: {A: "{{ env.A_VALUE | default('1', true) }}"}
  - id: reload
    type: command
    phase: one
    onchanges: [conf]
    argv: [sh, -c, "echo reloaded >> {{ marker }}"]
  - id: broken
    type: command
    phase: one
    argv: [sh, -c, "echo bad >&2; exit 7"]
  - id: after-broken
    type: env_file
    phase: two
    requires: [broken]
    path: /etc/app/never
  - id: gated
    type: env_file
    phase: two
    when: "env.A_VALUE == 'gate'"
    path: /etc/app/gated
"""


def flow(tmp_path: Path, root: Path) -> Path:
    return write(tmp_path / "flow.yaml", FLOW.replace("{{ marker }}", str(root / "marker")))


def run_json(path: Path, root: Path, *extra: str,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    result = statekit(["converge", "--format", "json", "--root", str(root), *extra, str(path)],
                      env=env)
    report: dict[str, Any] = json.loads(result.stdout)
    report["_rc"] = result.returncode
    return report


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in report["states"]}


def test_json_report_and_requisites(tmp_path: Path, root: Path) -> None:
    report = run_json(flow(tmp_path, root), root)
    assert report["format_version"] == 1 and report["check"] is False
    states = by_id(report)
    assert states["conf"]["status"] == "changed"
    assert states["reload"]["status"] == "changed"
    assert states["reload"]["facts"]["returncode"] == 0
    assert states["broken"]["status"] == "failed"
    assert "exit 7" in states["broken"]["error"] and "bad" in states["broken"]["error"]
    assert states["after-broken"]["status"] == "skipped"
    assert states["after-broken"]["reason"] == "requirement 'broken' failed"
    assert states["gated"]["status"] == "skipped"
    assert report["summary"] == {"ok": 0, "changed": 2, "failed": 1, "skipped": 2}
    assert report["_rc"] == 1
    assert not (root / "etc/app/never").exists()
    assert (root / "marker").read_text() == "reloaded\n"


def test_onchanges_runs_only_after_a_change(tmp_path: Path, root: Path) -> None:
    path = flow(tmp_path, root)
    run_json(path, root)
    states = by_id(run_json(path, root))
    assert states["reload"]["status"] == "ok"
    assert states["reload"]["reason"] == "no change in onchanges: conf"
    assert (root / "marker").read_text() == "reloaded\n"
    states = by_id(run_json(path, root, env={"A_VALUE": "2"}))
    assert states["conf"]["status"] == "changed" and states["reload"]["status"] == "changed"
    assert (root / "marker").read_text() == "reloaded\nreloaded\n"


def test_check_mode_reports_would_run_and_runs_nothing(tmp_path: Path, root: Path) -> None:
    report = run_json(flow(tmp_path, root), root, "--check", "--phase", "one")
    states = by_id(report)
    assert report["check"] is True
    assert states["reload"]["status"] == "changed"  # would run: conf would change
    assert states["reload"]["diff"].startswith("run: sh -c")
    assert set(states) == {"conf", "reload", "broken"}
    assert list(root.iterdir()) == []


def test_phase_selection_runs_only_that_phase(tmp_path: Path, root: Path) -> None:
    report = run_json(flow(tmp_path, root), root, "--phase", "two")
    assert set(by_id(report)) == {"after-broken", "gated"}
    # the requirement is in a phase not run now: it does not block
    assert by_id(report)["after-broken"]["status"] == "changed"


def test_exit_codes(tmp_path: Path, root: Path) -> None:
    text = ("phases: [a]\nstates:\n  - id: f\n    type: env_file\n    phase: a\n"
            "    path: /f\n    entries: {A: b}\n")
    path = write(tmp_path / "s.yaml", text)
    base = ["converge", "--root", str(root), str(path)]
    assert statekit([*base, "--check", "--detailed-exitcode"]).returncode == 2
    assert statekit([*base, "--detailed-exitcode"]).returncode == 2
    assert statekit([*base, "--detailed-exitcode"]).returncode == 0
    assert statekit([*base, "--phase", "nope"]).returncode == 3
    assert statekit(["converge", "--bogus"]).returncode == 3


def test_text_output_lines_and_recap(tmp_path: Path, root: Path) -> None:
    result = statekit(["converge", "--root", str(root), str(flow(tmp_path, root))],
                      env={"NO_COLOR": "1"})
    lines = result.stdout.splitlines()
    assert lines[0] == "changed      one/conf [env_file]"
    assert lines[2].startswith("failed       one/broken [command]: command failed")
    assert lines[-1] == "ok=0 changed=2 failed=1 skipped=2"
    assert "\033[" not in result.stdout


def test_lock_serialises_and_times_out(tmp_path: Path, root: Path) -> None:
    path = flow(tmp_path, root)
    lock = root / "run/statekit/lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        result = statekit(["converge", "--lock-timeout", "0.5", "--root", str(root), str(path)])
        waited = time.monotonic() - start
    assert result.returncode == 1
    assert "another converge holds /run/statekit/lock" in result.stderr
    assert waited >= 0.5
    assert not (root / "etc").exists()


def test_lock_waits_for_the_holder(tmp_path: Path, root: Path) -> None:
    path = flow(tmp_path, root)
    lock = root / "run/statekit/lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "1"])
    time.sleep(0.2)
    result = statekit(["converge", "--lock-timeout", "10", "--root", str(root), str(path)])
    holder.wait()
    assert result.returncode == 1  # the 'broken' state, not the lock
    assert (root / "etc/app/conf").exists()


def test_signal_missing_ok_and_pidfile(tmp_path: Path, root: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        write(root / "run/app.pid", f"{sleeper.pid}\n")
        text = ("phases: [a]\nstates:\n"
                "  - id: nobody\n    type: signal\n    phase: a\n    signal: USR1\n"
                "    process: no-such-proc\n    missing_ok: true\n"
                "  - id: term\n    type: signal\n    phase: a\n    signal: TERM\n"
                "    pidfile: /run/app.pid\n"
                "  - id: strict\n    type: signal\n    phase: a\n    signal: HUP\n"
                "    process: no-such-proc\n")
        report = run_json(write(tmp_path / "s.yaml", text), root)
        states = by_id(report)
        assert states["nobody"]["status"] == "ok"
        assert "missing_ok" in states["nobody"]["reason"]
        assert states["term"]["status"] == "changed"
        assert states["term"]["facts"]["pids"] == [sleeper.pid]
        assert sleeper.wait(timeout=5) == -15
        assert states["strict"]["status"] == "failed"
        assert "no such process" in states["strict"]["error"]
    finally:
        sleeper.kill()


def test_command_creates_guard(tmp_path: Path, root: Path) -> None:
    text = ("phases: [a]\nstates:\n  - id: init\n    type: command\n    phase: a\n"
            f"    argv: [touch, {root}/done]\n    creates: /done\n")
    path = write(tmp_path / "s.yaml", text)
    assert by_id(run_json(path, root))["init"]["status"] == "changed"
    assert by_id(run_json(path, root))["init"]["reason"] == "/done exists"
    assert os.path.exists(root / "done")


def test_missing_root_is_invalid_input(tmp_path: Path) -> None:
    path = flow(tmp_path, tmp_path / "nowhere")
    result = statekit(["converge", "--root", str(tmp_path / "nowhere"), str(path)])
    assert result.returncode == 3
    assert result.stderr == f"statekit: --root {tmp_path / 'nowhere'}: no such directory\n"
    assert not (tmp_path / "nowhere").exists()
