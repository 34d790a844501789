"""``signal``: send a signal (``USR1``, ``HUP``...) to a process, usually on ``onchanges``.

The process is found by ``pidfile`` (under ``--root``) or by exact ``process`` name (the
kernel's ``comm``). ``missing_ok: true`` turns "no such process" into ``ok`` with a note:
at boot, the network phase runs before CoreDNS has started.

statekit runs as root, so the pidfile is not trusted blindly: it is read with
``O_NOFOLLOW`` and a size cap, must be owned by root (or the user running statekit) and
not group/world-writable, and must hold one pid above 1 (``0`` would signal the whole
process group, ``1`` is init or the container's entrypoint) and within the kernel's
``pid_max``. With ``process_name``, the process must have that ``comm`` (a stale pidfile
whose pid now belongs to another program is "no such process"). The signal goes through
a pidfd, so a pid reused between the check and the send is never signalled.
"""

from __future__ import annotations

import os

from statekit.digits import digits
from statekit.errors import ApplyError, FieldError
from statekit.host.host import Host, comm, pid_max
from statekit.resources.base import Change, Meta, Plan, Resource
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


_PIDFILE_LIMIT = 64  # "4194304\n" and some room


class SignalSpec(Record):
    present: bool
    signal: int = 0
    name: str = ""
    pidfile: str | None = None
    process: str | None = None
    missing_ok: bool = False
    process_name: str | None = None

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
        process_name = fields.get("process_name")
        if process_name is not None and process is not None:
            raise FieldError("process_name", "process already names the program; "
                             "process_name goes with pidfile")
        return SignalSpec(present=True, signal=number, name=name, pidfile=pidfile,
                          process=process, missing_ok=bool(fields.get("missing_ok")),
                          process_name=process_name or process)

    def read(self, spec: SignalSpec, host: Host) -> tuple[int, ...]:
        if not spec.present:
            return ()
        pids = self._from_pidfile(spec, host) if spec.pidfile else host.find_processes(
            str(spec.process))
        if any(pid <= 1 for pid in pids):
            raise ApplyError(f"refusing to signal pid 1, the init process ({spec.target})")
        if not pids and not spec.missing_ok:
            raise ApplyError(f"no such process ({spec.target})")
        return pids

    def _from_pidfile(self, spec: SignalSpec, host: Host) -> tuple[int, ...]:
        path = str(spec.pidfile)
        found = host.fs.read(path, _PIDFILE_LIMIT).file
        if found is None:
            return ()
        if found.uid not in (0, os.geteuid()) or found.mode & 0o022:
            raise ApplyError(f"{path}: refusing a pidfile owned by uid {found.uid} with mode "
                             f"{found.mode:04o} (it must be root's and not group/world-writable)")
        text = found.content.decode(errors="replace").strip()
        if not text:
            return ()
        if not digits(text):
            raise ApplyError(f"{path}: not a pid: {text[:20]!r}")
        pid = int(text)
        if not 1 < pid <= pid_max():
            raise ApplyError(f"{path}: refusing pid {text[:20]} (a pid is above 1, the init "
                             f"process, and at most {pid_max()})")
        if not host.process_exists(pid):
            return ()
        if spec.process_name is not None and comm(pid) != spec.process_name:
            if not spec.missing_ok:
                raise ApplyError(f"{path}: pid {pid} is {comm(pid)!r}, not "
                                 f"{spec.process_name!r} (a stale pidfile?)")
            return ()
        return (pid,)

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
                host.send_signal(int(pid), spec.signal, spec.process_name)
            except ProcessLookupError:
                if not spec.missing_ok:
                    raise ApplyError(f"pid {pid} exited before {spec.name}") from None
            except PermissionError as exc:
                raise ApplyError(f"pid {pid}: {exc.strerror}") from None
