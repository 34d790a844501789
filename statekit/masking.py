"""Secrets never reach output: every byte printed goes through a :class:`Masker`.

A secret is shown as ``<secret:1a2b3c>`` (a short hash, so a change stays visible),
whatever its length (the loader refuses a 1-character secret: see ``check_secret``).
Encoded forms are masked whole, not only their middle:

- base64 (standard and URL-safe, padded or not, at each of the alignments the secret can
  have inside it: ``Basic base64(id:token)``): every run of base64 characters whose
  decoding, at any of its four character offsets, contains the secret is replaced
  entirely, so no boundary character that mixes secret bits stays visible;
- hex (lower and upper case) and percent-encoding: replaced like the plain value.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable

MIN_SECRET = 2  # a 1-character secret would mask every occurrence of that character
_B64_RUN = r"[A-Za-z0-9+/_-]{2,}={0,2}"


def tag(value: str) -> str:
    """How a secret value is shown."""
    import hashlib

    return f"<secret:{hashlib.sha256(value.encode()).hexdigest()[:6]}>"


def check_secret(name: str, value: str) -> str | None:
    """Why the secret ``value`` of variable ``name`` cannot be used, or None."""
    if value and len(value) < MIN_SECRET:
        return (f"{name}: a secret of {len(value)} character cannot be masked in output"
                f" (every such character would be); use at least {MIN_SECRET} characters,"
                " or leave it unset")
    return None


def literal_forms(secret: str) -> set[str]:
    """The secret as printed plainly, in hex and percent-encoded."""
    from urllib.parse import quote

    raw = secret.encode()
    return {secret, raw.hex(), raw.hex().upper(), quote(secret, safe="")}


def decodings(run: str) -> list[bytes]:
    """``run`` decoded as base64 from each of its first four characters (a secret's
    encoding starts on a 4-character boundary of the whole encoded text, which need not
    be where the run starts)."""
    import base64
    import binascii

    text = run.rstrip("=").translate(str.maketrans("-_", "+/"))
    out = []
    for start in range(min(4, len(text))):
        chunk = text[start:]
        chunk = chunk[: len(chunk) - (len(chunk) % 4 == 1)]
        try:
            out.append(base64.b64decode(chunk + "=" * (-len(chunk) % 4)))
        except binascii.Error:
            continue
    return out


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: dict[str, str] = {}
        self._raw: dict[bytes, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._runs: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if not secret:
                continue
            shown = tag(secret)
            self._values[secret] = shown
            for form in literal_forms(secret):
                self._values.setdefault(form, shown)
            self._raw[secret.encode()] = shown
        if self._values:
            import re  # only when there is something to mask: not on every start

            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(a) for a in alternatives))
            self._runs = re.compile(_B64_RUN)

    def __call__(self, text: str) -> str:
        if self._pattern is None or self._runs is None or not text:
            return text
        text = self._runs.sub(self._encoded, text)
        return self._pattern.sub(lambda m: self._values[m.group(0)], text)

    def _encoded(self, match: re.Match[str]) -> str:
        """The whole base64 run when it encodes a secret, else the run unchanged."""
        run = match.group(0)
        for decoded in decodings(run):
            for raw, shown in self._raw.items():
                if raw in decoded:
                    return shown
        return run
