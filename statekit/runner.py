"""The one place that runs processes: argv lists, never a shell string.

A :class:`Runner` runs a command and returns a :class:`Result`; a non-zero exit raises
:class:`~statekit.errors.ApplyError` carrying argv, exit code and stderr (``check=False``
returns the result instead). ``Runner.calls`` counts processes for the benchmark.
A test hook (``STATEKIT_TEST_HOOK``) can stop the process before each command.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import NamedTuple

from statekit import testhook
from statekit.errors import ApplyError


class Result(NamedTuple):
    """What came back from one command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Runner:
    """Runs argv lists on this machine (a network namespace is the caller's business)."""

    def __init__(self) -> None:
        self.calls = 0

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
        check: bool = True,
    ) -> Result:
        testhook.point("run", argv[0])
        self.calls += 1
        try:
            proc = subprocess.run(
                list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ApplyError(f"{argv[0]}: command not found", argv=argv, returncode=127) from exc
        except subprocess.TimeoutExpired as exc:
            raise ApplyError(f"timed out after {timeout:g} s", argv=argv, returncode=-1) from exc
        result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise ApplyError("command failed", argv=argv, returncode=proc.returncode,
                             stderr=proc.stderr)
        return result
