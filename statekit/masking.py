"""Secrets never reach output: every byte printed goes through a :class:`Masker`.

A secret is shown as ``<secret:1a2b3c>``, whatever its length (the loader refuses a
1-character secret: see ``check_secret``): the first 6 hex digits of an HMAC-SHA-256 keyed
with this machine's mask key, so a change stays visible from run to run on one machine,
and nobody without the key (root-only, ``/var/lib/statekit/mask.key`` under ``--root``)
can confirm a guessed value from a log. When the key cannot be had (check mode before the
first converge made it, a user other than root), a secret is shown as ``<secret>``.
Encoded forms are masked whole, not only their middle:

- base64 (standard and URL-safe, padded or not, at each of the alignments the secret can
  have inside it: ``Basic base64(id:token)``): every run of base64 characters whose
  decoding, at any of its four character offsets, contains the secret is replaced
  entirely, so no boundary character that mixes secret bits stays visible;
- hex (lower and upper case) and percent-encoding: replaced like the plain value.

Lazy: the patterns (``re``), the key (a file read) and the tags (``hmac``) are built on
the first text that may hold a secret. For secrets of 6 characters or more a substring
test on the forms any such text must contain (the plain value, hex, percent-encoding and
the middle of each base64 alignment) decides first, so that a run whose output holds no
secret (the 5-minute refresh with telemetry on) reads no key and imports none of them.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable

    from statekit.host.files import FileSystem

MIN_SECRET = 2  # a 1-character secret would mask every occurrence of that character
_MIN_FRAGMENT = 6
_QUICK_MIN = 6  # below this, a secret's base64 has no fixed middle: always mask fully
_B64_RUN = r"[A-Za-z0-9+/_-]{2,}={0,2}"


KEY_PATH = "/var/lib/statekit/mask.key"  # under --root
KEY_SIZE = 32


def tag(value: str) -> str:
    """How a secret value is shown, with this machine's key (see :func:`use_key_file`)."""
    return keyed_tag(value, _KEY.get())


def keyed_tag(value: str, key: bytes | None) -> str:
    """``<secret:HMAC-SHA-256(key, value)[:6 hex]>``, or ``<secret>`` without a key."""
    if key is None:
        return "<secret>"
    import hmac  # imports hashlib: only when a secret is shown

    return f"<secret:{hmac.new(key, value.encode(), 'sha256').hexdigest()[:6]}>"


class _LazyKey:
    """The mask key, fetched on first use (never on a run that shows no secret)."""

    __slots__ = ("fetch", "value")

    def __init__(self) -> None:
        self.fetch: Callable[[], bytes | None] | None = None
        self.value: bytes | None = None

    def get(self) -> bytes | None:
        if self.fetch is not None:
            self.value, self.fetch = self.fetch(), None
        return self.value


#: Without a key (before the command line names the root), a secret shows as ``<secret>``.
_KEY = _LazyKey()


def use_key_file(root: str, *, create: bool) -> None:
    """Take the mask key from :data:`KEY_PATH` under ``root`` (made when missing and
    ``create``: a real converge), on the first secret shown."""
    _KEY.fetch, _KEY.value = (lambda: host_key(root, create=create)), None


def host_key(root: str, *, create: bool) -> bytes | None:
    """The key at :data:`KEY_PATH` under ``root``: 32 bytes in a regular file (never
    through a symlink) owned by us, 0600, in a directory of ours that no one else may
    enter. Missing or unfit and ``create``: a fresh random key is written atomically
    (temporary file, rename; directory 0700) and read back. None when it cannot be had."""
    from statekit.errors import ApplyError
    from statekit.host.files import FileSystem

    fs = FileSystem(root)
    key = _fit_key(fs)
    if key is None and create:
        uid, gid = os.geteuid(), os.getegid()
        try:
            fs.write(KEY_PATH, os.urandom(KEY_SIZE), mode=0o600, uid=uid, gid=gid,
                     dir_mode=0o700, dir_owner=(uid, gid), enforce_dir_mode=True)
        except (OSError, ApplyError):
            return None
        key = _fit_key(fs)
    return key


def _fit_key(fs: FileSystem) -> bytes | None:
    """The key file's content if it is fit to be the key, else None."""
    from statekit.errors import ApplyError

    try:
        read = fs.read(KEY_PATH, KEY_SIZE)
    except (OSError, ApplyError):  # a symlink, a FIFO, too large, unreadable
        return None
    key, parent, uid = read.file, read.parent, os.geteuid()
    if key is None or parent is None or len(key.content) != KEY_SIZE:
        return None
    if key.uid != uid or key.mode & 0o077 or parent.uid != uid or parent.mode & 0o077:
        return None
    return key.content


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


def quick_forms(secret: str) -> set[str]:
    """Strings one of which any text holding ``secret`` in a masked form contains
    (without ``re``, ``base64``, ``urllib``: C modules only)."""
    raw = secret.encode()
    forms = {secret, raw.hex(), raw.hex().upper(), _percent(raw)}
    for form in base64_forms(secret):
        forms |= {form, form.translate(str.maketrans("+/", "-_"))}
    return forms


def _percent(raw: bytes) -> str:
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
    return "".join(chr(b) if b in safe else f"%{b:02X}" for b in raw)


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self._quick: set[str] | None = set()  # None: some secret is too short for it
        self._values: dict[str, str] = {}
        self._raw: dict[bytes, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._runs: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if not secret or secret in self._secrets:
                continue
            self._secrets.append(secret)
            self._pattern = None  # rebuilt on demand
            if self._quick is not None and len(secret) >= _QUICK_MIN:
                self._quick |= quick_forms(secret)
            else:
                self._quick = None

    def _build(self) -> None:
        import re  # only when some text may hold a secret: not on every start

        for secret in self._secrets:
            shown = tag(secret)
            self._values[secret] = shown
            for form in literal_forms(secret):
                self._values.setdefault(form, shown)
            self._raw[secret.encode()] = shown
        alternatives = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(a) for a in alternatives))
        self._runs = re.compile(_B64_RUN)

    def __call__(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        if self._quick is not None and not any(f in text for f in self._quick):
            return text
        if self._pattern is None:
            self._build()
        if self._pattern is None or self._runs is None:
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
