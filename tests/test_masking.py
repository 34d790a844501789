"""Secrets and their base64 forms never survive the masker; a mask tells nothing to
whoever lacks this machine's key."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statekit import masking
from statekit.masking import Masker, host_key, keyed_tag, tag
from tests.conftest import statekit, write

pytestmark = pytest.mark.root

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


# --- the mask key ------------------------------------------------------------------------

KEYED = """\
phases: [main]
secrets: [TOKEN]
states:
  - id: app-env
    type: env_file
    phase: main
    path: /etc/app/env
    entries: {TOKEN: "{{ env.TOKEN }}"}
    sensitive: [TOKEN]
"""


def shown_mask(root: Path, states: Path, token: str, *extra: str) -> str:
    run = statekit(["converge", "--diff", "--root", str(root), *extra, str(states)],
                   env={"TOKEN": token})
    assert run.returncode == 0, run.output
    assert token not in run.output
    found: list[str] = re.findall(r"\+TOKEN=(<secret(?::\w+)?>)", run.stdout)
    assert len(found) == 1, run.stdout
    return found[0]


def test_a_mask_cannot_be_computed_without_this_machines_key(tmp_path: Path) -> None:
    """`<secret:6b86b2>` was sha256("1")[:6]: anyone could confirm a guess. Now it is an
    HMAC keyed with a root-only key: another root masks the same value otherwise."""
    states = write(tmp_path / "s.yaml", KEYED)
    token = "Zq"  # a guessable secret (never part of a hex mask or of the paths here)
    roots = [tmp_path / "a", tmp_path / "b"]
    masks = []
    for root in roots:
        root.mkdir()
        masks.append(shown_mask(root, states, token))
    assert masks[0] != masks[1], "each machine (root) has its own key"
    unsalted = hashlib.sha256(token.encode()).hexdigest()[:6]
    assert unsalted not in masks[0] + masks[1]
    assert masks[0] == keyed_tag(token, host_key(str(roots[0]), create=False))
    (roots[0] / "etc/app/env").unlink()
    assert shown_mask(roots[0], states, token) == masks[0], "stable on one machine"


def test_the_key_is_root_only(tmp_path: Path, root: Path) -> None:
    shown_mask(root, write(tmp_path / "s.yaml", KEYED), "a-secret-value")
    key = root / "var/lib/statekit/mask.key"
    st_key, st_dir = key.stat(), key.parent.stat()
    assert (stat.S_IMODE(st_key.st_mode), st_key.st_uid, st_key.st_size) == (0o600, 0, 32)
    assert (stat.S_IMODE(st_dir.st_mode), st_dir.st_uid) == (0o700, 0)


def test_check_mode_makes_no_key_and_masks_without_a_hash(tmp_path: Path, root: Path) -> None:
    states = write(tmp_path / "s.yaml", KEYED)
    assert shown_mask(root, states, "a-secret-value", "--check") == "<secret>"
    assert list(root.iterdir()) == []


def test_a_run_that_shows_no_secret_reads_no_key(tmp_path: Path, root: Path) -> None:
    """Lazy: the key is read (or made) only when a mask is shown, never on a converge
    whose output holds no secret (the 5-minute refresh)."""
    states = write(tmp_path / "s.yaml", KEYED.replace("    sensitive: [TOKEN]\n", ""))
    for expected in ("changed=1", "changed=0"):
        run = statekit(["converge", "--root", str(root), str(states)],
                       env={"TOKEN": "tok-en-1"})
        assert run.returncode == 0 and expected in run.stdout, run.output
    assert (root / "etc/app/env").exists()
    assert not (root / "var/lib/statekit").exists()
    assert shown_mask(root, states, "tok-en-2").startswith("<secret:")
    assert (root / "var/lib/statekit/mask.key").exists()


@pytest.mark.parametrize("plant", ["symlink", "loose-mode", "wrong-size"])
def test_an_unfit_key_is_never_used_nor_followed(tmp_path: Path, root: Path,
                                                 plant: str) -> None:
    key = root / "var/lib/statekit/mask.key"
    key.parent.mkdir(parents=True, mode=0o700)
    outside = tmp_path / "outside"
    outside.write_bytes(b"k" * 32)
    if plant == "symlink":
        key.symlink_to(outside)
    else:
        key.write_bytes(b"k" * (32 if plant == "loose-mode" else 31))
        key.chmod(0o644 if plant == "loose-mode" else 0o600)
    planted = keyed_tag("a-secret-value", b"k" * 32)
    states = write(tmp_path / "s.yaml", KEYED)
    assert shown_mask(root, states, "a-secret-value", "--check") == "<secret>"
    mask = shown_mask(root, states, "a-secret-value")
    assert outside.read_bytes() == b"k" * 32, "nothing read or written through a symlink"
    if plant == "symlink":  # refused, left for the operator to see: no key, no hash
        assert mask == "<secret>" and key.is_symlink()
    else:  # replaced by a fresh key, root-only
        assert mask not in ("<secret>", planted)
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32


def test_without_a_key_a_mask_has_no_hash(tmp_path: Path) -> None:
    assert keyed_tag("x1", None) == "<secret>"
    assert host_key(str(tmp_path), create=False) is None
    masking.use_key_file(str(tmp_path), create=False)
    assert Masker(["secret-1"])("a secret-1 b") == "a <secret> b"
    masking.use_key_file(str(tmp_path), create=True)
    made = Masker(["secret-1"])("a secret-1 b")
    assert made == f"a {keyed_tag('secret-1', host_key(str(tmp_path), create=False))} b"
    assert os.stat(tmp_path / "var/lib/statekit/mask.key").st_size == 32
    masking.use_key_file(str(tmp_path / "none"), create=False)  # leave no key behind
