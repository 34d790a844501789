"""Templating: filters, native values, strictness (pure, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import UndefinedError

from statekit.load import templating
from statekit.load.templating import EnvView, FilterInputError, Renderer


@pytest.mark.parametrize(("url", "host", "port", "scheme"), [
    ("https://otlp-gateway-prod-us-west-2.grafana.net/otlp",
     "otlp-gateway-prod-us-west-2.grafana.net", 443, "https"),
    ("https://Example.COM:8443/x", "example.com", 8443, "https"),
    ("http://example.com", "example.com", 80, "http"),
    ("https://[2001:db8::1]:4318/otlp", "2001:db8::1", 4318, "https"),
    ("https://192.0.2.7/otlp", "192.0.2.7", 443, "https"),
    ("", "", "", ""),
])
def test_url_filters(url: str, host: str, port: Any, scheme: str) -> None:
    assert templating.url_host(url) == host
    assert templating.url_port(url) == port
    assert templating.url_scheme(url) == scheme


@pytest.mark.parametrize("url", ["https://example.com:99999/", "https://example.com:x/",
                                 "ftp://example.com/"])
def test_url_port_rejects(url: str) -> None:
    with pytest.raises(FilterInputError):
        templating.url_port(url)


def test_b64encode() -> None:
    assert templating.b64encode("123:tok") == "MTIzOnRvaw=="


@pytest.mark.parametrize(("template", "expected"), [
    ("plain", "plain"),
    ("{{ n }}", 443),
    ("{{ items }}", ["a", "b"]),
    ("port {{ n }}", "port 443"),
    ("{{ env.MISSING }}", ""),
    ("{{ env.HOME_X | default('d', true) }}", "d"),
    ("{{ 'x' if env.SET else 'y' }}", "x"),
    ("{{ '1.2.3.4' is ip }}", True),
])
def test_render(template: str, expected: Any) -> None:
    context = {"env": EnvView({"SET": "1"}), "n": 443, "items": ["a", "b"]}
    assert Renderer().render(template, context) == expected


def test_render_nested_values() -> None:
    value = {"a": ["{{ n }}", {"b": "x{{ n }}"}], "c": 1}
    assert Renderer().render(value, {"n": 2}) == {"a": [2, {"b": "x2"}], "c": 1}


@pytest.mark.parametrize("template", ["{{ nope }}", "x {{ nope }}", "{{ nope.attr }}"])
def test_undefined_is_an_error(template: str) -> None:
    with pytest.raises(UndefinedError):
        Renderer().render(template, {"env": EnvView()})


def test_sandbox_blocks_attribute_escape() -> None:
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        Renderer().render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
