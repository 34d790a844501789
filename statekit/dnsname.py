"""The one rule for DNS host names, shared by every check of one (zones, firewall hosts,
URLs in the environment): labels of letters, digits and inner hyphens, at most 63 bytes
each and 253 in all; case-insensitive; a trailing dot is accepted and dropped."""

from __future__ import annotations

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


def normalise(name: str) -> str:
    """``name`` in lower case without its trailing dot; ValueError if it is no DNS name."""
    import re  # names are checked at load, never on the cached no-op path

    norm = name.lower().removesuffix(".")
    if not norm or len(norm) > 253 or not all(re.fullmatch(_LABEL, x) for x in norm.split(".")):
        raise ValueError(name)
    return norm
