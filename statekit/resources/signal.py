"""``signal``: send a signal (``USR1``, ``HUP``...) to a process, usually on ``onchanges``.

The process is found by ``pidfile`` (under ``--root``) or by exact ``process`` name (the
kernel's ``comm``). ``missing_ok: true`` turns "no such process" into ``ok`` with a note:
at boot, the network phase runs before CoreDNS has started.
"""

from __future__ import annotations

from statekit.digits import digits
from statekit.errors import ApplyError, FieldError
from statekit.resources.base import Change, Meta, Plan, Resource
from statekit.run.host import Host
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


class SignalSpec(Record):
    present: bool
    signal: int = 0
    name: str = ""
    pidfile: str | None = None
    process: str | None = None
    missing_ok: bool = False

    @property
    def target(self) -> str:
        return f"pidfile {self.pidfile}" if self.pidfile else f"process {self.process!r}"


def parse_signal(value: Any) -> tuple[int, str]:
    import signal as signals  # at load only: it imports enum

    text = str(value).upper()
    name = text if text.startswith("SIG") or digits(text) else f"SIG{text}"
    try:
        number = signals.Signals(int(name)) if digits(name) else signals.Signals[name]
    except (KeyError, ValueError):
        raise FieldError("signal", f"{value!r} is not a signal name (USR1, HUP, TERM...)") from None
    return int(number), number.name


class Signal(Resource[SignalSpec, tuple[int, ...]]):
    type_name = "signal"
    is_action = True

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> SignalSpec:
        if not meta.present:
            return SignalSpec(present=False)
        number, name = parse_signal(fields["signal"])
        pidfile, process = fields.get("pidfile"), fields.get("process")
        if (pidfile is None) == (process is None):
            raise FieldError("pidfile", "give exactly one of pidfile and process")
        return SignalSpec(True, number, name, pidfile, process, bool(fields.get("missing_ok")))

    def read(self, spec: SignalSpec, host: Host) -> tuple[int, ...]:
        if not spec.present:
            return ()
        pids = self._from_pidfile(spec, host) if spec.pidfile else host.find_processes(
            str(spec.process))
        if not pids and not spec.missing_ok:
            raise ApplyError(f"no such process ({spec.target})")
        return pids

    def _from_pidfile(self, spec: SignalSpec, host: Host) -> tuple[int, ...]:
        found = host.fs.read(str(spec.pidfile)).file
        text = found.content.decode(errors="replace").strip() if found else ""
        if not text:
            return ()
        if not digits(text):
            raise ApplyError(f"{spec.pidfile}: not a pid: {text[:20]!r}")
        pid = int(text)
        return (pid,) if host.process_exists(pid) else ()

    def plan(self, spec: SignalSpec, current: tuple[int, ...]) -> Plan:
        if not spec.present:
            return Plan(notes=("ensure: absent, nothing to send",))
        if not current:
            return Plan(notes=(f"no such process ({spec.target}), fine: missing_ok",))
        pids = ", ".join(map(str, current))
        return Plan((Change("signal", f"pid {pids}", f"send {spec.name} ({spec.target})"),),
                    diff=f"send {spec.name} to pid {pids} ({spec.target})",
                    facts={"pids": list(current), "signal": spec.name})

    def apply(self, spec: SignalSpec, plan: Plan, host: Host) -> None:
        for pid in plan.facts.get("pids", []):
            try:
                host.send_signal(int(pid), spec.signal)
            except ProcessLookupError:
                if not spec.missing_ok:
                    raise ApplyError(f"pid {pid} exited before {spec.name}") from None
            except PermissionError as exc:
                raise ApplyError(f"pid {pid}: {exc.strerror}") from None
