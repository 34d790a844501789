"""The converge lock: one converge at a time per root (boot and refresh loop).

``flock`` on a lock file (default ``/run/statekit/lock`` under ``--root``, in a directory
created root-only, 0700), polled until the (finite) timeout. Check mode takes a shared
lock and creates nothing: it may run beside another check, never beside a converge.

The lock file is opened like every file under the root: never through a symlink (at the
file or at its directory), never outside it, with ``O_NOFOLLOW|O_NONBLOCK``. A lock file
owned by another user (pre-created in /tmp to make every converge wait) or that is not a
regular file (a FIFO) is refused; so is a default directory owned by another user,
which is moved aside and made afresh like any directory statekit writes into.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from statekit.errors import ApplyError, LockTimeout
from statekit.host.files import FileSystem

DEFAULT_LOCK = "/run/statekit/lock"


class hold:
    """Hold the lock for the ``with`` block (a class, not ``contextlib.contextmanager``:
    contextlib is not imported on the no-op path)."""

    __slots__ = ("fd", "fs", "path", "shared", "timeout")

    def __init__(self, fs: FileSystem, path: str, timeout: float, *,
                 shared: bool = False) -> None:
        self.fs, self.path, self.timeout, self.shared = fs, path, timeout, shared
        self.fd: int | None = None

    def __enter__(self) -> None:
        fd = _open(self.fs, self.path, create=not self.shared)
        if fd is None:  # check mode and no lock file: nobody has converged yet
            return
        try:
            _acquire(fd, self.timeout, self.path,
                     fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open(fs: FileSystem, path: str, *, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = fs.open(path, flags, 0o600, dir_mode=0o700 if create else None,
                     owners=(0, os.geteuid()))
    except FileNotFoundError:
        if create:
            raise ApplyError(f"{path}: cannot open the lock file: its directory "
                             "vanished") from None
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ApplyError(f"{path}: refusing a symlink at the lock file") from exc
        raise ApplyError(f"{path}: cannot open the lock file: {exc.strerror}") from exc
    if fd is None:
        return None
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "" if stat.S_ISREG(st.st_mode) else "not a regular file, "
        raise ApplyError(f"{path}: refusing a lock file ({kind}owned by uid {st.st_uid}) that "
                         "another user could hold forever; remove it or use --lock-file")
    return fd


def _acquire(fd: int, timeout: float, path: str, mode: int) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"another converge holds {path}; gave up after "
                                  f"{timeout:g} s (--lock-timeout)") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
