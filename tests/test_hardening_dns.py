"""Hardening 10: DNS squatting. The firewall's names cannot be fed by a local impostor.

While the container's CoreDNS is down, any local user may bind 127.0.0.53:53 (in a
container, unprivileged ports start at 0) and answer every lookup with an address of
their choosing. statekit asks the firewall's names of the configured upstream resolvers
directly (``resolvers:`` on the rules, ``name_resolvers`` in states/network.yaml), from a
connected socket per resolver, so the squatter is never asked. Played for real in the
two-namespace world: the attacker (an unprivileged user, ``setpriv``) runs a DNS responder
on 127.0.0.53 inside the container; a refresh must add none of its addresses.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import ALLOWED_HOSTS, ECHO_PORT, NOT_ALLOWED_ADDR, Sandbox
from tests.e2e.lockdown import Lockdown
from tests.hardening import Attacker, attacker_fixture

__all__ = ["attacker_fixture"]
pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

SQUATTER = f"""
import socket, struct
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.53", 53))
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(4096)
    ident, _, qd = struct.unpack("!HHH", data[:6])
    end = 12
    while data[end]:
        end += data[end] + 1
    question = data[12:end + 5]
    answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(
        "{NOT_ALLOWED_ADDR}")
    reply = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + answer
    sock.sendto(reply, peer)
"""


def test_a_squatter_on_the_local_dns_address_cannot_feed_the_firewall(
        clean_sandbox: Sandbox, tmp_path: Path, attacker: Attacker) -> None:
    box = clean_sandbox
    box.reset_hosts()
    (tmp_path / "root").mkdir()
    world = Lockdown(box, tmp_path / "root")
    assert world.boot().rc == 0
    name, real = next(iter(ALLOWED_HOSTS.items()))

    box.stop_container_coredns()
    subprocess.run(["ip", "netns", "exec", box.container, "sysctl", "-qw",
                    "net.ipv4.ip_unprivileged_port_start=0"], check=True)
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", box.container, "setpriv", f"--reuid={attacker.uid}",
         f"--regid={attacker.gid}", "--clear-groups", "--", sys.executable, "-I", "-c",
         SQUATTER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline() == "ready\n", \
            squatter.stderr.read() if squatter.stderr else ""
        deadline = time.monotonic() + 5
        while box.dns_query(name).answers != [NOT_ALLOWED_ADDR]:  # the attack is live
            assert time.monotonic() < deadline, box.dns_query(name)
            time.sleep(0.2)
        refresh = world.refresh()
        assert refresh.rc == 0, refresh.output
        assert not any(NOT_ALLOWED_ADDR in rule for rule in world.chain())
        assert box.tcp_probe(NOT_ALLOWED_ADDR, ECHO_PORT, timeout=2.0) != "connected"
        assert box.tcp_probe(real, ECHO_PORT, timeout=2.0) == "connected"
        assert world.policy() == "DROP"
        # the control: asking the system resolver (127.0.0.53, the squatter) instead
        # would have let the attacker's address in; the test above could fail
        fed = world.refresh(None, "--var", "name_resolvers=[]")
        assert fed.rc == 0, fed.output
        assert any(NOT_ALLOWED_ADDR in rule for rule in world.chain())
    finally:
        squatter.kill()
        squatter.wait(timeout=5)
        box.reset_container()
