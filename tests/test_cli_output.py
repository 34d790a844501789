"""What the command line prints, read by a person or cut by a pipe.

- Output cut short by its reader (``| head -1``) is no error: no traceback, no "internal
  error", the converge finishes its work and keeps its own exit code.
- Messages say what the run did, in its mode: a validate or a check run says what
  *would* be converged absent, a converge what was.
- ``--help`` explains every option and gives the defaults; counts are in good English.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from statekit import cli
from tests.conftest import REPO, statekit, write

TWO_FILES = """\
phases: [main]
states:
  - id: first
    type: env_file
    phase: main
    path: /etc/app/first.env
    entries: {A: "1"}
  - id: second
    type: env_file
    phase: main
    path: /etc/app/second.env
    entries: {B: "2"}
"""
REFUSED = """\
phases: [main]
on_invalid_input: absent
vars:
  app_id: "{{ env.APP_ID | check_digits('APP_ID') }}"
states:
  - id: app-env
    type: env_file
    phase: main
    path: /etc/app/env
    entries: {APP_ID: "{{ app_id }}"}
"""


def closed_pipe_run(argv: list[str], *, stderr_too: bool = False,
                    env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run statekit with stdout on a pipe whose reader is already gone (every write
    fails with EPIPE); its exit code and its stderr (unless that is cut too)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "statekit", *argv], stdout=write_end,
                              stderr=write_end if stderr_too else subprocess.PIPE,
                              env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8",
                                   **(env or {})},
                              cwd=REPO, text=True, timeout=120, check=False)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr or ""


def test_a_converge_into_a_closed_pipe_finishes_and_keeps_its_exit_code(
        tmp_path: Path, root: Path) -> None:
    states = write(tmp_path / "s.yaml", TWO_FILES)
    code, stderr = closed_pipe_run(["converge", "--diff", "--detailed-exitcode",
                                    "--root", str(root), str(states)])
    assert (code, stderr) == (2, "")
    assert (root / "etc/app/first.env").read_text() == "A=1\n"
    assert (root / "etc/app/second.env").read_text() == "B=2\n", "it ran to the end"
    code, stderr = closed_pipe_run(["converge", "--format", "json", "--root", str(root),
                                    str(states)])
    assert (code, stderr) == (0, "")


@pytest.mark.parametrize("argv", [
    ["validate", "states"], ["show", "states"], ["show", "--format", "json", "states"],
    ["--help"], ["converge", "--help"], ["--version"]])
def test_other_commands_into_a_closed_pipe_exit_quietly(argv: list[str]) -> None:
    assert closed_pipe_run(argv) == (0, "")


def test_an_error_into_closed_pipes_keeps_exit_3(tmp_path: Path) -> None:
    bad = write(tmp_path / "s.yaml", TWO_FILES.replace("path: /etc/app/first.env", "pth: /x"))
    assert closed_pipe_run(["validate", str(bad)], stderr_too=True) == (3, "")


@pytest.mark.parametrize(("command", "code"), [
    ("statekit converge --diff --detailed-exitcode --root ROOT STATES", 2),
    ("statekit converge --check --root ROOT STATES", 0),
    ("statekit validate STATES", 0),
    ("statekit show REPO/states", 0),
    ("statekit show --format json REPO/states", 0),
    ("statekit --help", 0),
])
def test_head_1_gets_one_line_and_no_traceback(tmp_path: Path, root: Path, command: str,
                                               code: int) -> None:
    """As a person types it: ``statekit ... | head -1``, the exit code from PIPESTATUS."""
    states = write(tmp_path / "s.yaml", TWO_FILES)
    line = (command.replace("statekit", f"{sys.executable} -m statekit", 1)
            .replace("ROOT", str(root)).replace("STATES", str(states))
            .replace("REPO", str(REPO)))
    proc = subprocess.run(["bash", "-c", f'{line} | head -1; echo "rc=${{PIPESTATUS[0]}}"'],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == f"rc={code}", proc.stdout + proc.stderr
    assert proc.stderr == ""


@pytest.mark.parametrize(("argv", "said"), [
    (["validate"], "would be converged absent"),
    (["converge", "--check"], "would be converged absent"),
    (["converge"], "were converged absent"),
])
def test_refused_input_is_reported_in_the_words_of_the_mode(
        tmp_path: Path, root: Path, argv: list[str], said: str) -> None:
    states = write(tmp_path / "s.yaml", REFUSED)
    extra = ["--root", str(root)] if argv[0] == "converge" else []
    run = statekit([*argv, *extra, str(states)], env={"APP_ID": "12x"})
    assert run.returncode == 3, run.output
    assert f"APP_ID: must be digits only (its file's states {said};" in run.stderr
    other = "were converged" if "would" in said else "would be converged"
    assert other not in run.output


def test_help_explains_every_option_with_its_default() -> None:
    for command, (_, args) in cli.COMMANDS.items():
        for arg in args:
            assert arg.help, f"statekit {command} {arg.name}: no help text"
    text = subprocess.run([sys.executable, "-m", "statekit", "converge", "--help"],
                          capture_output=True, text=True, cwd=REPO, check=True).stdout
    flat = " ".join(text.split())
    assert "--format {text,json}" in flat and "(default: text)" in flat
    assert "--lock-timeout SECONDS" in flat and "(default: 30)" in flat


@pytest.mark.parametrize(("states", "phases", "said"), [
    (1, 1, "1 state in 1 phase: valid"), (2, 1, "2 states in 1 phase: valid"),
    (0, 2, "0 states in 2 phases: valid")])
def test_validate_counts_in_good_english(tmp_path: Path, states: int, phases: int,
                                         said: str) -> None:
    body = "".join(f"  - id: s{i}\n    type: env_file\n    phase: p0\n    path: /e{i}\n"
                   for i in range(states))
    names = ", ".join(f"p{i}" for i in range(phases))
    path = write(tmp_path / "s.yaml", f"phases: [{names}]\nstates:\n{body}" if body
                 else f"phases: [{names}]\nstates: []\n")
    run = statekit(["validate", str(path)])
    assert (run.returncode, run.stdout) == (0, said + "\n")
