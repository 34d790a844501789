"""The real agent: Claude Code (npm @anthropic-ai/claude-code, pinned in tests/e2e/claude,
installed by `make claude-code`) as the env file's consumer, in the e2e sandbox.

The boot runs as in tests/test_boot_e2e.py; then Claude Code starts through
examples/launch-agent.sh with a local stub of the Messages API on the container's
loopback (``ANTHROPIC_BASE_URL``; no real API, no real key). The prompt asks it to Read a
file, so one tool call happens. What it exports reaches the TLS OTLP receiver through the
opened firewall path, and is checked there: the exact Authorization header, the resource
attributes, and what the privacy knobs let out (a prompt marker, the file's path, the
file's contents), searched for in the decoded payloads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import CLAUDE_CODE, MESSAGES_STUB_PORT, Sandbox, basic_auth
from tests.test_boot_e2e import ATTRS_ENV, ATTRS_MEANT, B64, INSTANCE, ON, TOKEN, Boot

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns", "claude-code")]

PROMPT_MARKER = "PROMPT-MARKER-91c2"
FILE_MARKER = "FILE-CONTENT-MARKER-7f3a"


@pytest.fixture
def boot(clean_sandbox: Sandbox, tmp_path: Path) -> Iterator[Boot]:
    root = tmp_path / "root"
    root.mkdir()
    yield Boot(clean_sandbox, root)


def boot_with(boot: Boot, knobs: dict[str, str]) -> dict[str, str]:
    """The container's boot with telemetry on (and ``knobs``); the entrypoint's env."""
    env = {**ON, **ATTRS_ENV, **knobs}
    network, auth = boot.boot(env)
    assert network["summary"]["failed"] == 0 and auth["summary"]["failed"] == 0
    return env


def run_claude(boot: Boot, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Run Claude Code once through the launcher; what it sent to the receiver."""
    assert CLAUDE_CODE.is_file(), f"{CLAUDE_CODE} missing: run `make claude-code`"
    boot.box.set_expected_auth(basic_auth(INSTANCE, TOKEN))
    messages_log = boot.box.start_messages_stub()
    notes = workdir / "notes.txt"
    notes.write_text(f"{FILE_MARKER}\n")
    home, tmp = workdir / "home", workdir / "tmp"  # never the real ~/.claude, nor /tmp
    home.mkdir()
    tmp.mkdir()
    inherited = {**env, "HOME": str(home), "TMPDIR": str(tmp), "CLAUDE_CODE_TMPDIR": str(tmp),
                 "ANTHROPIC_API_KEY": "sk-ant-statekit-stub",
                 "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{MESSAGES_STUB_PORT}",
                 "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    proc = boot.box.run_via_launcher(
        boot.env_file, "claude", inherited, "-p",
        f"{PROMPT_MARKER} please statekit-read:{notes}", "--output-format", "json",
        "--allowedTools", "Read", cwd=workdir, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["result"] == "Hello from the statekit Messages API stub."
    calls = [json.loads(line) for line in messages_log.read_text().splitlines()]
    assert [c["read"] for c in calls if c["read"]] == [str(notes)]  # the Read happened
    requests = boot.box.requests()
    payload = b"".join(base64.b64decode(r.get("body_b64", "")) for r in requests)
    return {"requests": requests, "payload": payload, "notes": str(notes)}


def check_exports(requests: list[dict[str, Any]]) -> None:
    paths = set()
    for request in requests:
        assert request["status"] == 200, request
        assert request["headers"]["authorization"] == f"Basic {B64}"
        for keys, attributes in zip(request["resource_keys"],
                                    request["resource_attributes"], strict=True):
            assert len(keys) == len(set(keys)), keys
            assert {k: attributes.get(k) for k in ATTRS_MEANT} == ATTRS_MEANT
            assert attributes["service.name"] == "claude-code"
            paths.add(request["path"])
    assert paths == {"/otlp/v1/traces", "/otlp/v1/metrics", "/otlp/v1/logs"}
    names = {n for r in requests for n in r.get("metric_names", [])}
    assert "claude_code.token.usage" in names
    spans = {n for r in requests for n in r.get("span_names", [])}
    assert "claude_code.llm_request" in spans


def test_claude_code_exports_with_full_fidelity_but_never_file_contents(
        boot: Boot, tmp_path: Path) -> None:
    sent = run_claude(boot, boot_with(boot, {}), tmp_path)
    check_exports(sent["requests"])
    assert PROMPT_MARKER.encode() in sent["payload"]  # prompts: on by default
    assert sent["notes"].encode() in sent["payload"]  # tool parameters: on by default
    assert FILE_MARKER.encode() not in sent["payload"]  # OTEL_LOG_TOOL_CONTENT=0
    assert TOKEN.encode() not in sent["payload"]


def test_claude_code_privacy_knobs_opt_out(boot: Boot, tmp_path: Path) -> None:
    knobs = {"OTEL_LOG_USER_PROMPTS": "false", "OTEL_LOG_TOOL_DETAILS": "no"}
    sent = run_claude(boot, boot_with(boot, knobs), tmp_path)
    check_exports(sent["requests"])
    assert PROMPT_MARKER.encode() not in sent["payload"]
    assert sent["notes"].encode() not in sent["payload"]
    assert FILE_MARKER.encode() not in sent["payload"]


def test_the_file_content_check_can_fail(boot: Boot, tmp_path: Path) -> None:
    """The same run with OTEL_LOG_TOOL_CONTENT=1 forced into the file: the agent does
    export the file's contents, so the absence asserted above means something."""
    env = boot_with(boot, {})
    text = boot.env_file.read_text()
    boot.env_file.write_text(text.replace("OTEL_LOG_TOOL_CONTENT=0", "OTEL_LOG_TOOL_CONTENT=1"))
    sent = run_claude(boot, env, tmp_path)
    assert FILE_MARKER.encode() in sent["payload"]
