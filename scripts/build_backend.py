"""statekit's build backend: setuptools, run on a copy of the package's sources.

``pip install .`` and ``pipx install .`` build the wheel in the source tree by default,
leaving ``build/`` and ``statekit.egg-info/`` behind. This backend gives setuptools a
copy of what the wheel is made of (``pyproject.toml``, ``README.md``, ``statekit/``,
``bin/``) in a private temporary directory, removed afterwards: the tree stays as it
was. Editable installs (``make venv``) are setuptools' own, in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from setuptools import build_meta as _setuptools

SOURCES = ("pyproject.toml", "README.md", "statekit", "bin")

get_requires_for_build_editable = _setuptools.get_requires_for_build_editable
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
build_editable = _setuptools.build_editable


def _elsewhere(hook: Callable[..., Any], *args: Any) -> Any:
    """Run ``hook`` in a temporary copy of the sources (directories in ``args``: absolute)."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="statekit-build-") as tmp:
        for name in SOURCES:
            if os.path.isdir(name):
                shutil.copytree(name, os.path.join(tmp, name),
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(name, os.path.join(tmp, name))
        os.chdir(tmp)
        try:
            return hook(*args)
        finally:
            os.chdir(here)


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    return str(_elsewhere(_setuptools.build_wheel, os.path.abspath(wheel_directory),
                          config_settings,
                          metadata_directory and os.path.abspath(metadata_directory)))


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: dict[str, Any] | None = None) -> str:
    return str(_elsewhere(_setuptools.prepare_metadata_for_build_wheel,
                          os.path.abspath(metadata_directory), config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    return str(_elsewhere(_setuptools.build_sdist, os.path.abspath(sdist_directory),
                          config_settings))


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_elsewhere(_setuptools.get_requires_for_build_wheel, config_settings))


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_elsewhere(_setuptools.get_requires_for_build_sdist, config_settings))
