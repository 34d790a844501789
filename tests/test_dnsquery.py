"""The DNS stub client against the real CoreDNS, inside a private network namespace.

Two upstreams on 127.0.0.11 and 127.0.0.12 (the ``hosts`` plugin, a CNAME through the
``template`` plugin) and a dead address: the answers statekit's firewall is built from,
each name asked of the resolvers directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, dns_query

pytestmark = pytest.mark.netns

COREFILE = """\
.:53 {
    bind 127.0.0.11 127.0.0.12
    hosts {
        192.0.2.7 a.example.test
        192.0.2.8 a.example.test
        2001:db8::7 a.example.test
        192.0.2.9 b.example.test
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
