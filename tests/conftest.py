"""Shared fixtures: private network namespaces, a testinfra host inside one, the CLI.

Nothing here touches the host's own network namespace: every namespace is created by
the fixture (``ip netns add``) and deleted afterwards, whatever the test did.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.backend.local import LocalBackend

# The markers' checks: a test that needs root, a namespace or a component says so, or fails.
from tests.needs import (  # noqa: F401
    pytest_collection_finish,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
    pytest_runtest_setup,
)

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools" / "bin"


@dataclass
class Run:
    """A finished statekit run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def statekit(
    args: Sequence[str], *, netns: str | None = None, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, timeout: float = 120,
) -> Run:
    """Run ``python -m statekit ARGS`` (inside ``netns`` when given)."""
    argv = [sys.executable, "-m", "statekit", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **(env or {})}
    proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout, check=False)
    record_output(proc.stdout, proc.stderr)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def statekit_in_process(args: Sequence[str], *, env: Mapping[str, str] | None = None) -> Run:
    """``statekit ARGS`` as :func:`statekit` runs it (the same environment, nothing else
    inherited), but in this process: ``statekit.cli.main``, the output captured. For the
    tables of inputs that run the CLI hundreds of times: an interpreter start and a cold
    import cost more than the run (the e2e and hardening tests run the real command)."""
    import contextlib
    import io

    from statekit import cli

    out, err, saved_env = io.StringIO(), io.StringIO(), dict(os.environ)
    os.environ.clear()
    os.environ.update({"PATH": saved_env["PATH"], "LANG": "C.UTF-8", **(env or {})})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    record_output(out.getvalue(), err.getvalue())
    return Run(code, out.getvalue(), err.getvalue())


class NetnsBackend(LocalBackend):  # type: ignore[misc]
    """testinfra's local backend, with every command run inside a network namespace."""

    NAME = "netns"

    def __init__(self, netns: str, *args: Any, **kwargs: Any) -> None:
        self.netns = netns
        super().__init__(*args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> Any:
        cmd = self.get_command(command, *args)
        return self.run_local("ip netns exec %s sh -c %s", self.netns, cmd)


def make_netns() -> str:
    name = f"sk-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    return name


def delete_netns(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], check=False)
    subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh private network namespace (loopback up), deleted afterwards."""
    name = make_netns()
    try:
        yield name
    finally:
        delete_netns(name)


@pytest.fixture
def nshost(netns: str) -> Any:
    """A testinfra host whose commands run inside ``netns``."""
    return testinfra.host.Host(NetnsBackend(netns))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A temporary ``--root``."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def local_host() -> Any:
    return testinfra.get_host("local://")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- netfilter helpers (iptables tests) ------------------------------------------------

SAVE_BIN = {"ipv4": "iptables-save", "ipv6": "ip6tables-save"}
XT_TOOLS = ("iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore")


def in_netns(netns: str, argv: Sequence[str], *, input: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns`` (never in the host's namespace)."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], input=input,
                          capture_output=True, text=True, check=check, timeout=60)


def saved(netns: str, table: str = "filter", family: str = "ipv4") -> list[str]:
    """``iptables-save -t table`` inside ``netns``, without the ``#`` lines."""
    out = in_netns(netns, [SAVE_BIN[family], "-t", table]).stdout
    return [ln for ln in out.splitlines() if not ln.startswith("#")]


@dataclass
class ToolLog:
    """A tool directory whose iptables save/restore shims log each call, then exec.

    statekit never searches PATH: ``env`` names the directory in ``STATEKIT_TOOL_DIRS``."""

    bin_dir: Path
    log: Path

    @property
    def path(self) -> str:
        return f"{self.bin_dir}:{os.environ['PATH']}"

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": self.path, "STATEKIT_TOOL_DIRS": str(self.bin_dir)}

    def calls(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def tool_log(tmp_path: Path) -> ToolLog:
    bin_dir, log = tmp_path / "shims", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in XT_TOOLS:
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                              text=True, check=True).stdout.strip()
        shim = bin_dir / tool
        shim.write_text(f'#!/bin/sh\necho {tool} >> "{log}"\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return ToolLog(bin_dir, log)


# --- CoreDNS inside a namespace (used by tests/test_coredns_zone.py) ----------------

COREDNS = TOOLS / "coredns"

def dns_query(
    netns: str, server: str, name: str, rdtype: str = "A", *, port: int = 53,
    expect: tuple[str, list[str]] | None = None, timeout: float = 10.0,
) -> tuple[str, list[str]]:
    """Ask ``server`` inside ``netns`` (tests/e2e/dns_probe.py); with ``expect``, retry
    until it comes.

    Returns ``(rcode, sorted answer texts)``, e.g. ``("NOERROR", ["192.0.2.7"])``.
    """
    want = json.dumps(None if expect is None else [expect[0], expect[1]])
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, *PROBE_PYTHON, DNS_PROBE, "wait", server, str(port),
         name, rdtype, want, str(timeout)], capture_output=True, text=True, check=True,
        timeout=timeout + 30)
    rcode, answers = json.loads(proc.stdout)
    return str(rcode), list(answers)


@pytest.fixture
def coredns(netns: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start the real CoreDNS inside ``netns`` on a Corefile; every one is killed after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(corefile: Path, *, pidfile: Path | None = None) -> subprocess.Popen[bytes]:
        argv = ["ip", "netns", "exec", netns, str(COREDNS), "-conf", str(corefile)]
        if pidfile is not None:
            argv += ["-pidfile", str(pidfile)]
        log = open(tmp_path / f"coredns-{len(started)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=corefile.parent)
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- parallel runs (pytest-xdist: `make test`, `make check`) ----------------------------
#
# Each worker is a session of its own: its own sandbox (namespaces and veths named at
# random), its own tmp_path tree, its own secrets capture (checked at its end, over every
# output its tests saw; every worker imports every test module, so knows every TOKEN).
# What workers share on the host is made here, once, before they start.


def pytest_configure(config: pytest.Config) -> None:
    """In the xdist controller, as root: the hardening tests' attacker user, which their
    session fixture would otherwise create in two workers at once (the second useradd
    fails). Not when root tests are left out (`make check`)."""
    parallel = getattr(config.option, "numprocesses", None)
    if (hasattr(config, "workerinput") or not parallel or os.geteuid() != 0
            or "not root" in (config.option.markexpr or "")):
        return
    import pwd

    from tests.hardening import ATTACKER

    try:
        pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", ATTACKER], check=True, capture_output=True)


# --- the end-to-end sandbox (tests/e2e/harness.py; also driven by scripts/sandbox.py) ----

from tests.e2e.harness import DNS_PROBE, PROBE_PYTHON, Sandbox  # noqa: E402  (appended)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The "internet" and "container" namespaces with upstream DNS and OTLP receiver.

    Shared by the session (building it takes a second or two); always torn down, also
    when a test fails or the run is interrupted. Tests that change the container should
    use ``clean_sandbox`` instead.
    """
    with Sandbox() as box:
        yield box


@pytest.fixture
def clean_sandbox(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session's sandbox with the container reset (no CoreDNS, empty filter table,
    no recorded requests, no expected Authorization) before and after the test."""
    sandbox.reset_container()
    sandbox.clear_requests()
    sandbox.set_expected_auth("")
    yield sandbox
    sandbox.reset_container()


# --- secrets capture: every byte statekit prints, checked against the suite's tokens ----
#
# The ``statekit()`` helper (and any test that runs statekit another way, through
# ``record_output``) appends what statekit printed to ``CAPTURED``. At the end of the
# session, no known test token, nor any base64 form of it, may appear anywhere in it.
# Tokens are registered with ``register_token``; a module-level ``TOKEN`` string in any
# imported test module is registered automatically.

CAPTURED: list[str] = []
KNOWN_TOKENS: set[str] = set()


def register_token(*tokens: str) -> None:
    """Declare test secrets that statekit must never print (in any test of the session)."""
    KNOWN_TOKENS.update(t for t in tokens if t)


def record_output(*texts: str) -> None:
    """Add what a statekit run printed to the session's capture."""
    CAPTURED.extend(t for t in texts if t)


def base64_forms(secret: str) -> set[str]:
    """Substrings that appear in any base64 text that encodes ``secret`` somewhere (the
    characters that hold only the secret's bits, at each of the three alignments)."""
    import base64

    raw = secret.encode()
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        lead = (offset * 8 + 5) // 6 if offset else 0  # chars that mix in the prefix
        end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0)  # last mixes the suffix
        fragment = encoded[lead:end]
        if len(fragment) >= 6:
            forms.add(fragment)
    return forms


def _token_forms(token: str) -> set[str]:
    import base64

    return {token, base64.b64encode(token.encode()).decode().rstrip("="),
            *base64_forms(token)}


def leaked_tokens(texts: Sequence[str], tokens: set[str]) -> list[str]:
    """Which of ``tokens`` appear in ``texts``, themselves or in a base64 form."""
    found = []
    for token in sorted(tokens):
        forms = _token_forms(token)
        if any(form in text for text in texts for form in forms):
            found.append(token)
    return found


def _module_tokens() -> set[str]:
    return {mod.TOKEN for name, mod in list(sys.modules.items())
            if name.startswith("tests.") and isinstance(getattr(mod, "TOKEN", None), str)}


@pytest.fixture(scope="session", autouse=True)
def secrets_capture() -> Iterator[list[str]]:
    """Fails the session if a registered test token ever reached statekit's output."""
    yield CAPTURED
    tokens = KNOWN_TOKENS | _module_tokens()
    leaked = leaked_tokens(CAPTURED, tokens)
    assert not leaked, (f"statekit printed {len(leaked)} test token(s) or their base64 "
                        f"forms in {len(CAPTURED)} captured outputs")
