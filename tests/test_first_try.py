"""A first safe try: `make try` (scripts/try.py) and the guard that asks before a converge
at the terminal cuts the machine's own traffic (as `terraform apply` does).

The guard's tests run statekit on a pseudo-terminal inside a private network namespace,
with ``--root /`` (the guard is about the real root) but states that hold only iptables
states, the lock file in the test's temporary directory and no cache: nothing is written
outside the test's own directory and namespace.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statekit import resources
from statekit.load.schema_check import with_defaults
from statekit.resources.base import Meta
from tests.conftest import REPO, in_netns, saved, write

pytestmark = pytest.mark.netns

CUT = """\
phases: [network]
states:
  - id: fw-loopback
    type: iptables_rule
    phase: network
    chain: OUTPUT
    out_interface: lo
    jump: ACCEPT
  - id: fw-drop-udp
    type: iptables_rule
    phase: network
    chain: OUTPUT
    protocol: udp
    jump: DROP
  - id: fw-policy
    type: iptables_chain
    phase: network
    chain: OUTPUT
    policy: DROP
"""
HARMLESS = CUT.split("  - id: fw-drop-udp", maxsplit=1)[0]


@pytest.mark.parametrize(("type_name", "fields", "cuts"), [
    ("iptables_chain", {"chain": "OUTPUT", "policy": "DROP"}, True),
    ("iptables_chain", {"chain": "OUTPUT", "policy": "ACCEPT"}, False),
    ("iptables_chain", {"chain": "INPUT", "policy": "DROP"}, False),
    ("iptables_rule", {"chain": "OUTPUT", "protocol": "udp", "jump": "DROP"}, True),
    ("iptables_rule", {"chain": "OUTPUT", "jump": "REJECT"}, True),
    ("iptables_rule", {"chain": "OUTPUT", "jump": "ACCEPT"}, False),
    ("iptables_rule", {"chain": "FORWARD", "jump": "DROP"}, False),
    ("iptables_rule", {"chain": "OUTPUT", "table": "raw", "jump": "DROP"}, False),
    ("command", {"argv": ["true"]}, False),
])
def test_which_states_cut_the_machines_own_traffic(type_name: str, fields: dict[str, object],
                                                   cuts: bool) -> None:
    """The question each type answers for the guard (pure: no terminal, no kernel)."""
    resource = resources.get(type_name)
    spec = resource.parse(with_defaults(type_name, fields), Meta("s"))
    assert resource.cuts_traffic(spec) is cuts
    if type_name == "iptables_chain":
        return  # a built-in chain cannot be absent
    identity = {k: v for k, v in fields.items() if k in resource.identity_fields}
    absent = resource.parse(with_defaults(type_name, identity, resource.identity_fields),
                            Meta("s", "absent"))
    assert resource.cuts_traffic(absent) is False


def policy(netns: str) -> str:
    return next(ln for ln in saved(netns) if ln.startswith(":OUTPUT")).split()[1]


def on_pty(netns: str, args: list[str], answer: str | None, tmp: Path,
           timeout: float = 60) -> tuple[int, str]:
    """Run statekit with stdin/stdout/stderr on a pty; type ``answer`` at the question."""
    master, slave = pty.openpty()
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "statekit", *args]
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "STATEKIT_NO_CACHE": "1"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=tmp, close_fds=True)
    os.close(slave)
    out, asked, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            out += chunk
        elif proc.poll() is not None:
            break
        if answer is not None and not asked and b"Only 'yes' will be accepted" in out:
            os.write(master, answer.encode() + b"\n")
            asked = True
    os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")


def converge_args(states: Path, tmp: Path, *extra: str) -> list[str]:
    return ["converge", "--root", "/", "--lock-file", str(tmp / "statekit.run.lock"), *extra,
            str(states)]


def test_guard_shows_the_plan_and_a_no_changes_nothing(netns: str, tmp_path: Path) -> None:
    states = write(tmp_path / "cut.yaml", CUT)
    code, out = on_pty(netns, converge_args(states, tmp_path), "no", tmp_path)
    assert code == 1, out
    assert "would change" in out and "network/fw-policy [iptables_chain]" in out
    assert "would drop outbound packets (fw-drop-udp, fw-policy)" in out
    assert "not confirmed: nothing changed" in out
    assert policy(netns) == "ACCEPT"
    assert [ln for ln in saved(netns) if ln.startswith("-A")] == []


def test_guard_yes_converges(netns: str, tmp_path: Path) -> None:
    states = write(tmp_path / "cut.yaml", CUT)
    code, out = on_pty(netns, converge_args(states, tmp_path), "yes", tmp_path)
    assert code == 0, out
    assert "Do you want to converge?" in out
    assert policy(netns) == "DROP"
    again, out = on_pty(netns, converge_args(states, tmp_path), None, tmp_path)
    assert again == 0 and "Do you want" not in out, "nothing left to cut: no question"


@pytest.mark.parametrize("extra", [["--yes"], ["--check"]])
def test_guard_flags_skip_the_question(netns: str, tmp_path: Path, extra: list[str]) -> None:
    states = write(tmp_path / "cut.yaml", CUT)
    code, out = on_pty(netns, converge_args(states, tmp_path, *extra), None, tmp_path)
    assert code == 0, out
    assert "Do you want" not in out
    assert policy(netns) == ("DROP" if extra == ["--yes"] else "ACCEPT")


def test_guard_does_not_ask_for_another_root_or_harmless_states(netns: str,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    states = write(tmp_path / "cut.yaml", CUT)
    args = ["converge", "--root", str(root), str(states)]
    code, out = on_pty(netns, args, None, tmp_path)
    assert code == 0 and "Do you want" not in out, out
    assert policy(netns) == "DROP"
    in_netns(netns, ["iptables", "-P", "OUTPUT", "ACCEPT"])
    in_netns(netns, ["iptables", "-F", "OUTPUT"])
    harmless = write(tmp_path / "harmless.yaml", HARMLESS)
    code, out = on_pty(netns, converge_args(harmless, tmp_path), None, tmp_path)
    assert code == 0 and "Do you want" not in out, out


def test_without_a_terminal_it_proceeds_as_today(netns: str, tmp_path: Path) -> None:
    """The container's entrypoint: no terminal, no question."""
    states = write(tmp_path / "cut.yaml", CUT)
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "statekit",
         *converge_args(states, tmp_path)], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, env={"PATH": os.environ["PATH"], "STATEKIT_NO_CACHE": "1"}, timeout=60,
        check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Do you want" not in proc.stdout + proc.stderr
    assert policy(netns) == "DROP"


def host_output_chain() -> list[str]:
    return subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_make_try_is_a_shell_in_a_throwaway_namespace_and_root() -> None:
    """Fed on stdin (no terminal): the shell converges the shipped states inside its
    namespace and root; on exit both are gone and the machine's firewall is as before."""
    before = host_output_chain()
    script = ("echo NETNS=$(ip netns identify $$)\necho ROOT=$STATEKIT_ROOT\n"
              "command -v statekit\nstatekit converge $STATES; echo RC=$?\n"
              "iptables -S OUTPUT | head -1\nls $STATEKIT_ROOT/etc/coredns\n")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "try.py")], input=script,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    netns = re.search(r"^NETNS=(ske-\w+-ctr)$", proc.stdout, re.M)
    root = re.search(r"^ROOT=(/\S+)$", proc.stdout, re.M)
    assert netns and root, proc.stdout
    banner = " ".join(proc.stderr.split())  # what its statekit adds, as it runs it
    assert f"--root {root.group(1)} --var upstream_resolvers=[" in banner, proc.stderr
    assert "--var domains=[a.allowed.test]" in banner
    assert "RC=0" in proc.stdout, proc.stdout + proc.stderr
    assert "-P OUTPUT DROP" in proc.stdout
    assert "Corefile" in proc.stdout
    assert netns.group(1) not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                text=True, check=True).stdout
    assert not Path(root.group(1)).exists()
    assert host_output_chain() == before
