"""Item 1 of the hardening pass: PATH hijack.

The attacker owns a directory that comes first in PATH, plants programs named like the
ones statekit runs (``true`` for a command state, ``iptables-save`` for the firewall)
that would leave a marker if root ran them, and also plants them in the working
directory for an empty PATH entry (``::``) and a relative one (``.``). statekit must
never run them: it looks programs up only in the trusted system directories (or
``STATEKIT_TOOL_DIRS``), and refuses a tool directory or program the attacker could
write (exit 1, the state failed, a message naming the path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from statekit.errors import ApplyError
from statekit.host import runner
from tests.conftest import statekit, write
from tests.hardening import Attacker, arena_fixture, attacker_fixture, clean  # noqa: F401

pytestmark = pytest.mark.root

STATES = """\
phases: [run]
states:
  - id: probe
    type: command
    phase: run
    argv: ["{program}", statekit-probe]
"""


def plant(directory: Path, name: str, marker: Path) -> Path:
    program = directory / name
    program.write_text(f"#!/bin/sh\necho pwned > {marker}\n")
    program.chmod(0o755)
    return program


@pytest.fixture
def evil(arena: Path, attacker: Attacker) -> Path:
    """The attacker's directory (theirs, 0755) holding fake ``true`` and iptables-save."""
    directory = arena / "evil-bin"
    directory.mkdir()
    marker = arena / "marker"
    for name in ("true", "iptables-save", "statekit-probe-tool"):
        plant(directory, name, marker)
    attacker.own(directory, *directory.iterdir())
    return directory


@pytest.mark.parametrize("path", ["{evil}:/usr/bin:/bin", "::/usr/bin", ".:/usr/bin", ""])
def test_hijacked_path_never_runs_the_attackers_program(
        evil: Path, arena: Path, root: Path, tmp_path: Path, path: str) -> None:
    states = write(tmp_path / "s.yaml", STATES.format(program="true"))
    run = statekit(["converge", "--root", str(root), "--format", "json", str(states)],
                   env={"PATH": path.format(evil=evil)}, cwd=evil)
    clean(run, 0)
    assert json.loads(run.stdout)["states"][0]["status"] == "changed"
    assert not (arena / "marker").exists()


def test_a_tool_dir_the_attacker_owns_is_refused(evil: Path, arena: Path, root: Path,
                                                tmp_path: Path) -> None:
    states = write(tmp_path / "s.yaml", STATES.format(program="statekit-probe-tool"))
    run = statekit(["converge", "--root", str(root), str(states)],
                   env={"STATEKIT_TOOL_DIRS": str(evil)})
    clean(run, 1, f"statekit-probe-tool: refusing {evil}/statekit-probe-tool: ",
          "not root")
    assert not (arena / "marker").exists()


def test_a_world_writable_root_owned_tool_dir_is_refused(arena: Path, root: Path,
                                                        tmp_path: Path) -> None:
    directory = arena / "open-bin"
    directory.mkdir()
    plant(directory, "statekit-probe-tool", arena / "marker")
    directory.chmod(0o777)
    states = write(tmp_path / "s.yaml", STATES.format(program="statekit-probe-tool"))
    run = statekit(["converge", "--root", str(root), str(states)],
                   env={"STATEKIT_TOOL_DIRS": f"relative/dir::{directory}"})
    clean(run, 1, f"{directory} is group- or world-writable (mode 0777)")
    assert not (arena / "marker").exists()


def test_an_absolute_program_the_attacker_can_write_is_refused(evil: Path, arena: Path,
                                                              root: Path, tmp_path: Path) -> None:
    states = write(tmp_path / "s.yaml", STATES.format(program=f"{evil}/true"))
    run = statekit(["converge", "--root", str(root), str(states)])
    clean(run, 1, "not root")
    assert not (arena / "marker").exists()


def test_runner_resolves_iptables_save_in_the_system_dirs(
        evil: Path, arena: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{evil}::.")
    monkeypatch.delenv(runner.TOOL_DIRS_VAR, raising=False)
    monkeypatch.setattr(runner, "_resolved", {})
    monkeypatch.chdir(evil)
    found = runner.resolve("iptables-save")
    assert os.path.dirname(found) in runner.TRUSTED_DIRS
    result = runner.Runner().run(["sh", "-c", 'echo "$PATH"'])
    assert result.stdout.strip() == ":".join(runner.TRUSTED_DIRS)
    with pytest.raises(ApplyError) as info:
        runner.resolve("./true")
    assert info.value.returncode == 126
    assert not (arena / "marker").exists()
