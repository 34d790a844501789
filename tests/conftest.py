"""Shared fixtures: private network namespaces, a testinfra host inside one, the CLI.

Nothing here touches the host's own network namespace: every namespace is created by
the fixture (``ip netns add``) and deleted afterwards, whatever the test did.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.backend.local import LocalBackend

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools" / "bin"


@dataclass
class Run:
    """A finished statekit run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def statekit(
    args: Sequence[str], *, netns: str | None = None, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, timeout: float = 120,
) -> Run:
    """Run ``python -m statekit ARGS`` (inside ``netns`` when given)."""
    argv = [sys.executable, "-m", "statekit", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **(env or {})}
    proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


class NetnsBackend(LocalBackend):  # type: ignore[misc]
    """testinfra's local backend, with every command run inside a network namespace."""

    NAME = "netns"

    def __init__(self, netns: str, *args: Any, **kwargs: Any) -> None:
        self.netns = netns
        super().__init__(*args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> Any:
        cmd = self.get_command(command, *args)
        return self.run_local("ip netns exec %s sh -c %s", self.netns, cmd)


def make_netns() -> str:
    name = f"sk-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    return name


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "pids", name], capture_output=True, check=False)
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], check=False)
    subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh private network namespace (loopback up), deleted afterwards."""
    name = make_netns()
    try:
        yield name
    finally:
        delete_netns(name)


@pytest.fixture
def nshost(netns: str) -> Any:
    """A testinfra host whose commands run inside ``netns``."""
    return testinfra.host.Host(NetnsBackend(netns))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A temporary ``--root``."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def local_host() -> Any:
    return testinfra.get_host("local://")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
