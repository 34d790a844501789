"""Item 2 of the hardening pass: PYTHONPATH, sitecustomize and friends.

The attacker owns a directory with a ``sitecustomize.py`` (and a ``statekit`` package
shadow) that leaves a marker when imported, and points PYTHONPATH, PYTHONSTARTUP and
the working directory at it. The control run (plain ``python``) proves the plant works;
then ``statekit`` as ``make venv`` installs it (editable), as a wheel installs it into a
fresh venv, and as examples/entrypoint.sh calls it by default must never import it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Run, record_output, write
from tests.hardening import Attacker, arena_fixture, attacker_fixture, clean  # noqa: F401

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def plant(arena: Path, attacker: Attacker) -> Path:
    """The attacker's directory; ``arena/marker`` appears if any of it is imported."""
    evil = arena / "evil-py"
    (evil / "statekit").mkdir(parents=True)
    payload = f'open("{arena}/marker", "a").write("pwned\\n")\n'
    for name in ("sitecustomize.py", "usercustomize.py", "startup.py",
                 "statekit/__init__.py", "yaml.py"):
        (evil / name).write_text(payload)
    attacker.own(evil, *evil.rglob("*"))
    return evil


def hostile_env(evil: Path, path: str) -> dict[str, str]:
    return {"PATH": path, "LANG": "C.UTF-8", "PYTHONPATH": str(evil),
            "PYTHONSTARTUP": str(evil / "startup.py"),
            "PYTHONUSERBASE": str(evil), "HOME": str(evil)}


def run(argv: list[str], env: dict[str, str], cwd: Path) -> Run:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=60, check=False)
    record_output(proc.stdout, proc.stderr)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_the_plant_works_on_a_plain_python(plant: Path, arena: Path) -> None:
    run([str(VENV_BIN / "python"), "-c", "pass"], hostile_env(plant, "/usr/bin:/bin"), plant)
    assert (arena / "marker").exists()


@pytest.mark.parametrize("via_symlink", [False, True])
def test_the_installed_command_ignores_the_plant(plant: Path, arena: Path, tmp_path: Path,
                                                 via_symlink: bool) -> None:
    states = write(tmp_path / "s.yaml", "phases: [p]\nstates: []\n")
    command = VENV_BIN / "statekit"
    if via_symlink:  # /usr/local/bin/statekit -> /opt/venv/bin/statekit, say
        (arena / "bin").mkdir()
        (arena / "bin" / "statekit").symlink_to(command)
        command = arena / "bin" / "statekit"
    result = run([str(command), "validate", str(states)],
                 hostile_env(plant, "/usr/bin:/bin"), plant)
    clean(result, 0, "0 states in 1 phase: valid")
    assert not (arena / "marker").exists()


def test_a_wheel_install_ignores_the_plant(plant: Path, arena: Path, tmp_path: Path) -> None:
    wheels, venv, src = tmp_path / "wheels", tmp_path / "venv", tmp_path / "src"
    (src / "scripts").mkdir(parents=True)  # a copy of what the build reads
    for name in ("pyproject.toml", "README.md", "scripts/build_backend.py"):
        shutil.copy(REPO / name, src / name)
    for name in ("bin", "statekit"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                    "install", "-q", "--no-deps", *map(str, wheels.glob("*.whl"))],
                   check=True, capture_output=True, timeout=300)
    script = venv / "bin" / "statekit"
    assert script.read_text().startswith("#!/bin/sh\n")  # pip left it as written
    result = run([str(script), "--help"], hostile_env(plant, "/usr/bin:/bin"), plant)
    clean(result, 0, "Idempotent state engine.")
    assert not (arena / "marker").exists()


#: The smallest lockdown the entrypoint's guard (--require-lockdown) accepts.
LOCKDOWN = """\
  - id: out
    type: iptables_chain
    phase: network
    chain: OUTPUT
    policy: DROP
    purge: true
  - id: lo
    type: iptables_rule
    phase: network
    chain: OUTPUT
    out_interface: lo
    jump: ACCEPT
"""


@pytest.mark.netns
def test_the_entrypoint_default_runs_statekit_isolated(plant: Path, arena: Path, root: Path,
                                                      tmp_path: Path, netns: str) -> None:
    states = tmp_path / "states"
    states.mkdir()
    write(states / "s.yaml", "phases: [network, auth]\nstates:\n  - id: env\n"
          "    type: env_file\n    phase: auth\n    path: /tmp/otel/otel-env\n"
          "    entries: {OTEL_LOG_TOOL_CONTENT: '0'}\n" + LOCKDOWN)
    env = hostile_env(plant, f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(STATES=str(states), STATEKIT_ROOT=str(root), REFRESH="0")
    env.pop("STATEKIT", None)
    ip = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert ip is not None
    result = run([ip, "netns", "exec", netns, "sh", str(REPO / "examples" / "entrypoint.sh"),
                  "sh", "-c", 'echo "agent: $OTEL_LOG_TOOL_CONTENT"'], env, plant)
    clean(result, 0, "agent: 0")
    assert (root / "tmp/otel/otel-env").read_text() == "OTEL_LOG_TOOL_CONTENT=0\n"
    assert not (arena / "marker").exists()
