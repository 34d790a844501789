"""Files under ``--root``: safe reads and atomic, symlink-proof writes.

Every path in a state is absolute and taken under the root. ``..`` is refused, and no
symlink is ever followed, at any component: the path is walked one name at a time from
the root's directory fd, each directory opened with ``openat(parent_fd, name,
O_DIRECTORY|O_NOFOLLOW)`` and each missing one made with ``mkdirat(parent_fd, name)``.
A name holds no ``/`` and is never ``..``, so each call resolves exactly one name in a
directory already held open: what ``openat2`` with ``RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH``
gives, with no ctypes, on every kernel. A symlink at a component fails the state,
naming it (in a shared directory like /tmp, a symlink at the file's own directory owned
by another user is moved aside like a foreign directory). A directory swapped for a
symlink between two steps makes the next ``openat`` fail, never follow it.

A write is a temporary file created in the target's directory with
``O_CREAT|O_EXCL|O_NOFOLLOW`` and the final mode from the first instant, written,
fsynced, renamed over the target; then the directory is fsynced. Leftover temporaries of
an interrupted write are reported by :meth:`FileSystem.read` and removed by the next write.

Every read is bounded (whatever is on disk, even a sparse file of gigabytes): the caller
gives a size cap (:data:`MAX_READ` by default). A bigger file is never read: it is an
error (:class:`TooLarge`, an ApplyError naming the path), or, when the caller can
replace the whole file (``oversize_ok``), a :class:`FileState` with empty ``content``
and ``oversize`` set to its size, which plans as drift.
"""

from __future__ import annotations

import errno
import os
import stat

from statekit import testhook
from statekit.errors import ApplyError
from statekit.typeshim import Record

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TEMP_MARK = ".statekit-tmp-"
_ADOPT_TRIES = 20
#: The default cap on one file read (a managed file, an input, a pidfile).
MAX_READ = 1 << 20
#: The cap on one state file (thousands of rules fit many times over).
STATE_FILE_LIMIT = 16 << 20


class TooLarge(ApplyError):
    """A file bigger than the cap its reader set: it was not read."""


def read_capped(fd: int, limit: int, path: str) -> bytes:
    """At most ``limit`` bytes from ``fd`` (a regular file), or :class:`TooLarge`: the
    size is checked first, and the read stops one byte past the cap (the file may grow)."""
    size = os.fstat(fd).st_size
    if size > limit:
        raise TooLarge(f"{path}: {size} bytes, over the {limit}-byte limit for this file; "
                       "not read")
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise TooLarge(f"{path}: grew past the {limit}-byte limit for this file while "
                       "being read; not read")
    return b"".join(chunks)


def _shared(fd: int) -> bool:
    """Whether the directory ``fd`` is sticky and world-writable (like /tmp)."""
    mode = os.fstat(fd).st_mode
    return bool(mode & stat.S_ISVTX and mode & stat.S_IWOTH)


def _target(fd: int, name: str) -> str:
    """`` (-> TARGET)`` for the symlink ``name`` in ``fd``, for a message (printable, at
    most 200 characters), or nothing if it cannot be read."""
    try:
        target = os.readlink(name, dir_fd=fd)
    except OSError:
        return ""
    shown = target if target.isprintable() else ascii(target)
    return f" (-> {shown[:200]})"


def os_error(path: str, operation: str, exc: OSError) -> ApplyError:
    """A failed system call as a one-line error: the state's path, the operation, why,
    and the name the call was given (relative to the path's directory)."""
    on = f" ({exc.filename})" if exc.filename else ""
    return ApplyError(f"{path}: cannot {operation}: {exc.strerror or exc}{on}")


def read_path(path: str, limit: int) -> bytes:
    """The whole regular file at ``path`` (an input: a state file), bounded by ``limit``;
    OSError or :class:`TooLarge`. A FIFO or device is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TooLarge(f"{path}: not a regular file")
        return read_capped(fd, limit, path)
    finally:
        os.close(fd)


class FileState(Record):
    """A regular file as read: content, mode bits, owner, and its directory's."""

    content: bytes
    mode: int
    uid: int
    gid: int
    inode: int
    mtime_ns: int
    oversize: int = 0  # the size on disk when over the reader's cap (content is empty)


class DirState(Record):
    mode: int
    uid: int
    gid: int
    symlink: bool = False  # another user's symlink in its place, to be moved aside


class _ForeignLink(ApplyError):
    """A read met another user's symlink at the file's directory, in a shared directory
    (like /tmp): the read reports it (:attr:`state`) and a write moves it aside."""

    def __init__(self, message: str, state: DirState) -> None:
        super().__init__(message)
        self.state = state


class _OpenDir:
    """A directory fd (``-1``: none) that ``with`` gives as an int or None, then closes.
    A class, not ``contextlib.contextmanager``: contextlib is not imported on the no-op
    path."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int | None:
        return self.fd if self.fd >= 0 else None

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ReadResult(Record):
    """The file (None if missing), its directory (None if missing), stale temporaries."""

    file: FileState | None
    parent: DirState | None
    stale: tuple[str, ...] = ()


def temp_prefix(name: str) -> str:
    return f".{name}{TEMP_MARK}"


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file under the root, or None (the loader checks every
    path field with this, so ``validate`` refuses what a converge would)."""
    if not path.startswith("/"):
        return "not an absolute path"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "'..' would leave the root"
    if "\0" in path:
        return "a path may not contain a NUL byte"
    return None if parts else "not a file path"


class FileSystem:
    """File access under ``root`` (``/`` by default)."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.realpath(root)

    def host_path(self, path: str) -> str:
        """Where ``path`` of a state lives on this machine (for messages and tests)."""
        return os.path.join(self.root, *self._parts(path))

    def _parts(self, path: str) -> list[str]:
        problem = path_problem(path)
        if problem:
            raise ApplyError(f"{path}: {problem}")
        return [p for p in path.split("/") if p not in ("", ".")]

    def _dir(self, path: str, create_mode: int | None,
             owners: tuple[int, ...] | None = None) -> _OpenDir:
        """The parent directory of ``path``: ``with`` gives its fd (None if missing and not
        created) and closes it. With ``owners``, a parent directory owned by anyone else
        (pre-created by another user in /tmp, say), or their symlink in its place, is
        moved aside and created afresh. No symlink is followed (see the module's doc)."""
        parts = self._parts(path)[:-1]
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                is_parent = i == len(parts) - 1
                nfd = self._step(fd, name, parts[: i + 1], is_parent, create_mode, owners,
                                 path)
                if is_parent and owners is not None and nfd >= 0:
                    nfd = self._adopt(fd, nfd, name, owners, create_mode or 0o700, path)
                os.close(fd)
                fd = nfd
                if fd < 0:
                    break
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return _OpenDir(fd)

    def _step(
        self, fd: int, name: str, so_far: list[str], is_parent: bool, create_mode: int | None,
        owners: tuple[int, ...] | None, path: str,
    ) -> int:
        """The directory ``name`` in ``fd``, opened without following a symlink (made with
        ``create_mode`` if missing and asked to); -1 if missing and not created."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if create_mode is None:
                return -1
            testhook.point("mkdir", name)
            os.mkdir(name, 0o700, dir_fd=fd)  # mkdirat: EEXIST on a symlink, never through
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.fchmod(nfd, create_mode)
            return nfd
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise ApplyError(f"{path}: {exc.strerror}") from exc
            where = "/" + "/".join(so_far)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                raise ApplyError(f"{path}: {where} is not a directory") from exc
            if not is_parent:
                raise ApplyError(f"{path}: refusing the symlink {where} on its path"
                                 f"{_target(fd, name)}: no symlink is followed; give the real "
                                 "path") from exc
            foreign = st.st_uid not in (owners or (0, os.geteuid()))
            if foreign and _shared(fd):  # another user's, in /tmp: moved aside on write
                if owners is not None:
                    return self._move_aside(fd, name, st.st_uid, owners,
                                            create_mode or 0o700, path, "a symlink")
                raise _ForeignLink(f"{path}: refusing a symlink at its directory {where}",
                                   DirState(0o777, st.st_uid, st.st_gid, symlink=True)
                                   ) from exc
            raise ApplyError(f"{path}: refusing a symlink at its directory {where}") from exc

    def _adopt(self, fd: int, nfd: int, name: str, owners: tuple[int, ...], mode: int,
               path: str) -> int:
        """``nfd`` if its owner is one of ``owners``, else moved aside (see
        :meth:`_move_aside`) and a fresh directory's fd."""
        uid = os.fstat(nfd).st_uid
        if uid in owners:
            return nfd
        os.close(nfd)
        return self._move_aside(fd, name, uid, owners, mode, path, "its directory")

    def _move_aside(self, fd: int, name: str, uid: int, owners: tuple[int, ...], mode: int,
                    path: str, what: str) -> int:
        """In a shared directory (sticky and world-writable, like /tmp, where anyone may
        have pre-created it) the directory (or symlink) ``name`` another user owns is
        renamed aside (``.NAME.statekit-aside-HEX``, left for the operator to inspect) and
        replaced by a fresh directory, made first under a temporary name (root's, 0700)
        and renamed into place; one re-created meanwhile is moved aside again (a few
        times). Elsewhere it is refused. Nothing is ever written into a directory another
        user owns or has owned, nor through their symlink."""
        if not _shared(fd):  # a home directory, say: theirs by right, never moved
            raise ApplyError(f"{path}: refusing to write into its directory, owned by uid "
                             f"{uid} (who could swap the file); make it root's")
        fresh = f".{name}.statekit-new-{os.urandom(6).hex()}"
        os.mkdir(fresh, 0o700, dir_fd=fd)
        try:
            self._swap_in(fd, fresh, name)
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            self._rmdir_quietly(fd, fresh)
            raise ApplyError(f"{path}: {what} was owned by uid {uid}; moving it aside "
                             f"and creating the directory afresh failed: {exc.strerror}"
                             ) from exc
        if os.fstat(nfd).st_uid not in owners:
            os.close(nfd)
            raise ApplyError(f"{path}: its directory was swapped while being replaced")
        os.fchmod(nfd, mode)
        return nfd

    @staticmethod
    def _swap_in(fd: int, fresh: str, name: str) -> None:
        for _ in range(_ADOPT_TRIES):
            testhook.point("aside", name)
            try:  # noqa: SIM105 -- contextlib stays off the no-op path
                os.rename(name, f".{name}.statekit-aside-{os.urandom(6).hex()}",
                          src_dir_fd=fd, dst_dir_fd=fd)
            except FileNotFoundError:
                pass
            try:
                os.rename(fresh, name, src_dir_fd=fd, dst_dir_fd=fd)
                return
            except OSError as exc:  # re-created (and not empty) in between: again
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        raise OSError(errno.EEXIST, f"another user re-created it {_ADOPT_TRIES} times")

    @staticmethod
    def _rmdir_quietly(fd: int, name: str) -> None:
        try:  # noqa: SIM105 -- contextlib stays off the no-op path
            os.rmdir(name, dir_fd=fd)
        except OSError:
            pass

    def open(self, path: str, flags: int, mode: int = 0o600, *,
             dir_mode: int | None = None, owners: tuple[int, ...] | None = None
             ) -> int | None:
        """An fd on ``path`` opened with ``O_NOFOLLOW``, its directories walked as for a
        write (missing ones created with ``dir_mode`` when given; with ``owners``, a
        directory owned by anyone else is replaced); None if its directory is missing.
        For the lock file: never opened through a symlink or outside the root.
        """
        name = self._parts(path)[-1]
        with self._dir(path, dir_mode, owners if dir_mode is not None else None) as dfd:
            if dfd is None:
                return None
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)

    def exists(self, path: str) -> bool:
        """Whether anything (file, directory, even a symlink) is at ``path``, its
        directories walked as for a read (a symlink on the way is an ApplyError)."""
        name = self._parts(path)[-1]
        try:
            with self._dir(path, None) as dfd:
                if dfd is None:
                    return False
                os.stat(name, dir_fd=dfd, follow_symlinks=False)
                return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_error(path, "check", exc) from exc

    def read(self, path: str, limit: int = MAX_READ, *, oversize_ok: bool = False
             ) -> ReadResult:
        """Read ``path``: content, mode, owner; refuses a symlink or a non-regular file.
        A file over ``limit`` bytes is :class:`TooLarge`, or unread (``oversize`` set)
        when ``oversize_ok``. Any OSError is an ApplyError naming the path."""
        try:
            return self._read(path, limit, oversize_ok)
        except OSError as exc:
            raise os_error(path, "read", exc) from exc

    def _read(self, path: str, limit: int, oversize_ok: bool) -> ReadResult:
        name = self._parts(path)[-1]
        try:
            opened = self._dir(path, None)
        except _ForeignLink as link:  # no file to read there: a write replaces the link
            return ReadResult(None, link.state)
        with opened as dfd:
            if dfd is None:
                return ReadResult(None, None)
            dst = os.fstat(dfd)
            parent = DirState(stat.S_IMODE(dst.st_mode), dst.st_uid, dst.st_gid)
            stale = tuple(sorted(n for n in os.listdir(dfd) if n.startswith(temp_prefix(name))))
            return ReadResult(self._read_file(dfd, name, path, limit, oversize_ok), parent,
                              stale)

    def _read_file(self, dfd: int, name: str, path: str, limit: int, oversize_ok: bool
                   ) -> FileState | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ApplyError(f"{path}: refusing a symlink at the file's path") from exc
            raise ApplyError(f"{path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ApplyError(f"{path}: not a regular file")
            data, oversize = read_capped(fd, limit, path), 0
        except TooLarge:
            if not oversize_ok:
                raise
            data, oversize = b"", max(os.fstat(fd).st_size, limit + 1)
        finally:
            os.close(fd)
        return FileState(content=data, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                         gid=st.st_gid, inode=st.st_ino, mtime_ns=st.st_mtime_ns,
                         oversize=oversize)

    def write(
        self, path: str, data: bytes, *, mode: int, uid: int, gid: int, dir_mode: int,
        dir_owner: tuple[int, int] | None = None, enforce_dir_mode: bool = False,
    ) -> None:
        """Atomically replace ``path`` with ``data`` (mode and owner set from the start).
        Any OSError (a read-only file system, a directory swapped meanwhile) is an
        ApplyError naming the path."""
        try:
            self._write(path, data, mode, uid, gid, dir_mode, dir_owner, enforce_dir_mode)
        except OSError as exc:
            raise os_error(path, "write", exc) from exc

    def _write(self, path: str, data: bytes, mode: int, uid: int, gid: int, dir_mode: int,
               dir_owner: tuple[int, int] | None, enforce_dir_mode: bool) -> None:
        name = self._parts(path)[-1]
        owners = (0, os.geteuid(), uid, *(dir_owner or ())[:1])
        with self._dir(path, dir_mode, owners) as dfd:
            if dfd is None:  # _dir creates missing directories when given a mode
                raise ApplyError(f"{path}: its directory could not be created")
            if enforce_dir_mode:  # owner first: then nobody else can change the mode
                if dir_owner is not None:
                    os.fchown(dfd, *dir_owner)
                os.fchmod(dfd, dir_mode)
            else:
                self._check_dir_mode(dfd, path)
            self._remove_stale(dfd, name, path)
            self._reject_symlink(dfd, name, path)
            tmp = temp_prefix(name) + os.urandom(6).hex()
            try:
                self._write_temp(dfd, tmp, data, mode, uid, gid)
                testhook.point("rename", name)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as exc:
                self._unlink_quietly(dfd, tmp)
                raise ApplyError(f"{path}: {exc.strerror or exc}") from exc
            os.fsync(dfd)

    @staticmethod
    def _check_dir_mode(dfd: int, path: str) -> None:
        """Refuse a directory others may write to (unless sticky, like /tmp): they could
        swap the file once written."""
        mode = stat.S_IMODE(os.fstat(dfd).st_mode)
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise ApplyError(f"{path}: refusing to write into a group/world-writable directory "
                             f"(mode {mode:04o}): set the state's dir_mode, or fix the mode")

    def _write_temp(self, dfd: int, tmp: str, data: bytes, mode: int, uid: int, gid: int) -> None:
        testhook.point("create", tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode & 0o600, dir_fd=dfd)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            testhook.point("write", tmp)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            testhook.point("fsync", tmp)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _reject_symlink(self, dfd: int, name: str, path: str) -> None:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise ApplyError(f"{path}: refusing a symlink at the file's path")

    def _remove_stale(self, dfd: int, name: str, path: str) -> None:
        for entry in os.listdir(dfd):
            if entry.startswith(temp_prefix(name)):
                try:
                    self._unlink_quietly(dfd, entry)
                except OSError as exc:
                    raise ApplyError(f"{path}: cannot remove the stale temporary {entry!r}: "
                                     f"{exc.strerror}") from exc

    @staticmethod
    def _unlink_quietly(dfd: int, name: str) -> None:
        # not contextlib.suppress: contextlib stays off the no-op path
        try:  # noqa: SIM105
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass

    def touch(self, path: str, when: float) -> None:
        """Set ``path``'s access and modification times to ``when``, nothing else (no
        symlink followed, at any component; a missing file is an ApplyError)."""
        name = self._parts(path)[-1]
        try:
            with self._dir(path, None) as dfd:
                if dfd is None:
                    raise FileNotFoundError(2, "No such file or directory")
                os.utime(name, (when, when), dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            raise os_error(path, "touch", exc) from exc

    def remove(self, path: str) -> None:
        """Remove ``path`` (and stale temporaries beside it); a missing file is fine."""
        try:
            self._remove(path)
        except OSError as exc:
            raise os_error(path, "remove", exc) from exc

    def _remove(self, path: str) -> None:
        name = self._parts(path)[-1]
        with self._dir(path, None) as dfd:
            if dfd is None:
                return
            self._remove_stale(dfd, name, path)
            self._reject_symlink(dfd, name, path)
            testhook.point("unlink", name)
            self._unlink_quietly(dfd, name)
            os.fsync(dfd)
