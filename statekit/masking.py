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
    import base64

    raw = secret.encode()
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        lead = (offset * 8 + 5) // 6 if offset else 0  # chars that mix in the prefix
        end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0)  # last mixes the suffix
        fragment = encoded[lead:end]
        if len(fragment) >= _MIN_FRAGMENT:
            forms.add(fragment)
    return forms


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if not secret or len(secret) < 4:
                continue
            self._values[secret] = tag(secret)
            for form in base64_forms(secret):
                self._values.setdefault(form, tag(secret))
        if self._values:
            import re  # only when there is something to mask: not on every start

            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(a) for a in alternatives))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: self._values[m.group(0)], text)
