"""The session-wide secrets capture (tests/conftest.py) can fail: it sees every form."""

from __future__ import annotations

import base64

from tests.conftest import CAPTURED, KNOWN_TOKENS, leaked_tokens, register_token, statekit

TOKEN = "glc_capture_selftest_token_42aa"


def test_capture_sees_the_token_and_each_base64_form() -> None:
    header = base64.b64encode(f"123456:{TOKEN}".encode()).decode()
    alone = base64.b64encode(TOKEN.encode()).decode()
    for text in (f"x {TOKEN} y", f"Authorization=Basic%20{header}", alone.rstrip("="),
                 base64.b64encode(f"ab{TOKEN}".encode()).decode()):
        assert leaked_tokens([text], {TOKEN}) == [TOKEN], text
    assert leaked_tokens(["statekit: <secret:1a2b3c>", TOKEN[:-1]], {TOKEN}) == []


def test_statekit_output_is_captured_and_tokens_registered() -> None:
    register_token(TOKEN)
    before = len(CAPTURED)
    run = statekit(["--version-does-not-exist"])
    assert run.returncode == 3
    assert len(CAPTURED) > before and CAPTURED[-1] == run.stderr
    assert TOKEN in KNOWN_TOKENS
