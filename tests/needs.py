"""What a test needs beyond Python and this checkout: declared by markers, and checked.

The markers (registered in pyproject.toml; ``make check`` runs the tests that carry none):

- ``netns``: root, and private network namespaces the test creates (``ip netns``,
  ``unshare -rn``); the ``netns``, ``nshost``, ``coredns``, ``sandbox`` and
  ``clean_sandbox`` fixtures are made of them.
- ``root``: root in the host's own namespace, with no network namespace: files owned by
  root (a converge writes them so), other users, mounts (``chown``, ``setpriv``,
  ``useradd``, ``mount``). ``make check`` runs as an ordinary user, so it finds the tests
  that need root and lack the marker.
- ``needs(*components)``: what ``make test`` downloads or builds, by name (``COMPONENTS``):
  ``coredns``, ``node``, ``claude-code``, ``pypi``, ``go-proxy``.

Four checks keep the declaration true, each a failure, never a skip:

- before a test runs, one that uses a fixture whose marker it lacks fails (``FIXTURES``);
- before a test runs, one whose marker names something missing here fails with what to
  do, e.g. "CoreDNS is missing: run `make coredns`" (a run without xdist stops at once,
  before the first test);
- while a test runs, a process it starts that only a marked test may start (``ip netns``,
  ``unshare``, ``setpriv``, the CoreDNS binary, ``node``, ``pip install``...) makes it fail
  when it lacks the marker (a Python audit hook sees every process the test process
  starts; what those processes start in turn is left to the fixtures' check);
- ``make check``, as root, runs the tests as an ordinary user (the Makefile's ``AS_USER``),
  so one that needs root without the ``root`` marker fails there.

A skipped test fails too: a missing component is an error (``make test`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
JS = REPO / "tests" / "e2e" / "js"
CLAUDE = REPO / "tests" / "e2e" / "claude"
COREDNS = REPO / ".tools" / "bin" / "coredns"


def _paths(fix: str, *paths: Path) -> Callable[[], str | None]:
    return lambda: None if all(p.exists() for p in paths) else fix


def _program(name: str, fix: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(name) else fix


def _reachable(url: str, fix: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            return f"{fix} ({url}: {exc})"
        return None
    return check


def _all(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    return lambda: next((e for check in checks if (e := check()) is not None), None)


_NODE = _program("node", "node is missing: run `make deps`")
_GOPROXY = os.environ.get("GOPROXY", "https://proxy.golang.org").split(",")[0]

#: what ``make test`` downloads or builds: name -> what is missing here, as what to do
COMPONENTS: dict[str, Callable[[], str | None]] = {
    "coredns": _paths("CoreDNS is missing (.tools/bin/coredns): run `make coredns`", COREDNS),
    "node": _all(_NODE, _paths(
        "the OpenTelemetry JS SDK is missing (tests/e2e/js/node_modules): run `make node-deps`",
        JS / "node_modules/.installed", JS / "legacy/node_modules/.installed")),
    "claude-code": _all(_NODE, _paths(
        "Claude Code is missing (tests/e2e/claude/node_modules): run `make claude-code`",
        CLAUDE / "node_modules/.installed")),
    "pypi": _reachable("https://pypi.org/simple/pip/",
                       "PyPI is out of reach: this test runs pip for real"),
    "go-proxy": _all(
        _paths("Debian's Go is missing (/usr/bin/go): run `make deps`", Path("/usr/bin/go")),
        _reachable(_GOPROXY, "the Go module proxy is out of reach: this test downloads Go")),
}

ROOT_ERROR = ("needs root: it creates network namespaces (run it as root, or run "
              "`make check`, which leaves such tests out)")
ROOT_ONLY_ERROR = ("needs root: it writes root's files, acts as another user or mounts (run "
                   "it as root, or run `make check`, which leaves such tests out)")
IP_ERROR = "`ip` is missing (iproute2): run `make deps`"

#: fixture -> the markers a test that uses it must carry
FIXTURES: dict[str, tuple[str, ...]] = {
    "netns": ("netns",), "nshost": ("netns",), "coredns": ("netns", "needs:coredns"),
    "sandbox": ("netns", "needs:coredns"), "clean_sandbox": ("netns", "needs:coredns"),
    "attacker": ("root",),
}


def declared(item: pytest.Item) -> set[str]:
    """The item's markers of this module, as ``netns``, ``root``, ``needs:NAME``."""
    have = {m for m in ("netns", "root") if item.get_closest_marker(m) is not None}
    for mark in item.iter_markers("needs"):
        have.update(f"needs:{name}" for name in mark.args)
    return have


def covered(item: pytest.Item) -> set[str]:
    """What the item may use: what it declares, and root with a namespace."""
    have = declared(item)
    return have | {"root"} if "netns" in have else have


def _how_to_declare(want: str) -> str:
    if want.startswith("needs:"):
        return f'pytest.mark.needs("{want[6:]}")'
    return f"pytest.mark.{want}"


# --- what a started process needs ---------------------------------------------------

_WORD = re.compile(r"[^\s'\"]+")
_NETNS = re.compile(  # unshare -rn, nsenter, ip netns ..., ip -n NAME ...
    r"(?:^|[\s/'\"])(?:unshare\s+(?:-\w*n|--net)|nsenter\s|ip\s+(?:netns|-n|-netns)\s)")
_ROOT_TOOLS = {"setpriv", "useradd", "userdel", "groupadd", "chown", "mount", "umount",
               "runuser", "chroot", "unshare", "nsenter"}


def wanted_by_command(argv: Iterable[Any]) -> set[str]:
    """The markers a test must carry to start ``argv`` (a list, or a shell string)."""
    text = " ".join(os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else str(a)
                    for a in ([argv] if isinstance(argv, (str, bytes)) else argv))
    words = {os.path.basename(w) for w in _WORD.findall(text)}
    want = set()
    if _NETNS.search(" " + text + " "):
        want.add("netns")
    if words & _ROOT_TOOLS:
        want.add("root")
    if str(COREDNS) in text or ".tools/bin/coredns" in text:
        want.add("needs:coredns")
    if str(CLAUDE) in text:
        want.add("needs:claude-code")
    elif words & {"node", "npm", "npx"} or "node_modules" in text:
        want.add("needs:node")
    if "pip" in words and "install" in words:
        want.add("needs:pypi")
    return want


class Watch:
    """Records what the running test's processes need (a Python audit hook)."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None
        self.seen: dict[str, str] = {}  # marker -> the first command that needed it

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.item is None:
            return
        if event in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
            argv = args[1]
        elif event == "os.system":
            argv = args[0]
        elif event == "os.chown":
            if args[1] not in (-1, os.geteuid()) or args[2] not in (-1, os.getegid()):
                self.seen.setdefault("root", f"os.chown({args[0]!r}, {args[1]}, {args[2]})")
            return
        else:
            return
        try:
            want = wanted_by_command(argv)
        except Exception:  # an argv Popen itself will refuse: not ours to judge
            return
        for mark in want:
            self.seen.setdefault(mark, _short(argv))


def _short(argv: Any) -> str:
    text = argv if isinstance(argv, (str, bytes)) else " ".join(map(str, argv))
    text = os.fsdecode(text) if isinstance(text, bytes) else text
    return text if len(text) <= 120 else text[:117] + "..."


WATCH = Watch()
sys.addaudithook(WATCH)


# --- the hooks (imported by tests/conftest.py) ---------------------------------------

def _fixture_errors(item: pytest.Item) -> list[str]:
    have = covered(item)
    errors = []
    for name in sorted(set(getattr(item, "fixturenames", ())) & FIXTURES.keys()):
        for want in FIXTURES[name]:
            if want not in have:
                errors.append(f"uses the fixture `{name}`, which needs the marker "
                              f"{_how_to_declare(want)} (pytestmark in its file)")
    return errors


_AVAILABLE: dict[str, str | None] = {}


def _availability_error(want: str) -> str | None:
    """What is missing here for the marker ``want``, as a message; None when all is there."""
    if want not in _AVAILABLE:
        error: str | None = None
        if want == "netns":
            error = (ROOT_ERROR if os.geteuid() != 0
                     else IP_ERROR if shutil.which("ip") is None else None)
        elif want == "root":
            error = ROOT_ONLY_ERROR if os.geteuid() != 0 else None
        else:
            name = want.split(":", 1)[1]
            check = COMPONENTS.get(name)
            error = (check() if check is not None else
                     f"pytest.mark.needs names {name!r}, not a known component "
                     f"({', '.join(COMPONENTS)}: see tests/needs.py)")
        _AVAILABLE[want] = error
    return _AVAILABLE[want]


def missing_for(item: pytest.Item) -> list[str]:
    return [e for want in sorted(declared(item)) if (e := _availability_error(want))]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist, stop before the first test when a selected one cannot run here."""
    if hasattr(session.config, "workerinput") or not session.items:
        return
    if getattr(session.config.option, "collectonly", False):
        return
    errors: dict[str, list[str]] = {}
    for item in session.items:
        for error in missing_for(item):
            errors.setdefault(error, []).append(item.nodeid)
    if errors:
        lines = [f"{error} ({len(ids)} selected test(s), e.g. {ids[0]})"
                 for error, ids in errors.items()]
        raise pytest.UsageError(*lines)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    errors = _fixture_errors(item) + missing_for(item)
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[
        None, object, object]:
    WATCH.item, WATCH.seen = item, {}
    try:
        return (yield)
    finally:
        WATCH.item = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"skipped ({_skip_reason(report)}): a test here runs or fails, "
                           f"never skips (a missing component is an error)")
        return report
    if call.when == "teardown":  # a shared fixture's teardown: its user was checked
        WATCH.seen = {}
        return report
    undeclared = {m: cmd for m, cmd in WATCH.seen.items() if m not in covered(item)}
    WATCH.seen = {}
    if undeclared:
        message = "; ".join(
            f"started `{cmd}`, which needs the marker {_how_to_declare(m)} "
            f"(pytestmark in its file)" for m, cmd in sorted(undeclared.items()))
        if report.failed:
            report.sections.append(("undeclared needs", message))
        else:
            report.outcome = "failed"
            report.longrepr = message
    return report


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)
