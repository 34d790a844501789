"""Environment input checks (pure, table-driven): accepted values and refusals."""

from __future__ import annotations

import re

import pytest

from statekit.load import input_checks as inputs
from statekit.load.input_checks import InputError

URL = "GRAFANA_OTLP_ENDPOINT"


@pytest.mark.parametrize("value", [
    "https://otlp-gateway-prod-us-west-2.grafana.net/otlp",
    "https://otlp-gateway-prod-eu-west-0.grafana.net:4318/otlp",
    "https://192.0.2.10/otlp",
    "https://OTLP-Gateway.Grafana.NET/otlp",  # case does not matter: readers lower it
    "https://8.8.8.8:4318/otlp",
    "https://otlp.example.com/otlp%20x",  # percent-encoded path: the reader's business
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
    ("https://otlp.example.com/otlp?x=1", "must not contain a query"),
    ("https://otlp.example.com/otlp?", "must not contain a query"),
    ("https://otlp.example.com/otlp#top", "or a fragment"),
    ("https://otlp.example.com/otlp#", "or a fragment"),
    ("https://otlp.example.com./otlp", "ends with a dot"),
    ("https://[2001:db8::5]:443/otlp", "an IPv6 address literal is refused"),
    ("https://[::1]/otlp", "an IPv6 address literal is refused"),
    ("https://[::ffff:127.0.0.1]/otlp", "an IPv6 address literal is refused"),
    ("https://127.0.0.1/otlp", "127.0.0.1, in loopback address space"),
    ("https://127.1/otlp", "127.0.0.1, in loopback address space"),
    ("https://2130706433/otlp", "127.0.0.1, in loopback address space"),
    ("https://0x7f000001/otlp", "127.0.0.1, in loopback address space"),
    ("https://0X7F.1/otlp", "127.0.0.1, in loopback address space"),
    ("https://0177.0.0.1/otlp", "127.0.0.1, in loopback address space"),
    ("https://127.0.0.1.:443/otlp", "ends with a dot"),
    ("https://169.254.169.254/otlp", "169.254.169.254, in link-local address space"),
    ("https://0xa9fea9fe/otlp", "169.254.169.254, in link-local address space"),
    ("https://10.0.0.1/otlp", "10.0.0.1, in private address space (10.0.0.0/8)"),
    ("https://012.1/otlp", "10.0.0.1, in private address space"),
    ("https://172.16.0.1/otlp", "172.16.0.1, in private address space (172.16.0.0/12)"),
    ("https://172.31.255.255/otlp", "in private address space (172.16.0.0/12)"),
    ("https://192.168.1.1/otlp", "192.168.1.1, in private address space"),
    ("https://3232235777/otlp", "192.168.1.1, in private address space"),
    ("https://0.0.0.0/otlp", "0.0.0.0, in unspecified address space"),
    ("https://0/otlp", "0.0.0.0, in unspecified address space"),
    ("https://3221225994/otlp", "192.0.2.10 written in a non-standard form"),
    ("https://192.0.2.010/otlp", "192.0.2.8 written in a non-standard form"),
    ("https://1.2.3.4.5/otlp", "looks numeric but is no valid IPv4 address"),
    ("https://256.0.0.1/otlp", "looks numeric but is no valid IPv4 address"),
    ("https://example.09/otlp", "looks numeric but is no valid IPv4 address"),
    ("https://%31%32%37.0.0.1/otlp", "must not be percent-encoded"),
    ("https://localhost/otlp", "a localhost name (loopback)"),
    ("https://LocalHost:4318/otlp", "a localhost name (loopback)"),
    ("https://otlp.localhost/otlp", "a localhost name (loopback)"),
    ("https://ex%61mple.com/otlp", "must not be percent-encoded"),
])
def test_https_url_refused(value: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as info:
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


@pytest.mark.parametrize(("value", "expected"), [
    ("", "1"), ("0", "0"), ("1", "1"), (" 1", "1"), ("0 ", "0"), ("  ", "1"),
    ("true", "1"), ("TRUE", "1"), ("True", "1"), ("yes", "1"), ("YES", "1"), ("on", "1"),
    ("On", "1"), ("false", "0"), ("False", "0"), ("no", "0"), ("NO", "0"), ("off", "0"),
    ("\ttrue\t", "1"),
])
def test_flag(value: str, expected: str) -> None:
    assert inputs.check_flag(value, "OTEL_LOG_USER_PROMPTS") == expected


@pytest.mark.parametrize("value", ["2", "y", "n", "enabled", "tru e", "1 0", "\u0661", "\n1"])
def test_flag_refused(value: str) -> None:
    with pytest.raises(InputError, match="OTEL_LOG_USER_PROMPTS: must be 1 or 0"):
        inputs.check_flag(value, "OTEL_LOG_USER_PROMPTS")


@pytest.mark.parametrize(("base", "operator", "expected"), [
    ({"fly.app_name": "app", "fly.machine_id": "m1"}, "",
     "fly.app_name=app,fly.machine_id=m1"),
    ({"fly.app_name": "app", "fly.machine_id": ""}, "team=ai",
     "fly.app_name=app,team=ai"),
    ({"fly.app_name": "app"}, "fly.app_name=mine,team=ai", "fly.app_name=mine,team=ai"),
    ({}, "a=1,a=2", "a=2"),
    ({}, "", ""),
    ({}, "a=1, b=2", "a=1,b=2"),  # spaces around ',' and '=' are trimmed
    ({}, " a = 1 ,b= 2 ", "a=1,b=2"),
    ({}, "a=1,,b=2,", "a=1,b=2"),  # empty items are skipped
    ({}, "team=my%20team", "team=my%20team"),  # an encoded space is a space, kept
    ({}, "x=%41%62%2f", "x=Ab/"),  # decoded and re-encoded canonically
    ({}, "x=%c3%a9", "x=%C3%A9"),
    ({}, "x=é", "x=%C3%A9"),  # raw non-ASCII: its UTF-8 bytes, encoded
    ({}, "x=a%3Db%2Cc", "x=a%3Db%2Cc"),
    ({}, "x=100%25", "x=100%25"),
    ({}, 'x="q"', "x=%22q%22"),  # quotes: the JS SDK before 3.0 strips them raw
    ({"fly.app_name": "a%b,c=d;e"}, "", "fly.app_name=a%25b%2Cc%3Dd%3Be"),
    ({"fly.app_name": "app"}, "fly.app_name=my%2Capp", "fly.app_name=my%2Capp"),
    ({}, "k=" + "x" * 255, "k=" + "x" * 255),
    ({}, "k/x.y_z-1=v:w@h", "k/x.y_z-1=v:w@h"),
])
def test_merge_attributes(base: dict[str, str], operator: str, expected: str) -> None:
    assert inputs.merge_attributes(base, operator) == expected


@pytest.mark.parametrize(("operator", "message"), [
    ("team=a b", "the value of 'team' contains a space"),
    ("team=a\u00a0b", "the value of 'team' contains a space"),
    ("team", "item 1 has no '='"),
    ("a=1,team", "item 2 has no '='"),
    ("=x", "item 1: empty or invalid key"),
    ("a b=x", "invalid key"),
    ("k%41=x", "invalid key"),
    ("k" * 256 + "=x", "invalid key"),
    ("a=1\nb=2", "the value of 'a' contains a space or a control character"),
    ("a=b=c", "the value of 'a' contains '='; write it as %3D"),
    ("a=eA==", "the value of 'a' contains '='"),
    ("a=", "the value of 'a' is empty"),
    ("a=1,b=", "the value of 'b' is empty"),
    ("a=%", "the value of 'a' has a '%' that does not start a %XX escape"),
    ("a=%2", "does not start a %XX escape"),
    ("a=%zz", "does not start a %XX escape"),
    ("a=100%", "does not start a %XX escape"),
    ("a=%C3", "escapes that are not UTF-8"),
    ("a=%FF", "escapes that are not UTF-8"),
    ("a=%ED%A0%80", "escapes that are not UTF-8"),  # an encoded lone surrogate
    ("a=%0A", "contains a control or non-printable character"),
    ("a=%00", "contains a control or non-printable character"),
    ("k=" + "x" * 256, "longer than 255 characters once percent-encoded"),
    ("k=" + "é" * 43, "longer than 255 characters once percent-encoded"),
    ("k=" + "%20" * 86, "longer than 255 characters once percent-encoded"),
])
def test_merge_attributes_refused(operator: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        inputs.merge_attributes({}, operator)
    assert str(info.value).startswith("OTEL_RESOURCE_ATTRIBUTES: ")


def test_attribute_messages_never_repeat_a_value() -> None:
    secret = "s3cr3t-value-do-not-print"
    for operator in (f"{secret}", f"k={secret} x", f"k={secret}%", f"k={secret}=",
                     f"k={secret}%FF"):
        with pytest.raises(InputError) as info:
            inputs.merge_attributes({}, operator)
        assert secret not in str(info.value)


@pytest.mark.parametrize(("value", "ok"), [
    ("agent-app", True), ("a,b=c%d;e", True), ("x" * 255, True), ("x" * 256, False),
    ("my app", False), ("m\n1", False), ("\udcff", False), ("", True),
])
def test_attribute_value(value: str, ok: bool) -> None:
    if ok:
        assert inputs.check_attribute_value(value, "FLY_APP_NAME") == value
    else:
        with pytest.raises(InputError, match=r"^FLY_APP_NAME: "):
            inputs.check_attribute_value(value, "FLY_APP_NAME")


@pytest.mark.parametrize(("name", "ok"), [
    ("example.com", True), ("example.com.", True), ("a" * 63 + ".com", True),
    ("a" * 64 + ".com", False), ("-x.com", False), ("x_y.com", False), ("", False),
    (".".join(["abcdefgh"] * 28), True), (".".join(["abcdefgh"] * 29), False),
])
def test_dns_names(name: str, ok: bool) -> None:
    assert inputs.is_dns_name(name) is ok
