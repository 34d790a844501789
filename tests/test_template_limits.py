"""Bounds on template work (statekit/load/template_limits.py), in-process.

Each hostile template of issue 19 (and its cousins: every operator, filter and method
that multiplies a size) is refused in milliseconds with a message naming the limit; a
loop that slips through is stopped by the clock; the templates state files really use
render as plain Jinja2 renders them.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from statekit.load import template_limits as limits
from statekit.load.templating import EnvView, Renderer

BIG = "too large"
REFUSED = [  # (template, what the message says)
    ("{{ 'x' * 1000000000 }}", "'*' would make a value of 1000000000"),  # issue 19: 3.9 GB
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
     "range() would give more than 100000 numbers"),  # issue 19: over 20 s
    ("{{ 1000000000 * 'x' }}", "'*' would make"),
    ("{{ ['x'] * 1000000000 }}", "'*' would make"),
    ("{{ 'x' * 999999 ~ 'y' * 999999 }}", "'~' would make"),
    ("{{ 'x' * 999999 + 'y' * 999999 }}", "'+' would make"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "'~' would make"),
    ("{% set a = ['x' * 10] %}" + "{% set a = [a, a, a, a, a, a, a, a, a, a] %}" * 6
     + "{{ a }}", "a literal would make"),
    ("{{ [['x'] * 1000] * 1000 }}", "'*' would make"),
    ("{{ dict(a='x' * 600000, b='x' * 600000) }}", "a literal would make"),
    ("{{ '%1000000000d' % 1 }}", "'%' would make"),
    ("{{ '%*d' % (1000000000, 1) }}", "'*' width is not allowed"),
    ("{{ '{:1000000000}'.format(1) }}", "str.format would make"),
    ("{{ '{:{}}'.format(1, 1000000000) }}", "nested '{}' in a format spec"),
    ("{{ 10 ** 100000000 }}", "'**' would make an integer"),
    ("{{ 'x'|center(1000000000) }}", "the center filter would make"),
    ("{{ 'a\na'|indent(1000000000) }}", "the indent filter would make"),
    ("{{ 'ab'|replace('', 'x' * 999999) }}", "the replace filter would make"),
    ("{{ ('x' * 100000)|wordwrap(1, wrapstring='y' * 100) }}", "the wordwrap filter"),
    ("{{ (['x' * 1000] * 500)|join('y' * 10000) }}", "the join filter would make"),
    ("{{ '%1000000000s'|format(1) }}", "the format filter would make"),
    ("{{ [1]|batch(1000000000, 0)|list }}", "the batch filter would make"),
    ("{{ [1]|slice(1000000000)|list }}", "the slice filter would make"),
    ("{{ 'x'.ljust(1000000000) }}", "'ljust' of 'str' object is unsafe"),
    ("{{ 'y'.join(['x' * 1000] * 900) }}", "'join' of 'str' object is unsafe"),
    ("{{ lipsum(100000) }}", "'lipsum' is undefined"),
]


@pytest.mark.parametrize(("template", "message"), REFUSED)
def test_size_multiplying_templates_are_refused_in_milliseconds(template: str,
                                                               message: str) -> None:
    Renderer().render("{{ 1 }}", {})  # Jinja2 imported, the sandbox built: not counted
    start = time.process_time()  # CPU, not wall: a busy machine does not make it fail
    with pytest.raises((SecurityError, UndefinedError)) as caught:
        Renderer().render(template, {"env": EnvView()})
    elapsed = time.process_time() - start
    assert message in str(caught.value), caught.value
    assert elapsed < 0.5, f"{elapsed:.3f} s of CPU"  # was 19 s and more before the limits


def test_a_text_template_renders_at_most_the_limit() -> None:
    template = "{% for i in range(20) %}{{ 'x' * 99999 }}{% endfor %}"
    with pytest.raises(limits.LimitError, match="rendered text would exceed 1000000"):
        Renderer().render(template, {})


def test_the_work_of_one_render_is_bounded() -> None:
    template = "{% for i in range(100) %}{% set s = 'x' * 999999 %}{% endfor %}"
    with pytest.raises(limits.LimitError, match="more than 20000000 characters and items"):
        Renderer().render(template, {})


def test_a_loop_that_slips_through_is_stopped_by_the_clock() -> None:
    """Two loops over a 100 000-character string: within every size limit, 10^10 steps.
    The clock stops it after 1 s, and the previous SIGALRM handler is back."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    try:
        template = ("{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}"
                    "{% endfor %}{% endfor %}")
        start = time.perf_counter()
        with pytest.raises(limits.LimitError, match="ran for more than 1 s"):
            Renderer().render(template, {})
        assert 0.9 < time.perf_counter() - start < 3
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(0.1)
        assert seen == [signal.SIGALRM]  # our handler, not the template's
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_running_timer_is_restored() -> None:
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        assert Renderer().render("{{ 1 + 1 }}", {}) == 2
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 25 < remaining <= 30
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


ALLOWED = [
    "{{ ['a', 'b']|join(',') }}", "{{ 'A-B'|lower|replace('-', '_') }}",
    "{{ [[1], [2, 3]]|sum(start=[]) }}", "{{ [1, 2, 3]|sum }}", "{{ '%05d' % 42 }}",
    "{{ '%s:%s' % ('a', 1) }}", "{{ '{}:{}'.format('a', 1) }}", "{{ '{:>6}'.format('x') }}",
    "{{ range(3)|list }}", "{{ 'x'|center(5) }}", "{{ 'a\nb'|indent(2, first=true) }}",
    "{{ 'aaa bbb ccc'|wordwrap(4) }}", "{{ [1, 2, 3]|batch(2)|list }}",
    "{{ [1, 2, 3]|slice(2)|list }}", "{{ 'x' ~ 1 ~ none }}", "{{ 'ab' * 3 }}",
    "{{ [1] * 3 + [2] }}", "{{ (1, 2) }}", "{{ {'a': [1, (2, 3)]} }}", "{{ 2 ** 10 }}",
    "{{ dict(a=1) }}", "{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}",
    "{% set a, b = 1, 2 %}{{ a + b }}", "{{ ['b', 'a']|map('upper')|join('-') }}",
    "{{ 'a,b'.split(',') }}", "{{ '%-10s|' % 'x' }}", "{{ '%.3f' % 1.5 }}",
    "{{ ('%s' ~ 'x')|format('y') }}", "{{ 'a b'|replace(' ', '') }}",
]


@pytest.mark.parametrize("template", ALLOWED)
def test_ordinary_templates_render_as_plain_jinja2(template: str) -> None:
    plain = ImmutableSandboxedEnvironment(keep_trailing_newline=True)
    expected = plain.from_string(template).render()
    got: Any = Renderer().render(template, {})
    assert str(got) == expected


def test_weight_counts_shared_parts_each_time_and_stops_at_the_limit() -> None:
    inner = ["x" * 10] * 10
    assert limits.weight(inner) == 1 + 10 + 100
    assert limits.weight([inner] * 10) == 1 + 10 + 10 * 111
    deep: list[Any] = ["x" * 1000]
    for _ in range(20):
        deep = [deep] * 10  # 10^20 characters as it prints
    start = time.process_time()
    assert limits.weight(deep, limit=10_000) > 10_000
    assert time.process_time() - start < 0.1
