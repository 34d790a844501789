"""A distinctive token, run through every command: it never appears in any output."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import statekit, write

pytestmark = pytest.mark.root

TOKEN = "glc_SECRETneverPRINTED_8c1d2e3f4a5b"
ID = "123456"
FORMS = [TOKEN, base64.b64encode(f"{ID}:{TOKEN}".encode()).decode(),
         base64.b64encode(TOKEN.encode()).decode().rstrip("=")]

STATES = """\
phases: [auth]
secrets: [TOKEN]
vars:
  header: "Authorization=Basic%20{{ (env.ID ~ ':' ~ env.TOKEN) | b64encode }}"
states:
  - id: env
    type: env_file
    phase: auth
    path: /otel/env
    entries:
      OTEL_EXPORTER_OTLP_HEADERS: "{{ header }}"
      TOKEN_COPY: "{{ env.TOKEN }}"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
  - id: echo
    type: command
    phase: auth
    argv: [sh, -c, "echo out {{ env.TOKEN }}; echo {{ header }}"]
  - id: fail
    type: command
    phase: auth
    argv: [sh, -c, "echo err {{ env.TOKEN }} >&2; exit 1"]
"""


def assert_clean(text: str) -> None:
    for form in FORMS:
        assert form not in text


@pytest.mark.parametrize("args", [
    ["validate"], ["show"],
    ["converge", "--diff"], ["converge", "--check", "--diff"],
    ["converge", "--diff", "--format", "json"],
    ["converge", "--check", "--diff", "--format", "json"],
])
def test_token_never_printed(tmp_path: Path, root: Path, args: list[str]) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    extra = ["--root", str(root)] if args[0] == "converge" else []
    env = {"TOKEN": TOKEN, "ID": ID}
    for _ in range(2):  # first converge and the idempotent one
        result = statekit([*args, *extra, str(path)], env=env)
        assert result.returncode in (0, 1), result.output
        assert_clean(result.output)
    if args[0] == "converge":  # a hash once a converge made the key, none before
        assert ("<secret>" if "--check" in args else "<secret:") in result.output


def test_token_not_printed_in_template_errors(tmp_path: Path) -> None:
    bad_path = "path: \"/{{ ('https://h:' ~ env.TOKEN) | url_port }}\""
    text = STATES.replace("path: /otel/env", bad_path)
    result = statekit(["validate", str(write(tmp_path / "s.yaml", text))],
                      env={"TOKEN": TOKEN, "ID": ID})
    assert result.returncode == 3
    assert "].path: template error" in result.stderr
    assert_clean(result.output)


def test_token_not_printed_when_removing(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES.replace("  - id: echo", "  - id: echo\n"
                 "    when: false").replace("  - id: fail", "  - id: fail\n    when: false"))
    statekit(["converge", "--root", str(root), str(path)], env={"TOKEN": TOKEN, "ID": ID})
    gone = path.read_text().replace("path: /otel/env", "path: /otel/env\n    ensure: absent")
    write(path, gone)
    result = statekit(["converge", "--diff", "--root", str(root), str(path)], env={})
    assert "changed=1" in result.stdout
    assert_clean(result.output)
