"""Environment input checks (pure, table-driven): accepted values and refusals."""

from __future__ import annotations

import pytest

from statekit.load import input_checks as inputs
from statekit.load.input_checks import InputError

URL = "GRAFANA_OTLP_ENDPOINT"


@pytest.mark.parametrize("value", [
    "https://otlp-gateway-prod-us-west-2.grafana.net/otlp",
    "https://otlp-gateway-prod-eu-west-0.grafana.net:4318/otlp",
    "https://192.0.2.10/otlp",
    "https://[2001:db8::5]:443/otlp",
])
def test_https_url_accepted(value: str) -> None:
    assert inputs.check_https_url(value, URL) == value


@pytest.mark.parametrize(("value", "message"), [
    ("http://otlp.example.com/otlp", "http is refused, the token would travel in clear"),
    ("ftp://otlp.example.com/", "must be an https:// URL"),
    ("https://user:pw@otlp.example.com/", "must not contain user info"),
    ("https://otlp.example.com:99999/", "not a valid URL"),
    ("https://otlp.example.com:0/", "port 0 is not a valid port"),
    ("https://otlp.exa mple.com/", "must not contain spaces or control characters"),
    ("https://otlp.example.com/\nX: y", "must not contain spaces or control characters"),
    ("https://evil.com{/", "neither a DNS name nor an IP address"),
    ("https://-bad-.com/", "neither a DNS name nor an IP address"),
    ("https:///otlp", "neither a DNS name nor an IP address"),
    ("otlp.example.com", "must be an https:// URL"),
])
def test_https_url_refused(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        inputs.check_https_url(value, URL)
    assert str(info.value).startswith(f"{URL}: ")


@pytest.mark.parametrize(("check", "value", "ok"), [
    (inputs.check_digits, "123456", True), (inputs.check_digits, "12a", False),
    (inputs.check_digits, "", False), (inputs.check_digits, "١٢٣", False),
    (inputs.check_token, "glc_abc+/=", True), (inputs.check_token, "a b", False),
    (inputs.check_token, "tab\there", False), (inputs.check_token, "", False),
    (inputs.check_token, "é", False),
])
def test_simple_checks(check: object, value: str, ok: bool) -> None:
    fn = check
    assert callable(fn)
    if ok:
        assert fn(value, "X") == value
    else:
        with pytest.raises(InputError, match=r"^X: "):
            fn(value, "X")


def test_token_value_is_never_in_the_message() -> None:
    with pytest.raises(InputError) as info:
        inputs.check_token("secret value", "GRAFANA_API_TOKEN")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [("", "1"), ("0", "0"), ("1", "1")])
def test_flag(value: str, expected: str) -> None:
    assert inputs.check_flag(value, "OTEL_LOG_USER_PROMPTS") == expected


@pytest.mark.parametrize("value", ["2", "true", "yes", " 1"])
def test_flag_refused(value: str) -> None:
    with pytest.raises(InputError, match="OTEL_LOG_USER_PROMPTS: must be 0 or 1"):
        inputs.check_flag(value, "OTEL_LOG_USER_PROMPTS")


@pytest.mark.parametrize(("base", "operator", "expected"), [
    ({"fly.app_name": "app", "fly.machine_id": "m1"}, "",
     "fly.app_name=app,fly.machine_id=m1"),
    ({"fly.app_name": "app", "fly.machine_id": ""}, "team=ai",
     "fly.app_name=app,team=ai"),
    ({"fly.app_name": "app"}, "fly.app_name=mine,team=ai", "fly.app_name=mine,team=ai"),
    ({}, "a=1,a=2", "a=2"),
    ({}, "", ""),
])
def test_merge_attributes(base: dict[str, str], operator: str, expected: str) -> None:
    assert inputs.merge_attributes(base, operator) == expected


@pytest.mark.parametrize(("operator", "message"), [
    ("team=a b", "the value of 'team' contains a space"),
    ("team", "has no '='"),
    ("=x", "empty or invalid key"),
    ("a=1,,b=2", "has no '='"),
    ("a=1\nb=2", "the value of 'a' contains a space or a control character"),
])
def test_merge_attributes_refused(operator: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        inputs.merge_attributes({}, operator)


@pytest.mark.parametrize(("name", "ok"), [
    ("example.com", True), ("example.com.", True), ("a" * 63 + ".com", True),
    ("a" * 64 + ".com", False), ("-x.com", False), ("x_y.com", False), ("", False),
    (".".join(["abcdefgh"] * 28), True), (".".join(["abcdefgh"] * 29), False),
])
def test_dns_names(name: str, ok: bool) -> None:
    assert inputs.is_dns_name(name) is ok
