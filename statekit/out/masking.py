"""Secrets never reach output: every byte printed goes through a :class:`Masker`.

A secret is shown as ``<secret:1a2b3c>`` (a short hash, so a change stays visible). The
masker also catches the secret inside base64 text, at each of the three alignments it
can have there (``Basic base64(id:token)`` contains the token's base64 at an offset).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable

_MIN_FRAGMENT = 6


def tag(value: str) -> str:
    """How a secret value is shown."""
    import hashlib

    return f"<secret:{hashlib.sha256(value.encode()).hexdigest()[:6]}>"


def base64_forms(secret: str) -> set[str]:
    """Substrings that appear in any base64 text that encodes ``secret`` somewhere."""
    import binascii  # the C module: base64.py imports re

    raw = secret.encode()
    forms = set()
    for offset in range(3):
        encoded = binascii.b2a_base64(b"\0" * offset + raw, newline=False).decode().rstrip("=")
        lead = (offset * 8 + 5) // 6 if offset else 0  # chars that mix in the prefix
        end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0)  # last mixes the suffix
        fragment = encoded[lead:end]
        if len(fragment) >= _MIN_FRAGMENT:
            forms.add(fragment)
    return forms


class Masker:
    """Masks the secrets it was given in any text. Lazy: the patterns are built on the
    first text that holds a secret (a cheap substring test first), so that a run whose
    output holds none (the no-op refresh) imports neither ``re`` nor ``hashlib``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self._values: dict[str, str] | None = {}
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        new = [s for s in secrets if s and len(s) >= 4 and s not in self._secrets]
        if new:
            self._secrets += new
            self._values = None  # rebuilt on demand

    def _build(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for secret in self._secrets:
            values[secret] = ""
            for form in base64_forms(secret):
                values.setdefault(form, "")
        self._values = values
        self._pattern = None
        return values

    def __call__(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        values = self._values if self._values is not None else self._build()
        if not any(v in text for v in values):
            return text
        if self._pattern is None:
            import re  # only when some text holds a secret

            by_secret = {}
            for secret in self._secrets:
                by_secret[secret] = tag(secret)
                for form in base64_forms(secret):
                    by_secret.setdefault(form, tag(secret))
            self._values = by_secret
            alternatives = sorted(by_secret, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(a) for a in alternatives))
        tags = self._values
        return self._pattern.sub(lambda m: tags[m.group(0)] if tags else "", text)
