"""statekit/load/template_fast.py against Jinja2 itself (the sandbox statekit renders with).

The quick path is conservative: for every generated source and context it either gives
up (Jinja2 then decides, as before) or gives exactly what Jinja2 gives: the same value
of the same type, the same environment variables read, and never a value where Jinja2
raises. Sources come from the subset's grammar, from its near misses (calls, ``in``,
arithmetic, Jinja2's own filters and tests, keywords as names) and from token soup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statekit.load import template_fast as fast
from statekit.load import templating
from statekit.load.templating import EnvView, Renderer

ENV = {"A": "x", "EMPTY": "", "URL": "https://h.example:4318/p", "FLAG": "yes",
       "IP": "192.0.2.7", "TOKEN": "glc_abcdefghijklmnop"}
CONTEXT: dict[str, Any] = {
    "s": "abc", "e": "", "n": 3, "z": 0, "l": [1, "a"], "el": [], "b": True, "f": False,
    "no": None, "url": "https://otlp.example/otlp", "ip4": "192.0.2.1",
    "d": {"k": "v", "items": 1}, "name": "a.example", "big": "x" * 60_000,
}
NAMES = [*CONTEXT, "env", "missing", "range", "dict", "true", "None", "and", "not", "if",
         "is", "in", "else"]
LITERALS = ["'a'", '"b c"', "''", "'1'", "0", "7", "007", "true", "False", "none", "None",
            "'https://x.example:8443/a'", "'192.0.2.9'", "'a' 'b'", "1.5", "-1"]
ATTRS = ["env.A", "env.MISSING", "env.EMPTY", "env.URL", "env.get", "env.used", "env.keys",
         "d.k", "d.items", "d.nope", "s.upper", "l.0", "env['A']"]
FILTERS = ["url_host", "url_port", "url_scheme", "b64encode", "upper", "length", "nope",
           "check_flag('X')", "check_digits('X')", "check_token('X')",
           "check_https_url('X')", "merge_attributes(env.A)", "check_flag", "url_host()"]
TESTS = ["ip", "not ip", "dns_name", "not dns_name", "defined", "none", "ip 3"]

atoms = st.one_of(st.sampled_from(NAMES), st.sampled_from(LITERALS), st.sampled_from(ATTRS))


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        inner.map(lambda a: f"({a})"),
        inner.map(lambda a: f"not {a}"),
        pair.map(lambda p: f"{p[0]} ~ {p[1]}"),
        pair.map(lambda p: f"{p[0]} == {p[1]}"),
        pair.map(lambda p: f"{p[0]} != {p[1]}"),
        pair.map(lambda p: f"{p[0]} and {p[1]}"),
        pair.map(lambda p: f"{p[0]} or {p[1]}"),
        pair.map(lambda p: f"{p[0]} in {p[1]}"),
        pair.map(lambda p: f"{p[0]} + {p[1]}"),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
        pair.map(lambda p: f"{p[0]} if {p[1]}"),
        st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"{t[0]} | {t[1]}"),
        st.tuples(inner, st.sampled_from(TESTS)).map(lambda t: f"{t[0]} is {t[1]}"),
        inner.map(lambda a: f"{a}()"),
    )


EXPRESSIONS = st.recursive(atoms, _compound, max_leaves=6)
TOKENS = st.lists(st.sampled_from(
    [*NAMES[:6], "'a'", "1", "==", "!=", "~", "|", "(", ")", ",", ".", "not", "and", "or",
     "if", "else", "is", "ip", "url_host", " ", "\t", "\n", "\r", "{", "}", "%", "#",
     "'", '"', "\\", "é"]), max_size=12).map("".join)


def jinja_value(source: str, context: dict[str, Any], template: bool) -> tuple[str, Any]:
    """What Jinja2 alone (statekit's sandbox, its limits) makes of ``source``."""
    shared = templating._compiled()
    shared.env.begin()
    try:
        if template:
            return "value", "".join(shared.template(source).generate(context))
        return "value", shared.expression(source)(**context)
    except Exception as exc:
        return "error", type(exc).__name__


def fast_value(source: str, context: dict[str, Any], template: bool) -> tuple[str, Any]:
    try:
        if template:
            return "value", templating._FAST.render(fast.parse_template(source), context)
        return "value", templating._FAST.value(fast.parse(source), context)
    except Exception as exc:
        return "unsure", type(exc).__name__


SEEN: dict[str, int] = {"value": 0, "unsure": 0}


def agree(source: str, template: bool = False) -> None:
    quick_env, jinja_env = EnvView(ENV), EnvView(ENV)
    quick = fast_value(source, {**CONTEXT, "env": quick_env}, template)
    SEEN[quick[0]] += 1
    if quick[0] == "unsure":
        return
    want = jinja_value(source, {**CONTEXT, "env": jinja_env}, template)
    assert want[0] == "value", (source, quick, want)
    assert quick[1] == want[1] and type(quick[1]) is type(want[1]), (source, quick, want)
    assert quick_env.used == jinja_env.used, (source, quick_env.used, jinja_env.used)


SETTINGS = settings(max_examples=700, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(EXPRESSIONS)
@example("007")
@example("'a' 'b'")
@example("ip4 is ip if b else s")
@example("env.used")
@example("not s == 'abc'")
@example("s ~ url | url_host")
@example("(env.A ~ ':' ~ env.TOKEN) | b64encode")
@example("env.FLAG | check_flag('FLAG') == '1'")
@example("big ~ big")
def test_an_expression_is_unsure_or_what_jinja2_gives(source: str) -> None:
    agree(source)


@SETTINGS
@given(TOKENS)
def test_token_soup_is_unsure_or_what_jinja2_gives(source: str) -> None:
    agree(source)


TEXT = st.text(alphabet="ab =:/#%\n\t{}.-", max_size=8)


@SETTINGS
@given(st.lists(st.one_of(TEXT, EXPRESSIONS.map(lambda e: "{{ " + e + " }}")), max_size=4)
       .map("".join))
@example("Authorization=Basic {{ (env.A ~ ':' ~ env.TOKEN) | b64encode }}")
@example("a\n{{ s }}\n")
@example("a\r\n{{ s }}")
@example("{{ s }}{# c #}")
@example("{{ '}}' }}")
def test_a_template_is_unsure_or_what_jinja2_gives(source: str) -> None:
    agree(source, template=True)


def test_both_kinds_of_answer_were_met() -> None:
    """The generated sources reach both sides (so the tests above compare something)."""
    for source in ("s ~ 'x'", "env.A", "'p' if b else 'q'", "s + 'x'", "range(3)"):
        agree(source)
    print(f"\nquick path: {SEEN}")
    assert SEEN["value"] >= 3 and SEEN["unsure"] >= 2, SEEN


def test_the_shipped_states_need_no_jinja2() -> None:
    """Every template of states/ is read by the quick path (checked on the sources)."""
    import yaml

    from tests.conftest import REPO

    sources: list[tuple[str, bool]] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, str) and "{" in value:
            single = templating._SINGLE_EXPR.match(value)
            sources.append((single.group("expr"), False) if single else (value, True))
        elif isinstance(value, str) and key == "when":
            sources.append((value, False))
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for k, item in value.items():
                walk(item, str(k))

    for path in sorted((REPO / "states").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    assert len(sources) > 60
    for source, template in sources:
        parse = fast.parse_template if template else fast.parse
        parse(source)  # raises Unsupported if not


@pytest.mark.parametrize("source", ["not", "if", "env.used", "s.upper", "007", "1.5",
                                    "x is ip 3", "a if b", "s in l", "l[0]", "f(1)"])
def test_what_it_does_not_read_it_leaves(source: str) -> None:
    with pytest.raises(fast.Unsupported):
        templating._FAST.value(fast.parse(source), {**CONTEXT, "env": EnvView(ENV),
                                                    "x": "1", "a": 1})


TELEMETRY_ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": "glc_abcdefghijklmnop",
                "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp",
                "OTEL_RESOURCE_ATTRIBUTES": "team=ai", "FLY_APP_NAME": "app",
                "OTEL_LOG_USER_PROMPTS": "1"}


def loaded_in_a_fresh_python(paths: list[str], environ: dict[str, str], show: str) -> str:
    """``loader.load`` in a new interpreter: ``show`` (an expression of ``program``),
    then whether Jinja2 was imported."""
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = ("import sys\nfrom statekit.load import loader\n"
             f"program = loader.load({paths!r}, environ={environ!r})\n"
             f"print({show}, 'jinja2' in sys.modules)")
    proc = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True,
                          text=True, check=False, cwd=REPO, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("environ", [{}, TELEMETRY_ON], ids=["telemetry-off", "telemetry-on"])
def test_a_cold_load_of_the_shipped_states_imports_no_jinja2(environ: dict[str, str]) -> None:
    from tests.conftest import REPO

    assert loaded_in_a_fresh_python([str(REPO / "states")], environ, "''") == "False"
    assert Renderer().render("{{ s }}", CONTEXT) == "abc"


def test_states_of_bare_names_load_without_jinja2(tmp_path: Path) -> None:
    """A cold load whose templates are all bare names never imports Jinja2 (~50 ms)."""
    states = tmp_path / "s.yaml"
    states.write_text("phases: [auth]\nvars:\n  path: /etc/x.env\n  keep: true\nstates:\n"
                      "  - id: f\n    type: env_file\n    phase: auth\n"
                      "    path: '{{ path }}'\n    when: keep\n    entries: {A: '1'}\n")
    shown = loaded_in_a_fresh_python([str(states)], {}, "program.states[0].spec.path")
    assert shown.split() == ["/etc/x.env", "False"]
