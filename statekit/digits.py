"""Small checks on text that several parsers share."""

from __future__ import annotations


def digits(text: str) -> bool:
    """``text`` is a non-empty run of ASCII digits. ``str.isdigit`` alone also accepts
    characters such as superscript ones (``"¹"``) that ``int()`` refuses."""
    return text.isascii() and text.isdigit()
