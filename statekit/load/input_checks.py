"""Input checks for values that come from the environment, used as template filters.

``{{ env.GRAFANA_INSTANCE_ID | check_digits('GRAFANA_INSTANCE_ID') }}`` returns the value
or raises :class:`InputError`, whose message names the variable and never repeats the
value (it may be a secret). Rendering happens before anything is touched, for every phase,
so a bad value stops the whole converge with exit 3.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from statekit import dnsname
from statekit.digits import digits
from statekit.load.resource_attributes import decode, encode, valid_key
from statekit.load.urlhost import ipv4_number

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _space_or_control(text: str) -> bool:
    """Any whitespace or non-printable character, Unicode ones included (U+0085, U+2028,
    U+00A0, U+FEFF...): some readers split lines or words at them."""
    return any(c.isspace() or not c.isprintable() for c in text)


class InputError(ValueError):
    """An environment value (or --var) that statekit refuses; the message names it."""


def is_dns_name(name: str) -> bool:
    """Letters, digits and hyphens in labels of at most 63 bytes, 253 in all."""
    try:
        dnsname.normalise(name)
    except ValueError:
        return False
    return True


def check_https_url(value: Any, name: str) -> str:
    """An ``https`` URL with a DNS host name or a public IPv4 address: no user info, no
    query, no fragment, a valid port; returned unchanged (its host's case does not
    matter: every reader lowers it)."""
    text = str(value)
    if _space_or_control(text):
        raise InputError(f"{name}: must not contain spaces or control characters")
    if "?" in text or "#" in text:
        raise InputError(f"{name}: must not contain a query ('?') or a fragment ('#'): "
                         "give the bare endpoint, e.g. https://otlp-gateway-....grafana.net/otlp")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InputError(f"{name}: not a valid URL (bad port or address)") from None
    if parts.scheme == "http":
        raise InputError(f"{name}: http is refused, the token would travel in clear; "
                         "use https")
    if parts.scheme != "https":
        raise InputError(f"{name}: must be an https:// URL")
    if "@" in parts.netloc:
        raise InputError(f"{name}: must not contain user info (user:password@)")
    if port == 0:
        raise InputError(f"{name}: port 0 is not a valid port")
    _check_host(parts.hostname or "", name)
    return text


# Address space the endpoint may not point into (SPEC fact 2), with the word for it.
_REFUSED_NETS = (("0.0.0.0/8", "unspecified"), ("127.0.0.0/8", "loopback"),
                 ("169.254.0.0/16", "link-local"), ("10.0.0.0/8", "private"),
                 ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"))


def _check_host(host: str, name: str) -> None:
    if ":" in host:
        raise InputError(f"{name}: an IPv6 address literal is refused; use the gateway's "
                         "DNS name")
    if "%" in host:
        raise InputError(f"{name}: the host must not be percent-encoded")
    if host.endswith("."):
        raise InputError(f"{name}: the host ends with a dot; write it without the "
                         "trailing dot")
    try:
        number = ipv4_number(host)
    except ValueError:
        raise InputError(f"{name}: the host looks numeric but is no valid IPv4 "
                         "address") from None
    if number is None:
        if not is_dns_name(host):
            raise InputError(f"{name}: the host is neither a DNS name nor an IP address")
        if host == "localhost" or host.endswith(".localhost"):
            raise InputError(f"{name}: the host is a localhost name (loopback); give the "
                             "gateway's public DNS name")
        return
    address = ipaddress.IPv4Address(number)
    for net, kind in _REFUSED_NETS:
        if address in ipaddress.IPv4Network(net):
            raise InputError(f"{name}: the host is {address}, in {kind} address space ({net}); "
                             "give the gateway's public DNS name")
    if str(address) != host:
        raise InputError(f"{name}: the host is {address} written in a non-standard form; "
                         f"write it as {address}")


def check_digits(value: Any, name: str) -> str:
    text = str(value)
    if not digits(text):
        raise InputError(f"{name}: must be digits only")
    return text


def check_token(value: Any, name: str) -> str:
    """Printable ASCII without whitespace (the value itself is never shown)."""
    text = str(value)
    if not text or not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise InputError(f"{name}: must be printable, without whitespace")
    return text


_FLAG_WORDS = {"1": "1", "true": "1", "yes": "1", "on": "1",
               "0": "0", "false": "0", "no": "0", "off": "0"}


def check_flag(value: Any, name: str, default: str = "1") -> str:
    """``1``/``0``: 1, true, yes, on and 0, false, no, off (any case, spaces trimmed);
    unset or empty is ``default``."""
    text = str(value).strip(" \t").lower()
    if text == "":
        return default
    if text not in _FLAG_WORDS:
        raise InputError(f"{name}: must be 1 or 0 (true/false, yes/no, on/off are read "
                         f"as 1/0; unset means {default})")
    return _FLAG_WORDS[text]


def parse_attributes(value: str, name: str) -> list[tuple[str, str]]:
    """The operator's ``k=v,k2=v2`` (values percent-encoded, see
    :mod:`statekit.load.resource_attributes`) -> ``(key, decoded value)`` pairs. Spaces
    around ``,`` and ``=`` are trimmed and empty items skipped; a space inside a value
    must be written ``%20``. Messages name the key or the item's position, never a value
    (it could be a secret)."""
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(value.split(","), 1):
        if not item.strip(" "):
            continue
        key, sep, val = (part.strip(" ") for part in item.partition("="))
        if not sep:
            raise InputError(f"{name}: item {index} has no '=' (want key=value)")
        if not valid_key(key):
            raise InputError(f"{name}: item {index}: empty or invalid key {key[:40]!r} "
                             "(letters, digits, '.', '_', '-', '/'; at most 255)")
        if _space_or_control(val):
            raise InputError(f"{name}: the value of {key!r} contains a space or a "
                             "control character (write a space as %20)")
        if "=" in val:
            raise InputError(f"{name}: the value of {key!r} contains '='; write it as %3D")
        try:
            pairs.append((key, _carried(decode(val))))
        except ValueError as exc:
            raise InputError(f"{name}: the value of {key!r} {exc}") from None
    return pairs


def _carried(text: str) -> str:
    """``text`` if it can be written (see :func:`statekit.load.resource_attributes.encode`)."""
    encode(text)
    return text


def check_attribute_value(value: Any, name: str) -> str:
    """A raw attribute value (FLY_APP_NAME, FLY_MACHINE_ID): no spaces or control
    characters; ``,``, ``=``, ``%`` and the like are fine (they are percent-encoded)."""
    text = str(value)
    if text == "":
        return text
    if _space_or_control(text):
        raise InputError(f"{name}: must not contain spaces or control characters")
    try:
        encode(text)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    return text


def merge_attributes(base: Any, operator: Any, name: str = "OTEL_RESOURCE_ATTRIBUTES") -> str:
    """Merge ``base`` (a mapping of raw values, e.g. the fly.* attributes) with the
    operator's encoded ``k=v,...`` string: the operator wins on a conflict, each key
    appears once, base keys first in their order; every value written percent-encoded."""
    merged = {k: str(v) for k, v in dict(base).items() if v != ""}
    for key, val in parse_attributes(str(operator), name):
        merged[key] = val
    return ",".join(f"{k}={encode(v)}" for k, v in merged.items())


FILTERS: dict[str, Callable[..., Any]] = {
    "check_https_url": check_https_url,
    "check_digits": check_digits,
    "check_token": check_token,
    "check_flag": check_flag,
    "check_attribute_value": check_attribute_value,
    "merge_attributes": merge_attributes,
}
