"""What env_file and coredns_zone share: planning and writing one whole managed file.

The plan compares content, mode and owner (and the directory's mode, when the state
asks for it) in one :class:`FileSpec`; the diff is a unified diff of the *displayed*
text, which the resource gives with its sensitive values already masked.
"""

from __future__ import annotations

from statekit.digits import digits
from statekit.errors import FieldError
from statekit.host.files import ReadResult
from statekit.host.host import Host
from statekit.resources.base import Change, Plan
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Display = Callable[[bytes], str]


class FileSpec(Record):
    path: str
    content: bytes
    mode: int
    uid: int
    gid: int
    dir_mode: int = 0o700
    enforce_dir_mode: bool = False


def parse_mode(value: object, field: str) -> int:
    # YAML reads an unquoted 0640 as the number 416 (octal), which would be taken for
    # mode 0416: only a quoted string is a mode
    if not isinstance(value, str):
        raise FieldError(field, f"a mode is a quoted octal string (\"0640\"), not {value!r}")
    text = value
    if not (3 <= len(text.lstrip("0") or "0") <= 4 and digits(text)
            and set(text) <= set("01234567") and len(text) <= 5):
        raise FieldError(field, f"{text!r} is not a valid mode (an octal string like '0600')")
    return int(text, 8)


def parse_owner(value: object, field: str, *, group: bool = False) -> int:
    if isinstance(value, int) or (isinstance(value, str) and digits(value)):
        return int(value)
    import grp  # at load only
    import pwd

    try:
        return grp.getgrnam(str(value)).gr_gid if group else pwd.getpwnam(str(value)).pw_uid
    except KeyError:
        kind = "group" if group else "user"
        raise FieldError(field, f"no such {kind} {value!r}") from None


def plan_file(spec: FileSpec, current: ReadResult, display: Display) -> Plan:
    """The changes that make ``current`` the file ``spec`` describes."""
    changes: list[Change] = []
    lines: list[str] = []
    old = current.file
    if old is None:
        changes.append(Change("create", spec.path, "file is missing"))
        lines.append(f"mode: {spec.mode:04o}, owner: {spec.uid}:{spec.gid}")
    elif old.oversize:
        changes.append(Change("update", spec.path, f"{old.oversize} bytes, over the read "
                              "limit: not read, replaced"))
        lines.append(f"previous content not read: {old.oversize} bytes, over the read limit")
    if old is not None:
        if old.content != spec.content and not old.oversize:
            changes.append(Change("update", spec.path, "content differs"))
        if old.mode != spec.mode:
            changes.append(Change("chmod", spec.path, f"mode {old.mode:04o} -> {spec.mode:04o}"))
            lines.append(f"mode: {old.mode:04o} -> {spec.mode:04o}")
        if (old.uid, old.gid) != (spec.uid, spec.gid):
            changes.append(Change("chown", spec.path, "owner differs"))
            lines.append(f"owner: {old.uid}:{old.gid} -> {spec.uid}:{spec.gid}")
    parent = current.parent
    if parent is not None and parent.uid not in (0, spec.uid):
        what = "a symlink at the directory" if parent.symlink else "directory"
        changes.append(Change("replace", f"{spec.path} (directory)", f"{what} owned by "
                              f"uid {parent.uid}: moved aside and created afresh (in a "
                              "shared directory such as /tmp), else refused"))
        lines.append(f"directory {'(a symlink) ' if parent.symlink else ''}owner: "
                     f"{parent.uid} -> {spec.uid}")
    elif (not spec.enforce_dir_mode and parent is not None and parent.mode & 0o022
          and not parent.mode & 0o1000):
        changes.append(Change("refuse", f"{spec.path} (directory)",
                              f"directory mode {parent.mode:04o}: writable by others"))
    if (spec.enforce_dir_mode and parent is not None and parent.mode != spec.dir_mode
            and not parent.symlink):  # a symlink is replaced by a dir_mode directory
        changes.append(Change("chmod", f"{spec.path} (directory)",
                              f"directory mode {parent.mode:04o} -> {spec.dir_mode:04o}"))
        lines.append(f"directory mode: {parent.mode:04o} -> {spec.dir_mode:04o}")
    if current.stale and changes:
        lines.append(f"stale temporary files removed: {len(current.stale)}")
    elif current.stale:
        changes.append(Change("cleanup", spec.path, "stale temporary files of a broken write"))
    if not changes:  # no diff to render (nor difflib to import) on a no-op
        return Plan(payload=spec)
    before = display(old.content) if old is not None else ""
    text = unified(spec.path, before, display(spec.content), old is None)
    return Plan(tuple(changes), diff="\n".join([*lines, text]).strip("\n"), payload=spec)


def plan_absent(path: str, current: ReadResult, display: Display) -> Plan:
    if current.file is None:
        if current.stale:
            return Plan((Change("cleanup", path, "stale temporary files of a broken write"),))
        return Plan(notes=("already absent",))
    text = unified(path, display(current.file.content), "", False, removed=True)
    return Plan((Change("delete", path, "ensure: absent"),), diff=text)


def unified(path: str, before: str, after: str, created: bool, removed: bool = False) -> str:
    import difflib  # only when there is something to show

    diff = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile="/dev/null" if created else f"{path} (before)",
        tofile="/dev/null" if removed else f"{path} (after)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff).rstrip("\n")


def _predicted(path: str) -> tuple[str, str]:
    return ("predicted file", path)


def read_file(host: Host, path: str, limit: int, *, oversize_ok: bool = False) -> ReadResult:
    """``path`` as read, or, in check mode, as an earlier state of the phase would have
    left it (:func:`predict_file`): each state's dry-run diff is against the file the
    states before it would have written, as in a real converge."""
    predicted: ReadResult | None = host.cache.get(_predicted(path))
    if predicted is not None:
        return predicted
    return host.fs.read(path, limit, oversize_ok=oversize_ok)


def predict_file(plan: Plan, host: Host) -> None:
    """Check mode: remember the file a changed plan would write, for :func:`read_file`."""
    spec = plan.payload
    if not (plan.changed and isinstance(spec, FileSpec)):
        return
    from statekit.host.files import DirState, FileState

    before = read_file(host, spec.path, len(spec.content) + 1, oversize_ok=True)
    parent = before.parent or DirState(spec.dir_mode, spec.uid, spec.gid)
    if spec.enforce_dir_mode:
        parent = DirState(spec.dir_mode, spec.uid, spec.gid)
    host.cache[_predicted(spec.path)] = ReadResult(
        FileState(content=spec.content, mode=spec.mode, uid=spec.uid, gid=spec.gid, inode=0,
                  mtime_ns=0), parent)


def apply_file(spec: FileSpec, host: Host) -> None:
    host.fs.write(spec.path, spec.content, mode=spec.mode, uid=spec.uid, gid=spec.gid,
                  dir_mode=spec.dir_mode, enforce_dir_mode=spec.enforce_dir_mode,
                  dir_owner=(spec.uid, spec.gid) if spec.enforce_dir_mode else None)
