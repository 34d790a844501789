"""Hostile and odd telemetry inputs, each through the shipped states and then through the
real readers: every input ends as a value that both SDKs (JS current and legacy, Python)
decode to what was meant, or as exit 3 naming the variable, with nothing written."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import REPO, statekit_in_process
from tests.e2e.harness import read_env_file
from tests.otel_parsers import (
    js_sdk_attributes,
    js_sdk_headers,
    python_sdk_attributes,
    python_sdk_headers,
)

pytestmark = pytest.mark.needs("node")

STATES = str(REPO / "states" / "telemetry.yaml")
ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": "glc_table_token_0123456789",
      "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp"}
RA = "OTEL_RESOURCE_ATTRIBUTES"


def converge(root: Path, env: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    result = statekit_in_process(["converge", "--phase", "auth", "--root", str(root), STATES],
                                 env={**ON, **env})
    assert ON["GRAFANA_API_TOKEN"] not in result.output
    path = root / "tmp/otel/otel-env"
    if result.returncode == 3:
        # telemetry stays off (its states converge absent): nothing of it is written
        assert not (root / "tmp").exists() and not (root / "etc").exists()
        return 3, result.stderr, {}
    assert result.returncode == 0, result.output
    return 0, result.stderr, read_env_file(path)


def assert_refused(code: int, stderr: str, name: str, fragment: str) -> None:
    assert code == 3
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and fragment in lines[0], stderr


ATTRIBUTES: list[tuple[dict[str, str], dict[str, str] | tuple[str, str]]] = [
    ({RA: "team=ai"}, {"team": "ai"}),
    ({RA: "a=1, b=2"}, {"a": "1", "b": "2"}),
    ({RA: " a = 1 ,b= 2 , "}, {"a": "1", "b": "2"}),
    ({RA: "team=my%20team"}, {"team": "my team"}),
    ({RA: "x=a%3Db%2Cc%25d%3Be"}, {"x": "a=b,c%d;e"}),
    ({RA: "x=%c3%a9t%C3%A9"}, {"x": "été"}),
    ({RA: "x=été"}, {"x": "été"}),
    ({RA: "x=日本,y=😀"}, {"x": "日本", "y": "😀"}),
    ({RA: 'x="quoted"'}, {"x": '"quoted"'}),
    ({RA: "x=a;b\\c"}, {"x": "a;b\\c"}),
    ({RA: "x=+/:@~"}, {"x": "+/:@~"}),
    ({RA: "k=" + "x" * 255}, {"k": "x" * 255}),
    ({RA: "k=" + "%C3%A9" * 42}, {"k": "é" * 42}),
    ({RA: "a=1,a=2"}, {"a": "2"}),
    ({"FLY_APP_NAME": "app", "FLY_MACHINE_ID": "m1", RA: "fly.app_name=op,t=1"},
     {"fly.app_name": "op", "fly.machine_id": "m1", "t": "1"}),
    ({"FLY_APP_NAME": "my,app=1%;\"q\"", "FLY_MACHINE_ID": "148e4d55"},
     {"fly.app_name": "my,app=1%;\"q\"", "fly.machine_id": "148e4d55"}),
    ({"FLY_APP_NAME": "x" * 255}, {"fly.app_name": "x" * 255}),
    ({RA: "k=" + "x" * 256}, (RA, "longer than 255 characters")),
    ({RA: "k=" + "é" * 43}, (RA, "longer than 255 characters")),
    ({RA: "a=b=c"}, (RA, "contains '='")),
    ({RA: "a=eA=="}, (RA, "contains '='")),
    ({RA: "a=%"}, (RA, "%XX escape")),
    ({RA: "a=%G1"}, (RA, "%XX escape")),
    ({RA: "a=%C3"}, (RA, "not UTF-8")),
    ({RA: "a=%FF%FE"}, (RA, "not UTF-8")),
    ({RA: "a=%0A"}, (RA, "control")),
    ({RA: "a="}, (RA, "empty")),
    ({RA: "a=x y"}, (RA, "contains a space")),
    ({RA: "a"}, (RA, "has no '='")),
    ({RA: "a b=1"}, (RA, "invalid key")),
    ({RA: "é=1"}, (RA, "invalid key")),
    ({"FLY_APP_NAME": "my app"}, ("FLY_APP_NAME", "must not contain spaces")),
    ({"FLY_MACHINE_ID": "x" * 256}, ("FLY_MACHINE_ID", "longer than 255")),
]


@pytest.mark.parametrize(("env", "want"), ATTRIBUTES)
def test_resource_attributes(root: Path, env: dict[str, str],
                             want: dict[str, str] | tuple[str, str]) -> None:
    code, stderr, written = converge(root, env)
    if isinstance(want, tuple):
        assert_refused(code, stderr, *want)
        assert "x" * 40 not in stderr  # the value is not repeated
        return
    value = written[RA]
    assert python_sdk_attributes(value) == want
    [js] = js_sdk_attributes([value])
    assert js["current"] == want
    assert js["legacy"] == want


@pytest.mark.parametrize(("value", "want"), [
    ("1", "1"), ("0", "0"), ("", "1"), (" 1 ", "1"), ("true", "1"), ("TRUE", "1"),
    ("false", "0"), ("False", "0"), ("yes", "1"), ("Yes", "1"), ("no", "0"), ("on", "1"),
    ("OFF", "0"), ("maybe", None), ("2", None), ("y", None), ("1 0", None),
])
@pytest.mark.parametrize("name", ["OTEL_LOG_USER_PROMPTS", "OTEL_LOG_TOOL_DETAILS"])
def test_flags(root: Path, name: str, value: str, want: str | None) -> None:
    code, stderr, written = converge(root, {name: value})
    if want is None:
        assert_refused(code, stderr, name, "must be 1 or 0")
        return
    assert written[name] == want
    assert written["OTEL_LOG_TOOL_CONTENT"] == "0"


@pytest.mark.parametrize(("value", "fragment"), [
    ("https://otlp-gateway-prod-eu-west-2.grafana.net/otlp", None),
    ("https://OTLP-Gateway.Grafana.NET:4318/otlp", None),
    ("https://192.0.2.10/otlp", None),
    ("https://otlp.grafana.net/otlp?x=1", "query"),
    ("https://otlp.grafana.net/otlp?", "query"),
    ("https://otlp.grafana.net/otlp#frag", "fragment"),
    ("https://otlp.grafana.net/otlp#", "fragment"),
    ("https://otlp.grafana.net./otlp", "trailing dot"),
    ("http://otlp.grafana.net/otlp", "http is refused"),
    ("https://127.0.0.1/otlp", "loopback"),
    ("https://127.1/otlp", "loopback"),
    ("https://2130706433/otlp", "loopback"),
    ("https://0x7f000001/otlp", "loopback"),
    ("https://0177.0.0.1/otlp", "loopback"),
    ("https://169.254.169.254/otlp", "link-local"),
    ("https://10.0.0.1/otlp", "private"),
    ("https://172.16.5.4/otlp", "private"),
    ("https://192.168.0.1/otlp", "private"),
    ("https://0.0.0.0/otlp", "unspecified"),
    ("https://[::1]/otlp", "IPv6"),
    ("https://[2001:db8::1]/otlp", "IPv6"),
    ("https://[::ffff:10.0.0.1]/otlp", "IPv6"),
])
def test_endpoints(root: Path, value: str, fragment: str | None) -> None:
    code, stderr, written = converge(root, {"GRAFANA_OTLP_ENDPOINT": value})
    if fragment is None:
        assert written["OTEL_EXPORTER_OTLP_ENDPOINT"] == value
        return
    assert_refused(code, stderr, "GRAFANA_OTLP_ENDPOINT", fragment)


@pytest.mark.parametrize(("instance", "token"), [
    ("123456", "glc_table_token_0123456789"),  # base64 without padding
    ("1", "glc_ab"),  # "1:glc_ab": one '='
    ("12", "glc_a"),  # two '='
    ("987654", "glc_eyJvIjoiOTk5In0=+/%20,;x"),  # '=', '+', '/', '%', ',' in the token
])
def test_authorization_header_reaches_both_sdks_exactly(root: Path, instance: str,
                                                         token: str) -> None:
    code, stderr, written = converge(root, {"GRAFANA_INSTANCE_ID": instance,
                                            "GRAFANA_API_TOKEN": token})
    assert code == 0, stderr
    want = "Basic " + base64.b64encode(f"{instance}:{token}".encode()).decode()
    value = written["OTEL_EXPORTER_OTLP_HEADERS"]
    assert value == f"Authorization={want}"  # a literal space, the padding kept
    assert python_sdk_headers(value) == {"authorization": want}
    assert js_sdk_headers([value]) == [{"Authorization": want}]
