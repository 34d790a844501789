"""Name resolution for ``destination_host``: each name on its own, in parallel, bounded.

Two ways to ask, chosen by the state's ``resolvers`` field:

- ``resolvers`` given (the shipped states: the upstream resolvers the firewall lets UDP
  53 reach): statekit sends its own A/AAAA queries over UDP straight to those addresses
  (:mod:`statekit.netfilter.dnsquery`). Nothing local is trusted: a process squatting the
  local DNS address (127.0.0.53 while CoreDNS is down) cannot feed the firewall, and the
  answer is the same before and after the DROP policy is in force.
- no ``resolvers``: the system resolver (``getaddrinfo``), as any program would.

Every name gets its own worker thread and the same deadline; a failed lookup is retried
until then (a DNS server reloading answers a moment later). A name that fails is reported
as data (:class:`Failure`), never as an exception: the caller keeps its last-known
addresses and lets every other name's new addresses in.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from statekit import dnsname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
RETRY_PAUSE = 0.25


class Failure:
    """Why one name did not resolve (``reason`` never holds anything secret)."""

    __slots__ = ("name", "reason")

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def __repr__(self) -> str:
        return f"Failure({self.name!r}, {self.reason!r})"

    def __str__(self) -> str:
        return f"cannot resolve {self.name!r}: {self.reason}"


def check_name(name: str) -> str:
    """The normalised DNS name (lower case, no trailing dot); ValueError if invalid."""
    try:
        norm = dnsname.normalise(name)
    except ValueError:
        raise ValueError(f"{name!r} is not a valid DNS name (labels of letters, digits and "
                         "hyphens, at most 63 bytes each, 253 in all)") from None
    if norm.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"{name!r} is not a valid DNS name (its last label is numeric)")
    return norm


def resolve_each(names: Iterable[str], families: Sequence[str], timeout: float,
                 resolvers: Sequence[str] = ()) -> dict[str, tuple[str, ...] | Failure]:
    """Every name's answer, all asked at once, none waiting past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    wanted = tuple(families)
    results: dict[str, tuple[str, ...] | Failure] = {}
    lookup = _via(resolvers)
    workers = []
    for name in names:
        def work(name: str = name) -> None:
            results[name] = _resolve_one(name, wanted, deadline, lookup)

        thread = threading.Thread(target=work, daemon=True, name=f"resolve {name}")
        thread.start()
        workers.append((name, thread))
    for name, thread in workers:
        thread.join(max(deadline - time.monotonic(), 0) + 0.5)
        if name not in results:
            results[name] = Failure(name, "timed out")
    return {name: results[name] for name, _ in workers}


def _via(resolvers: Sequence[str]) -> Callable[[str, tuple[str, ...], float], list[str]]:
    if not resolvers:
        return _system
    from statekit.netfilter import dnsquery

    def ask(name: str, families: tuple[str, ...], timeout: float) -> list[str]:
        return dnsquery.addresses(name, families, resolvers, timeout)

    return ask


def _resolve_one(name: str, families: tuple[str, ...], deadline: float,
                 lookup: Callable[[str, tuple[str, ...], float], list[str]],
                 ) -> tuple[str, ...] | Failure:
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Failure(name, last if last != "no answer" else "timed out")
        try:
            found = _sorted(lookup(name, families, remaining))
            if found:
                return found
            last = "no address of family " + " or ".join(families)
        except OSError as exc:
            last = exc.strerror or str(exc)
        except LookupError as exc:  # dnsquery: NXDOMAIN (final), SERVFAIL, ...
            last = str(exc)
            if getattr(exc, "final", False):
                return Failure(name, last)
        if time.monotonic() + RETRY_PAUSE >= deadline:
            return Failure(name, last)
        time.sleep(RETRY_PAUSE)


def _sorted(addresses: Iterable[str]) -> tuple[str, ...]:
    addrs = {ipaddress.ip_address(a) for a in addresses}
    return tuple(str(a) for a in sorted(addrs, key=lambda a: (a.version, int(a))))


def _system(name: str, families: tuple[str, ...], timeout: float) -> list[str]:
    """``getaddrinfo`` (it has no timeout of its own: the worker thread is the bound)."""
    family = _FAMILIES[families[0]] if len(families) == 1 else socket.AF_UNSPEC
    infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    wanted = {_FAMILIES[f] for f in families}
    return [str(i[4][0]).split("%")[0] for i in infos if i[0] in wanted]
