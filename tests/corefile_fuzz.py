"""Corefiles for fuzzing the parser and the editor, and the properties every one must keep.

:func:`valid_corefile` writes a Corefile CoreDNS accepts (checked by the real CoreDNS in
tests/test_corefile_fuzz.py) in many syntaxes: indented or not, CRLF, a byte order mark,
braces on the key line or the next, one-line nested blocks, quoted keys, comments glued
to words, unicode, snippets and imports, markers of this state and of another one.
:func:`mutated` breaks one at random: tokens, braces, quotes, comments, markers in odd
places, joined and split lines, control characters. Everything is seeded by one integer,
so a failure names the seed that replays it (``python -m tests.corefile_fuzz SEED``).

:func:`check` runs one Corefile through :func:`statekit.corefile.parse` and
:func:`statekit.resources.coredns_zone.desired` with one spec and returns what was broken:
an exception other than CorefileError/ApplyError, an output that does not parse, a second
edit that changes something, a block of someone else's changed (bytes, keys, binds or
marker), an owned block that is not the canonical one, an insert that a remove does not
undo exactly.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from statekit import corefile
from statekit.errors import ApplyError
from statekit.resources.base import Meta
from statekit.resources.coredns_zone import (
    CorednsZone,
    ZoneSpec,
    _adoptable,
    _owned,
    conflicts,
    desired,
)

OWNER = "mine"
SAMPLES = sorted((Path(__file__).parent / "corefiles").glob("*.Corefile"))


def zone_spec(owner: str = OWNER, **fields: Any) -> ZoneSpec:
    """The spec the loader builds from ``fields`` (the schema's defaults filled in, the
    Corefile ``/Corefile``); without ``zone``, the spec of ``ensure: absent``."""
    from statekit.load.schema_check import with_defaults

    ensure = "present" if "zone" in fields else "absent"
    return CorednsZone().parse(with_defaults("coredns_zone", {"corefile": "/Corefile",
                                                              **fields}), Meta(owner, ensure))


#: The specs each Corefile is edited with: present and absent, adopt, several zones.
SPECS = (
    zone_spec(zone=["."], bind=["127.0.0.53"], answer="nxdomain", log=True, adopt=True),
    zone_spec(zone=["a.test", "example.org"], bind=["127.0.0.53"], forward=["127.0.0.10"],
              aaaa="noerror", cache=30),
    zone_spec(zone=["b.test", "c.test", "a.test"], port=1053, forward=["127.0.0.10:5353"],
              errors=True, adopt=True),
    zone_spec(zone=["a.test", "d.test"], bind=["127.0.0.53"], answer="pinned", aaaa="noerror",
              log=True, pins_from="fw", pin_ttl=30),
    zone_spec(),
)
ABSENT = SPECS[-1]
#: The pinned spec's answers (a.test has two; d.test none: NXDOMAIN).
PINS = {"a.test": ("192.0.2.1", "192.0.2.2"), "d.test": ()}

# --- a Corefile CoreDNS accepts -----------------------------------------------------------

ZONES = ("a.test", "b.test", "c.test", "example.org", "éxample.test", ".", "d.test")
PORTS = (53, 1053, 1054)
BINDS = ("127.0.0.1", "127.0.0.53", "127.0.0.2", "0.0.0.0", "::1", "::", "lo",
         "::ffff:127.0.0.53")
DIRECTIVES = (
    "whoami", "log", "errors", "cache 30", "forward . 127.0.0.10:53",
    "template IN AAAA {\n    rcode NOERROR\n}", "template IN AAAA { rcode NOERROR }",
    'template IN TXT {\n    answer "{{ .Name }} 60 IN TXT \\"a # b } {\\""\n}',
    "hosts {\n    192.0.2.1 x.test\n    fallthrough\n}", "rewrite name exact q.test r.test",
    "whoami#glued-comment", "log # a comment", 'rewrite name "exact" "s.test" t.test',
    "template ANY ANY {\n    rcode NXDOMAIN\n    }", "cache 30 {\n    success 100\n}",
    "errors#glued", "log\r",
)
COMMENTS = ("# a comment", "# ünïcödé ✓", "#", "# statekit:other", "#}{\"", "    # indented")


def _key(rng: random.Random, zone: str, port: int) -> str:
    key = f"{zone}:{port}" if port != 53 or rng.random() < 0.5 else zone
    if rng.random() < 0.15:
        key = f"dns://{key}"
    return f'"{key}"' if rng.random() < 0.1 else key


def _plugin(directive: str) -> str:
    return directive.split("#", maxsplit=1)[0].split(maxsplit=1)[0]


def _block(rng: random.Random, keys: list[str], binds: list[str], snippet: str | None,
           indent: str) -> str:
    plugins = sorted({_plugin(d) for d in DIRECTIVES})
    body = [rng.choice([d for d in DIRECTIVES if _plugin(d) == p])
            for p in rng.sample(plugins, rng.randint(0, 3))]
    if binds:
        body.insert(rng.randint(0, len(body)), "bind " + " ".join(binds))
    if snippet:
        body.insert(rng.randint(0, len(body)), "import " + snippet)
    if rng.random() < 0.3:
        body.insert(rng.randint(0, len(body)), rng.choice(COMMENTS))
    lines = [indent + line for entry in body for line in entry.split("\n")]
    if rng.random() < 0.15 and lines and not lines[0].lstrip().startswith("#"):
        return f"{' '.join(keys)} {{ {lines[0].strip()}\n" + "\n".join([*lines[1:], "}"])
    opening = f"{' '.join(keys)}\n{{" if rng.random() < 0.1 else f"{' '.join(keys)} {{"
    return "\n".join([opening, *lines, "}"])


ADDRS = {"lo": ("127.0.0.1", "::1"), "::ffff:127.0.0.53": ("127.0.0.53",)}


def _server(rng: random.Random, used: dict[tuple[str, int], set[str]],
            snippets: dict[str, list[str]], indent: str) -> str | None:
    """A server block whose zones, ports and addresses no other block serves (CoreDNS
    refuses a zone and port twice on one address, or bound and unbound)."""
    port = rng.choice(PORTS)
    zones = rng.sample(ZONES, rng.choice((1, 1, 1, 2)))
    binds = rng.sample(BINDS, rng.choice((0, 1, 1, 2)))
    snippet = rng.choice(sorted(snippets)) if snippets and rng.random() < 0.5 else None
    every = [a for b in binds + (snippets[snippet] if snippet else []) for a in ADDRS.get(b, (b,))]
    listen = set(every) or {""}
    if len(every) != len(listen - {""}):
        return None
    for zone in zones:
        there = used.get((zone, port), set())
        if there & listen or (there and "" in listen | there):
            return None
    for zone in zones:
        used.setdefault((zone, port), set()).update(listen)
    return _block(rng, [_key(rng, z, port) for z in zones], binds, snippet, indent)


def valid_corefile(rng: random.Random) -> str:
    """Blocks and snippets CoreDNS accepts, in a random syntax, with markers."""
    indent = rng.choice(("    ", "\t", "  ", ""))
    parts: list[str] = []
    snippets: dict[str, list[str]] = {}  # name -> its binds
    used: dict[tuple[str, int], set[str]] = {}
    for _ in range(rng.randint(0, 5)):
        if rng.random() < 0.15:
            name = f"snip{len(snippets)}"
            snippets[name] = rng.sample(BINDS[:3], 1) if rng.random() < 0.5 else []
            body = f"bind {snippets[name][0]}" if snippets[name] else "debug"
            parts.append(f"({name}) {{\n{indent}{body}\n}}")
            continue
        block = _server(rng, used, snippets, indent)
        if block is None:
            continue
        if rng.random() < 0.3:
            block = f"# statekit:{rng.choice((OWNER, OWNER, 'other'))}\n{block}"
        if rng.random() < 0.3:
            block = f"{rng.choice(COMMENTS)}\n{block}"
        parts.append(block)
    text = "".join(p + rng.choice(("\n", "\n\n", "\n\n\n", "\n  \n")) for p in parts)
    if rng.random() < 0.2:
        text = text.rstrip("\n")
    if rng.random() < 0.15:
        text = text.replace("\n", "\r\n")
    if rng.random() < 0.05:
        text = "\ufeff" + text
    return text


# --- a Corefile broken at random ---------------------------------------------------------

PIECES = ("{", "}", " { ", "\n}\n", '"', '"x y"', '\\"', "\\", "#", "# statekit:mine\n",
          "\n# statekit:mine\n", "# statekit:other\n", "\n", "\r\n", "\r", " ", "\t", ",",
          "bind 0.0.0.0", "\nbind 127.0.0.53\n", "import snip0", "\nimport x\n", "(s)",
          ".:53", "a.test", "{$ENV}", "`", "é", "\u2003", "\x85", "\x1c", "\x00", "\ufeff",
          "\udcff", ".:53 {\n}", "x {\n", "    ", "\n\n")


def mutated(rng: random.Random, text: str) -> str:
    """``text`` with a few random edits of characters, tokens and lines."""
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        at = rng.randint(0, len(text))
        if op < 0.4:
            text = text[:at] + rng.choice(PIECES) + text[at:]
        elif op < 0.55:
            text = text[:at] + text[at + rng.randint(1, 8):]
        elif op < 0.7:
            lines = text.split("\n")
            index = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[index])
            text = "\n".join(lines)
        elif op < 0.8:  # join two lines, or indent one
            lines = text.split("\n")
            index = rng.randrange(len(lines))
            if rng.random() < 0.5 and index + 1 < len(lines):
                lines[index:index + 2] = [lines[index] + " " + lines[index + 1]]
            else:
                lines[index] = rng.choice(("  ", "\t", " \r")) + lines[index]
            text = "\n".join(lines)
        elif op < 0.9:  # a marker line in a random place
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(
                ("# statekit:mine", "  # statekit:mine", "# statekit:other", "}# statekit:mine")))
            text = "\n".join(lines)
        else:
            text = text[:at] + "".join(rng.choice(PIECES) for _ in range(rng.randint(2, 6))) \
                + text[at:]
    return text


def corpus_case(seed: int) -> bytes:
    """Case ``seed`` of the corpus: a valid Corefile, a sample, or one of them broken."""
    rng = random.Random(seed)
    kind = rng.random()
    if kind < 0.3:
        text = valid_corefile(rng)
    elif kind < 0.45:
        text = rng.choice(SAMPLES).read_bytes().decode("utf-8", "surrogateescape")
        text = mutated(rng, text) if rng.random() < 0.7 else text
    else:
        text = mutated(rng, valid_corefile(rng))
    return text.encode("utf-8", "surrogateescape")


# --- the properties ----------------------------------------------------------------------


def _foreign(cf: corefile.Corefile, data: bytes, skip: set[int]) -> list[tuple[object, ...]]:
    return [(b.keys, b.binds, b.marker, b.snippet, data[b.start:b.end]) for b in cf.blocks
            if (b.marker != OWNER or b.snippet) and b.start not in skip]


def check(data: bytes, spec: ZoneSpec) -> str | None:
    """What ``desired(data, spec, PINS)`` breaks, or None."""
    try:
        cf = corefile.parse(data)
    except corefile.CorefileError:
        try:
            desired(data, spec, PINS)
        except corefile.CorefileError:
            return None
        return "parse refused it but desired() did not"
    try:
        out = desired(data, spec, PINS)
    except (corefile.CorefileError, ApplyError):
        return None
    except Exception as exc:
        return f"desired() raised {type(exc).__name__}: {exc}"
    return _check_output(data, cf, out, spec)


def _check_output(data: bytes, cf: corefile.Corefile, out: bytes, spec: ZoneSpec) -> str | None:
    try:
        after = corefile.parse(out)
    except corefile.CorefileError as exc:
        return f"the output does not parse: {exc}"
    try:
        again = desired(out, spec, PINS)
    except Exception as exc:
        return f"the second edit raised {type(exc).__name__}: {exc}"
    if again != out:
        return "the second edit changed the output again"
    adopted = {b.start for b, _ in conflicts(cf, spec) if _adoptable(b, spec)} \
        if spec.present and spec.adopt else set()
    if _foreign(after, out, set()) != _foreign(cf, data, adopted):
        return "a block that is not the state's changed"
    if [i.args for i in cf.imports] != [i.args for i in after.imports]:
        return "an import line changed"
    return _check_owned(data, cf, out, after, spec, adopted)


def _check_owned(data: bytes, cf: corefile.Corefile, out: bytes, after: corefile.Corefile,
                 spec: ZoneSpec, adopted: set[int]) -> str | None:
    owned = after.owned_by(OWNER)
    zones = sorted(corefile.normalise_zone(z) for z in spec.zones)
    if sorted(k.zone or "" for b in owned for k in b.parsed_keys) != zones:
        return f"owned zones {[b.keys for b in owned]} are not {zones}"
    for block in owned:
        zone = next(z for z in spec.zones
                    if corefile.normalise_zone(z) == block.parsed_keys[0].zone)
        if out[block.marker_start:block.end] != _owned(spec, zone, PINS):
            return f"the owned block for {zone} is not the canonical one"
    if spec.present and not cf.owned_by(OWNER) and not adopted \
            and desired(out, ABSENT) != data:
        return "removing what was inserted does not give the original back"
    return None


def failures(seeds: range, specs: tuple[ZoneSpec, ...] = SPECS) -> list[str]:
    """Every broken property over ``seeds`` (each a line naming the seed and spec)."""
    found = []
    for seed in seeds:
        data = corpus_case(seed)
        for index, spec in enumerate(specs):
            problem = check(data, spec)
            if problem:
                found.append(f"seed {seed} spec {index}: {problem}: {data!r}")
    return found


if __name__ == "__main__":  # one seed, or a range: python -m tests.corefile_fuzz 0 100000
    first = int(sys.argv[1])
    last = int(sys.argv[2]) if len(sys.argv) > 2 else first + 1
    for line in failures(range(first, last)):
        print(line[:2000])
