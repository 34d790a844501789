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


@pytest.mark.parametrize(("template", "context"), [
    ("{{ n }}", {"n": [1, {"a": 2}]}),
    ("{{  items  }}", {"items": ("x",)}),
    ("{{ env }}", {"env": EnvView({"A": "1"})}),
    ("{{ true }}", {"true": "a var named like a literal"}),
    ("{{ None }}", {"None": 1}),
    ("{{ n }}", {"n": None}),
])
def test_a_bare_name_is_what_jinja2_gives(template: str, context: dict[str, Any]) -> None:
    """The bare-name shortcut (no Jinja2) against Jinja2 itself (the same sandbox)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    jinja = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    want = jinja.compile_expression(template.strip()[2:-2], undefined_to_none=False)(
        **context)
    got = Renderer().render(template, context)
    assert got == want and type(got) is type(want)


def test_a_bare_name_not_in_the_context_is_still_an_error() -> None:
    with pytest.raises(UndefinedError, match="'nope' is undefined"):
        Renderer().render("{{ nope }}", {"n": 1})


def test_each_source_is_compiled_once_and_each_render_has_its_budget() -> None:
    """Compiled once per process (the memo), yet every render starts a new budget: a
    template that spends most of the budget renders again and again."""
    from statekit.load.template_limits import MAX_VALUE

    big = "{{ ('x' * (n // 2)) ~ ('y' * (n // 2)) }}"
    shared = templating._compiled()
    for _ in range(12):  # ~2 M of work each, 20 M the budget of one render
        assert len(Renderer().render(big, {"n": MAX_VALUE - 2})) == MAX_VALUE - 2
    assert list(shared.expressions).count(big.strip()[2:-2]) == 1
    assert templating._compiled() is shared


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templating, "_MEMO", 4)
    shared = templating._compiled()
    shared.expressions.clear()
    for i in range(10):
        assert Renderer().render(f"{{{{ n + {i} }}}}", {"n": 1}) == 1 + i
    assert 1 <= len(shared.expressions) <= 4
