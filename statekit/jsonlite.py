"""JSON without the ``json`` package: its C accelerator (``_json``) only.

``import json`` costs more than 8 ms here (its decoder imports ``re``), as much as a fifth
of a no-op refresh. Every converge records its outcome for ``statekit status`` (a small
JSON file, read and written each time), so the refresh path encodes and decodes with the
same C functions ``json`` uses underneath: strings with ``encode_basestring_ascii``,
documents with ``make_scanner``. Only what those files hold is supported: dicts with
string keys, lists and tuples, strings, ints, finite floats, booleans and None.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_MAX = float("inf")


def dumps(value: Any) -> str:
    """``value`` as JSON text (ASCII, one line)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def _encode(value: Any, out: list[str]) -> None:
    if value is None or value is True or value is False:
        out.append({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, str):
        out.append(_json.encode_basestring_ascii(value))
    elif isinstance(value, int | float):
        if isinstance(value, float) and not -_MAX < value < _MAX:  # nan, inf
            raise ValueError(f"not a JSON number: {value!r}")
        out.append(repr(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON keys are strings, not {type(key).__name__}")
            out.append(("," if index else "") + _json.encode_basestring_ascii(key) + ":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"not JSON data: {type(value).__name__}")


class _Context:
    """What ``_json.make_scanner`` reads off ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}  # noqa: RUF012 -- read by the C scanner, never written here

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")


_SCAN = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed: its attributes
_SPACE = " \t\n\r"


def loads(text: str) -> Any:
    """The document ``text`` holds; ValueError if it is not exactly one JSON value."""
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _SCAN(text, start)
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip(_SPACE):
        raise ValueError("extra data after the JSON document")
    return value
