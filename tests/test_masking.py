"""Secrets and their base64 forms never survive the masker."""

from __future__ import annotations

import base64
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from statekit.out.masking import Masker, tag
from tests.conftest import statekit, write

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


def test_empty_is_no_secret_and_short_secrets_are_masked() -> None:
    assert Masker([""])("ab") == "ab"
    assert Masker(["ab"])("x=ab") == f"x={tag('ab')}"
    assert Masker(["xyz"])("xyz!") == f"{tag('xyz')}!"
    assert Masker(["q"])("q") == tag("q"), "the masker masks even one character"


@given(secret=st.text(min_size=2, max_size=12).filter(lambda s: s.strip()),
       prefix=st.binary(max_size=5), suffix=st.binary(max_size=5),
       urlsafe=st.booleans(), padded=st.booleans())
def test_every_encoded_form_is_masked_whole(secret: str, prefix: bytes, suffix: bytes,
                                            urlsafe: bool, padded: bool) -> None:
    """Whatever the length and alignment: nothing of the encoded text stays visible."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(prefix + secret.encode() + suffix).decode()
    encoded = encoded if padded else encoded.rstrip("=")
    assert Masker([secret])(f"Authorization=Basic {encoded}\n") == \
        f"Authorization=Basic {tag(secret)}\n"


def test_hex_and_percent_forms_are_masked() -> None:
    secret = "to ken/+"
    masker = Masker([secret])
    for form in (secret.encode().hex(), secret.encode().hex().upper(), "to%20ken%2F%2B"):
        assert masker(f"[{form}]") == f"[{tag(secret)}]"


def test_one_character_secret_is_refused_as_input(tmp_path: Path) -> None:
    state = write(tmp_path / "s.yaml", "phases: [main]\nsecrets: [TOKEN]\nstates: []\n")
    run = statekit(["validate", str(state)], env={"TOKEN": "x"})
    assert run.returncode == 3
    assert "TOKEN: a secret of 1 character" in run.stderr
    assert statekit(["validate", str(state)], env={"TOKEN": "xy"}).returncode == 0
    assert statekit(["validate", str(state)], env={"TOKEN": ""}).returncode == 0


def test_one_character_sensitive_value_is_refused_as_input(tmp_path: Path) -> None:
    state = write(tmp_path / "s.yaml", "phases: [main]\nstates:\n  - id: e\n"
                  "    type: env_file\n    phase: main\n    path: /e\n"
                  "    entries: {FLAG: '1', OK: 'ab'}\n    sensitive: [FLAG]\n")
    run = statekit(["validate", str(state)])
    assert run.returncode == 3
    assert "states[e].sensitive: a sensitive value: a secret of 1 character" in run.stderr
    fixed = state.read_text().replace("sensitive: [FLAG]", "sensitive: [OK]")
    assert statekit(["validate", str(write(state, fixed))]).returncode == 0
