"""The Corefile lexer and parser: real-world files round-trip byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekit import corefile
from statekit.corefile import CorefileError, lex, parse, parse_key
from statekit.resources.coredns_zone import ZoneSpec, desired
from tests.corefile_fuzz import zone_spec

SAMPLES = Path(__file__).parent / "corefiles"
FILES = sorted(p.name for p in SAMPLES.glob("*.Corefile"))

#: file -> [(keys, start line, binds, snippet, marker)] of its top-level blocks.
STRUCTURE: dict[str, list[tuple[tuple[str, ...], int, tuple[str, ...], bool, str | None]]] = {
    "container.Corefile": [
        (("(deny)",), 2, (), True, None),
        ((".:53",), 9, ("127.0.0.53",), False, "dns-catch-all"),
        (("allowed.internal:53",), 15, ("127.0.0.53",), False, None),
    ],
    "crlf.Corefile": [
        (("example.org",), 2, (), False, None),
        (("quoted.example:53",), 7, ("127.0.0.2",), False, None),
    ],
    "kubernetes.Corefile": [
        ((".:53",), 2, (), False, None),
        (("consul.local:53",), 23, (), False, None),
    ],
    "quirks.Corefile": [
        (("dns://a.test:1053,", "tls://b.test:1853"), 2, ("127.0.0.1", "::1", "lo"), False,
         None),
        (("c.test:53",), 13, (), False, None),
        ((".:5353",), 15, ("127.0.0.9",), False, None),
    ],
    "snippets.Corefile": [
        (("(common)",), 2, (), True, None),
        (("(internal-acl)",), 7, (), True, None),
        (("{$CLUSTER_ZONE}:53",), 16, (), False, None),
        (("example.com:53", "example.net:53"), 22, (), False, None),
    ],
    "unbraced.Corefile": [(("example.org:1053",), 1, ("127.0.0.1",), False, None)],
    "unicode.Corefile": [
        (("éxample.org:53",), 2, (), False, None),
        (("b.org:53",), 7, (), False, None),
    ],
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def reemit(text: str) -> str:
    """Tokens and comments put back at their offsets, with the gaps between them."""
    tokens, comments = lex(text)
    pieces = sorted([(t.start, t.end) for t in tokens]
                    + [(c.start, c.start + len(c.text)) for c in comments])
    out, pos = [], 0
    for start, end in pieces:
        gap = text[pos:start]
        assert all(corefile.is_space(ch) or ch == "\ufeff" for ch in gap), (pos, gap)
        out += [gap, text[start:end]]
        pos = end
    assert all(corefile.is_space(ch) for ch in text[pos:])
    return "".join([*out, text[pos:]])


def test_every_sample_has_its_structure_listed() -> None:
    assert sorted(STRUCTURE) == FILES


@pytest.mark.parametrize("name", FILES)
def test_sample_structure(name: str) -> None:
    data = sample(name)
    found = [(b.keys, b.line, b.binds, b.snippet, b.marker) for b in parse(data).blocks]
    assert found == STRUCTURE[name]


@pytest.mark.parametrize("name", FILES)
def test_sample_lexes_and_reemits_identically(name: str) -> None:
    text = sample(name).decode()
    assert reemit(text).encode() == sample(name)


@pytest.mark.parametrize("name", FILES)
def test_block_spans_start_at_the_key_and_end_at_the_brace(name: str) -> None:
    data = sample(name)
    for block in parse(data).blocks:
        chunk = data[block.start:block.end].decode()
        assert chunk.startswith(block.keys[0].strip('"')) or chunk.startswith('"')
        assert chunk.rstrip("\r").endswith("}") or not block.braced
        assert data[:block.start].count(b"\n") + 1 == block.line


@pytest.mark.parametrize("name", [n for n in FILES if n != "unbraced.Corefile"])
def test_owned_block_insert_then_remove_gives_the_original(name: str) -> None:
    data = sample(name)
    spec = zone_spec("otlp-dns", zone=["new.example.org"], bind=["127.0.0.53"],
                     forward=["8.8.8.8"])
    added = desired(data, spec)
    before, after = parse(data).blocks, parse(added).blocks
    assert after[:-1] == before
    assert after[-1].marker == "otlp-dns" and after[-1].keys == ("new.example.org:53",)
    assert desired(added, zone_spec("otlp-dns")) == data


LEX_CASES = [
    ("a b\tc", ["a", "b", "c"]),
    ('"a b" c', ["a b", "c"]),
    ('"a \\"b\\" \\\\ \\n"', ['a "b" \\\\ \\n']),
    ('"x"y', ["x", "y"]),
    ('a"b c"', ['a"b', 'c"']),
    ("whoami#glued comment\nlog", ["whoami", "comment", "log"]),  # CoreDNS 1.15 does so
    ("a#b\"c d\" e # f\ng", ["a", "d\"", "e", "g"]),
    ("\"a\"#b c", ["a"]),
    ("a\"b#c\" d", ['a"b', "d"]),
    ("a\r#b c", ["a", "c"]),
    ("`a b`", ["`a", "b`"]),
    ("a\r\nb\rc", ["a", "bc"]),
    ("\ufeffa", ["a"]),
    ('"{"', ["{"]),
    ("{$ENV} {%WIN%}", ["{$ENV}", "{%WIN%}"]),
    ('""', [""]),
    ("a\u00a0b\u2003c", ["a", "b", "c"]),
]


@pytest.mark.parametrize(("text", "expected"), LEX_CASES)
def test_lexer_follows_coredns(text: str, expected: list[str]) -> None:
    assert [t.text for t in lex(text)[0]] == expected


def test_quoted_token_lines() -> None:
    tokens, _ = lex('a "x\ny"\nb')
    assert [(t.line, t.end_line) for t in tokens] == [(1, 1), (1, 2), (3, 3)]


ERRORS = [
    ("a.test {\n  log\n", 1, "not closed"),
    ("}\n", 1, "unexpected '}'"),
    ("a.test { whoami }\n", 1, "own line"),
    ('a.test {\n  log "x\n}\n', 2, "unterminated"),
    ("a.test\nlog\n}\n", 3, "has no '{'"),
    ("a.test {\n}\nb.test\nlog\n", 3, "expected '{'"),
    ("(snip)\nlog\n", 1, "expected '{'"),
]


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_syntax_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        parse(text.encode())
    assert info.value.line == line and message in info.value.message


KEYS = [
    (".:53", "dns", ".", 53),
    (".", "dns", ".", 53),
    ("Example.COM.:1053", "dns", "example.com.", 1053),
    ("dns://a.b:1053", "dns", "a.b.", 1053),
    ("tls://a.b", "tls", "a.b.", 853),
    ("a.b,", "dns", "a.b.", 53),
    ("10.0.0.0/24", "dns", "10.0.0.0/24.", 53),
    ("{$ZONE}:53", "dns", None, 53),
    ("a.b:\u00b9", "dns", "a.b:\u00b9.", 53),  # "¹" is no port (str.isdigit said it was)
]


@pytest.mark.parametrize(("raw", "scheme", "zone", "port"), KEYS)
def test_keys(raw: str, scheme: str, zone: str | None, port: int) -> None:
    key = parse_key(raw)
    assert (key.scheme, key.zone, key.port) == (scheme, zone, port)


def test_offsets_are_bytes_in_non_ascii_files() -> None:
    data = sample("unicode.Corefile")
    block = parse(data).blocks[1]
    assert data[block.start:block.end] == b"b.org:53 {\n}"


# --- properties ---------------------------------------------------------------------

FRAGMENTS = [
    "# a comment\n", "\n", "   \n", "\t\n", "# statekit:other\n",
    "a.test:53 {\n    log\n}\n", "b.test c.test {\n\tbind 127.0.0.1\n}\n",
    "(snip) {\n  errors\n}\n", "import snip\n", "{$ZONE} {\n  whoami # note\n}\n",
    '.:1053 {\n  template IN AAAA { rcode NOERROR }\n  rewrite name "a b" c\n}\n',
    "x.test:53 {\r\n  log\r\n}\r\n", "# statekit:other\nd.test:53 {\n}\n",
    "é.test {\n  # ünï\n}\n", "e.test {\n}", "# trailing comment",
]

corefiles = st.lists(st.sampled_from(FRAGMENTS), max_size=8).map(
    lambda parts: "".join(p if p.endswith("\n") or i == len(parts) - 1 else p + "\n"
                          for i, p in enumerate(parts)).encode())
zone_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.[a-z]{2,5}", fullmatch=True),
                      min_size=1, max_size=3, unique=True)


@settings(max_examples=300, deadline=None)
@given(corefiles, zone_names)
def test_property_insert_then_remove_is_identity(data: bytes, zones: list[str]) -> None:
    spec = zone_spec(zone=zones, forward=["8.8.8.8"], log=True)
    added = desired(data, spec)
    assert [b.keys for b in parse(added).owned_by("mine")] == [(f"{z}:53",) for z in zones]
    assert desired(added, spec) == added
    assert desired(added, zone_spec()) == data


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([n for n in FILES if n != "unbraced.Corefile"]), zone_names)
def test_property_samples_insert_then_remove(name: str, zones: list[str]) -> None:
    data = sample(name)
    spec = zone_spec(zone=zones, bind=["127.0.0.99"], forward=["1.1.1.1"])
    assert desired(desired(data, spec), zone_spec()) == data


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab {}#"\\\n\r\t`$é')), max_size=60))
def test_property_lexer_loses_nothing(text: str) -> None:
    try:
        assert reemit(text) == text
    except CorefileError as exc:
        assert "unterminated" in exc.message


# --- issue 19: every edit re-parses and is stable; caps; linear time ----------------------

MINE = zone_spec(zone=["a.test"], bind=["127.0.0.53"], forward=["1.1.1.1"])
ADOPT = zone_spec(zone=["."], bind=["127.0.0.53"], answer="nxdomain", adopt=True)
ABSENT = zone_spec()

ROUND_TRIPS = [
    # an owned block without braces, then a bind line (its span ended before the bind)
    (MINE, b"# statekit:mine\na.test:53\nwhoami\nbind 127.0.0.1\n"),
    (ABSENT, b"# statekit:mine\na.test:53\nwhoami\nbind 127.0.0.1\n# after\n"),
    # an indented block taken over (the indent stayed before the marker)
    (ADOPT, b"  .:53 {\n      bind 127.0.0.53\n  }\n"),
    (ADOPT, b"\xef\xbb\xbf.:53 {\n\t}"),
    (ADOPT, b" \xc2\x85.:53 {\n}"),
    (ADOPT, b"a.test {\n}  .:53 {\n bind 0.0.0.0\n}\n"),  # a key after another's brace
    # a marker after the closing brace: removing the block must not let it claim the next
    (ABSENT, b'# statekit:mine\na.test:53 {\n} # statekit:mine\n.:1054 {\n}\n'),
    (ABSENT, b"# statekit:mine\na.test:53 {\n}#glued\n# statekit:other\nb.test {\n}\n"),
    # a marker left dangling above the removed block, and above what follows it
    (ABSENT, b"# statekit:other\n# statekit:mine\na.test:53 {\n}\nb.test {\n}\n"),
    (ABSENT, b"# statekit:other\n\n# statekit:mine\na.test:53 {\n}\nb.test {\n}\n"),
    (ABSENT, b"# statekit:other\n# statekit:mine\na.test:53 {\n} b.test {\n}\n"),
    (MINE, b"  # statekit:mine\n  a.test:53 {\n  }\n"),
]


@pytest.mark.parametrize(("spec", "data"), ROUND_TRIPS)
def test_edit_reparses_and_a_second_edit_changes_nothing(spec: ZoneSpec, data: bytes) -> None:
    out = desired(data, spec)
    after = parse(out)
    assert desired(out, spec) == out
    owned = after.owned_by("mine")
    assert [b.keys for b in owned] == [(f"{z}:{spec.port}",) for z in spec.zones]
    foreign = [(b.keys, b.marker) for b in parse(data).blocks if b.marker != "mine"]
    kept = [(b.keys, b.marker) for b in after.blocks if b.marker != "mine"]
    assert kept == foreign or spec.adopt


def test_removing_keeps_a_dangling_marker_off_the_next_block() -> None:
    data = b"# statekit:other\n# statekit:mine\na.test:53 {\n}\nb.test {\n}\n"
    assert desired(data, ABSENT) == b"# statekit:other\n\nb.test {\n}\n"


def test_glued_comment_drops_only_the_rest_of_its_word() -> None:
    """CoreDNS binds 127.0.0.1 here too: the '#' hides 'x' only."""
    block = parse(b".:1053 {\n  bind 127.0.0.53#x 127.0.0.1\n}\n").blocks[0]
    assert block.binds == ("127.0.0.53", "127.0.0.1")


@pytest.mark.parametrize(("text", "binds"), [
    ("(s) {\n  bind 0.0.0.0\n}\n.:53 {\n  bind 127.0.0.9\n  import s\n}\n",
     ("127.0.0.9", "0.0.0.0")),
    ("(t) {\n  bind ::\n}\n(s) {\n  import t\n}\n.:53 {\n  import s\n}\n", ("::",)),
    (".:53 {\n  bind 127.0.0.9\n  import extra/*.conf\n}\n", ("127.0.0.9", "extra/*.conf")),
    (".:53 {\n  bind 127.0.0.9\n  {$MORE} 0.0.0.0\n}\n", ("127.0.0.9", "{$MORE}")),
    ("(s) {\n  import s\n}\n.:53 {\n  import s\n}\n", ()),
    ("(s) {\n" + "  bind 127.0.0.1\n" * 65 + "}\n.:53 {\n  bind 127.0.0.9\n  import s\n}\n",
     ("127.0.0.9", "(more binds than statekit follows)")),
])
def test_binds_include_imports_and_unknowns(text: str, binds: tuple[str, ...]) -> None:
    assert parse(text.encode()).servers()[-1].binds == binds


def test_a_top_level_import_after_a_brace_is_a_key() -> None:
    with pytest.raises(CorefileError, match=r"expected '\{'"):
        parse(b"a.test {\n} import x\n")


@pytest.mark.parametrize(("data", "message"), [
    (b"#" * (corefile.MAX_BYTES + 1), "over the 1048576-byte limit"),
    (b"a.test {\n" + b"x\n" * corefile.MAX_TOKENS + b"}\n", "more than 100000 tokens"),
    (b"a.test {\n" + b"x {\n" * 64 + b"}\n" * 65, "nested over 64 deep"),
    (b"a,\n", "another key after the comma"),
])
def test_caps_and_refusals_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(CorefileError, match=message):
        parse(data)
    with pytest.raises(CorefileError, match=message):
        desired(data, MINE)


def test_a_corefile_at_the_depth_cap_parses() -> None:
    data = b"a.test {\n" + b"x {\n" * 63 + b"}\n" * 64
    assert parse(data).blocks[0].end == len(data) - 1


#: Crafted worst cases just under the caps (1 MiB, 100 000 tokens), each parsed and edited.
MIB = corefile.MAX_BYTES - 64
CRAFTED = {
    "tokens": b"x {\n" + b"aaaaaaaa\n" * (corefile.MAX_TOKENS - 10) + b"}\n",
    "tokens on one line": b"x {\nlog" + b" a" * (corefile.MAX_TOKENS - 10) + b"\n}\n",
    "comment lines": b"#\n" * (MIB // 2),
    "indented comments": b" #\n" * (MIB // 3),
    "blank lines": b"\n" * MIB,
    "markers": b"# statekit:mine\n" * (MIB // 16),
    "one quoted token": b'x {\nlog "' + b"a b\\\"" * (MIB // 6) + b'"\n}\n',
    "a word of quotes": b"x {\nlog " + b'a"' * (MIB // 2) + b"\n}\n",
    "glued comments": b"x {\nlog " + b"a#bbbbbb " * (corefile.MAX_TOKENS - 10) + b"\n}\n",
    "carriage returns": b"x {\nlog a" + b"\r" * MIB + b"\n}\n",
    "owned blocks": b"# statekit:mine\na.test {\n}\n" * (corefile.MAX_TOKENS // 3 - 10),
    "snippet fan-out": b"(s) {\n" + b"bind 127.0.0.1\n" * 10_000 + b"}\n"
    + b"(t) {\nimport s\n}\n" + b".:53 {\nimport t\n}\n" * 12_000,
}

#: The cases that make the most objects: their peak memory is measured too (tracemalloc
#: costs 10 times the time, so the others are only timed).
TRACED = {"tokens", "owned blocks", "snippet fan-out", "glued comments"}

PROBE = """
import json, sys, time, tracemalloc
from statekit.corefile import parse
from statekit.resources.coredns_zone import ZoneSpec, desired
def run(data):
    parse(data)
    desired(data, ZoneSpec(owner="mine", path="/c", present=False))
result = {}
for path, traced in json.loads(sys.argv[1]):
    data = open(path, "rb").read()
    start = time.process_time()
    run(data)
    seconds, peak = time.process_time() - start, 0
    if traced:
        tracemalloc.start()
        run(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    result[path] = [seconds, peak]
print(json.dumps(result))
"""


def test_crafted_worst_cases_parse_in_linear_time(tmp_path: Path) -> None:
    """Was 14 s and 442 MB per parse of a 4 MB file; now under 1 MiB (the cap), a parse
    and an edit of each worst input take well under a second (bound 3 s of CPU for a slow
    shared machine) and little memory (peak of Python's allocations for the cases that
    allocate most; bound 64 MiB)."""
    import json
    import subprocess
    import sys

    paths = {}
    for name, data in CRAFTED.items():
        assert len(data) <= corefile.MAX_BYTES, name
        paths[name] = tmp_path / name.replace(" ", "-")
        paths[name].write_bytes(data)
    cases = [[str(paths[name]), name in TRACED] for name in sorted(CRAFTED)]
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True,
                         text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]  # each case parsed and edited
    result = json.loads(run.stdout)
    for name in sorted(CRAFTED):
        seconds, peak = result[str(paths[name])]
        print(f"{name}: {seconds:.2f} s" + (f", peak {peak / 2**20:.1f} MiB" if peak else ""))
        assert seconds < 3 and peak < 64 << 20, (name, seconds, peak)
