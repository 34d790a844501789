"""The linear-time matcher of ``ignore`` patterns (statekit/netfilter/linear_regex.py).

Property: for every pattern in the supported subset and every text, ``search`` answers
as ``re.search(...) is not None`` (hypothesis, generated patterns and texts over an
alphabet chosen for the edge cases: newlines, Unicode digits, spaces and letters, ``_``).
Patterns ``re`` backtracks on are matched in milliseconds; refused constructs say why.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekit.netfilter.linear_regex import MAX_STATES, PatternError
from statekit.netfilter.linear_regex import compile as linear

pytestmark = pytest.mark.netns

ALPHABET = "ab -_1\n\t\u0663\u00e9\u2028\u00a0Z."  # U+0663 a decimal digit, U+00A0 a space
ATOMS = ["a", "b", " ", "-", "_", "1", "\\n", "\u00e9", "\u0663", "Z", "\\.", ".",
         "[ab]", "[^a ]", "[a-c]", "[\\d_]", "[^\\w]", "[\\s-]", "\\d", "\\D", "\\s", "\\S",
         "\\w", "\\W", "^", "$", "\\A", "\\Z", "\\b", "\\B", "(?:)"]
QUANTIFIERS = ["*", "+", "?", "*?", "+?", "??", "{2}", "{0,2}", "{1,3}", "{2,}", "{1,2}?"]
FLAGS = ["", "(?s)", "(?m)", "(?a)", "(?sm)", "(?x)"]


def group(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, b: a + b, inner, inner),
        st.builds(lambda a, b: f"(?:{a}|{b})", inner, inner),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a, q: f"(?:{a}){q}", inner, st.sampled_from(QUANTIFIERS)),
        st.builds(lambda f, a: f"(?{f}:{a})", st.sampled_from(["s", "m", "-s", "x"]), inner),
    )


PATTERNS = st.builds(
    lambda flags, body: flags + body, st.sampled_from(FLAGS),
    st.recursive(st.one_of(st.sampled_from(ATOMS),
                           st.builds(lambda a, q: a + q, st.sampled_from(ATOMS[:24]),
                                     st.sampled_from(QUANTIFIERS))),
                 group, max_leaves=8))
TEXTS = st.text(alphabet=ALPHABET, max_size=12)


@settings(max_examples=600, deadline=None)
@given(pattern=PATTERNS, texts=st.lists(TEXTS, min_size=1, max_size=4))
def test_search_answers_as_re_search(pattern: str, texts: list[str]) -> None:
    try:
        expected = re.compile(pattern)
    except re.error:
        with pytest.raises(PatternError, match="not a valid regular expression"):
            linear(pattern)
        return
    compiled = linear(pattern)
    for text in texts:
        assert compiled.search(text) == (expected.search(text) is not None), (pattern, text)


@pytest.mark.parametrize(("pattern", "text", "want"), [
    ("-j DOCKER", "-A OUTPUT -j DOCKER-USER", True),
    ("^-A OUTPUT -o docker0 ", "-A OUTPUT -o docker0 -j ACCEPT", True),
    ("ACCEPT$", "-A OUTPUT -j ACCEPT\n", True),  # $ before a final newline, as re
    ("ACCEPT\\Z", "-A OUTPUT -j ACCEPT\n", False),
    ("\\b", "", False), ("\\B", "", False), ("^$", "", True),  # as re, in an empty text
    ("\\d+", "\u0663", True), ("(?a)\\d", "\u0663", False),
    ("(?m)^b", "a\nb", True), ("^b", "a\nb", False), ("(?s)a.b", "a\nb", True),
    ("a.b", "a\nb", False),
])
def test_cases_where_re_has_a_rule(pattern: str, text: str, want: bool) -> None:
    assert (re.search(pattern, text) is not None) == want
    assert linear(pattern).search(text) == want


RULE = ('-A OUTPUT -d 198.18.0.30/32 -p tcp -m tcp --dport 443 -m comment --comment '
        '"statekit:fw-allowlist api.anthropic.com" -j ACCEPT')
EVIL = ["(\\S+ ?)+$Z", "(a*)*b", "(x+x+)+y", "(.*a){12}Z", "^(\\w+\\s?)*$Z", "(a|aa)+$Z",
        "(\\d|\\w)+#", "(.*)*[Z]{2}"]


@pytest.mark.parametrize("pattern", EVIL)
def test_patterns_re_backtracks_on_take_milliseconds(pattern: str) -> None:
    """One rule line, and a 4 KB one: bounded by the line's length times the states."""
    compiled = linear(pattern)
    for line in (RULE, (RULE + " ") * 30):
        start = time.perf_counter()
        assert compiled.search(line) is False
        elapsed = time.perf_counter() - start
        assert elapsed < 0.25, f"{pattern}: {elapsed:.3f} s on {len(line)} characters"
    start = time.perf_counter()
    for _ in range(100):  # a warm pattern: one lookup per character
        compiled.search(RULE)
    assert time.perf_counter() - start < 0.25


@pytest.mark.parametrize(("pattern", "reason"), [
    ("a{4294967295}", "a repeat count is too large"),
    ("a{100000}", f"more than {MAX_STATES} states"),
    ("((a{40}){40})", f"more than {MAX_STATES} states"),
    ("(a)\\1", "a backreference is not supported"),
    ("(?P<x>a)(?P=x)", "a backreference is not supported"),
    ("a(?=b)", "a lookahead or lookbehind"), ("(?<!a)b", "a lookahead or lookbehind"),
    ("(a)?(?(1)b|c)", "a conditional group"), ("(?>a+)b", "an atomic group"),
    ("a++", "a possessive repeat"), ("(?i)docker", "(?i) is not supported"),
    ("(?i:docker)", "(?i) is not supported"), ("(?a:\\w)", "write (?a) at the start"),
    ("x" * 1001, "longer than 1000 characters"), ("[", "not a valid regular expression"),
    ("(" * 51 + ")" * 51, "nested too deeply (at most 50)"),
])
def test_refused_patterns_say_why(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=re.escape(reason)):
        linear(pattern)


def test_the_transition_cache_is_bounded() -> None:
    compiled = linear("(a|b|c)*\\d{3}(x|y)")
    text = "".join(chr(0x4E00 + i) for i in range(30000))  # 30 000 distinct characters
    assert compiled.search(text) is False
    assert len(compiled._cache) <= 20001


# --- in a purged chain's ignore: end to end ------------------------------------------------

CHAIN_STATES = """\
phases: [network]
states:
  - id: out
    type: iptables_chain
    phase: network
    chain: OUTPUT
    policy: DROP
    purge: true
    ignore: {ignore}
  - id: lo
    type: iptables_rule
    phase: network
    chain: OUTPUT
    out_interface: lo
    jump: ACCEPT
"""


@pytest.mark.parametrize(("ignore", "kept"), [
    ("['(\\S+ ?)+$Z']", False),  # backtracks for minutes in re
    ("['(x+x+)+y', '-d 192\\.0\\.2\\.9/32 .*-j ACCEPT$']", True),
])
def test_a_backtracking_ignore_pattern_converges_in_a_second(
        netns: str, root: Any, tmp_path: Any, ignore: str, kept: bool) -> None:
    from tests.conftest import in_netns, saved, statekit, write

    foreign = "-A OUTPUT -d 192.0.2.9/32 -p tcp -m tcp --dport 443 " + "-m comment " \
              "--comment " + "x" * 200 + " -j ACCEPT"
    in_netns(netns, ["iptables", *foreign.split()])
    path = write(tmp_path / "chain.yaml", CHAIN_STATES.format(ignore=ignore))
    start = time.perf_counter()
    run = statekit(["converge", "--root", str(root), str(path)], netns=netns)
    elapsed = time.perf_counter() - start
    assert run.returncode == 0, run.output
    assert elapsed < 5, elapsed  # the interpreter and iptables; the matching is ms
    rules = [r for r in saved(netns) if r.startswith("-A OUTPUT")]
    assert any("192.0.2.9" in r for r in rules) == kept, rules
    assert any("statekit:lo" in r for r in rules)


@pytest.mark.parametrize(("ignore", "message"), [
    ("['a{4294967295}']", "a repeat count is too large"),
    ("['(a)\\1']", "a backreference is not supported"),
    ("['docker', '(?=x)']", "a lookahead or lookbehind is not supported"),
])
def test_a_refused_ignore_pattern_is_exit_3_naming_file_line_and_field(
        root: Any, tmp_path: Any, ignore: str, message: str) -> None:
    from tests.conftest import statekit, write

    path = write(tmp_path / "chain.yaml", CHAIN_STATES.format(ignore=ignore))
    for command in (["validate", str(path)], ["converge", "--root", str(root), str(path)]):
        run = statekit(command)
        assert run.returncode == 3, run.output
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "internal error" not in run.output, run.stderr
        assert lines[0].startswith(f"statekit: {path}:9: states[out].ignore: '"), lines
        assert message in lines[0]
    assert list(root.iterdir()) == []
