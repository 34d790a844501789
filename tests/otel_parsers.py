"""The real OpenTelemetry readers of ``OTEL_RESOURCE_ATTRIBUTES``, for tests to ask.

- the Python SDK's ``OTELResourceDetector`` and OTLP header parser (in this process);
- the JS SDK's env detector of ``@opentelemetry/resources``, current (3.x, pinned in
  ``tests/e2e/js``) and legacy (2.0.x, the stricter parser before the rewrite, pinned in
  ``tests/e2e/js/legacy``), and its OTLP header parser, through ``node`` (``make
  node-deps`` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

from opentelemetry.sdk.resources import OTELResourceDetector
from opentelemetry.util.re import parse_env_headers

JS = Path(__file__).resolve().parent / "e2e" / "js"
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"


def python_sdk_attributes(value: str) -> dict[str, str]:
    """What the Python SDK detects from ``OTEL_RESOURCE_ATTRIBUTES=value``."""
    with mock.patch.dict(os.environ, {"OTEL_RESOURCE_ATTRIBUTES": value}):
        os.environ.pop("OTEL_SERVICE_NAME", None)
        return {k: str(v) for k, v in OTELResourceDetector().detect().attributes.items()}


def python_sdk_headers(value: str) -> dict[str, str]:
    """What the Python OTLP exporters make of ``OTEL_EXPORTER_OTLP_HEADERS=value``."""
    return dict(parse_env_headers(value, liberal=True))


def node() -> str:
    """The ``node`` binary; an AssertionError (not a skip) when it or the deps are missing."""
    found = shutil.which("node", path=MINIMAL_PATH)
    assert found, "node not found: run `make deps` (Debian package nodejs)"
    for where in (JS, JS / "legacy"):
        assert (where / "node_modules").is_dir(), f"{where}: run `make node-deps`"
    return found


def _node_script(script: str, values: list[str]) -> Any:
    proc = subprocess.run([node(), str(JS / script)], input=json.dumps(values),
                          capture_output=True, text=True, env={"PATH": MINIMAL_PATH},
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def js_sdk_attributes(values: list[str]) -> list[dict[str, dict[str, str]]]:
    """For each value: ``{"current": attrs, "legacy": attrs}`` as the JS SDK detects them."""
    result: list[dict[str, dict[str, str]]] = _node_script("parse-resource-attributes.js",
                                                            values)
    return result


def js_sdk_headers(values: list[str]) -> list[dict[str, str]]:
    """For each value: the headers the JS OTLP exporters send (parseKeyPairsIntoRecord)."""
    result: list[dict[str, str]] = _node_script("parse-headers.js", values)
    return result
