"""A hostile upstream resolver cannot open the lockdown (issue 19, items 1 and 9).

The shipped states boot a container in the sandbox (tests/e2e/harness.py) with a hostile
resolver (tests/e2e/hostile_dns.py, on 9.9.9.9 in the "internet" namespace) among
their ``upstream_resolvers``. It answers the test allowlist (a, b, c.allowed.test)
correctly, and sends, for other allowlisted names:

- an A record whose RDLENGTH says 4 and whose datagram ends 2 bytes later (item 1: it
  made ``inet_ntop`` raise ``ValueError``, the allowlist state and the purged OUTPUT
  chain failed with "internal error", and no ``iptables-restore`` ran: OUTPUT stayed
  ACCEPT at first boot);
- 4 KB of CNAMEs (item 9: 1 to 3 s of CPU each for a parser that follows CNAMEs in a
  loop over the records, while the deadline was checked only between datagrams: the
  healthy names, whose replies came 0.2 s later, timed out and were not let through at
  first boot).

At first boot and at refresh: OUTPUT's policy is DROP, the healthy names connect and are
answered by 127.0.0.53, what is on no allowlist does not connect, and no state reports
"internal error". The hostile names' state fails and says why; a name the next resolver
knows resolves through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    ALLOWED_HOSTS,
    HOSTILE_DNS,
    NOT_ALLOWED_ADDR,
    SPARE_ADDRS,
    UPSTREAM_DNS,
    Sandbox,
)
from tests.e2e.lockdown import Lockdown, Result
from tests.test_lockdown_cases import blocked, connects, local_answer

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

TRUNCATED = "truncated.hostile.test"
CNAMES = tuple(f"cnames{i}.hostile.test" for i in range(1, 7))
DELAY = 0.2  # the healthy answers come this much after the hostile ones


@pytest.fixture
def world(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Lockdown]:
    clean_sandbox.reset_hosts()
    clean_sandbox.start_hostile_dns(ALLOWED_HOSTS, truncated=[TRUNCATED], cnames=CNAMES,
                                    delay=DELAY)
    root = tmp_path / "root"
    root.mkdir()
    yield Lockdown(clean_sandbox, root)
    clean_sandbox.stop_hostile_dns()
    clean_sandbox.reset_hosts()


def hostile_vars(hostile: tuple[str, ...], resolvers: tuple[str, ...]) -> tuple[str, ...]:
    """The allowlist: the ``hostile`` names and the test's; names asked of ``resolvers``
    (the hostile replies come first: the healthy ones are sent ``DELAY`` later)."""
    domains = ", ".join((*hostile, *ALLOWED_HOSTS))
    return ("--var", f"domains=[{domains}]",
            "--var", f"upstream_resolvers=[{', '.join(resolvers)}]")


def assert_closed(world: Lockdown, result: Result, healthy: dict[str, str]) -> None:
    """No internal error; OUTPUT DROP; the ``healthy`` names answered by 127.0.0.53 and
    connect; what is on no allowlist does not."""
    assert result.report is not None, result.output
    assert "internal error" not in result.output, result.output
    assert "Traceback" not in result.output, result.output
    assert world.policy() == "DROP", (world.table(), result.output)
    for name, addr in healthy.items():
        assert local_answer(world, name, [addr]) == [addr], (name, result.output)
        assert connects(world, addr), f"{name} ({addr}) does not connect\n{result.output}"
    assert world.box.dns_query("not-allowed.example.org").rcode == "NXDOMAIN"
    assert blocked(world, NOT_ALLOWED_ADDR)


def assert_failed_names(result: Result, names: tuple[str, ...], why: str) -> None:
    """Exit 1, and the allowlist state's error names each of ``names`` with ``why``."""
    assert result.rc == 1, result.output
    errors = result.errors()
    for name in names:
        line = next((ln for ln in errors.split("; ") if repr(name) in ln), "")
        assert why in line, (name, errors)


def test_a_truncated_a_record_leaves_the_lockdown_closed(world: Lockdown) -> None:
    extra = hostile_vars((TRUNCATED,), (HOSTILE_DNS,))
    first = world.boot(None, *extra)
    assert_closed(world, first, ALLOWED_HOSTS)
    assert_failed_names(first, (TRUNCATED,), "malformed reply")
    again = world.refresh(None, *extra)
    assert_closed(world, again, ALLOWED_HOSTS)
    assert_failed_names(again, (TRUNCATED,), "malformed reply")


def test_replies_of_cnames_cost_no_other_name_its_answer(world: Lockdown) -> None:
    extra = hostile_vars(CNAMES, (HOSTILE_DNS,))
    first = world.boot(None, *extra)
    assert_closed(world, first, ALLOWED_HOSTS)
    assert_failed_names(first, CNAMES, "malformed reply")
    again = world.refresh(None, *extra)
    assert_closed(world, again, ALLOWED_HOSTS)
    assert_failed_names(again, CNAMES, "malformed reply")


def test_a_malformed_reply_is_one_resolvers_error_the_next_one_answers(
        world: Lockdown) -> None:
    """The hostile resolver first, the healthy one (the sandbox's CoreDNS) second, which
    knows the name the hostile one mangles: it resolves, and nothing fails."""
    world.box.set_hosts({TRUNCATED: SPARE_ADDRS[0]})
    extra = hostile_vars((TRUNCATED, *CNAMES), (HOSTILE_DNS, UPSTREAM_DNS))
    first = world.boot(None, *extra)
    assert_closed(world, first, ALLOWED_HOSTS)
    assert connects(world, SPARE_ADDRS[0]), first.output
    assert_failed_names(first, CNAMES, "NXDOMAIN")  # what the healthy one says of them
    assert TRUNCATED not in first.errors(), first.output
    again = world.refresh(None, *extra)
    assert_closed(world, again, ALLOWED_HOSTS)
    assert connects(world, SPARE_ADDRS[0]), again.output
