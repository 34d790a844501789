"""Issue 19 item 4: the installed ``statekit`` found through a symlink.

On the python images /usr/local/bin holds its own ``python3`` (without statekit). A
symlink ``/usr/local/bin/statekit -> /opt/venv/bin/statekit`` made the launcher run the
``python3`` beside the link, which failed with ModuleNotFoundError: no lockdown at boot.
The launcher must resolve the symlink first and run the ``python3`` beside the real file.

Here the launcher is installed as pip installs it (pip copies ``bin/statekit`` byte for
byte: tests/test_hardening_isolation.py checks that on a real wheel install) into a
fresh venv whose site-packages point at this checkout, and reached through symlinks from
directories holding a decoy ``python3`` that fails loudly and leaves a marker.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from statekit import __version__
from tests.conftest import REPO

DECOY = """#!/bin/sh
echo "decoy $0 ran" >> {marker}
echo "decoy python3 ran: ModuleNotFoundError: No module named 'statekit'" >&2
exit 97
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the launcher copied into its bin/, as pip installs it."""
    venv = tmp_path_factory.mktemp("launcher") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    purelib = next(venv.glob("lib/python*/site-packages"))
    paths = [str(REPO), *site.getsitepackages()]  # this checkout and its dependencies
    (purelib / "statekit-checkout.pth").write_text("\n".join(paths) + "\n")
    shutil.copy2(REPO / "bin" / "statekit", venv / "bin" / "statekit")
    return venv


def decoy_dir(path: Path, marker: Path) -> Path:
    path.mkdir()
    python = path / "python3"
    python.write_text(DECOY.format(marker=marker))
    python.chmod(0o755)
    return path


@pytest.mark.parametrize("how", ["absolute", "relative", "chain", "path lookup",
                                 "directory link"])
def test_a_symlink_beside_another_python3_runs_the_venvs(venv: Path, tmp_path: Path,
                                                        how: str) -> None:
    marker = tmp_path / "decoy-ran"
    local_bin = decoy_dir(tmp_path / "usr-local-bin", marker)  # like /usr/local/bin
    link = local_bin / "statekit"
    real = venv / "bin" / "statekit"
    if how == "relative":
        link.symlink_to(os.path.relpath(real, local_bin))
        assert link.resolve() == real
    elif how == "chain":  # a link to a link, each beside a decoy
        hop = decoy_dir(tmp_path / "hop", marker) / "statekit"
        hop.symlink_to(real)
        link.symlink_to(hop)
    elif how == "directory link":  # the file itself, reached through a linked directory
        (tmp_path / "opt-bin").symlink_to(real.parent)
        link = tmp_path / "opt-bin" / "statekit"
    else:
        link.symlink_to(real)
    argv = ["/bin/sh", "-c", "statekit --version"] if how == "path lookup" else [
        str(link), "--version"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          cwd=local_bin, env={"PATH": f"{local_bin}:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(__version__), proc.stdout
    assert not marker.exists(), marker.read_text()


def test_the_decoy_fails_loudly_when_run(venv: Path, tmp_path: Path) -> None:
    """The control: the decoy does fail (so a run that used it could not pass)."""
    marker = tmp_path / "decoy-ran"
    python = decoy_dir(tmp_path / "bin", marker) / "python3"
    proc = subprocess.run([str(python), "-I", str(venv / "bin" / "statekit"), "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 97 and "ModuleNotFoundError" in proc.stderr
    assert marker.exists()


@pytest.mark.parametrize("relative", [False, True])
def test_the_venvs_own_launcher_still_runs_its_python(venv: Path, tmp_path: Path,
                                                      relative: bool) -> None:
    """Run by its own path (no symlink: no readlink either), absolute or relative, with a
    planted ``real`` and ``dir``, and a ``CDPATH`` whose ``bin/`` holds a decoy python3:
    the launcher must take none of them for its own directory."""
    marker = tmp_path / "decoy-ran"
    decoy_dir(tmp_path / "bin", marker)
    script = "bin/statekit" if relative else str(venv / "bin" / "statekit")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60,
                          check=False, cwd=venv,
                          env={"PATH": "/usr/bin:/bin", "CDPATH": str(tmp_path),
                               "real": str(tmp_path / "bin" / "statekit"),
                               "dir": str(tmp_path / "bin")})
    assert not marker.exists(), marker.read_text()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(__version__)
