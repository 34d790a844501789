"""The machine a converge works on: processes, files under the root, per-phase caches.

Resources reach the machine only through a :class:`Host`: ``run`` (processes; ``start``
begins a phase's read-only commands ahead, together),
``fs`` (files under ``--root``), ``cache`` (facts read once and shared between states of
a phase, dropped between phases) and ``transaction`` (batches committed by the engine,
each a :class:`Transaction`).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod

from statekit import testhook
from statekit.errors import ApplyError
from statekit.host.files import FileSystem
from statekit.host.runner import Result, Runner, Started

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # typeshed has no stub for the builtin _signal
    from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
    from typing import Any
else:
    import _signal  # builtin, unlike the signal module (which imports enum)


#: where :meth:`Host.learn`'s memos are kept (under ``--root``), how many keys each keeps,
#: and the most read of one
MEMO_DIR = "/run/statekit/memo"
MEMO_KEYS = 64
MEMO_LIMIT = 8192


class Transaction(ABC):
    """A batch of changes committed at once (``host.commit()`` calls ``commit``)."""

    @abstractmethod
    def commit(self, host: Host) -> None:
        """Carry out every staged change, all or nothing; raise ApplyError."""

    @abstractmethod
    def discard(self, host: Host) -> None:
        """Forget staged changes (check mode, or after a failure); drop cached models."""


class Host:
    """The one way a resource reaches the machine (see the module docstring).

    ``root``: where files are read and written (``--root``); ``runner``: what spawns the
    processes (a fake in the engine's tests); ``now``: the converge's clock; ``ask_names``
    False keeps names unresolved (``statekit status``). A host lives for one converge.
    """

    def __init__(
        self, *, root: str = "/", runner: Runner | None = None,
        env: Mapping[str, str] | None = None, now: int | None = None,
        ask_names: bool = True,
    ) -> None:
        #: the converge's clock, read once (Unix seconds): every state of the run plans
        #: and verifies against the same instant (the pins' grace)
        self.now = int(time.time()) if now is None else now
        #: False: names are not resolved, each keeps its rules (`statekit status`'s drift
        #: check compares the tables with the last converge's answers, offline and fast)
        self.ask_names = ask_names
        self.fs = FileSystem(root)
        self.runner = runner or Runner()
        self.env: Mapping[str, str] = env or {}
        self.cache: dict[Hashable, Any] = {}
        self.transactions: dict[Hashable, Transaction] = {}
        #: read-only commands started ahead (``start``), by argv, not yet collected
        self.started: dict[tuple[str, ...], Started] = {}
        #: what the program run is (``cache.key``: the code, the state files, the vars);
        #: empty: nothing is recalled or learnt (``recall``)
        self.memo_key = ""
        self._recalled: dict[str, frozenset[str]] = {}
        self._learnt: dict[str, set[str]] = {}

    @property
    def root(self) -> str:
        return self.fs.root

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
        check: bool = True,
    ) -> Result:
        """Run ``argv``, or collect it if :meth:`start` started it and nothing else has
        run since. Any other command first drops what was started ahead: it may change
        what they read."""
        started = self.started.pop(tuple(argv), None) if input is None else None
        if started is not None:
            return self.runner.finish(started, timeout=timeout, check=check)
        self.drop_started()
        return self.runner.run(argv, input=input, timeout=timeout, check=check)

    def start(self, reads: Iterable[Sequence[str]]) -> None:
        """Start these read-only commands now, each once, for a later :meth:`run` of the
        same argv to collect: a phase's reads (the table saves) wait for the machine
        together, and meanwhile the states before them plan. Best effort: a command that
        cannot be started here is simply run when it is needed, as if never started."""
        for argv in reads:
            key = tuple(argv)
            if key in self.started:
                continue
            try:
                self.started[key] = self.runner.start(key)
            except Exception:  # noqa: S112 -- run (and reported) when needed instead
                continue

    def drop_started(self) -> None:
        """Stop and forget every command started ahead and not collected."""
        pending, self.started = self.started, {}
        for started in pending.values():
            try:
                self.runner.cancel(started)
            except Exception:  # noqa: S112 -- its output was not going to be used
                continue

    def recall(self, memo: str) -> frozenset[str]:
        """What earlier converges of the same program learnt (:meth:`learn`) under
        ``memo``: keys of facts that cost much to prove and never change once proved (a
        Corefile that is already as a state wants it, say: the hash of its bytes and the
        state's inputs). Empty when there is no such file, or it is not this program's, or
        not ours alone (root-owned, mode 0600: read like the program cache)."""
        if memo not in self._recalled:
            self._recalled[memo] = self._read_memo(memo)
        return self._recalled[memo]

    def learn(self, memo: str, key: str) -> None:
        """Remember ``key`` under ``memo`` (written by :meth:`keep_learnt`)."""
        if self.memo_key and key not in self.recall(memo):
            self._learnt.setdefault(memo, set()).add(key)

    def keep_learnt(self) -> None:
        """Write what this converge learnt (never in check mode: the caller's rule), the
        newest :data:`MEMO_KEYS` keys of each memo; a memo that cannot be written is
        simply not kept."""
        learnt, self._learnt = self._learnt, {}
        for memo, keys in learnt.items():
            kept = [*sorted(keys), *sorted(self.recall(memo) - keys)][:MEMO_KEYS]
            data = "\n".join([self.memo_key, *kept, ""]).encode()
            try:
                self.fs.write(f"{MEMO_DIR}/{memo}", data, mode=0o600, uid=os.geteuid(),
                              gid=os.getegid(), dir_mode=0o700)
            except Exception:  # noqa: S112 -- proved again by the next converge instead
                continue

    def _read_memo(self, memo: str) -> frozenset[str]:
        if not self.memo_key:
            return frozenset()
        try:
            found = self.fs.read(f"{MEMO_DIR}/{memo}", MEMO_LIMIT).file
        except Exception:  # a symlink, too large, unreadable: nothing recalled
            return frozenset()
        if found is None or found.uid != os.geteuid() or found.mode & 0o077:
            return frozenset()
        head, _, keys = found.content.decode("ascii", "replace").partition("\n")
        return frozenset(keys.split()) if head == self.memo_key else frozenset()

    def find_processes(self, name: str) -> tuple[int, ...]:
        """Pids whose kernel ``comm`` is exactly ``name``."""
        return tuple(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()
                            and _comm(p) == name))

    def process_exists(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, and is not ours to signal
        return True

    def send_signal(self, pid: int, signal: int, process_name: str | None = None) -> None:
        """Send ``signal`` to ``pid`` through a pidfd: if the process exits and its pid
        is reused meanwhile, nothing is sent (ProcessLookupError). With
        ``process_name``, the process (as held by the pidfd) must have that ``comm``."""
        testhook.point("signal", str(pid))
        pidfd = os.pidfd_open(pid)
        try:
            name = _comm(str(pid))
            if process_name is not None and name != process_name:
                raise ApplyError(f"pid {pid} is {name!r}, not {process_name!r}: not signalled")
            _signal.pidfd_send_signal(pidfd, signal)
        finally:
            os.close(pidfd)

    def transaction(self, key: Hashable, factory: Callable[[], Transaction]) -> Transaction:
        """The open transaction for ``key``, created by ``factory`` if there is none."""
        if key not in self.transactions:
            self.transactions[key] = factory()
        return self.transactions[key]

    def commit(self) -> dict[Hashable, str]:
        """Commit every open transaction; the failures, by key (a failed one is discarded,
        all or nothing, and the others are still committed)."""
        pending, self.transactions = self.transactions, {}
        failures: dict[Hashable, str] = {}
        for key, txn in pending.items():
            try:
                txn.commit(self)
            except ApplyError as exc:
                failures[key] = str(exc)
                txn.discard(self)
            except Exception as exc:  # the others are still committed
                failures[key] = f"{type(exc).__name__}: {exc}"
                txn.discard(self)
        return failures

    def discard(self) -> None:
        pending, self.transactions = self.transactions, {}
        for txn in pending.values():
            txn.discard(self)

    def new_phase(self) -> None:
        """Facts are read afresh in each phase: never stale across a phase boundary."""
        self.discard()
        self.drop_started()
        self.cache.clear()


def comm(pid: int) -> str:
    """The process's kernel name (``/proc/PID/comm``); ``""`` once it has gone."""
    return _comm(str(pid))


def pid_max() -> int:
    """The largest pid the kernel hands out (``/proc/sys/kernel/pid_max``)."""
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            return int(f.read(32))
    except (OSError, ValueError):
        return 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit


def _comm(pid: str) -> str:
    """The process's kernel name (``/proc/PID/comm``); ``""`` once it has gone."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read(64).rstrip("\n")
    except OSError:
        return ""
