"""Small checks on text that several parsers share."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def digits(text: str) -> bool:
    """``text`` is a non-empty run of ASCII digits. ``str.isdigit`` alone also accepts
    characters such as superscript ones (``"¹"``) that ``int()`` refuses."""
    return text.isascii() and text.isdigit()


# What shlex.quote leaves bare (its ``[^\w@%+=:,./-]`` test, ASCII only); shlex itself
# imports re, which the no-op path does without.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def shell_quote(arg: str) -> str:
    """``arg`` as a POSIX shell word (what ``shlex.quote`` gives)."""
    if arg and _SAFE.issuperset(arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def shell_join(argv: Iterable[str]) -> str:
    """An argv list as one shell command line (``shlex.join``), for messages."""
    return " ".join(shell_quote(a) for a in argv)
