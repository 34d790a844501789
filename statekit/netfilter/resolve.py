"""Name resolution for ``destination_host``: each name on its own, in parallel, bounded.

Two ways to ask, chosen by the state's ``resolvers`` field:

- ``resolvers`` given (the shipped states: the upstream resolvers the firewall lets UDP
  53 reach): statekit sends its own A/AAAA queries over UDP straight to those addresses
  (:mod:`statekit.netfilter.dnsquery`). Nothing local is trusted: a process squatting the
  local DNS address (127.0.0.53 while CoreDNS is down) cannot feed the firewall, and the
  answer is the same before and after the DROP policy is in force.
- no ``resolvers``: the system resolver (``getaddrinfo``), as any program would.

Every name is asked at once and bounded by the same deadline (the stub client's one
``select`` loop; for ``getaddrinfo``, a worker thread per name, retried until the
deadline since a DNS server reloading answers a moment later). A name that fails is
reported as data (:class:`Failure`), never as an exception: the caller keeps its
last-known addresses and lets every other name's new addresses in.
"""

from __future__ import annotations

import _socket
import time

from statekit import dnsname

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_FAMILIES = {"ipv4": _socket.AF_INET, "ipv6": _socket.AF_INET6}
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
    names = list(names)
    if resolvers:
        from statekit.netfilter import dnsquery

        try:
            answers = dnsquery.resolve_all(names, tuple(families), resolvers, timeout)
        except Exception as exc:  # defence in depth: a failure is data, never raised
            why = f"the DNS client failed: {type(exc).__name__}: {exc}"
            return {name: Failure(name, why) for name in names}
        return {name: _answer(name, answers[name], families) for name in names}
    return _system_each(names, tuple(families), timeout)


def _answer(name: str, answer: list[str] | str, families: Sequence[str],
            ) -> tuple[str, ...] | Failure:
    if isinstance(answer, str):
        return Failure(name, answer)
    if not answer:
        return Failure(name, "no address of family " + " or ".join(families))
    return _sorted(answer)


def _sorted(addresses: Iterable[str]) -> tuple[str, ...]:
    """Unique, canonical (inet_ntop's text), IPv4 first, then by address. No ipaddress
    module: this runs on every refresh."""
    packed = set()
    for text in addresses:
        family = _socket.AF_INET6 if ":" in text else _socket.AF_INET
        packed.add((family == _socket.AF_INET6, _socket.inet_pton(family, text)))
    return tuple(_socket.inet_ntop(_socket.AF_INET6 if v6 else _socket.AF_INET, raw)
                 for v6, raw in sorted(packed))


# --- the system resolver: getaddrinfo has no timeout, so each name gets a thread ------


def _system_each(names: list[str], families: tuple[str, ...],
                 timeout: float) -> dict[str, tuple[str, ...] | Failure]:
    import threading

    deadline = time.monotonic() + timeout
    results: dict[str, tuple[str, ...] | Failure] = {}
    workers = []
    for name in names:
        def work(name: str = name) -> None:
            results[name] = _system_one(name, families, deadline)

        thread = threading.Thread(target=work, daemon=True, name=f"resolve {name}")
        thread.start()
        workers.append((name, thread))
    for _name, thread in workers:
        thread.join(max(deadline - time.monotonic(), 0) + 0.5)
    return {name: results.get(name) or Failure(name, "timed out") for name in names}


def _system_one(name: str, families: tuple[str, ...],
                deadline: float) -> tuple[str, ...] | Failure:
    """Retried until the deadline (a DNS server reloading answers a moment later)."""
    last = "timed out"
    while time.monotonic() < deadline:
        try:
            found = _sorted(_getaddrinfo(name, families))
            if found:
                return found
            last = "no address of family " + " or ".join(families)
        except OSError as exc:
            last = exc.strerror or str(exc)
        if time.monotonic() + RETRY_PAUSE >= deadline:
            break
        time.sleep(RETRY_PAUSE)
    return Failure(name, last)


def _getaddrinfo(name: str, families: tuple[str, ...]) -> list[str]:
    family = _FAMILIES[families[0]] if len(families) == 1 else _socket.AF_UNSPEC
    infos = _socket.getaddrinfo(name, None, family, _socket.SOCK_STREAM)
    wanted = {_FAMILIES[f] for f in families}
    return [str(i[4][0]).split("%")[0] for i in infos if i[0] in wanted]
