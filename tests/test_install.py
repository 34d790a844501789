"""Installing statekit from a clone, as the README says: the tree stays as it was, and
`make venv` says nothing it need not say.

Both run pip for real (from PyPI, as `make venv` does; pip's cache makes a second run
quick) on a copy of the clone's files in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

#: what the build reads, and the Makefile
SOURCES = ("pyproject.toml", "README.md", "Makefile", "statekit", "bin", "scripts")


def copy_of_the_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, clone / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            clone.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    return clone


def listing(top: Path) -> list[str]:
    """Every path under ``top`` (Python's own bytecode caches aside)."""
    return sorted(str(p.relative_to(top)) for p in top.rglob("*")
                  if "__pycache__" not in p.parts)


def pip_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}


def test_pip_install_dot_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    clone = copy_of_the_clone(tmp_path)
    before = listing(clone)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                           "install", "-q", "--no-deps", "."], cwd=clone, capture_output=True,
                          text=True, env=pip_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert listing(clone) == before, "no build/, no statekit.egg-info/"
    version = subprocess.run([str(venv / "bin/statekit"), "--version"], capture_output=True,
                             text=True, check=False)
    assert version.returncode == 0 and version.stdout.startswith("statekit "), version.stderr


def test_make_venv_prints_no_setuptools_warning(tmp_path: Path) -> None:
    """setuptools warns about the compat editable mode in 15 lines; `make venv` asks for
    that mode on purpose (see the Makefile) and silences the warning, nothing else."""
    clone = copy_of_the_clone(tmp_path)
    project = (clone / "pyproject.toml").read_text()
    start = project.index("[project.optional-dependencies]")
    end = project.index("\n[", start + 1)
    empty = "[project.optional-dependencies]\ntest = []\nlint = []\n"
    (clone / "pyproject.toml").write_text(project[:start] + empty + project[end + 1:])
    proc = subprocess.run(["make", "venv"], cwd=clone, capture_output=True, text=True,
                          env=pip_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "Warning" not in output and "!!" not in output, output
    assert (clone / ".venv/.installed").exists()
    check = subprocess.run([str(clone / ".venv/bin/python"), "-c", "import statekit"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
