"""Secrets and their base64 forms never survive the masker."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from statekit.out.masking import Masker, tag

TOKEN = "glc_eyJvIjoiMTIzNDU2Nzg5MCIsIm4iOiJzdGF0ZWtpdC10ZXN0In0="


def test_plain_secret_is_masked_with_a_short_hash() -> None:
    masked = Masker([TOKEN])(f"token={TOKEN};")
    assert TOKEN not in masked
    assert masked == f"token={tag(TOKEN)};"


def test_basic_auth_header_is_masked() -> None:
    header = "Basic " + base64.b64encode(f"123456:{TOKEN}".encode()).decode()
    masked = Masker([TOKEN])(f"Authorization={header}")
    assert header[6:] not in masked
    assert tag(TOKEN) in masked


@given(prefix=st.binary(max_size=5), suffix=st.binary(max_size=5))
def test_every_base64_alignment_is_caught(prefix: bytes, suffix: bytes) -> None:
    encoded = base64.b64encode(prefix + TOKEN.encode() + suffix).decode()
    masked = Masker([TOKEN])(encoded)
    assert masked != encoded
    assert base64.b64encode(TOKEN.encode()).decode().rstrip("=")[4:-4] not in masked


def test_short_values_are_not_treated_as_secrets() -> None:
    assert Masker(["", "ab"])("ab") == "ab"
