"""The one place that runs processes: argv lists, never a shell string.

A :class:`Runner` runs a command and returns a :class:`Result`; a non-zero exit raises
:class:`~statekit.errors.ApplyError` carrying argv, exit code and stderr (``check=False``
returns the result instead). ``run`` is ``start`` (spawn, return at once) then ``finish``
(await, read): the host starts the reads a phase will need together (``Host.start``).
``Runner.calls`` counts processes for the benchmark. A test hook (``STATEKIT_TEST_HOOK``)
can stop the process before each command.

Why not :mod:`subprocess`: statekit runs on a container's boot path and every five
minutes, and a no-op converge is dominated by interpreter start-up and imports. Measured
with ``valgrind --tool=callgrind``, ``python -c pass`` costs 38 M instructions and
``import subprocess`` adds ~49 M more (signal and enum, threading, selectors, locale and
re, contextlib, collections, functools). So this module imports only builtins and the
small ``select`` extension (no ``typing`` either: annotations stay unevaluated).

How it works:

- The program is never looked up in the inherited ``PATH`` (statekit runs as root and
  ``PATH`` is the caller's): a bare name is resolved once per process in the trusted
  system directories :data:`TRUSTED_DIRS` (``/usr/sbin``, ``/usr/bin``, ``/sbin``,
  ``/bin``), after the absolute directories listed in ``STATEKIT_TOOL_DIRS`` (colon
  separated; a relative or empty entry is ignored, never searched). The program found,
  every symlink on its way, its directory and their ancestors must be owned by root (or
  by the user running statekit) and not group/world-writable (an ancestor may be a
  sticky directory such as ``/tmp``); otherwise the run is refused (exit 126). An
  absolute program path is checked the same way; a relative one is refused. The child
  gets ``PATH`` set to the same directories.
- ``os.posix_spawn`` starts the command (a vfork-style spawn; glibc reports a failed
  exec synchronously, so "not found" and "not executable" are exceptions here).
- stdout and stderr go to ``memfd_create`` files, not pipes, and the input (if any) is
  written to a memfd that becomes stdin; with no input, stdin is inherited, as before.
  Files cannot fill up, so big input or output never deadlocks and no reader thread or
  event loop is needed; and a child that leaves a background process holding its stdout
  does not hang the run: only the child's exit is awaited, then the files are read.
- SIGPIPE and SIGXFSZ, which Python ignores, are reset to default in the child (what
  subprocess's ``restore_signals`` does); the numbers come from the builtin ``_signal``.
- The exit is awaited by polling a pidfd (``os.pidfd_open``) for at most ``timeout``
  seconds; on timeout the child is killed (SIGKILL) and reaped. The child is reaped on
  every path, an exception (e.g. KeyboardInterrupt) during the wait included.
- Output is decoded as UTF-8 with ``errors="replace"``, with universal newlines (as
  ``text=True`` did).
"""

from __future__ import annotations

import os
import select
import time

from statekit import testhook
from statekit.errors import ApplyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # typeshed has no stub for the builtin _signal
    from collections.abc import Sequence
else:
    import _signal  # builtin, unlike the signal module (which imports enum)

# Signals Python ignores at start-up and a child must get back at their default.
_RESET_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ)
_READ_CHUNK = 1 << 20
#: Where programs are looked up, after ``STATEKIT_TOOL_DIRS``; never the inherited PATH.
TRUSTED_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
TOOL_DIRS_VAR = "STATEKIT_TOOL_DIRS"
_S_ISVTX, _S_IFMT, _S_IFREG, _S_IFLNK = 0o1000, 0o170000, 0o100000, 0o120000
_resolved: dict[str, str] = {}


class Result:
    """What came back from one command."""

    __slots__ = ("argv", "returncode", "stderr", "stdout")

    def __init__(self, argv: tuple[str, ...], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def _fields(self) -> tuple[tuple[str, ...], int, str, str]:
        return (self.argv, self.returncode, self.stdout, self.stderr)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Result(argv={self.argv!r}, returncode={self.returncode!r}, "
                f"stdout={self.stdout!r}, stderr={self.stderr!r})")


class Runner:
    """Runs argv lists on this machine (a network namespace is the caller's business)."""

    def __init__(self) -> None:
        self.calls = 0

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
        check: bool = True,
    ) -> Result:
        return self.finish(self.start(argv, input=input), timeout=timeout, check=check)

    def start(self, argv: Sequence[str], *, input: str | None = None) -> Started:
        """Spawn ``argv`` and return at once; :meth:`finish` awaits it. (A runner that
        overrides :meth:`run`, such as a fake, overrides these two as well.)"""
        testhook.point("run", argv[0])
        self.calls += 1
        args = list(argv)
        stdin = out = err = -1
        try:
            out = _memfd("statekit-stdout")
            err = _memfd("statekit-stderr")
            actions: list[tuple[int, ...]] = [
                (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
            if input is not None:
                stdin = _memfd("statekit-stdin")
                _write_all(stdin, input.encode("utf-8"))
                os.lseek(stdin, 0, os.SEEK_SET)
                actions.insert(0, (os.POSIX_SPAWN_DUP2, stdin, 0))
            actions += _close_inherited()
            program = resolve(args[0], argv)
            env = dict(os.environ)
            env["PATH"] = ":".join(tool_dirs())
            try:
                pid = os.posix_spawn(program, args, env, file_actions=actions,
                                     setsigdef=_RESET_SIGNALS)
            except FileNotFoundError as exc:
                raise ApplyError(f"{args[0]}: command not found", argv=argv,
                                 returncode=127) from exc
            except OSError as exc:  # EACCES (not executable), ENOEXEC, ...
                raise ApplyError(f"{args[0]}: cannot execute: {exc.strerror}", argv=argv,
                                 returncode=126) from exc
        except BaseException:
            for fd in (out, err):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            if stdin >= 0:  # the child has its copy
                os.close(stdin)
        return Started(tuple(args), pid, out, err)

    def finish(self, started: Started, *, timeout: float = 60.0,
               check: bool = True) -> Result:
        """Await a command :meth:`start` spawned (at most ``timeout`` seconds from now),
        read its output; raise ApplyError when it fails and ``check``."""
        argv = started.argv
        try:
            returncode = _wait(started.pid, timeout)
            stdout = _decode(_read_all(started.out))
            stderr = _decode(_read_all(started.err))
            if returncode is None:  # killed: what it printed until then is kept
                raise ApplyError(f"timed out after {timeout:g} s", argv=argv,
                                 returncode=-1, stderr=stderr, stdout=stdout)
        finally:
            os.close(started.out)
            os.close(started.err)
        result = Result(argv, returncode, stdout, stderr)
        if check and not result.ok:
            raise ApplyError("command failed", argv=argv, returncode=returncode, stderr=stderr)
        return result


    def cancel(self, started: Started) -> None:
        """Stop a command :meth:`start` spawned whose output is not wanted: killed (if it
        still runs) and reaped."""
        try:
            _wait(started.pid, 0.0)
        finally:
            os.close(started.out)
            os.close(started.err)


class Started:
    """A command :meth:`Runner.start` spawned and :meth:`Runner.finish` has not awaited:
    its pid (``-1`` for a fake's) and the memfds its output goes to."""

    __slots__ = ("argv", "err", "out", "pid")

    def __init__(self, argv: tuple[str, ...], pid: int = -1, out: int = -1,
                 err: int = -1) -> None:
        self.argv, self.pid, self.out, self.err = argv, pid, out, err


def tool_dirs() -> tuple[str, ...]:
    """The directories programs are looked up in: ``STATEKIT_TOOL_DIRS`` (absolute
    entries only), then :data:`TRUSTED_DIRS`."""
    extra = os.environ.get(TOOL_DIRS_VAR, "").split(":")
    return (*[d for d in extra if d.startswith("/")], *TRUSTED_DIRS)


def resolve(name: str, argv: Sequence[str] | None = None) -> str:
    """The absolute, trusted path of program ``name`` (resolved once per process).

    Raises :class:`ApplyError`: 127 when not found, 126 when found but untrusted.
    """
    found = _resolved.get(name)
    if found is not None:
        return found
    if "/" in name:
        if not name.startswith("/"):
            raise ApplyError(f"{name}: refusing a relative program path (give an absolute "
                             "path or a bare name)", argv=argv or [name], returncode=126)
        candidates: tuple[str, ...] = (name,)
    else:
        candidates = tuple(f"{d.rstrip('/')}/{name}" for d in tool_dirs())
    for path in candidates:
        if candidates[0] != name and not _is_program(path):
            continue
        problem = _untrusted(path)
        if problem == "missing":
            break
        if problem:
            raise ApplyError(f"{name}: refusing {path}: {problem}", argv=[name],
                             returncode=126)
        _resolved[name] = path
        return path
    where = "" if "/" in name else f" (looked in {':'.join(tool_dirs())})"
    raise ApplyError(f"{name}: command not found{where}", argv=argv or [name], returncode=127)


def _is_program(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_mode & _S_IFMT == _S_IFREG and os.access(path, os.X_OK)


def _untrusted(path: str) -> str:
    """Why ``path`` (a program) is not to be trusted, ``"missing"``, or ``""``: each
    symlink on its way, the program, its directory and every ancestor directory must be
    owned by root (or us) and not group/world-writable (an ancestor may be sticky)."""
    seen: list[tuple[str, bool]] = []  # (path, is the program or its own directory)
    current = path
    for _ in range(40):
        try:
            st = os.lstat(current)
        except OSError:
            return "missing"
        seen.append((current, True))
        parent = current.rsplit("/", 1)[0] or "/"
        seen.append((parent, True))
        while parent != "/":
            parent = parent.rsplit("/", 1)[0] or "/"
            seen.append((parent, False))
        if st.st_mode & _S_IFMT != _S_IFLNK:
            break
        target = os.readlink(current)
        current = target if target.startswith("/") else f"{current.rsplit('/', 1)[0]}/{target}"
    else:
        return "too many symlinks"
    owners = (0, os.geteuid())
    for item, strict in seen:
        try:
            st = os.stat(item)
        except OSError:
            return "missing"
        if st.st_uid not in owners:
            return f"{item} is owned by uid {st.st_uid}, not root"
        if st.st_mode & 0o022 and (strict or not st.st_mode & _S_ISVTX):
            return f"{item} is group- or world-writable (mode {st.st_mode & 0o7777:04o})"
    return ""


def _memfd(name: str) -> int:
    """An anonymous close-on-exec file numbered 3 or above (never one of 0, 1, 2, which
    the spawn's dup2 actions would clobber, or leave close-on-exec, if they were free)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if fd > 2:
        return fd
    import fcntl  # only when this process has a standard descriptor closed

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _close_inherited() -> list[tuple[int, ...]]:
    """Spawn actions closing, in the child, every descriptor above 2 that is not
    close-on-exec: ones this process inherited from its own parent (a lock, a pipe its
    caller waits on) must not leak into commands or daemons they start
    (subprocess's ``close_fds=True``)."""
    closefrom = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)  # Python 3.13, glibc 2.34
    if closefrom is not None:
        return [(closefrom, 3)]
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: nothing to enumerate
        return []
    actions: list[tuple[int, ...]] = []
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return actions


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    """The whole file from offset 0 (``pread``: the offset is shared with anything the
    child left running, which may still be writing)."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, _READ_CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _decode(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit code (``-N`` if killed by signal N), or None if it ran longer
    than ``timeout`` seconds and was killed. The child is reaped on every path."""
    reaped = False
    try:
        exited = _wait_exit(pid, timeout)
        if not exited:
            os.kill(pid, _signal.SIGKILL)
        code = _reap(pid)
        reaped = True
        return code if exited else None
    finally:
        if not reaped:  # an exception (KeyboardInterrupt, ...) while waiting
            try:
                os.kill(pid, _signal.SIGKILL)
            finally:
                _reap(pid)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Whether the child exited within ``timeout`` seconds (it is not reaped)."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # kernel before 5.3, or a seccomp filter: poll waitpid instead
        return _wait_exit_polling(pid, deadline)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            # poll() retries EINTR itself (PEP 475); the loop also covers early wake-ups
            # and waits longer than one poll can (a day at a time: timeout may be inf).
            if poller.poll(max(0, int(min(remaining, 86400.0) * 1000) + 1)):
                return True
            if remaining <= 0:
                return False
    finally:
        os.close(pidfd)


def _wait_exit_polling(pid: int, deadline: float) -> bool:
    delay = 0.001
    while True:
        if _exited(pid):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _exited(pid: int) -> bool:
    """Whether the (unreaped) child is a zombie, i.e. has exited."""
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped behind our back (SIGCHLD ignored)
    return result is not None


def _reap(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # SIGCHLD is ignored, or someone else reaped it: the status is lost; subprocess
        # reports 0 in this case too.
        return 0
    return os.waitstatus_to_exitcode(status)
