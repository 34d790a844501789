"""Issue 19 item 7: no symlink is followed at any component of a path, even with --root /.

With ``--root /`` every path is "inside the root", so an ancestor symlink that stayed
inside it used to be followed: an attacker's ``/tmp/agentdir -> /etc`` made an env_file at
``/tmp/agentdir/sub/app.env`` land, as root, in ``/etc/sub/app.env``. Here the arena (a
root-owned directory under /tmp) holds ``shared`` (sticky and world-writable, like /tmp)
and ``etc`` (root's, standing in for /etc: the real /etc is never involved), and statekit
runs with ``--root /`` on ``ARENA/shared/agentdir/sub/app.env``, its lock file in the
arena and no cache (and with the arena as the root on ``/shared/agentdir/sub/app.env``,
where the old walk followed the symlink: it stayed "inside the root").

- Planted once: the symlink at ``agentdir`` (to ``etc``, with or without ``etc/sub``) fails
  the state, naming the path and the symlink; nothing is created or written in ``etc``.
- Raced: the attacker (an unprivileged user) keeps swapping ``agentdir`` between a
  directory of theirs (half the time holding ``sub -> etc/sub``) and a symlink to ``etc``
  while statekit converges again and again (real runs, then many direct writes through
  :class:`FileSystem`). Every write lands in a directory of the attacker's tree (where
  they put it; the file root's, 0600) or the state fails with a clear message: nothing is
  ever written or created in ``etc``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekit.errors import ApplyError
from statekit.host.files import FileSystem
from tests.conftest import statekit, write
from tests.hardening import Attacker, arena_fixture, attacker_fixture, clean, tree  # noqa: F401

pytestmark = pytest.mark.root

CONVERGES = 10
WRITES = 5000
STATES = """\
phases: [auth]
states:
  - id: app-env
    type: env_file
    phase: auth
    path: {path}
    entries:
      ROUND: "{{{{ env.ROUND }}}}"
"""
RACER = """\
import json, os, sys
shared, etc, stop = sys.argv[1], sys.argv[2], sys.argv[3]
d = os.path.join(shared, "agentdir")
stats = {"swaps": 0, "dirs": 0, "links": 0, "sub_links": 0}
i = 0
while not os.path.exists(stop):
    i += 1
    try:  # a directory of theirs, half the time holding sub -> etc/sub
        os.mkdir(d, 0o777)
        stats["dirs"] += 1
        if i % 2:
            os.symlink(os.path.join(etc, "sub"), os.path.join(d, "sub"))
            stats["sub_links"] += 1
    except OSError:
        pass
    try:
        os.rename(d, os.path.join(shared, f"old-{i}"))
        stats["swaps"] += 1
    except OSError:
        pass
    try:  # then a symlink to etc
        os.symlink(etc, d)
        stats["links"] += 1
        stats["swaps"] += 1
    except OSError:
        pass
    try:
        os.unlink(d)
    except OSError:
        pass
print(json.dumps(stats))
"""
FAILURES = ("refusing the symlink", "refusing a symlink at its directory",
            "is not a directory", "No such file or directory", "File exists",
            "Too many levels of symbolic links", "Not a directory",
            "refusing to write into its directory, owned by uid",
            "verify failed, still to change after apply")


def count(outcomes: dict[str, int], failure: str) -> None:
    """One write's outcome: written (no failure), the symlink refused, or another clear
    failure of the race (the directory gone or swapped under the walk)."""
    if not failure:
        outcomes["written"] += 1
        return
    assert "internal error" not in failure and any(f in failure for f in FAILURES), failure
    symlink = "refusing the symlink" in failure or "refusing a symlink" in failure
    outcomes["symlink refused" if symlink else "other failure"] += 1


def settle(shared: Path, outcomes: dict[str, int]) -> None:
    """After a write: if statekit made ``agentdir`` itself (it was missing at that
    instant), the directory is root's in a sticky directory and the attacker is locked
    out of it for good; remove it (its file checked) so that the race goes on."""
    made = shared / "agentdir"
    try:
        st = made.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == 0:
        env = made / "sub" / "app.env"
        if env.exists():
            est = env.lstat()
            assert (est.st_uid, est.st_mode & 0o7777) == (0, 0o600)
            outcomes["in a directory statekit made"] += 1
        shutil.rmtree(made)


@pytest.fixture
def tmpfs_arena() -> Iterator[Path]:
    """A root-owned 0755 directory on a tmpfs (/dev/shm; a container's /tmp often is
    one): fsync costs nothing there, so the attacker's renames are not queued behind
    statekit's journal commits and the race stays tight."""
    path = Path(tempfile.mkdtemp(prefix="statekit-arena-", dir="/dev/shm"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def world(arena: Path) -> tuple[Path, Path]:
    """``shared`` (1777, like /tmp) and ``etc`` (root's 0755, holding one file)."""
    return make_world(arena)


def make_world(arena: Path) -> tuple[Path, Path]:
    shared, etc = arena / "shared", arena / "etc"
    shared.mkdir()
    shared.chmod(0o1777)
    etc.mkdir()
    etc.chmod(0o755)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return shared, etc


def where(arena: Path, root: str) -> tuple[str, str]:
    """The ``--root`` and the env file's path in the state, for ``root`` "/" (the
    container's) or "arena" (the arena as the root: a symlink to ``etc`` then stays
    inside it, which the old walk followed)."""
    if root == "/":
        return "/", f"{arena}/shared/agentdir/sub/app.env"
    return str(arena), "/shared/agentdir/sub/app.env"


def converge(arena: Path, root: str, states: Path, round_: int = 0) -> tuple[int, str]:
    run = statekit(["converge", "--root", root, "--lock-file", "/statekit.lock" if
                    root != "/" else f"{arena}/statekit.lock", str(states)],
                   env={"ROUND": str(round_), "STATEKIT_NO_CACHE": "1"})
    assert "internal error" not in run.output and "Traceback" not in run.output, run.output
    return run.returncode, run.output


@pytest.mark.parametrize("etc_has_sub", [False, True])
@pytest.mark.parametrize("root", ["/", "arena"])
def test_an_ancestor_symlink_is_refused(
        arena: Path, world: tuple[Path, Path], attacker: Attacker, tmp_path: Path,
        etc_has_sub: bool, root: str) -> None:
    shared, etc = world
    if etc_has_sub:  # following the link would need no mkdir at all
        (etc / "sub").mkdir(mode=0o755)
    link = shared / "agentdir"
    link.symlink_to(etc)
    attacker.own(link)
    before = tree(etc)
    root, path = where(arena, root)
    states = write(tmp_path / "s.yaml", STATES.format(path=path))
    code, output = converge(arena, root, states)
    assert code == 1, output
    assert (f"{path}: refusing the symlink {path.removesuffix('/sub/app.env')} on its path "
            f"(-> {etc}): no symlink is followed; give the real path") in output
    assert tree(etc) == before
    assert link.is_symlink()


def test_exists_never_looks_through_a_symlink(world: tuple[Path, Path]) -> None:
    """The ``creates:`` guard of a command state walks the same way."""
    shared, etc = world
    (etc / "sub").mkdir()
    (etc / "sub" / "app.env").write_text("A=1\n")
    (shared / "agentdir").symlink_to(etc)
    fs = FileSystem("/")
    assert fs.exists(f"{etc}/sub/app.env")
    assert fs.exists(f"{shared}/agentdir")  # the link itself is something
    with pytest.raises(ApplyError, match=r"refusing the symlink .*/shared/agentdir on its"):
        fs.exists(f"{shared}/agentdir/sub/app.env")
    with pytest.raises(ApplyError, match=r"refusing a symlink at its directory .*/agentdir$"):
        fs.exists(f"{shared}/agentdir/passwd")


def test_a_hostile_user_racing_the_walk_never_gets_a_write_outside(
        tmpfs_arena: Path, attacker: Attacker, tmp_path: Path) -> None:
    """Half the runs with ``--root /``, half with the arena as the root."""
    arena = tmpfs_arena
    shared, etc = make_world(arena)
    (etc / "sub").mkdir(mode=0o755)
    before = tree(etc)
    roots = [where(arena, "/"), where(arena, "arena")]
    states = [write(tmp_path / f"s{i}.yaml", STATES.format(path=path))
              for i, (_, path) in enumerate(roots)]
    racer = write(arena / "racer.py", RACER)
    racer.chmod(0o644)
    stop = arena / "stop"
    proc = attacker.popen(["/usr/bin/python3", str(racer), str(shared), str(etc), str(stop)])
    outcomes = {"written": 0, "symlink refused": 0, "other failure": 0,
                "in a directory statekit made": 0}
    started = time.monotonic()
    try:
        time.sleep(0.2)  # the racer is running
        for round_ in range(CONVERGES):
            code, output = converge(arena, roots[round_ % 2][0], states[round_ % 2], round_)
            assert code in (0, 1), output
            count(outcomes, output if code else "")
            settle(shared, outcomes)
        systems = [FileSystem(root) for root, _ in roots]
        for i in range(WRITES):
            try:
                systems[i % 2].write(roots[i % 2][1], f"ROUND={i}\n".encode(), mode=0o600,
                                     uid=0, gid=0, dir_mode=0o700)
                count(outcomes, "")
            except ApplyError as exc:
                count(outcomes, str(exc))
            settle(shared, outcomes)
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - started
    stats = json.loads(out or "{}")
    assert stats, err
    assert tree(etc) == before  # nothing written, created or changed through the symlink
    landed = [Path(d, "app.env") for d, _, files in os.walk(shared) if "app.env" in files]
    for file in landed:  # every write went into the attacker's own tree, root's and 0600
        st = file.lstat()
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), file
    # the race was real: both the attacker's directory and their symlink were met
    assert outcomes["written"] > 0 and outcomes["symlink refused"] > 0, outcomes
    assert landed and stats["swaps"] > 0, stats
    print(f"\nwalk race: {CONVERGES} converges and {WRITES} direct writes in "
          f"{elapsed:.1f} s: {outcomes}; attacker {stats}; files in the attacker's "
          f"directories {len(landed)}; written outside (under etc): 0")
