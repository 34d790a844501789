"""``statekit status``: the lockdown's health on one screen (text) or as JSON.

- **last converge**: from ``<root>/run/statekit/last-run.json`` (:mod:`statekit.report.last_run`):
  when, which phases, the counts and exit code, each failed state and its error;
- **names**: each allowlisted name's pins (last seen at the last converge that resolved
  it), its addresses in grace and until when, and since when it fails;
- **drift**: the same read and plan as ``converge --check``, offline (no name is asked:
  each keeps its rules, and the grace is counted at the last converge's time), so only
  what changed since the last converge shows: a line per drifted state;
- **CoreDNS**: the pidfile of the reload state that signals ``coredns``, whether the
  process lives, and whether it answers on the allowlist's listen address;
- **telemetry**: on (and the endpoint's host) when an env file state writes
  ``OTEL_EXPORTER_OTLP_ENDPOINT``, else off. Never a token or a header.

Exit 0 healthy, 1 degraded (a name failing, drift, CoreDNS down, the last converge
failed or never ran), 3 bad input.
"""

from __future__ import annotations

import os
import sys
import time

from statekit import resources
from statekit.contract import EXIT_FAILED, EXIT_OK
from statekit.engine.engine import FAILED, Engine
from statekit.host.host import Host
from statekit.masking import Masker
from statekit.program import Program
from statekit.report import last_run

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def run(args: argparse.Namespace, program: Program, masker: Masker) -> int:
    from statekit.host import lock

    host = Host(root=args.root)
    last = last_run.read(host.fs)
    with lock.hold(host.fs, args.lock_file or lock.DEFAULT_LOCK, args.lock_timeout,
                   shared=True):
        drift = _drift(program, args, last)
    doc: dict[str, Any] = {
        "last_run": _last(last), "names": _names(last, program, host.now), "drift": drift,
        "coredns": _coredns(program, host), "telemetry": _telemetry(program)}
    doc["problems"] = _problems(doc)
    doc["healthy"] = not doc["problems"]
    if args.format == "json":
        import json

        from statekit.report.report import masked_tree

        sys.stdout.write(json.dumps(masked_tree(doc, masker), indent=2) + "\n")
    else:
        sys.stdout.write(masker(render(doc, host.now)))
    return EXIT_OK if doc["healthy"] else EXIT_FAILED


# --- gathering ---------------------------------------------------------------------------

def _last(last: dict[str, Any] | None) -> dict[str, Any] | None:
    if last is None:
        return None
    keys = ("time", "phases", "exit_code", "summary", "failed")
    return {k: last.get(k) for k in keys}


def _names(last: dict[str, Any] | None, program: Program, now: int) -> list[dict[str, Any]]:
    grace = {s.id: s.spec.pin_grace for s in program.states
             if s.type == "iptables_rule" and s.spec is not None}
    run_time = (last or {}).get("time")
    out = []
    for name, fact in sorted(((last or {}).get("names") or {}).items()):
        if not isinstance(fact, dict):
            continue
        seconds = int(grace.get(str(fact.get("rule")), 0))
        out.append({
            "name": name, "rule": fact.get("rule"), "pins": list(fact.get("pins") or []),
            "last_seen": fact.get("resolved") if fact.get("failing") else run_time,
            "grace": [{"address": a, "left": int(t), "until": int(t) + seconds}
                      for a, t in sorted((fact.get("grace") or {}).items())],
            "failing": fact.get("failing"), "failing_since": fact.get("failing_since")})
    return out


def _drift(program: Program, args: argparse.Namespace,
           last: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Check mode, offline, at the last converge's clock: what a converge would change."""
    when = int(last["time"]) if last and isinstance(last.get("time"), int) else None
    host = Host(root=args.root, now=when, ask_names=False)
    outcomes = Engine(program, host, check=True).converge()
    out: list[dict[str, Any]] = []
    for outcome in outcomes:
        if resources.get(outcome.state.type).is_action:
            continue
        if outcome.plan.changes:
            changes = [f"{c.action} {c.target}" + (f" ({c.reason})" if c.reason else "")
                       for c in outcome.plan.changes]
            out.append({"id": outcome.state.id, "type": outcome.state.type,
                        "changes": changes})
        elif outcome.status == FAILED and not outcome.plan.errors:
            # a fault of the state itself; a plan's errors are the names this offline
            # check never asks (each keeps its rules), which are no drift
            out.append({"id": outcome.state.id, "type": outcome.state.type,
                        "changes": [], "error": outcome.error})
    return out


def _coredns(program: Program, host: Host) -> dict[str, Any]:
    state = next((s for s in program.states if s.type == "signal" and s.spec is not None
                  and s.spec.present and s.spec.process_name == "coredns"
                  and s.spec.pidfile), None)
    listen = _listen(program)
    if state is None:
        return {"managed": False, "listen": listen}
    out: dict[str, Any] = {"managed": True, "pidfile": state.spec.pidfile, "pid": None,
                           "alive": False, "answers": None, "listen": listen}
    try:
        pids = resources.get("signal").read(state.spec._replace(missing_ok=True), host)
    except Exception as exc:
        out["error"] = str(exc)
        pids = ()
    if pids:
        out["pid"], out["alive"] = pids[0], True
    if listen:
        address, port = listen.rsplit(":", 1)
        out["answers"] = _answers(address, int(port))
    return out


def _listen(program: Program) -> str | None:
    """The first bind address and port of a present coredns_zone state."""
    for state in program.states:
        spec = state.spec
        if state.type == "coredns_zone" and spec is not None and spec.present and spec.bind:
            return f"{spec.bind[0]}:{spec.port}"
    return None


def _answers(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a DNS server on ``address:port`` answers a query (any rcode)."""
    import _socket
    import struct

    ident = struct.unpack("!H", os.urandom(2))[0]
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    query += b"\x0estatekit-probe\x07invalid\x00" + struct.pack("!HH", 1, 1)
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address.strip("[]"), port))
        sock.send(query)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = sock.recv(4096)
            if len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == ident:
                return True
    except OSError:
        return False
    finally:
        sock.close()
    return False


def _telemetry(program: Program) -> dict[str, Any]:
    for state in program.states:
        spec = state.spec
        if state.type != "env_file" or spec is None or not state.enabled or not spec.present:
            continue
        endpoint = dict(spec.entries).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint:
            host = endpoint.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
            return {"on": True, "endpoint_host": host.split(":")[0] if host.count(":") == 1
                    else host, "env_file": spec.path}
    return {"on": False}


def _problems(doc: dict[str, Any]) -> list[str]:
    out = []
    last = doc["last_run"]
    if last is None:
        out.append("no converge recorded yet")
    elif last.get("exit_code") not in (0, 2):
        out.append(f"the last converge exited {last.get('exit_code')}")
    out += [f"{n['name']} fails: {n['failing']}" for n in doc["names"] if n["failing"]]
    out += [f"drift: {d['id']}" for d in doc["drift"]]
    dns = doc["coredns"]
    if dns.get("managed") and not dns.get("alive"):
        out.append("CoreDNS is not running")
    elif dns.get("managed") and dns.get("answers") is False:
        out.append(f"CoreDNS does not answer on {dns.get('listen')}")
    return out


# --- the text view -----------------------------------------------------------------------

def render(doc: dict[str, Any], now: int) -> str:
    lines = [*_render_last(doc["last_run"], now), *_render_names(doc["names"], now),
             *_render_drift(doc["drift"]), *_render_dns(doc["coredns"]),
             "telemetry     " + (f"on: {doc['telemetry']['endpoint_host']}"
                                if doc["telemetry"]["on"] else "off")]
    health = "healthy" if doc["healthy"] else "degraded: " + "; ".join(doc["problems"])
    return "\n".join([*lines, f"health        {health}"]) + "\n"


def _render_last(last: dict[str, Any] | None, now: int) -> list[str]:
    if last is None:
        return ["last converge none recorded (run `statekit converge`)"]
    counts = " ".join(f"{k}={v}" for k, v in (last.get("summary") or {}).items())
    lines = [f"last converge {_when(last.get('time'), now)}, phases "
             f"{', '.join(last.get('phases') or [])}: exit {last.get('exit_code')} ({counts})"]
    lines += [f"              failed {f['phase']}/{f['id']}: {f['error']}"
              for f in last.get("failed") or []]
    return lines


def _render_names(names: list[dict[str, Any]], now: int) -> list[str]:
    if not names:
        return ["names         none"]
    rows = [("NAME", "PINS", "LAST SEEN", "IN GRACE (UNTIL)", "FAILING")]
    for n in names:
        rows.append((
            n["name"], ", ".join(n["pins"]) or "-",
            _when(n["last_seen"], now) if n["last_seen"] else "never resolved",
            ", ".join(f"{g['address']} ({_clock(g['until'])})" for g in n["grace"]) or "-",
            f"{n['failing']}, since {_when(n['failing_since'], now)}" if n["failing"]
            else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(row[:4])]
        head = "names         " if index == 0 else "              "
        lines.append(head + "  ".join([*cells, row[4]]))
    return lines


def _render_drift(drift: list[dict[str, Any]]) -> list[str]:
    if not drift:
        return ["drift         none: the tables and files are as the last converge left them"]
    lines = []
    for index, item in enumerate(drift):
        what = item.get("error") or "; ".join(item["changes"][:3]) + (
            f" (+{len(item['changes']) - 3} more)" if len(item["changes"]) > 3 else "")
        head = "drift         " if index == 0 else "              "
        lines.append(f"{head}{item['id']} [{item['type']}]: {what}")
    return lines


def _render_dns(dns: dict[str, Any]) -> list[str]:
    if not dns.get("managed"):
        return ["coredns       not managed by these states"]
    alive = f"pid {dns['pid']}, running" if dns.get("alive") else "not running"
    answers = {True: f"answers on {dns['listen']}", False: f"no answer on {dns['listen']}",
               None: "no listen address"}[dns.get("answers")]
    return [f"coredns       {alive} (pidfile {dns['pidfile']}); {answers}"]


def _when(stamp: Any, now: int) -> str:
    if not isinstance(stamp, int):
        return "never"
    ago = max(0, now - stamp)
    span = f"{ago} s" if ago < 120 else f"{ago // 60} min" if ago < 7200 else f"{ago // 3600} h"
    return f"{_clock(stamp)} ({span} ago)"


def _clock(stamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stamp))
