"""How Node's WHATWG URL parser (and the C resolver's ``inet_aton``) read a URL host that
looks numeric: ``127.1``, ``2130706433``, ``0x7f000001`` and ``0177.0.0.1`` are all
127.0.0.1 to them, while Python's ``ipaddress`` takes them for no address at all.

:func:`ipv4_number` follows the URL Standard's "ends in a number" and "IPv4 parser"
steps (https://url.spec.whatwg.org/#concept-ipv4-parser), so a check can see the address
the agent would really connect to.
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if last and _DIGITS.issuperset(last):
        return True
    return last[:2] in ("0x", "0X") and _HEX.issuperset(last[2:])


def _number(part: str) -> int:
    """One dot-separated part: ``0x`` hex, leading-``0`` octal, else decimal."""
    if not part:
        raise ValueError(part)
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if not part:
        return 0
    allowed = {10: _DIGITS, 8: frozenset("01234567"), 16: _HEX}[radix]
    if not allowed.issuperset(part):
        raise ValueError(part)
    return int(part, radix)


def ipv4_number(host: str) -> int | None:
    """The 32-bit address a WHATWG parser reads in ``host``; None when ``host`` does not
    end in a number (a domain name); ValueError when it does but is no valid address
    (Node refuses such a URL)."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if not _ends_in_number(labels):
        return None
    if len(labels) > 4:
        raise ValueError(host)
    numbers = [_number(p) for p in labels]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(host)
    address = numbers[-1]
    for index, n in enumerate(numbers[:-1]):
        address += n << (8 * (3 - index))
    return address
