"""The lockdown tests' helpers: boot the shipped states in the sandbox, read the result.

A :class:`Lockdown` is one container (a temporary ``--root`` in the sandbox's container
namespace) converged with the shipped ``states/`` and the test allowlist (``a``, ``b``,
``c.allowed.test``). The boot is the entrypoint's: ``converge --phase network`` (names
resolve through the upstream resolvers, no local DNS yet), then the container's CoreDNS
started on the Corefile statekit wrote; a refresh is ``converge --phase network`` again
with the container resolving through 127.0.0.53.

:func:`reference_chain` is the reference container's OUTPUT chain (issue 12), in
iptables-save form without the statekit comments, for a set of allowlisted addresses;
with ``statekit``, as the shipped states write it: DNS to the upstream resolvers for
root only (an owner match), everyone else's dropped above ESTABLISHED (issue 20), and
each drop logged to NFLOG first (issue 21: `statekit drops` sees every drop).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO, record_output
from tests.e2e.harness import (
    ALLOWED_HOSTS,
    LOCAL_DNS,
    UPSTREAM_RESOLVERS,
    Resolver,
    Sandbox,
)

STATES = str(REPO / "states")
DOMAINS = tuple(ALLOWED_HOSTS)
VARS = ("--var", f"domains=[{', '.join(DOMAINS)}]", "--var", "resolve_timeout=2")
GITHUB_RANGES = ("140.82.112.0/20", "185.199.108.0/22", "143.55.64.0/20")
REFERENCE_COREFILE = """\
. {
    bind 127.0.0.53
    log
    errors
    template IN A . {
        rcode NXDOMAIN
    }
    template IN AAAA . {
        rcode NXDOMAIN
    }
}
"""
_COUNTERS = re.compile(r" \[\d+:\d+\]$")
_COMMENT = re.compile(r' -m comment --comment ("[^"]*"|\S+)')


@dataclass
class Result:
    """One finished converge: exit code, output, and the JSON report (if one came)."""

    rc: int
    stdout: str
    stderr: str
    report: Any

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def states(self) -> dict[str, Any]:
        """State id -> its report entry."""
        return {s["id"]: s for s in (self.report or {}).get("states", [])}

    def not_ok(self) -> dict[str, Any]:
        """The states that neither succeeded nor were skipped (failed, degraded...)."""
        return {sid: s for sid, s in self.states().items()
                if s["status"] not in ("ok", "changed", "skipped")}

    def errors(self) -> str:
        """What the states that did not succeed say (error, reason), one a line."""
        return "\n".join(f"{sid}: {s.get('error') or ''} {s.get('reason') or ''}"
                         for sid, s in self.not_ok().items())

    def summary(self) -> dict[str, int]:
        return dict((self.report or {}).get("summary", {}))


@dataclass
class Lockdown:
    """One container's boot and refreshes with the shipped states and the test vars."""

    box: Sandbox
    root: Path

    @property
    def corefile(self) -> Path:
        return self.root / "etc/coredns/Corefile"

    @property
    def pidfile(self) -> Path:
        return self.root / "run/coredns.pid"

    @property
    def env_file(self) -> Path:
        return self.root / "tmp/otel/otel-env"

    def converge(self, *args: str, env: Mapping[str, str] | None = None,
                 resolver: Resolver = "local", phase: str | None = "network") -> Result:
        """``statekit converge --format json`` of the shipped states in the container."""
        argv = ["converge", "--root", str(self.root), "--format", "json", *VARS,
                *(["--phase", phase] if phase else []), *args, STATES]
        proc = self.box.statekit(argv, env=env, resolver=resolver, timeout=90)
        record_output(proc.stdout, proc.stderr)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = None
        return Result(proc.returncode, proc.stdout, proc.stderr, report)

    def boot(self, env: Mapping[str, str] | None = None, *args: str) -> Result:
        """Phase network through the upstream resolvers, then the container's CoreDNS."""
        result = self.converge(*args, env=env, resolver="upstream")
        self.start_dns()
        return result

    def start_dns(self, timeout: float = 5.0) -> bool:
        """The container's CoreDNS on the Corefile statekit wrote; whether 127.0.0.53
        answered within ``timeout`` (a firewall that drops DNS is the test's to report,
        so no error here; a CoreDNS that exits is an error)."""
        self.box.start_container_coredns(self.corefile, self.pidfile, wait_for=None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.box.dns_query("harness-probe.invalid", timeout=0.5).rcode not in (
                    "TIMEOUT", "ERROR"):
                return True
        return False

    def refresh(self, env: Mapping[str, str] | None = None, *args: str) -> Result:
        """The refresh loop's converge: phase network, resolving through 127.0.0.53."""
        return self.converge(*args, env=env, resolver="local")

    def table(self, family: str = "ipv4") -> list[str]:
        """The filter table as iptables-save (ip6tables-save) prints it, without counters
        and ``#`` lines."""
        tool = "ip6tables-save" if family == "ipv6" else "iptables-save"
        out = self.box.run_in_container([tool, "-t", "filter"], resolver=None)
        return [_COUNTERS.sub("", ln) for ln in out.stdout.splitlines()
                if not ln.startswith("#")]

    def chain(self, family: str = "ipv4") -> list[str]:
        """The OUTPUT chain's rules, in order, as iptables-save prints them."""
        return [ln for ln in self.table(family) if ln.startswith("-A OUTPUT ")]

    def policy(self, family: str = "ipv4") -> str:
        """The OUTPUT chain's policy."""
        return next(ln.split()[1] for ln in self.table(family) if ln.startswith(":OUTPUT "))

    def iptables(self, *args: str) -> None:
        """Run ``iptables ARGS`` in the container (a foreign hand), or fail."""
        proc = self.box.run_in_container(["iptables", *args], resolver=None)
        assert proc.returncode == 0, proc.stderr


def bare(rule: str) -> str:
    """``rule`` without its ``-m comment --comment ...`` part."""
    return _COMMENT.sub("", rule)


def comment(rule: str) -> str:
    """The comment of ``rule`` (unquoted), or ``""``."""
    found = _COMMENT.search(rule)
    return found.group(1).strip('"') if found else ""


LOG = "-j NFLOG --nflog-prefix CODETAINER_DROP --nflog-group 100"
BLOCKED = ("169.254.0.0/16", "172.16.0.0/12")


def reference_head(resolvers: Sequence[str] = UPSTREAM_RESOLVERS,
                   statekit: bool = False) -> list[str]:
    """The reference chain down to the GitHub ranges (nothing in it depends on DNS); with
    ``statekit``, as the shipped states write it: the upstream resolvers for root only
    (everyone else's DNS to them dropped above ESTABLISHED) and each drop logged first."""
    owner = " -m owner --uid-owner 0" if statekit else ""
    upstream = [f"-A OUTPUT -d {r}/32 -p udp -m udp --dport 53" for r in resolvers]
    return [
        "-A OUTPUT -o lo -j ACCEPT",
        *(f"-A OUTPUT -d {net} {LOG}" for net in (BLOCKED if statekit else ())),
        *(f"-A OUTPUT -d {net} -j DROP" for net in BLOCKED),
        f"-A OUTPUT -d {LOCAL_DNS}/32 -p udp -m udp --dport 53 -j ACCEPT",
        f"-A OUTPUT -d {LOCAL_DNS}/32 -p tcp -m tcp --dport 53 -j ACCEPT",
        *(f"{rule}{owner} -j ACCEPT" for rule in upstream),
        *(f"{rule} {LOG}" for rule in (upstream if statekit else ())),
        *(f"{rule} -j DROP" for rule in (upstream if statekit else ())),
        "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        *(f"-A OUTPUT -d {net} -p tcp -m tcp --dport 443 -j ACCEPT" for net in GITHUB_RANGES),
    ]


def reference_tail(statekit: bool = False) -> list[str]:
    """The reference chain after the allowlist: drop UDP, log the rest (statekit logs
    the UDP it drops too)."""
    return [*([f"-A OUTPUT -p udp {LOG}"] if statekit else []), "-A OUTPUT -p udp -j DROP",
            f"-A OUTPUT {LOG}"]


def reference_chain(allowed: Iterable[str], otlp: Iterable[tuple[str, int]] = (),
                    statekit: bool = False) -> list[str]:
    """The whole reference OUTPUT chain, without comments; the allowlist's rules sorted
    (their order among themselves is not part of the reference)."""
    return [*reference_head(statekit=statekit),
            *sorted(f"-A OUTPUT -d {addr}/32 -j ACCEPT" for addr in allowed),
            *(f"-A OUTPUT -d {addr}/32 -p tcp -m tcp --dport {port} -j ACCEPT"
              for addr, port in otlp),
            *reference_tail(statekit)]


def comparable_chain(rules: Sequence[str], n_allowed: int,
                     statekit: bool = False) -> list[str]:
    """``rules`` without comments, the ``n_allowed`` rules after the head sorted, as
    :func:`reference_chain` writes them."""
    plain = [bare(r) for r in rules]
    head = len(reference_head(statekit=statekit))
    return [*plain[:head], *sorted(plain[head:head + n_allowed]), *plain[head + n_allowed:]]
