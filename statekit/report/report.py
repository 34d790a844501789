"""Output: a line per state (with its diff), the recap, and the JSON report.

Everything passes through the masker on its way out. ``FORMAT_VERSION`` is the JSON
report's schema version (README, "JSON report"); it changes only on breaking changes.
"""

from __future__ import annotations

import os
import sys

from statekit.engine.engine import CHANGED, FAILED, OK, SKIPPED, Outcome

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

    Mask = Callable[[str], str]

FORMAT_VERSION = 1
_COLORS = {OK: "32", CHANGED: "33", FAILED: "31", SKIPPED: "36"}


def emit(stream: TextIO, text: str) -> None:
    """Write ``text`` to ``stream`` and flush. A reader that went away (``| head -1``)
    cuts the output, never the run: the rest goes to /dev/null, the exit code stays."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        cut(stream)


def cut(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null (what a closed pipe left unread
    is dropped there too, at the next flush)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.dup2(null, stream.fileno())
    except (OSError, ValueError):  # not a real file (a test's capture): nothing to cut
        pass
    finally:
        os.close(null)


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts = dict.fromkeys((OK, CHANGED, FAILED, SKIPPED), 0)
    for outcome in outcomes:
        counts[outcome.status] += 1
    return counts


class TextReport:
    """Streams one line per state as outcomes arrive, then the recap."""

    def __init__(self, mask: Mask, *, check: bool, diff: bool,
                 stream: TextIO | None = None) -> None:
        self.mask = mask
        self.check = check
        self.diff = diff
        # sys.stdout as it is now, not as it was when this module was imported: a
        # redirect made since (a test's capture, say) is honoured
        self.stream = sys.stdout if stream is None else stream
        self.color = use_color(self.stream)

    def outcome(self, o: Outcome) -> None:
        label = "would change" if (o.status == CHANGED and self.check) else o.status
        shown = f"\033[{_COLORS[o.status]}m{label:<12}\033[0m" if self.color else f"{label:<12}"
        detail = o.error or o.reason
        line = f"{shown} {o.state.phase}/{o.state.id} [{o.state.type}]"
        self._write(line + (f": {detail}" if detail else ""))
        if self.diff and o.plan.diff and o.status in (CHANGED, FAILED):
            self._write("\n".join("    " + ln for ln in o.plan.diff.splitlines()))

    def recap(self, outcomes: list[Outcome]) -> None:
        counts = summary(outcomes)
        mode = "check mode, nothing changed: " if self.check else ""
        self._write(mode + " ".join(f"{k}={v}" for k, v in counts.items()))

    def _write(self, text: str) -> None:
        emit(self.stream, self.mask(text) + "\n")


def as_json(outcomes: list[Outcome], *, check: bool, phases: list[str], mask: Mask,
            input_errors: list[Any] | None = None) -> str:
    report: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "check": check,
        "phases": phases,
        "states": [_state(o) for o in outcomes],
        "summary": summary(outcomes),
    }
    if input_errors:  # files converged absent on invalid input (exit 3)
        report["input_errors"] = [error_object(e) for e in input_errors]
    # Strings are masked before encoding (JSON escapes would hide a secret from the
    # masker), and the encoded text is not masked again: a secret such as "null" or "2"
    # must not corrupt the document's syntax.
    import json

    return json.dumps(masked_tree(report, mask), indent=2)


def error_object(error: Any) -> dict[str, Any]:
    """A StateError as JSON data: file, line, field and message."""
    return {"file": error.file, "line": error.line, "field": error.field,
            "message": error.message}


def masked_tree(value: Any, mask: Mask) -> Any:
    """``value`` as plain JSON data (named tuples as objects), every string (keys too)
    masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, bytes):  # file content: text, not a Python repr
        return mask(value.decode("utf-8", "backslashreplace"))
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {mask(str(k)): masked_tree(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked_tree(v, mask) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask(str(value))


def _state(o: Outcome) -> dict[str, Any]:
    return {
        "id": o.state.id,
        "type": o.state.type,
        "phase": o.state.phase,
        "status": o.status,
        "diff": o.plan.diff or None,
        "error": o.error,
        "reason": o.reason or None,
        "changes": [c.as_dict() for c in o.plan.changes],
        "facts": dict(o.plan.facts),
    }
