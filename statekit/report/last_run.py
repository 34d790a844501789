"""The last converge, kept for ``statekit status`` and ``statekit drops``.

After every converge (not a dry run), ``<root>/run/statekit/last-run.json`` (root's, 0600,
in a 0700 directory, written whole by rename) says which phases ran, the exit code and
counts, each failed state with its (masked) error, and each allowlisted name: its pins,
its addresses in grace (with the time each left the answers), why it fails and since
when. Its modification time says when the run was: a run whose record would not change
(a no-op refresh) only sets that time. ``history`` keeps, for a week and at most
:data:`HISTORY` entries, the addresses that left a name, so that ``drops`` can still say
which name a dropped address once belonged to. No secret is ever in it: errors go through
the masker, and names and addresses are not secret.

It is written with :mod:`statekit.jsonlite` (no ``json``: this runs on every refresh),
and a file that cannot be read back (missing, damaged, not ours) counts as no history.
"""

from __future__ import annotations

import os

from statekit import jsonlite
from statekit.engine.engine import FAILED, Outcome
from statekit.host.files import FileSystem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PATH = "/run/statekit/last-run.json"
FORMAT_VERSION = 1
HISTORY = 1000
HISTORY_SECONDS = 7 * 24 * 3600
LIMIT = 4 << 20


def read(fs: FileSystem) -> dict[str, Any] | None:
    """The last run's record, or None (never run, unreadable, or not a record). Its
    ``time`` is the file's modification time: a run like the one before only touches it."""
    try:
        found = fs.read(PATH, LIMIT).file
        if found is None:
            return None
        doc = jsonlite.loads(found.content.decode("utf-8"))
    except Exception:  # damaged or foreign: no history, never a failed converge
        return None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        return None
    doc["time"] = found.mtime_ns // 1_000_000_000
    return doc


def record(fs: FileSystem, outcomes: list[Outcome], *, now: int, phases: list[str],
           exit_code: int, mask: Callable[[str], str]) -> dict[str, Any]:
    """Write the record of this run (merged with the previous one's name history)."""
    previous = read(fs) or {}
    when = previous.get("time")
    names = _names(outcomes, previous.get("names") or {}, now,
                   when if isinstance(when, int) else None)
    doc = {
        "format_version": FORMAT_VERSION,
        "phases": list(phases),
        "exit_code": exit_code,
        "summary": _summary(outcomes),
        "failed": [{"id": o.state.id, "type": o.state.type, "phase": o.state.phase,
                    "error": mask(o.error or "")} for o in outcomes if o.status == FAILED],
        "names": names,
        "history": _history(previous, names, now),
    }
    if {**previous, "time": None} != {**doc, "time": None}:
        fs.write(PATH, (jsonlite.dumps(doc) + "\n").encode(), mode=0o600, uid=os.getuid(),
                 gid=os.getgid(), dir_mode=0o700)
    # the file's modification time is the run's time; when the outcome is as before (a
    # no-op refresh), setting it is the only write
    fs.touch(PATH, now)
    return {**doc, "time": now}


def _summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts


def _last_resolved(old: dict[str, Any], previous_time: int | None) -> int | None:
    """When a name that fails now last resolved: kept while it fails, else the time of
    the previous run (it resolved then)."""
    if old.get("failing"):
        found = old.get("resolved")
        return found if isinstance(found, int) else None
    return previous_time if old else None


def _names(outcomes: list[Outcome], before: dict[str, Any], now: int,
           previous_time: int | None = None) -> dict[str, Any]:
    """Each name of each iptables_rule state that has names (its plan's facts)."""
    out: dict[str, Any] = {}
    for outcome in outcomes:
        facts = outcome.plan.facts.get("names")
        if not isinstance(facts, dict):
            continue
        for name, fact in facts.items():
            found = before.get(name)
            old: dict[str, Any] = found if isinstance(found, dict) else {}
            failing = fact.get("failed")
            since = (old.get("failing_since") or now) if failing else None
            out[name] = {"rule": outcome.state.id, "pins": list(fact.get("pins", ())),
                         "grace": dict(fact.get("grace", {})), "failing": failing,
                         "failing_since": since,
                         # a failing name: when it last resolved (null: never);
                         # otherwise it resolved at this run (the file's time)
                         "resolved": _last_resolved(old, previous_time) if failing
                         else None}
    return out


def _history(previous: dict[str, Any], names: dict[str, Any],
             now: int) -> dict[str, Any]:
    """Addresses that left a name: the previous history, plus every address the previous
    run had for a name (pin or grace) that this run has in neither, minus the expired."""
    history = {a: e for a, e in (previous.get("history") or {}).items()
               if isinstance(e, dict) and now - int(e.get("left", 0)) < HISTORY_SECONDS}
    for name, old in (previous.get("names") or {}).items():
        if not isinstance(old, dict) or name not in names:
            continue
        kept = {*names[name]["pins"], *names[name]["grace"]}
        for addr in [*old.get("pins", ()), *old.get("grace", {})]:
            if addr not in kept:
                history[addr] = {"name": name, "left": now}
    for new in names.values():
        for addr in [*new["pins"], *new["grace"]]:
            history.pop(addr, None)
    newest = sorted(history.items(), key=lambda item: -int(item[1].get("left", 0)))
    return dict(newest[:HISTORY])
