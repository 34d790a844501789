"""Pinned answers at the packet level (issue 20): what DNS tells the agent is what the
firewall lets through, at every instant, while a CDN-like upstream rotates its answers.

The two-namespace world (tests/e2e/harness.py) gets one more name, ``rot.allowed.test``,
whose upstream answer is 2 addresses of a pool of 12 (198.18.1.1-12, each with a TCP echo
on :443) and moves to the next 2 every few seconds. An agent (uid 1000) resolves it
through the container's CoreDNS (127.0.0.53) and connects to one of the answers, 4 times
a second, while the refresh loop converges the network phase. With the shipped states
(pinned answers) every connection succeeds; with the states as they were before pins
(the allowlist block forwarding to the upstreams, no grace) the same loop loses
connections, so the test can fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, record_output
from tests.e2e.harness import ALLOWED_HOSTS, E2E, ECHO_PORT, Sandbox, hosts_text, run, which
from tests.e2e.lockdown import Lockdown, Result

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

ROT = "rot.allowed.test"
POOL = tuple(f"198.18.1.{i}" for i in range(1, 13))
DOMAINS = ("--var", f"domains=[{', '.join([*ALLOWED_HOSTS, ROT])}]")

AGENT = """\
import json, random, socket, sys, time
name, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
counts = {"ok": 0, "timeout": 0, "refused": 0, "no_answer": 0}
seen = set()
end = time.monotonic() + seconds
while time.monotonic() < end:
    tick = time.monotonic()
    try:
        addrs = sorted({i[4][0] for i in socket.getaddrinfo(name, 443, socket.AF_INET,
                                                             socket.SOCK_STREAM)})
    except OSError:
        counts["no_answer"] += 1
    else:
        addr = random.choice(addrs)
        seen.add(addr)
        try:
            socket.create_connection((addr, 443), timeout=1.0).close()
            counts["ok"] += 1
        except TimeoutError:
            counts["timeout"] += 1
        except OSError:
            counts["refused"] += 1
    time.sleep(max(0.0, 1 / rate - (time.monotonic() - tick)))
counts["addresses"] = len(seen)
print(json.dumps(counts))
"""


class Rotation:
    """The upstream's answer for ``rot.allowed.test``: 2 addresses of :data:`POOL`."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.step = 0

    def current(self) -> tuple[str, str]:
        at = (2 * self.step) % len(POOL)
        return POOL[at], POOL[at + 1]

    def write(self) -> None:
        path = Path(self.box.info.hosts_file)
        extra = "".join(f"{addr} {ROT}\n" for addr in self.current())
        tmp = path.with_name(path.name + ".rot")
        tmp.write_text(hosts_text(self.box.info.hosts) + extra)
        tmp.replace(path)

    def next(self) -> None:
        """The next 2 addresses; returns once the upstream serves them."""
        self.step += 1
        self.serve()

    def serve(self) -> None:
        """Write the current 2 addresses; return once the upstream serves them (its hosts
        plugin re-reads the file every 200 ms: a query before that gets NXDOMAIN)."""
        self.write()
        deadline = time.monotonic() + 5
        for server in self.box.info.upstream_resolvers:  # every one statekit may ask
            while sorted(self.box.upstream_answer(ROT, server).answers) != sorted(
                    self.current()):
                assert time.monotonic() < deadline, f"{server} did not take the rotation"
                time.sleep(0.05)


@pytest.fixture
def rotation(clean_sandbox: Sandbox) -> Iterator[Rotation]:
    box = clean_sandbox
    box.reset_hosts()
    dev = box.info.veth_internet
    for addr in POOL:
        run(["ip", "-n", box.internet, "addr", "add", f"{addr}/32", "dev", dev])
    ready = box.workdir / "rot-echo.ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-I", str(E2E / "echo_server.py"), "--ready-file", str(ready)]
    for addr in POOL:
        argv += ["--listen", f"{addr}:{ECHO_PORT}"]
    echo = box.spawn("rot-echo", box.internet, argv)
    deadline = time.monotonic() + 15
    while not ready.exists():
        assert echo.poll() is None and time.monotonic() < deadline, box.log("rot-echo")
        time.sleep(0.1)
    rot = Rotation(box)
    rot.serve()  # the boot's converge must not ask before the upstream has the name
    try:
        yield rot
    finally:
        Path(box.info.hosts_file).write_text(hosts_text(box.info.hosts))
        echo.kill()
        echo.wait()
        box.procs.pop("rot-echo", None)
        for addr in POOL:
            run(["ip", "-n", box.internet, "addr", "del", f"{addr}/32", "dev", dev],
                check=False)


@pytest.fixture
def world(clean_sandbox: Sandbox, tmp_path: Path) -> Lockdown:
    root = tmp_path / "root"
    root.mkdir()
    return Lockdown(clean_sandbox, root)


def unpinned_states(tmp_path: Path) -> Path:
    """The shipped states with the allowlist block as it was before pins: forwarded to
    the upstream resolvers (cache 300), no grace."""
    states = tmp_path / "states-unpinned"
    states.mkdir()
    network = (REPO / "states/network.yaml").read_text()
    pinned = re.search(r"    answer: pinned.*\n    pins_from: fw-allowlist\n"
                       r"    pin_ttl: .*\n", network)
    assert pinned is not None
    network = network.replace(pinned.group(0), '    forward: "{{ upstream_resolvers }}"\n'
                              "    cache: 300\n")
    (states / "network.yaml").write_text(network.replace("pin_grace: 660", "pin_grace: 0"))
    telemetry = (REPO / "states/telemetry.yaml").read_text()
    (states / "telemetry.yaml").write_text(telemetry.replace("pin_grace: 660", "pin_grace: 0"))
    return states


def agent(world: Lockdown, seconds: float, rate: float = 4.0) -> subprocess.Popen[str]:
    """The agent loop, as uid 1000, resolving through 127.0.0.53, in the background."""
    argv = world.box.container_argv(
        [which("setpriv"), "--reuid=1000", "--regid=1000", "--clear-groups",
         sys.executable, "-I", "-c", AGENT, ROT, str(seconds), str(rate)], "local")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_loop(world: Lockdown, rotation: Rotation, states: str, seconds: float = 30.0,
             rotate_every: float = 5.0, refresh_every: float = 10.0) -> dict[str, int]:
    """Boot, then the agent for ``seconds`` while the upstream rotates and the refresh
    loop converges; the agent's counts."""
    args = [*DOMAINS, states]
    boot = converge(world, "upstream", *args)
    assert boot.rc == 0, boot.output
    assert world.start_dns()
    loop = agent(world, seconds)
    start = time.monotonic()
    next_rotation, next_refresh = start + rotate_every, start + refresh_every
    refreshes = []
    while loop.poll() is None:
        now = time.monotonic()
        if now >= next_rotation:
            rotation.next()
            next_rotation += rotate_every
        if now >= next_refresh:
            refreshes.append(converge(world, "local", *args).rc)
            next_refresh += refresh_every
        time.sleep(0.05)
    out, err = loop.communicate()
    record_output(out, err)
    assert loop.returncode == 0, err
    assert refreshes and set(refreshes) == {0}, refreshes
    counts: dict[str, int] = json.loads(out)
    return counts


def converge(world: Lockdown, resolver: str, *args: str) -> Result:
    """The network phase of ``args``'s states (the last arg is the state directory)."""
    *options, states = args
    argv = ["converge", "--root", str(world.root), "--format", "json", "--phase", "network",
            "--var", "resolve_timeout=2", *options, states]
    proc = world.box.statekit(argv, resolver=resolver, timeout=90)  # type: ignore[arg-type]
    record_output(proc.stdout, proc.stderr)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    return Result(proc.returncode, proc.stdout, proc.stderr, report)


def test_a_rotating_upstream_never_costs_the_agent_a_connection(
        world: Lockdown, rotation: Rotation, tmp_path: Path) -> None:
    pinned = run_loop(world, rotation, str(REPO / "states"))
    attempts = sum(pinned[k] for k in ("ok", "timeout", "refused", "no_answer"))
    print(f"\npinned answers: {pinned['ok']}/{attempts} connections succeeded "
          f"({pinned['addresses']} addresses seen)")
    assert attempts >= 60 and pinned["ok"] == attempts, pinned
    assert pinned["addresses"] >= 4, pinned  # the answers did rotate

    world.box.reset_container()
    rotation.step = 0
    rotation.write()
    control = run_loop(world, rotation, str(unpinned_states(tmp_path)))
    attempts = sum(control[k] for k in ("ok", "timeout", "refused", "no_answer"))
    lost = attempts - control["ok"]
    print(f"forwarded answers (before pins): {control['ok']}/{attempts} succeeded, "
          f"{lost} lost ({100 * lost / attempts:.0f}%)")
    assert lost >= 0.05 * attempts, control  # the control shows what pins prevent


def answers_in_corefile(world: Lockdown, name: str) -> set[str]:
    text = world.corefile.read_text()
    return {ln.split(" IN A ")[1].rstrip('"') for ln in text.splitlines()
            if f'answer "{name}. ' in ln}


def accepted(world: Lockdown, name: str) -> set[str]:
    """Addresses the firewall accepts for ``name`` (pins and grace)."""
    mark = f"statekit:fw-allowlist {name}"
    return {rule.split(" -d ")[1].split("/")[0] for rule in world.chain()
            if mark in rule and " -d " in rule}


def test_sigkill_across_a_pin_change_never_leaves_an_answer_ahead_of_the_firewall(
        world: Lockdown, rotation: Rotation) -> None:
    """Kill a refresh whose pins change at each of its crash points: after every kill,
    what the Corefile (on disk, which CoreDNS reloads within 5 s) and CoreDNS (live)
    answer is accepted by the firewall, the policy is DROP, and the next refresh
    completes."""
    args = [*DOMAINS, str(REPO / "states")]
    assert converge(world, "upstream", *args).rc == 0
    assert world.start_dns()
    rotation.next()
    listed = world.box.statekit(
        ["converge", "--root", str(world.root), "--phase", "network", "--var",
         "resolve_timeout=2", *args], env={"STATEKIT_TEST_HOOK": "list"}, resolver="local")
    points = [ln for ln in listed.stderr.splitlines() if ln.startswith("hook ")]
    assert listed.returncode == 0 and len(points) >= 3, listed.stderr
    checked = 0
    for point in range(1, len(points) + 1):
        rotation.next()
        killed = world.box.statekit(
            ["converge", "--root", str(world.root), "--phase", "network", "--var",
             "resolve_timeout=2", *args], env={"STATEKIT_TEST_HOOK": f"kill:{point}"},
            resolver="local")
        assert killed.returncode == -9, (point, killed.stderr[-500:])
        assert world.policy() == "DROP", point
        on_disk = answers_in_corefile(world, ROT)
        live = set(world.box.dns_query(ROT).answers)
        assert on_disk <= accepted(world, ROT), (point, on_disk, world.chain())
        assert live <= accepted(world, ROT), (point, live, world.chain())
        checked += 1
    done = converge(world, "local", *args)
    assert done.rc == 0, done.output
    assert answers_in_corefile(world, ROT) == set(rotation.current())
    print(f"\n{checked} kill points across a pin change: every answer accepted")
