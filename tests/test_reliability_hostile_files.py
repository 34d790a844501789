"""Hostile files: symlinks (and other traps) planted where statekit writes.

A symlink at the env file, at its directory, at the Corefile, at its directory, at the
lock file, at the lock file's directory, and at names matching the temporary files'
prefix: nothing is written through any of them, and the state (or the run, for the
lock) fails with a message that says why. Then: the env file is never readable by
anyone but root, at any instant of many converges (a thread watches the directory).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Run, register_token, statekit, write

pytestmark = pytest.mark.root

TOKEN = "glc_hostile_files_token_9e8d7c6b"
register_token(TOKEN)
STATES = """\
phases: [network, auth]
secrets: [TOKEN]
states:
  - id: dns
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: a.example.test
    bind: [127.0.0.53]
    forward: [192.0.2.53]
  - id: otel-env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    entries:
      ROUND: "{{ env.ROUND }}"
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Basic%20{{ ('42:' ~ env.TOKEN) | b64encode }}"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
"""
VICTIM_TEXT = "precious, not statekit's\n"


@pytest.fixture
def states(tmp_path: Path) -> Path:
    return write(tmp_path / "states.yaml", STATES)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the root with one file that must never change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim").write_text(VICTIM_TEXT)
    return path


def converge(states: Path, root: Path, *extra: str, round_: int = 0) -> Run:
    return statekit(["converge", "--root", str(root), *extra, str(states)],
                    env={"TOKEN": TOKEN, "ROUND": str(round_), "STATEKIT_NO_CACHE": "1"})


def untouched(outside: Path) -> bool:
    return (sorted(p.name for p in outside.iterdir()) == ["victim"]
            and (outside / "victim").read_text() == VICTIM_TEXT)


def plant(root: Path, rel: str, target: Path) -> None:
    link = root / rel
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    link.symlink_to(target)


@pytest.mark.parametrize(("rel", "to_victim", "state", "message"), [
    ("tmp/otel/otel-env", True, "otel-env", "refusing a symlink at the file's path"),
    ("tmp/otel/otel-env", False, "otel-env", "refusing a symlink at the file's path"),
    ("tmp/otel", False, "otel-env", "refusing a symlink at its directory /tmp/otel"),
    ("etc/coredns/Corefile", True, "dns", "refusing a symlink at the file's path"),
    ("etc/coredns/Corefile", False, "dns", "refusing a symlink at the file's path"),
    ("etc/coredns", False, "dns", "refusing a symlink at its directory /etc/coredns"),
])
def test_symlink_at_a_managed_path_is_refused(states: Path, root: Path, outside: Path,
                                              rel: str, to_victim: bool, state: str,
                                              message: str) -> None:
    plant(root, rel, outside / "victim" if to_victim else outside)
    for extra in ([], ["--check"]):
        run = converge(states, root, *extra)
        assert run.returncode == 1, run.output
        line = next(ln for ln in run.stdout.splitlines() if f"/{state} [" in ln)
        assert line.startswith("failed") and message in line
        assert "Traceback" not in run.output
        assert untouched(outside)
    assert (root / rel).is_symlink()


@pytest.mark.parametrize("to_victim", [True, False])
def test_symlink_at_the_lock_file_is_refused(states: Path, root: Path, outside: Path,
                                             to_victim: bool) -> None:
    plant(root, "run/statekit/lock", outside / ("victim" if to_victim else "new-lock"))
    for extra in ([], ["--check"]):
        run = converge(states, root, *extra)
        assert run.returncode == 1, run.output
        assert run.stderr == ("statekit: /run/statekit/lock: refusing a symlink at the "
                              "lock file\n")
        assert untouched(outside)
    assert not (root / "tmp").exists() and not (root / "etc").exists()


@pytest.mark.parametrize(("lock_file", "rel", "inside", "message"), [
    ("/run/statekit.lock", "run", False, "refusing a symlink at its directory /run"),
    ("/var/lock/sk/statekit.lock", "var/lock", False,
     "refusing the symlink /var/lock on its path (-> {target}): no symlink is followed; "
     "give the real path"),
    # inside the root too (/var/lock -> /run on Debian): never followed, not even there
    ("/var/lock/sk/statekit.lock", "var/lock", True,
     "refusing the symlink /var/lock on its path (-> {target}): no symlink is followed; "
     "give the real path"),
])
def test_lock_directory_symlinked_is_refused(states: Path, root: Path, outside: Path,
                                            lock_file: str, rel: str, inside: bool,
                                            message: str) -> None:
    target = root / "run" if inside else outside
    target.mkdir(exist_ok=True)
    plant(root, rel, target)
    run = converge(states, root, "--lock-file", lock_file)
    assert run.returncode == 1, run.output
    assert run.stderr == f"statekit: {lock_file}: {message.format(target=target)}\n"
    assert list((root / "run").iterdir() if inside else []) == []
    assert untouched(outside)
    assert not (root / "tmp").exists()


def test_symlinks_named_like_temporaries_are_never_written_through(
    states: Path, root: Path, outside: Path,
) -> None:
    """The temporary names end in 12 random hex digits: plant symlinks with the same
    prefix (to the victim, to a missing file outside, to the directory outside)."""
    names = [".otel-env.statekit-tmp-" + s for s in ("", "0", "deadbeef0000", "x" * 40)]
    targets = [outside / "victim", outside / "created", outside, outside / "victim"]
    for name, target in zip(names, targets, strict=True):
        plant(root, f"tmp/otel/{name}", target)
        plant(root, f"etc/coredns/.Corefile.statekit-tmp-{name[-4:]}", target)
    check = converge(states, root, "--check", "--diff")
    assert check.returncode == 0 and "would change" in check.stdout
    run = converge(states, root)
    assert run.returncode == 0, run.output
    assert untouched(outside)
    assert sorted(os.listdir(root / "tmp/otel")) == ["otel-env"]
    assert sorted(os.listdir(root / "etc/coredns")) == ["Corefile"]
    assert (root / "tmp/otel/otel-env").read_text().startswith("ROUND=0\n")


def test_hard_link_at_the_env_file_is_replaced_not_written_through(
    states: Path, root: Path, outside: Path,
) -> None:
    (root / "tmp/otel").mkdir(parents=True, mode=0o700)
    os.link(outside / "victim", root / "tmp/otel/otel-env")
    run = converge(states, root, "--diff")
    assert run.returncode == 0, run.output
    assert "-precious, not statekit's" in run.stdout  # the hard link's content, replaced
    assert untouched(outside)
    assert os.stat(outside / "victim").st_nlink == 1
    assert (root / "tmp/otel/otel-env").read_text().startswith("ROUND=0\n")


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: os.mkfifo(p, 0o600), "not a regular file"),
    (lambda p: p.mkdir(), "not a regular file"),
])
def test_fifo_or_directory_at_the_env_file_fails_without_hanging(
    states: Path, root: Path, make: Callable[[Path], None], message: str,
) -> None:
    (root / "tmp/otel").mkdir(parents=True, mode=0o700)
    make(root / "tmp/otel/otel-env")
    run = converge(states, root)
    assert run.returncode == 1, run.output
    assert f"/tmp/otel/otel-env: {message}" in run.stdout


def test_a_directory_named_like_a_temporary_fails_the_state_clearly(
    states: Path, root: Path,
) -> None:
    (root / "tmp/otel/.otel-env.statekit-tmp-trap").mkdir(parents=True)
    run = converge(states, root)
    assert run.returncode == 1, run.output
    line = next(ln for ln in run.stdout.splitlines() if "/otel-env [" in ln)
    assert "cannot remove" in line and "internal error" not in line
    assert not (root / "tmp/otel/otel-env").exists()


# --- the env file is never readable by anyone but root, at any instant ------------------


@dataclass
class Watch:
    """What a thread polling a directory's entries saw (mode bits and owners)."""

    directory: Path
    stop: threading.Event = field(default_factory=threading.Event)
    polls: int = 0
    files_seen: int = 0
    temporaries_seen: int = 0
    exposed: list[str] = field(default_factory=list)

    def run(self) -> None:
        while not self.stop.is_set():
            self.polls += 1
            self.look(self.directory.parent, self.directory.name)
            for name in self._names():
                self.look(self.directory, name)

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.directory)
        except FileNotFoundError:
            return []

    def look(self, where: Path, name: str) -> None:
        try:
            st = os.lstat(where / name)
        except FileNotFoundError:
            return
        if name != self.directory.name:
            self.files_seen += 1
            self.temporaries_seen += ".statekit-tmp-" in name
        if st.st_mode & 0o077 or st.st_uid != 0:
            self.exposed.append(f"{name}: {stat.filemode(st.st_mode)} uid {st.st_uid}")


def test_env_file_is_never_readable_by_others_during_converges(states: Path,
                                                                root: Path) -> None:
    watch = Watch(root / "tmp/otel")
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    rounds = 12
    try:
        for i in range(rounds):
            run = converge(states, root, "--phase", "auth", round_=i)
            assert run.returncode == 0 and "changed=1" in run.stdout, run.output
    finally:
        watch.stop.set()
        thread.join()
    assert watch.exposed == []
    assert watch.polls > 1000 and watch.files_seen > 1000
    assert (root / "tmp/otel/otel-env").read_text().startswith(f"ROUND={rounds - 1}\n")
    print(f"\n{rounds} converges, {watch.polls} polls, {watch.files_seen} files seen "
          f"({watch.temporaries_seen} temporaries), none readable by others")
