"""Crash points for the reliability tests, inert unless ``STATEKIT_TEST_HOOK`` is set.

``STATEKIT_TEST_HOOK=kill:N`` sends SIGKILL to this process at the N-th hook point (each
file write step and each command is one), so a test can stop a converge anywhere.
``STATEKIT_TEST_HOOK=list`` prints each point to stderr, to count them.
"""

from __future__ import annotations

import os
import sys

_spec = os.environ.get("STATEKIT_TEST_HOOK", "")
_count = 0


def point(kind: str, what: str) -> None:
    """A place where a crash must leave the machine consistent."""
    global _count  # noqa: PLW0603 -- one counter per process, by design
    if not _spec:
        return
    _count += 1
    if _spec == "list":
        sys.stderr.write(f"hook {_count} {kind} {os.path.basename(what)}\n")
    elif _spec == f"kill:{_count}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
