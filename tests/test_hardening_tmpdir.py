"""Item 5 of the hardening pass: the env file's directory pre-created in /tmp.

The root's ``tmp`` is sticky and world-writable like /tmp. The attacker keeps creating
``tmp/otel`` (mode 0777, holding their own ``otel-env`` and a symlink named like a
temporary) whenever it is missing, and races every converge: chmod 0777 the directory,
open and read every file in it, rename the env file away. Each round root removes the
directory, the attacker re-creates it, and a converge writes a new secret. The
directory must be moved aside and created afresh (root's, 0700) before anything is
written: the attacker never reads the secret, the file is never theirs to swap, and
nothing outside the root changes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import statekit, write
from tests.hardening import Attacker, arena_fixture, attacker_fixture, clean, tree  # noqa: F401

pytestmark = pytest.mark.root

TOKEN = "glc_hardening_tmpdir_token_5f4e3d"
ROUNDS = 20
STATES = """\
phases: [auth]
secrets: [TOKEN]
states:
  - id: otel-env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    mode: "0600"
    owner: root
    dir_mode: "0700"
    entries:
      ROUND: "{{ env.ROUND }}"
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Basic {{ env.TOKEN }}"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
"""
RACER = """\
import json, os, sys
tmp, stop = sys.argv[1], sys.argv[2]
d = os.path.join(tmp, "otel")
stats = {"attempts": 0, "created": 0, "chmod_ok": 0, "reads": 0, "leaks": 0, "renames": 0}
while not os.path.exists(stop):
    stats["attempts"] += 1
    try:
        os.mkdir(d, 0o777)
        os.chmod(d, 0o777)
        with open(os.path.join(d, "otel-env"), "w") as f:
            f.write("EVIL=1\\n")
        os.symlink("/etc/shadow", os.path.join(d, ".otel-env.statekit-tmp-x"))
        stats["created"] += 1
    except OSError:
        pass
    try:
        os.chmod(d, 0o777)
        stats["chmod_ok"] += 1
    except OSError:
        pass
    try:
        names = os.listdir(d)
    except OSError:
        names = []
    for name in names:
        try:
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            stats["reads"] += 1
            stats["leaks"] += sys.argv[3].encode() in data
        except OSError:
            pass
    try:
        os.rename(os.path.join(d, "otel-env"), os.path.join(d, "stolen"))
        stats["renames"] += 1
    except OSError:
        pass
print(json.dumps(stats))
"""


def test_a_pre_created_otel_dir_is_replaced_and_never_leaks(
        arena: Path, attacker: Attacker, tmp_path: Path) -> None:
    root = arena / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    outside = arena / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    before = tree(outside)
    states = write(tmp_path / "s.yaml", STATES)
    racer = write(arena / "racer.py", RACER)
    racer.chmod(0o644)
    stop = arena / "stop"
    proc = attacker.popen(["/usr/bin/python3", str(racer), str(root / "tmp"), str(stop), TOKEN])
    otel = root / "tmp" / "otel"
    adopted = 0
    try:
        for round_ in range(ROUNDS):
            deadline = time.monotonic() + 10
            while not (otel.is_dir() and otel.stat().st_uid == attacker.uid):
                assert time.monotonic() < deadline, "the attacker did not re-create tmp/otel"
                time.sleep(0.005)
            run = statekit(["converge", "--root", str(root), "--diff", str(states)],
                           env={"TOKEN": TOKEN, "ROUND": str(round_), "STATEKIT_NO_CACHE": "1"})
            clean(run, 0, f"directory owner: {attacker.uid} -> 0")
            st = otel.stat()
            assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o700)
            env = otel / "otel-env"
            assert (env.stat().st_uid, env.stat().st_mode & 0o777) == (0, 0o600)
            assert f"ROUND={round_}\n" in env.read_text()
            adopted += 1
            shutil.rmtree(otel)
    finally:
        stop.touch()
        out, _ = proc.communicate(timeout=30)
    stats = json.loads(out)
    assert adopted == ROUNDS
    assert stats["created"] >= ROUNDS, stats
    assert stats["leaks"] == 0, stats
    asides = sorted(p.name for p in (root / "tmp").iterdir() if ".statekit-aside-" in p.name)
    assert len(asides) >= ROUNDS
    for aside in asides:  # only ever the attacker's own plants: no secret was written there
        assert TOKEN not in "".join(
            p.read_text() for p in (root / "tmp" / aside).iterdir() if p.is_file()
            and not p.is_symlink())
    assert tree(outside) == before
    print(f"attacker stats over {ROUNDS} rounds: {stats}")


def test_a_world_writable_dir_without_dir_mode_is_refused(root: Path, tmp_path: Path) -> None:
    states = write(tmp_path / "s.yaml", STATES.replace('    dir_mode: "0700"\n', ""))
    (root / "tmp/otel").mkdir(parents=True)
    (root / "tmp/otel").chmod(0o777)
    run = statekit(["converge", "--root", str(root), str(states)],
                   env={"TOKEN": TOKEN, "ROUND": "1"})
    clean(run, 1, "/tmp/otel/otel-env: refusing to write into a group/world-writable "
                  "directory (mode 0777)")
    assert list((root / "tmp/otel").iterdir()) == []
    subprocess.run(["true"], check=True)


def test_a_directory_another_user_owns_outside_tmp_is_refused_not_moved(
        root: Path, tmp_path: Path, attacker: Attacker) -> None:
    home = root / "tmp" / "otel"  # root's tmp here is an ordinary 0755 directory
    home.mkdir(parents=True)
    attacker.own(home)
    run = statekit(["converge", "--root", str(root), str(write(tmp_path / "s.yaml", STATES))],
                   env={"TOKEN": TOKEN, "ROUND": "1"})
    clean(run, 1, "/tmp/otel/otel-env: refusing to write into its directory, owned by uid "
                  f"{attacker.uid} (who could swap the file)")
    assert home.stat().st_uid == attacker.uid and list(home.iterdir()) == []
    assert [p.name for p in (root / "tmp").iterdir()] == ["otel"]


def test_a_foreign_symlink_at_tmp_otel_is_moved_aside(arena: Path, attacker: Attacker,
                                                      tmp_path: Path) -> None:
    """Issue 19 item 5: the attacker's symlink ``tmp/otel -> their directory`` (holding
    their own ``otel-env``) is renamed aside, never followed, like their directory."""
    root = arena / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    theirs = arena / "theirs"
    theirs.mkdir()
    (theirs / "otel-env").write_text("OTEL_LOG_TOOL_CONTENT=1\n")
    link = root / "tmp" / "otel"
    link.symlink_to(theirs)
    attacker.own(theirs, theirs / "otel-env", link)
    before = tree(theirs)
    states = write(tmp_path / "s.yaml", STATES)
    env = {"TOKEN": TOKEN, "ROUND": "1", "STATEKIT_NO_CACHE": "1"}
    check = statekit(["converge", "--root", str(root), "--check", "--diff", str(states)], env=env)
    clean(check, 0, f"directory (a symlink) owner: {attacker.uid} -> 0\n    --- /dev/null")
    assert link.is_symlink()
    run = statekit(["converge", "--root", str(root), str(states)], env=env)
    clean(run, 0, "changed=1")
    st = link.lstat()
    assert not link.is_symlink() and (st.st_uid, st.st_mode & 0o7777) == (0, 0o700)
    assert (link / "otel-env").read_text().startswith("ROUND=1\n")
    asides = [p for p in (root / "tmp").iterdir() if p.name.startswith(".otel.statekit-aside-")]
    assert len(asides) == 1 and asides[0].readlink() == theirs
    assert tree(theirs) == before
    again = statekit(["converge", "--root", str(root), str(states)], env=env)
    clean(again, 0, "changed=0")


@pytest.mark.parametrize(("owner", "sticky"), [("root", True), ("attacker", False)])
def test_a_symlink_at_tmp_otel_is_refused_unless_foreign_in_a_shared_dir(
        arena: Path, attacker: Attacker, tmp_path: Path, owner: str, sticky: bool) -> None:
    root = arena / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp").chmod(0o1777 if sticky else 0o755)
    theirs = arena / "theirs"
    theirs.mkdir()
    link = root / "tmp" / "otel"
    link.symlink_to(theirs)
    if owner == "attacker":
        attacker.own(link)
    run = statekit(["converge", "--root", str(root), str(write(tmp_path / "s.yaml", STATES))],
                   env={"TOKEN": TOKEN, "ROUND": "1", "STATEKIT_NO_CACHE": "1"})
    clean(run, 1, "/tmp/otel/otel-env: refusing a symlink at its directory /tmp/otel")
    assert link.is_symlink() and list(theirs.iterdir()) == []
    assert [p.name for p in (root / "tmp").iterdir()] == ["otel"]
