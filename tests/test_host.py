"""The host's two ways of not paying twice: reads started ahead (``Host.start``: a phase's
table saves spawned together, collected by the ``run`` of the same argv) and memos of
proofs (``Host.recall``/``learn``: a Corefile already as a state wants it is not parsed
again by the next converge of the same program). Real processes and real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from statekit import corefile
from statekit.errors import ApplyError
from statekit.host.host import MEMO_DIR, Host
from statekit.resources import coredns_zone
from statekit.resources.coredns_zone import FIXED_MEMO, CorednsZone, desired
from tests.test_coredns_zone import FOREIGN, OTLP, spec_of

RESOURCE = CorednsZone()


def alive(pid: int) -> bool:
    """Whether ``pid`` is still a process (a zombie, never reaped, counts)."""
    return os.path.exists(f"/proc/{pid}")


# --- reads started ahead ---------------------------------------------------------------


def test_a_started_command_runs_at_once_and_the_same_argv_collects_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = ["sh", "-c", f"echo once >> {marker}; echo out"]
    host = Host(root=str(tmp_path))
    host.start([argv, argv])  # each once
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.read_text() == "once\n"  # it ran before anyone asked for it
    result = host.run(argv)
    assert (result.returncode, result.stdout) == (0, "out\n")
    assert marker.read_text() == "once\n" and host.runner.calls == 1
    assert host.started == {}
    assert host.run(argv).stdout == "out\n" and marker.read_text() == "once\nonce\n"


def test_a_started_command_that_fails_fails_its_run_as_if_run_then(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo no >&2; exit 3"]
    host = Host(root=str(tmp_path))
    host.start([argv])
    with pytest.raises(ApplyError) as info:
        host.run(argv)
    assert (info.value.returncode, info.value.stderr) == (3, "no\n")
    host.start([argv])
    assert host.run(argv, check=False).returncode == 3


def test_any_other_command_first_stops_what_was_started(tmp_path: Path) -> None:
    """It may change what they read (a restore between a save and its use)."""
    slow = ("sh", "-c", "sleep 30")
    host = Host(root=str(tmp_path))
    fds = set(os.listdir("/proc/self/fd"))
    host.start([slow])
    pid = host.started[slow].pid
    assert alive(pid)
    assert host.run(["true"]).returncode == 0
    assert host.started == {} and not alive(pid)  # killed and reaped
    assert set(os.listdir("/proc/self/fd")) == fds  # its output files closed
    host.start([slow])
    pid = host.started[slow].pid
    host.run(["sh", "-c", "exit 0"], input="")  # a command with input counts too
    assert not alive(pid)


def test_a_new_phase_stops_what_no_state_collected(tmp_path: Path) -> None:
    host = Host(root=str(tmp_path))
    host.start([["sh", "-c", "sleep 30"], ["sh", "-c", "sleep 31"]])
    pids = [s.pid for s in host.started.values()]
    host.new_phase()
    assert host.started == {} and not any(alive(p) for p in pids)


def test_a_command_that_cannot_start_ahead_fails_when_it_is_run(tmp_path: Path) -> None:
    host = Host(root=str(tmp_path))
    host.start([["/nonexistent/statekit-test-prog"], ["relative/prog"]])
    assert host.started == {}
    with pytest.raises(ApplyError) as info:
        host.run(["/nonexistent/statekit-test-prog"])
    assert info.value.returncode == 127


# --- memos of proofs: a Corefile already as the state wants it ----------------------------


def zone() -> coredns_zone.ZoneSpec:
    """The OTLP zone, owned by whoever runs the test (``make check`` is not root)."""
    return spec_of(OTLP)._replace(uid=os.geteuid(), gid=os.getegid())


def converged(root: Path) -> Path:
    path = root / "etc/coredns/Corefile"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(desired(FOREIGN.encode(), zone()))
    path.chmod(0o644)
    return path


def host_of(root: Path, key: str = "program-1") -> Host:
    host = Host(root=str(root))
    host.memo_key = key
    return host


def already_wanted(current: coredns_zone.ZoneCurrent) -> bool:
    """Whether the read found the Corefile already as the state wants it."""
    found = current.file.file
    return found is not None and current.wanted == found.content


def refuse_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object, **__: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(corefile, "parse", fail)
    monkeypatch.setattr(coredns_zone, "_PARSED", {})


def test_a_proved_corefile_is_not_parsed_by_the_next_converge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converged(tmp_path)
    spec = zone()
    host = host_of(tmp_path)
    current = RESOURCE.read(spec, host)
    assert already_wanted(current)  # proved by parsing
    assert not RESOURCE.plan(spec, current).changed
    host.keep_learnt()
    memo = tmp_path / MEMO_DIR.lstrip("/") / FIXED_MEMO
    assert oct(memo.stat().st_mode & 0o777) == "0o600"
    assert memo.read_text().splitlines()[0] == "program-1"

    refuse_parsing(monkeypatch)
    current = RESOURCE.read(spec, host_of(tmp_path))
    assert already_wanted(current)
    assert not RESOURCE.plan(spec, current).changed


@pytest.mark.parametrize("change", ["a byte", "another program", "not ours", "a symlink",
                                    "garbage", "the spec"])
def test_what_the_proof_does_not_cover_is_parsed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    path = converged(tmp_path)
    spec = zone()
    host = host_of(tmp_path)
    current = RESOURCE.read(spec, host)
    assert already_wanted(current)
    host.keep_learnt()
    memo = tmp_path / MEMO_DIR.lstrip("/") / FIXED_MEMO
    key = "program-1"
    if change == "a byte":
        path.write_bytes(path.read_bytes().replace(b"cache 300", b"cache 301"))
    elif change == "another program":
        key = "program-2"
    elif change == "not ours":
        memo.chmod(0o644)
    elif change == "a symlink":
        memo.rename(memo.with_name("elsewhere"))
        memo.symlink_to(memo.with_name("elsewhere"))
    elif change == "garbage":
        memo.write_bytes(b"program-1\n\xff\x00 " * 2000)
    else:
        spec = spec._replace(cache=301)
    seen: list[bytes] = []
    real = corefile.parse

    def counted(data: bytes) -> corefile.Corefile:
        seen.append(data)
        return real(data)

    monkeypatch.setattr(corefile, "parse", counted)
    monkeypatch.setattr(coredns_zone, "_PARSED", {})
    current = RESOURCE.read(spec, host_of(tmp_path, key))
    assert seen, "the Corefile was not parsed"
    fixed = already_wanted(current)
    assert fixed is (change in ("another program", "not ours", "a symlink", "garbage"))
    assert RESOURCE.plan(spec, current).changed is (change in ("a byte", "the spec"))


def test_pins_are_part_of_what_is_proved() -> None:
    spec = zone()
    one = coredns_zone._fixed_key(b"x", spec, {"a.test": ("198.18.0.1",)})
    assert one != coredns_zone._fixed_key(b"x", spec, {"a.test": ("198.18.0.2",)})
    assert one != coredns_zone._fixed_key(b"x", spec, {})
    assert one == coredns_zone._fixed_key(b"x", spec, {"a.test": ("198.18.0.1",)})


def test_nothing_is_learnt_without_a_program_key_or_kept_beyond_the_cap(tmp_path: Path) -> None:
    converged(tmp_path)
    host = Host(root=str(tmp_path))  # no memo_key: `statekit status`, STATEKIT_NO_CACHE
    current = RESOURCE.read(zone(), host)
    assert already_wanted(current)
    host.keep_learnt()
    assert not (tmp_path / MEMO_DIR.lstrip("/")).exists()
    host = host_of(tmp_path)
    for i in range(100):
        host.learn("test-memo", f"{i:040x}")
    host.keep_learnt()
    kept = (tmp_path / MEMO_DIR.lstrip("/") / "test-memo").read_text().split()
    assert kept[0] == "program-1" and len(kept) == 1 + 64
