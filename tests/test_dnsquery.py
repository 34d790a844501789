"""The DNS stub client against the real CoreDNS, inside a private network namespace.

Two upstreams on 127.0.0.11 and 127.0.0.12 (the ``hosts`` plugin, a CNAME through the
``template`` plugin) and a dead address: the answers statekit's firewall is built from,
each name asked of the resolvers directly. A hostile resolver on 127.0.0.13
(tests/e2e/hostile_dns.py: an A record cut short, 4 KB of CNAMEs): its malformed reply
is its error, and the next resolver answers. And when the system will not send (no
route, a firewall), the reason in words, at once (issue 22, item 6).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, dns_query, in_netns

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]
STAGGER = 0.3  # dnsquery.STAGGER

COREFILE = """\
.:53 {
    bind 127.0.0.11 127.0.0.12
    hosts {
        192.0.2.7 a.example.test
        192.0.2.8 a.example.test
        2001:db8::7 a.example.test
        192.0.2.9 b.example.test
        192.0.2.10 truncated.hostile.test
    }
    template IN A alias.example.test {
        answer "alias.example.test. 60 IN CNAME a.example.test."
    }
    template IN ANY gone.example.test {
        rcode NXDOMAIN
    }
}
"""

PROBE = """
import json, sys, time
from statekit.netfilter import resolve
names, families, resolvers, timeout = json.loads(sys.argv[1])
start = time.monotonic()
out = resolve.resolve_each(names, families, timeout, resolvers)
print(json.dumps({"took": time.monotonic() - start, "answers": {
    n: (list(a) if isinstance(a, tuple) else "FAIL " + a.reason) for n, a in out.items()}}))
"""


def ask(netns: str, names: list[str], resolvers: list[str], families: tuple[str, ...] = (
        "ipv4",), timeout: float = 2.0) -> dict[str, Any]:
    arg = json.dumps([names, list(families), resolvers, timeout])
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, arg],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def upstream(netns: str, tmp_path: Path, coredns: Callable[..., Any]) -> str:
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE)
    coredns(corefile)
    ready = ("NOERROR", ["192.0.2.7", "192.0.2.8"])
    assert dns_query(netns, "127.0.0.12", "a.example.test", expect=ready, timeout=15) == ready
    return netns


def test_names_are_asked_at_once_with_cname_and_families(upstream: str) -> None:
    out = ask(upstream, ["a.example.test", "b.example.test"], ["127.0.0.11"],
              ("ipv4", "ipv6"))
    assert out["answers"]["a.example.test"] == ["192.0.2.7", "192.0.2.8", "2001:db8::7"]
    assert out["answers"]["b.example.test"] == ["192.0.2.9"]  # AAAA: NOERROR, empty
    alias = ask(upstream, ["alias.example.test"], ["127.0.0.11"])
    assert alias["answers"]["alias.example.test"] == ["192.0.2.7", "192.0.2.8"]


def test_nxdomain_is_final_and_quick_while_others_resolve(upstream: str) -> None:
    out = ask(upstream, ["gone.example.test", "a.example.test"], ["127.0.0.11"], timeout=5)
    assert out["answers"]["gone.example.test"] == "FAIL NXDOMAIN"
    assert out["answers"]["a.example.test"] == ["192.0.2.7", "192.0.2.8"]
    assert out["took"] < 2  # not retried until the deadline


def test_a_dead_resolver_beside_a_live_one_costs_nothing(upstream: str) -> None:
    out = ask(upstream, ["a.example.test"], ["127.0.0.99", "127.0.0.12"], timeout=3)
    assert out["answers"]["a.example.test"] == ["192.0.2.7", "192.0.2.8"]
    assert out["took"] < 1.5


def test_no_resolver_answering_times_out_within_the_bound(upstream: str) -> None:
    out = ask(upstream, ["a.example.test"], ["127.0.0.99"], timeout=1.5)
    assert out["answers"]["a.example.test"].startswith("FAIL ")
    assert 1.4 < out["took"] < 3


# --- a hostile resolver ------------------------------------------------------------------

HOSTILE = "127.0.0.13"


@pytest.fixture
def hostile(upstream: str, tmp_path: Path) -> Iterator[str]:
    """tests/e2e/hostile_dns.py on 127.0.0.13 beside the CoreDNS upstreams."""
    ready = tmp_path / "hostile.ready"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", upstream, sys.executable, "-I",
         str(REPO / "tests/e2e/hostile_dns.py"), "--listen", f"{HOSTILE}:53",
         "--answer", "a.example.test=192.0.2.7", "--truncated", "truncated.hostile.test",
         "--cnames", "cnames.hostile.test", "--ready-file", str(ready)])
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no hostile DNS"
            time.sleep(0.05)
        yield upstream
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_a_malformed_reply_is_the_resolvers_error_and_the_next_one_answers(
        hostile: str) -> None:
    names = ["truncated.hostile.test", "cnames.hostile.test", "a.example.test"]
    alone = ask(hostile, names, [HOSTILE], timeout=1.5)["answers"]
    assert alone == {
        "truncated.hostile.test":
            "FAIL malformed reply (a record's data runs past the end) (from 127.0.0.13)",
        "cnames.hostile.test":
            "FAIL malformed reply (234 answer records, more than 128) (from 127.0.0.13)",
        "a.example.test": ["192.0.2.7"]}
    both = ask(hostile, ["truncated.hostile.test", "a.example.test"], [HOSTILE, "127.0.0.12"],
               timeout=3)
    assert both["answers"] == {"truncated.hostile.test": ["192.0.2.10"],
                               "a.example.test": ["192.0.2.7"]}
    assert both["took"] < 1.5  # the next resolver asked after the stagger, not a deadline
    worse = ask(hostile, ["cnames.hostile.test"], [HOSTILE, "127.0.0.12"], timeout=1.5)
    assert worse["answers"]["cnames.hostile.test"] == (
        "FAIL 127.0.0.13: malformed reply (234 answer records, more than 128), "
        "127.0.0.12: SERVFAIL")


# --- the system says no: in words, at once -----------------------------------------------------

def test_no_route_to_any_resolver_is_said_in_words_at_once(netns: str) -> None:
    """The namespace has no route but loopback (a machine offline)."""
    out = ask(netns, ["example.com", "example.org"], ["8.8.8.8", "1.1.1.1"], timeout=5)
    reason = "FAIL no resolver reachable (8.8.8.8, 1.1.1.1): network unreachable"
    assert out["answers"] == {"example.com": reason, "example.org": reason}
    assert out["took"] < 0.5


def test_a_firewall_that_drops_the_query_is_said_and_the_next_resolver_asked_at_once(
        upstream: str) -> None:
    in_netns(upstream, ["iptables", "-A", "OUTPUT", "-d", "127.0.0.11", "-p", "udp",
                        "--dport", "53", "-j", "DROP"])
    out = ask(upstream, ["a.example.test"], ["127.0.0.11"], timeout=5)
    assert out["answers"]["a.example.test"] == (
        "FAIL no resolver reachable (127.0.0.11): sending refused by the local firewall")
    assert out["took"] < 0.5
    both = ask(upstream, ["a.example.test"], ["127.0.0.11", "127.0.0.12"], timeout=5)
    assert both["answers"]["a.example.test"] == ["192.0.2.7", "192.0.2.8"]
    assert both["took"] < STAGGER  # not asked after the stagger: the first cannot be asked


def test_no_listener_says_connection_refused(upstream: str) -> None:
    out = ask(upstream, ["a.example.test"], ["127.0.0.99"], timeout=1.5)
    assert out["answers"]["a.example.test"] == (
        "FAIL no resolver reachable (127.0.0.99): connection refused (nothing listens on "
        "port 53)")
