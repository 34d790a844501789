"""``OTEL_RESOURCE_ATTRIBUTES`` written so that every OpenTelemetry SDK reads it back exactly.

The carrier is ``key=value`` pairs joined by ``,``, each value percent-encoded (UTF-8
bytes as ``%XX``), as the OTel environment-variable spec and the W3C Baggage format say.
The readers differ, and one bad pair costs everything in the JS SDK, so the written form
is the narrow one that all of them accept:

- JS ``@opentelemetry/resources`` 3.x splits at ``,`` and ``=`` (exactly two parts),
  trims, ``decodeURIComponent``\\ s key and value (a bad escape or a non-UTF-8 byte
  throws), and refuses a decoded key or value over 255 characters: any error drops ALL
  attributes. Versions 1.x/2.x (still bundled by some agents) take only W3C baggage
  octets (printable ASCII without ``,``, ``;``, ``\\``, no space), at most 255 of them
  *before* decoding, no empty value, and strip a leading/trailing ``"``: again any error
  drops all.
- Python ``opentelemetry-sdk`` splits at ``,`` and the first ``=``, strips, and
  ``urllib.parse.unquote``\\ s the value (leniently: a bad escape passes through, a
  non-UTF-8 byte becomes U+FFFD); the key is taken as written.

Hence: keys of letters, digits, ``.``, ``_``, ``-``, ``/`` only (no reader decodes them
alike, so none may need encoding); values non-empty, every character outside
``A-Z a-z 0-9 - . _ ~ / : @`` percent-encoded, at most 255 characters once encoded (which
also bounds the decoded length). A value that cannot meet this is refused, never written.
"""

from __future__ import annotations

MAX_LENGTH = 255
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/:@")
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/")
_HEX = frozenset("0123456789abcdefABCDEF")


def valid_key(key: str) -> bool:
    """Letters, digits, ``.``, ``_``, ``-``, ``/``; 1 to 255 characters."""
    return 0 < len(key) <= MAX_LENGTH and _KEY_CHARS.issuperset(key)


def encode(value: str) -> str:
    """``value`` (the meant text) in the written form; ValueError if it cannot be carried."""
    if not value:
        raise ValueError("is empty (the JS SDK before 3.0 drops every attribute then)")
    if not value.isprintable():
        raise ValueError("contains a control or non-printable character")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    text = "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in raw)
    if len(text) > MAX_LENGTH:
        raise ValueError(f"is longer than {MAX_LENGTH} characters once percent-encoded "
                         f"({len(text)})")
    return text


def decode(text: str) -> str:
    """The operator's percent-encoded ``text`` -> the meant text, strictly: every ``%``
    starts a two-hex-digit escape and the bytes are UTF-8; ValueError otherwise."""
    data = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                raise ValueError("has a '%' that does not start a %XX escape "
                                 "(write a literal '%' as %25)")
            data.append(int(pair, 16))
            i += 3
        else:
            try:
                data += text[i].encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("is not valid UTF-8") from None
            i += 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("has %XX escapes that are not UTF-8 (the JS SDK drops every "
                         "attribute then)") from None
