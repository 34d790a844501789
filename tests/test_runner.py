"""The runner against real processes: capture, exit codes, input, timeouts, reaping, fds."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from statekit.errors import ApplyError
from statekit.host.runner import Result, Runner

REPO = Path(__file__).resolve().parent.parent
MB5 = 5_000_000


def _children() -> set[int]:
    """Pids whose parent is this process (zombies included)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(name))
    return set(found)


_before: set[int] = set()


@pytest.fixture(autouse=True)
def _baseline() -> None:
    """Children that were there before the test: servers kept by other tests' fixtures."""
    _before.clear()
    _before.update(_children())


def children() -> list[int]:
    """This process's children (zombies included) that the test itself left behind."""
    return sorted(_children() - _before)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def sig_ignored(status: str) -> int:
    """The SigIgn mask from a /proc/PID/status text."""
    line = next(li for li in status.splitlines() if li.startswith("SigIgn:"))
    return int(line.split()[1], 16)


@pytest.fixture
def runner() -> Runner:
    return Runner()


@pytest.fixture
def alarm() -> Iterator[None]:
    """Restores SIGALRM and its timer after a test that used them."""
    old = signal.getsignal(signal.SIGALRM)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_stdout_and_stderr_captured_separately(runner: Runner) -> None:
    result = runner.run(["sh", "-c", "echo out; echo err >&2"])
    assert result == Result(("sh", "-c", "echo out; echo err >&2"), 0, "out\n", "err\n")
    assert result.ok
    assert "returncode=0" in repr(result)


def test_nonzero_exit_with_check_false(runner: Runner) -> None:
    result = runner.run(["sh", "-c", "exit 3"], check=False)
    assert result.returncode == 3
    assert not result.ok


def test_nonzero_exit_raises_with_code_and_stderr(runner: Runner) -> None:
    with pytest.raises(ApplyError) as info:
        runner.run(["sh", "-c", "echo oops >&2; exit 4"])
    assert info.value.returncode == 4
    assert info.value.stderr == "oops\n"
    assert info.value.argv == ["sh", "-c", "echo oops >&2; exit 4"]
    assert "exit 4" in str(info.value)
    assert "oops" in str(info.value)


def test_killed_by_signal_is_negative(runner: Runner) -> None:
    assert runner.run(["sh", "-c", "kill -TERM $$"], check=False).returncode == -15


def test_input_delivered(runner: Runner) -> None:
    assert runner.run(["cat"], input="hello\nwörld\n").stdout == "hello\nwörld\n"
    assert runner.run(["wc", "-c"], input="").stdout.strip() == "0"


def test_output_decoded_as_utf8_with_replacement_and_universal_newlines(
    runner: Runner,
) -> None:
    result = runner.run(["printf", "caf\\303\\251 \\377\\r\\na\\rb"])
    assert result.stdout == "café \ufffd\na\nb"


def test_large_input_and_output(runner: Runner) -> None:
    data = "".join(f"line {i:09d}\n" for i in range(MB5 // 15))
    assert len(data) >= MB5 - 15
    start = time.monotonic()
    assert runner.run(["cat"], input=data, timeout=30).stdout == data
    script = (f"head -c {MB5} /dev/zero | tr '\\0' a; "
              f"head -c {MB5} /dev/zero | tr '\\0' b >&2")
    result = runner.run(["sh", "-c", script], timeout=30)
    assert result.stdout == "a" * MB5
    assert result.stderr == "b" * MB5
    assert time.monotonic() - start < 20


def test_command_not_found(runner: Runner) -> None:
    for argv0 in ("statekit-no-such-command", "/nonexistent/statekit-cmd"):
        with pytest.raises(ApplyError) as info:
            runner.run([argv0, "x"])
        assert info.value.returncode == 127
        assert str(info.value).startswith(f"{argv0}: command not found")
        assert info.value.argv == [argv0, "x"]


def test_not_executable(runner: Runner, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(ApplyError) as info:
        runner.run([str(script)])
    assert info.value.returncode == 126
    assert "cannot execute" in str(info.value)


def test_not_a_program(runner: Runner, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01\x02 not an executable format\n")
    garbage.chmod(0o755)
    with pytest.raises(ApplyError) as info:
        runner.run([str(garbage)])
    assert info.value.returncode == 126


def test_timeout_kills_and_reaps(runner: Runner) -> None:
    start = time.monotonic()
    with pytest.raises(ApplyError) as info:
        runner.run(["sleep", "30"], timeout=0.5)
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 3
    assert info.value.returncode == -1
    assert info.value.message == "timed out after 0.5 s"
    assert children() == []  # not running, and no zombie either: reaped


def test_signals_during_wait_neither_cut_it_short_nor_stretch_the_timeout(
    runner: Runner, alarm: None,
) -> None:
    ticks = []

    def tick(signum: int, frame: FrameType | None) -> None:
        ticks.append(signum)

    signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    start = time.monotonic()
    assert runner.run(["sh", "-c", "sleep 1; echo done"]).stdout == "done\n"
    assert time.monotonic() - start >= 0.9
    start = time.monotonic()
    with pytest.raises(ApplyError):
        runner.run(["sleep", "30"], timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3
    assert len(ticks) > 10
    assert children() == []


def test_interrupt_during_wait_kills_and_reaps(runner: Runner, alarm: None) -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    before = open_fds()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run(["sleep", "30"], input="unread")
    assert time.monotonic() - start < 3
    assert children() == []
    assert open_fds() == before


def test_without_pidfd_waits_by_polling(
    runner: Runner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)  # a kernel before 5.3, or seccomp
    start = time.monotonic()
    assert runner.run(["sh", "-c", "sleep 0.3; echo late"]).stdout == "late\n"
    assert time.monotonic() - start >= 0.3
    with pytest.raises(ApplyError) as info:
        runner.run(["sleep", "30"], timeout=0.5)
    assert info.value.returncode == -1
    assert 0.4 < time.monotonic() - start < 4
    assert children() == []


def test_background_process_holding_stdout_does_not_hang(runner: Runner) -> None:
    start = time.monotonic()
    result = runner.run(["sh", "-c", "sleep 5 & echo hi"], timeout=30)
    assert result.stdout == "hi\n"
    assert time.monotonic() - start < 3


def test_child_gets_sigpipe_and_sigxfsz_at_default(runner: Runner) -> None:
    pipe = 1 << (signal.SIGPIPE - 1)
    xfsz = 1 << (signal.SIGXFSZ - 1)
    # Python ignores both; the child must not inherit that.
    assert sig_ignored(Path("/proc/self/status").read_text()) & pipe
    child = sig_ignored(runner.run(["cat", "/proc/self/status"]).stdout)
    assert not child & pipe
    assert not child & xfsz
    # With SIGPIPE ignored, yes would complain "Broken pipe" on stderr.
    result = runner.run(["sh", "-c", "yes | head -n 3"], timeout=10)
    assert (result.stdout, result.stderr) == ("y\ny\ny\n", "")


def test_child_gets_only_standard_fds(runner: Runner) -> None:
    read, write = os.pipe()
    os.set_inheritable(write, True)  # even one marked inheritable stays out
    try:
        names = set(runner.run(["ls", "/proc/self/fd"]).stdout.split())
    finally:
        os.close(read)
        os.close(write)
    assert names == {"0", "1", "2", "3"}  # 3: ls's own directory descriptor


def test_no_fd_leak(runner: Runner) -> None:
    runner.run(["true"])  # warm up anything opened once
    before = open_fds()
    for i in range(50):
        runner.run(["cat"], input=f"{i}\n")
        runner.run(["sh", "-c", "exit 1"], check=False)
        with pytest.raises(ApplyError):
            runner.run(["statekit-no-such-command"])
    with pytest.raises(ApplyError):
        runner.run(["sleep", "30"], timeout=0.1)
    assert open_fds() == before
    assert children() == []


def test_stdin_inherited_without_input(runner: Runner, tmp_path: Path) -> None:
    source = tmp_path / "stdin.txt"
    source.write_text("from the parent's stdin\n")
    saved = os.dup(0)
    fd = os.open(source, os.O_RDONLY)
    try:
        os.dup2(fd, 0)
        assert runner.run(["cat"]).stdout == "from the parent's stdin\n"
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(fd)


def test_calls_counted(runner: Runner) -> None:
    runner.run(["true"])
    runner.run(["false"], check=False)
    with pytest.raises(ApplyError):
        runner.run(["statekit-no-such-command"])
    assert runner.calls == 3


def test_inherits_environment_and_cwd(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATEKIT_RUNNER_TEST", "visible")
    monkeypatch.chdir(tmp_path)
    out = runner.run(["sh", "-c", 'echo "$STATEKIT_RUNNER_TEST"; pwd -P']).stdout
    assert out == f"visible\n{tmp_path.resolve()}\n"


HEAVY = ("subprocess", "typing", "signal", "threading", "selectors", "re", "enum", "locale",
         "functools", "contextlib")
PROBE = f"""
import sys
before = set(sys.modules)
import statekit.host.runner
from statekit.errors import ApplyError
r = statekit.host.runner.Runner()
assert r.run(["cat"], input="x").stdout == "x"
assert r.run(["sh", "-c", "exit 2"], check=False).returncode == 2
for argv, timeout in ((["statekit-no-such-command"], 5.0), (["sleep", "5"], 0.05)):
    try:
        r.run(argv, timeout=timeout)
    except ApplyError:
        pass
heavy = {HEAVY!r}
print(sorted(m for m in heavy if m in sys.modules and m not in before))
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_no_heavy_imports_on_import_or_run() -> None:
    # With site (whose .pth hooks may load some of these first): nothing new.
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    assert proc.stdout.splitlines()[0] == "[]"
    # Without site: none of them at all.
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE], capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=True)
    assert proc.stdout.splitlines() == ["[]", "[]"]
