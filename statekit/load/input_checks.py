"""Input checks for values that come from the environment, used as template filters.

``{{ env.GRAFANA_INSTANCE_ID | check_digits('GRAFANA_INSTANCE_ID') }}`` returns the value
or raises :class:`InputError`, whose message names the variable and never repeats the
value (it may be a secret). Rendering happens before anything is touched, for every phase,
so a bad value stops the whole converge with exit 3.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from statekit import dnsname
from statekit.digits import digits

_ATTR_KEY = re.compile(r"^[A-Za-z0-9_.\-/]+$")

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
    """An ``https`` URL with a DNS host name or an IP literal, no user info, valid port."""
    text = str(value)
    if _space_or_control(text):
        raise InputError(f"{name}: must not contain spaces or control characters")
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


def _check_host(host: str, name: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not is_dns_name(host):
        raise InputError(f"{name}: the host is neither a DNS name nor an IP address")


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


def check_flag(value: Any, name: str, default: str = "1") -> str:
    """``""`` (the default), ``0`` or ``1``."""
    text = str(value)
    if text == "":
        return default
    if text not in ("0", "1"):
        raise InputError(f"{name}: must be 0 or 1 (or unset for {default})")
    return text


def parse_attributes(value: str, name: str) -> list[tuple[str, str]]:
    """``k=v,k2=v2`` -> pairs; empty keys, missing ``=``, spaces, newlines refused."""
    pairs: list[tuple[str, str]] = []
    for item in value.split(",") if value else []:
        key, sep, val = item.partition("=")
        if not sep:
            raise InputError(f"{name}: {item.strip()[:40]!r} has no '=' (want key=value)")
        if not key or not _ATTR_KEY.match(key):
            raise InputError(f"{name}: empty or invalid key {key[:40]!r}")
        if _space_or_control(val):
            raise InputError(f"{name}: the value of {key!r} contains a space or a "
                             "control character")
        pairs.append((key, val))
    return pairs


def check_attribute_value(value: Any, name: str) -> str:
    text = str(value)
    if _space_or_control(text) or "," in text or "=" in text:
        raise InputError(f"{name}: must not contain spaces, control characters, ',' or '='")
    return text


def merge_attributes(base: Any, operator: Any, name: str = "OTEL_RESOURCE_ATTRIBUTES") -> str:
    """Merge ``base`` (a mapping, e.g. the fly.* attributes) with the operator's
    ``k=v,...`` string: the operator wins on a conflict, each key appears once, base keys
    first in their order."""
    merged = {k: str(v) for k, v in dict(base).items() if v != ""}
    for key, val in parse_attributes(str(operator), name):
        merged[key] = val
    return ",".join(f"{k}={v}" for k, v in merged.items())


FILTERS: dict[str, Callable[..., Any]] = {
    "check_https_url": check_https_url,
    "check_digits": check_digits,
    "check_token": check_token,
    "check_flag": check_flag,
    "check_attribute_value": check_attribute_value,
    "merge_attributes": merge_attributes,
}
