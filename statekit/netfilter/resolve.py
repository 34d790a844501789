"""Name resolution for ``destination_host``: the system resolver, bounded in time.

``getaddrinfo`` runs in a daemon worker thread so that a stuck resolver cannot hold the
converge; failed lookups are retried until the deadline (a DNS server reloading answers
a moment later). DNS names are validated here too (:func:`check_name`).
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
import time
from collections.abc import Iterable

from statekit import dnsname

_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
RETRY_PAUSE = 0.25


class ResolveError(Exception):
    """A name did not resolve (to an address of a wanted family) within the bound."""


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


def resolve(names: Iterable[str], families: Iterable[str],
            timeout: float) -> dict[str, tuple[str, ...]]:
    """Each name's addresses of the wanted families, sorted; ResolveError on failure."""
    wanted = tuple(families)
    deadline = time.monotonic() + timeout
    return {name: _resolve_one(name, wanted, deadline) for name in names}


def _resolve_one(name: str, families: tuple[str, ...], deadline: float) -> tuple[str, ...]:
    family = _FAMILIES[families[0]] if len(families) == 1 else socket.AF_UNSPEC
    last = "no answer"
    while True:
        try:
            found = _addresses(_lookup(name, family, deadline - time.monotonic()), families)
            if found:
                return found
            last = "no address of family " + " or ".join(families)
        except (OSError, ResolveError) as exc:
            last = str(exc)
        if time.monotonic() + RETRY_PAUSE >= deadline:
            raise ResolveError(f"cannot resolve {name!r}: {last}")
        time.sleep(RETRY_PAUSE)


def _addresses(infos: list[tuple[int, str]], families: tuple[str, ...]) -> tuple[str, ...]:
    addrs = {ipaddress.ip_address(a) for f, a in infos if f in {_FAMILIES[x] for x in families}}
    return tuple(str(a) for a in sorted(addrs, key=lambda a: (a.version, int(a))))


def _lookup(name: str, family: int, timeout: float) -> list[tuple[int, str]]:
    box: queue.Queue[list[tuple[int, str]] | OSError] = queue.Queue(1)

    def work() -> None:
        try:
            infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
            box.put([(int(i[0]), str(i[4][0]).split("%")[0]) for i in infos])
        except OSError as exc:
            box.put(exc)

    threading.Thread(target=work, daemon=True, name=f"resolve {name}").start()
    try:
        result = box.get(timeout=max(timeout, 0.01))
    except queue.Empty:
        raise ResolveError("timed out") from None
    if isinstance(result, OSError):
        raise result
    return result
