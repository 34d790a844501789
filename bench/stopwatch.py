"""Time one command from inside the namespace: ``stopwatch.py RESULT LOG -- ARGV...``.

Run under ``ip netns exec NS``, so that neither ``ip netns exec`` nor this script's own
start-up is counted: the clock starts just before the fork of ARGV and stops when it is
reaped. ``os.wait4`` gives the peak RSS of ARGV and of the descendants it waited for.
ARGV's stdout and stderr go to LOG; RESULT receives one JSON object:
``{"seconds": float, "maxrss_kb": int, "returncode": int}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def measure(argv: list[str], log_path: str) -> dict[str, float | int]:
    """Run ``argv`` with output to ``log_path``; its wall time, peak RSS and exit code."""
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "maxrss_kb": usage.ru_maxrss,
            "returncode": proc.returncode}


def main(args: list[str]) -> int:
    """Parse ``RESULT LOG -- ARGV...``, measure, write RESULT."""
    if len(args) < 4 or args[2] != "--":
        sys.stderr.write("usage: stopwatch.py RESULT LOG -- ARGV...\n")
        return 2
    result = measure(args[3:], args[1])
    with open(args[0], "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
