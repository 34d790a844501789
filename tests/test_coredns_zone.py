"""coredns_zone: rendering, ownership and conflicts, and the real CoreDNS reloading it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from statekit.errors import ApplyError, FieldError
from statekit.host.files import ReadResult
from statekit.resources.base import Meta
from statekit.resources.coredns_zone import CorednsZone, ZoneCurrent, ZoneSpec, desired
from tests.conftest import Run, dns_query, statekit, write

pytestmark = pytest.mark.needs("coredns")

SPEC_BLOCK = """\
# statekit:otlp-dns
otlp-gateway-prod-us-west-2.grafana.net:53 {
    bind 127.0.0.53
    template IN AAAA {
        rcode NOERROR
    }
    forward . 8.8.8.8 1.1.1.1
    log
    cache 300
}
"""
OTLP: dict[str, Any] = {
    "corefile": "/etc/coredns/Corefile", "zone": "otlp-gateway-prod-us-west-2.grafana.net.",
    "bind": ["127.0.0.53"], "aaaa": "noerror", "forward": ["8.8.8.8", "1.1.1.1"],
    "log": True, "cache": 300,
}
FOREIGN = "# hand-written\n(snip) {\n    errors\n}\n\nexample.org:53 {\n    import snip\n}\n"
RESOURCE = CorednsZone()


def spec_of(fields: dict[str, Any], sid: str = "otlp-dns", ensure: str = "present") -> ZoneSpec:
    """The spec the loader would build: the schema's defaults filled in."""
    from statekit.load.schema_check import with_defaults

    return RESOURCE.parse(with_defaults("coredns_zone", fields), Meta(sid, ensure))


# --- pure: rendering, validation, planning -------------------------------------------


def test_renders_the_spec_block_exactly() -> None:
    assert desired(b"", spec_of(OTLP)) == SPEC_BLOCK.encode()


def test_catch_all_block_and_options() -> None:
    fields = {"corefile": "/c", "zone": ["."], "bind": ["127.0.0.53"], "answer": "nxdomain",
              "errors": True, "port": 1053}
    assert desired(b"", spec_of(fields, "deny")).decode() == (
        "# statekit:deny\n.:1053 {\n    bind 127.0.0.53\n    template ANY ANY {\n"
        "        rcode NXDOMAIN\n    }\n    errors\n}\n")


def test_several_zones_in_order_and_upstream_forms() -> None:
    fields = {"corefile": "/c", "zone": ["B.example.", "a.example"],
              "forward": ["10.0.0.1:5353", "2001:db8::1", "[2001:db8::2]:53"]}
    text = desired(b"", spec_of(fields, "two")).decode()
    assert text.index("b.example:53 {") < text.index("a.example:53 {")
    assert text.count("# statekit:two\n") == 2
    assert "forward . 10.0.0.1:5353 2001:db8::1 [2001:db8::2]:53\n" in text


INVALID = [
    ("zone", "evil.com {"), ("zone", "a.com\nb.com {"), ("zone", "a b.com"),
    ("zone", 'a".com'), ("zone", "a#.com"), ("zone", "a..com"), ("zone", "-a.com"),
    ("zone", "under_score.com"), ("zone", "x" * 64 + ".com"), ("zone", ("a" * 60 + ".") * 5),
    ("zone", ""), ("bind", "127.0.0.1 {"), ("bind", "lo"), ("bind", "fe80::1%eth0"),
    ("forward", "8.8.8.8 {"), ("forward", "8.8.8.8:0"), ("forward", "dns.google"),
    ("forward", "[::1"), ("forward", "1.2.3.4:53 5.6.7.8"),
]


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_injection_and_bad_values_are_field_errors(field: str, value: str) -> None:
    fields = {"corefile": "/c", "zone": "ok.test", "forward": ["8.8.8.8"]}
    fields[field] = value if field == "zone" else [value]
    with pytest.raises(FieldError) as info:
        spec_of(fields)
    assert info.value.field == field


def test_zone_limits_and_normalisation() -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(longest) == 253
    spec = spec_of({"corefile": "/c", "zone": [longest + ".", "Mixed-Case.Test"],
                    "forward": ["1.1.1.1"]})
    assert spec.zones == (longest, "mixed-case.test")


@pytest.mark.parametrize("fields", [
    {"answer": "nxdomain", "forward": ["1.1.1.1"]},
    {"answer": "forward"},
    {"zone": ["a.test", "A.test."], "forward": ["1.1.1.1"]},
])
def test_inconsistent_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(FieldError):
        spec_of({"corefile": "/c", "zone": "a.test", **fields})


@pytest.mark.parametrize(("existing", "conflict"), [
    ("otlp-gateway-prod-us-west-2.grafana.net {\n}\n", True),
    ("otlp-gateway-prod-us-west-2.grafana.net.:53 {\n    bind 127.0.0.53 127.0.0.1\n}\n", True),
    ("dns://OTLP-gateway-prod-us-west-2.grafana.net:53 {\n    bind lo\n}\n", True),
    ("a.test otlp-gateway-prod-us-west-2.grafana.net:53 {\n}\n", True),
    ("# statekit:someone-else\notlp-gateway-prod-us-west-2.grafana.net:53 {\n}\n", True),
    ("otlp-gateway-prod-us-west-2.grafana.net:1053 {\n}\n", False),
    ("otlp-gateway-prod-us-west-2.grafana.net {\n    bind 127.0.0.1\n}\n", False),
    ("tls://otlp-gateway-prod-us-west-2.grafana.net:53 {\n}\n", False),
    ("(otlp-gateway-prod-us-west-2.grafana.net) {\n}\n", False),
    ("# statekit:otlp-dns\notlp-gateway-prod-us-west-2.grafana.net:53 {\n}\n", False),
])
def test_conflicts(existing: str, conflict: bool) -> None:
    current = b"# line 1\n" + existing.encode()
    if conflict:
        line = 3 if existing.startswith("#") else 2
        with pytest.raises(ApplyError, match=rf"/etc/coredns/Corefile:{line} .*'otlp-dns'"):
            desired(current, spec_of(OTLP))
    else:
        assert SPEC_BLOCK.encode() in desired(current, spec_of(OTLP))


# --- issue 19 item 6: a wildcard bind is every address --------------------------------

CATCH = {"corefile": "/etc/coredns/Corefile", "zone": ".", "bind": ["127.0.0.53"],
         "answer": "nxdomain", "log": True}
OPEN_BLOCK = ".:53 {{\n    bind {bind}\n    forward . 192.0.2.1\n}}\n"


@pytest.mark.parametrize(("foreign", "conflict"), [
    (OPEN_BLOCK.format(bind="0.0.0.0"), True),
    (OPEN_BLOCK.format(bind="::"), True),
    (OPEN_BLOCK.format(bind="0:0:0:0:0:0:0:0"), True),
    (OPEN_BLOCK.format(bind="::ffff:0.0.0.0"), True),
    (OPEN_BLOCK.format(bind="lo"), True),  # an interface: unknown here, so any address
    (OPEN_BLOCK.format(bind="eth0 127.0.0.9"), True),
    (OPEN_BLOCK.format(bind="{$DNS_BIND}"), True),
    (OPEN_BLOCK.format(bind="127.0.0.9#x 0.0.0.0"), True),  # CoreDNS binds 0.0.0.0 too
    (OPEN_BLOCK.format(bind="127.0.0.1 ::ffff:127.0.0.53"), True),
    (OPEN_BLOCK.format(bind="fe80::1%eth0"), True),  # Go reads no zone index: not an address
    (".:53 {\n    forward . 192.0.2.1\n}\n", True),  # no bind: every address
    ("(any) {\n    bind 0.0.0.0\n}\n" + OPEN_BLOCK.format(bind="127.0.0.9\n    import any"),
     True),
    (OPEN_BLOCK.format(bind="127.0.0.9\n    import more/*.conf"), True),
    (OPEN_BLOCK.format(bind="127.0.0.9\n    {$MORE} 0.0.0.0"), True),
    (OPEN_BLOCK.format(bind="127.0.0.1"), False),
    (OPEN_BLOCK.format(bind="127.0.0.1 ::1"), False),
    (OPEN_BLOCK.format(bind="0.0.0.0").replace(":53", ":1053"), False),
])
def test_a_wildcard_or_unknown_bind_overlaps_every_address(foreign: str, conflict: bool) -> None:
    """Such a block is taken over with ``adopt``; without it, the state fails."""
    data = b"# line 1\n" + foreign.encode()
    plain = spec_of(CATCH, "dns-catch-all")
    if not conflict:
        out = desired(data, spec_of({**CATCH, "adopt": True}, "dns-catch-all"))
        assert out.startswith(data) and desired(data, plain) == out
        return
    line = data.count(b"\n", 0, data.index(b".:53")) + 1
    with pytest.raises(ApplyError, match=rf"/etc/coredns/Corefile:{line} \(\.:53\).*"
                                         r"'dns-catch-all'"):
        desired(data, plain)
    out = desired(data, spec_of({**CATCH, "adopt": True}, "dns-catch-all"))
    assert b"192.0.2.1" not in out and out.count(b".:53 {") == 1
    assert b"# statekit:dns-catch-all\n.:53 {\n    bind 127.0.0.53\n" in out


def test_a_wildcard_block_with_another_zone_is_not_adopted_and_names_both_places() -> None:
    data = b"example.org:53 .:53 {\n    bind 0.0.0.0\n    forward . 192.0.2.1\n}\n"
    spec = spec_of({**CATCH, "adopt": True}, "dns-catch-all")
    with pytest.raises(ApplyError) as info:
        desired(data, spec)
    assert "/etc/coredns/Corefile:1 (example.org:53 .:53)" in str(info.value)
    assert "'dns-catch-all'" in str(info.value)


def test_absent_touches_nothing_else_and_a_missing_file_is_fine() -> None:
    absent = spec_of({"corefile": "/c"}, ensure="absent")
    assert not RESOURCE.plan(absent, ZoneCurrent(ReadResult(None, None))).changed
    other = FOREIGN.encode() + b"\n# statekit:other\nz.test:53 {\n}\n"
    assert desired(other, absent) == other


def test_a_hand_edited_owned_block_is_restored_in_place() -> None:
    start = desired(FOREIGN.encode(), spec_of(OTLP)) + b"# after\n"
    edited = start.replace(b"cache 300", b"cache 5\n    whoami").replace(
        b"grafana.net:53", b"grafana.net:5353")
    assert desired(edited, spec_of(OTLP)) == start


def test_unparseable_corefile_fails_without_writing() -> None:
    from statekit.host.files import FileState

    broken = FileState(content=b"a.test {\n", mode=0o644, uid=0, gid=0, inode=1, mtime_ns=1)
    with pytest.raises(ApplyError, match="Corefile:1: cannot parse"):
        RESOURCE.plan(spec_of(OTLP), ZoneCurrent(ReadResult(broken, None)))


# --- through the CLI, under a temporary --root -----------------------------------------


def states_file(tmp_path: Path, body: str, name: str = "dns.yaml") -> Path:
    return write(tmp_path / "states" / name, "phases: [network]\nstates:\n" + body)


ZONE_STATE = """\
  - id: otlp-dns
    type: coredns_zone
    phase: network
    ensure: "{{ env.ENSURE or 'present' }}"
    corefile: /etc/coredns/Corefile
    zone: otlp-gateway-prod-us-west-2.grafana.net
    bind: [127.0.0.53]
    aaaa: noerror
    forward: [8.8.8.8, 1.1.1.1]
    log: true
    cache: "300"
"""


def converge(states: Path, root: Path, *extra: str, env: dict[str, str] | None = None,
             netns: str | None = None) -> tuple[Run, dict[str, Any]]:
    run = statekit(["converge", str(states), "--root", str(root), "--format", "json", *extra],
                   env=env, netns=netns)
    report = json.loads(run.stdout) if run.stdout.startswith("{") else {}
    return run, report


def test_converge_is_idempotent_and_keeps_foreign_bytes(tmp_path: Path, root: Path) -> None:
    corefile = write(root / "etc/coredns/Corefile", FOREIGN)
    states = states_file(tmp_path, ZONE_STATE)
    run, report = converge(states, root)
    assert run.returncode == 0, run.output
    assert report["summary"]["changed"] == 1
    assert corefile.read_text() == FOREIGN + "\n" + SPEC_BLOCK
    assert oct(corefile.stat().st_mode & 0o777) == "0o644"
    before = os.stat(corefile)
    run, report = converge(states, root, "--detailed-exitcode")
    assert run.returncode == 0 and report["summary"]["changed"] == 0
    after = os.stat(corefile)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    run, report = converge(states, root, env={"ENSURE": "absent"})
    assert run.returncode == 0 and report["summary"]["changed"] == 1
    assert corefile.read_text() == FOREIGN


def test_drift_is_restored_and_foreign_edits_kept(tmp_path: Path, root: Path) -> None:
    corefile = write(root / "etc/coredns/Corefile", FOREIGN)
    states = states_file(tmp_path, ZONE_STATE)
    assert converge(states, root)[0].returncode == 0
    text = corefile.read_text()
    corefile.write_text("# a foreign note\n" + text.replace("    log\n", "").replace(
        "127.0.0.53", "0.0.0.0"))
    run, report = converge(states, root, "--diff")
    assert run.returncode == 0 and report["summary"]["changed"] == 1
    assert corefile.read_text() == "# a foreign note\n" + text


def test_missing_corefile_is_created_and_check_mode_changes_nothing(
        tmp_path: Path, root: Path) -> None:
    states = states_file(tmp_path, ZONE_STATE)
    run = statekit(["converge", str(states), "--root", str(root), "--check", "--diff",
                    "--detailed-exitcode"])
    assert run.returncode == 2, run.output
    assert "+otlp-gateway-prod-us-west-2.grafana.net:53 {" in run.stdout
    assert "+    template IN AAAA {" in run.stdout
    assert not (root / "etc/coredns/Corefile").exists()
    assert converge(states, root)[0].returncode == 0
    assert (root / "etc/coredns/Corefile").read_text() == SPEC_BLOCK


def test_conflict_fails_and_writes_nothing(tmp_path: Path, root: Path) -> None:
    existing = FOREIGN + "otlp-gateway-prod-us-west-2.grafana.net {\n    forward . 9.9.9.9\n}\n"
    corefile = write(root / "etc/coredns/Corefile", existing)
    before = os.stat(corefile)
    states = states_file(tmp_path, ZONE_STATE)
    for extra in (["--check"], []):
        run, report = converge(states, root, *extra)
        assert run.returncode == 1, run.output
        error = report["states"][0]["error"]
        assert "/etc/coredns/Corefile:9" in error and "'otlp-dns'" in error
        assert f"at {states}:" in error  # both locations: the block's and the state's
    after = os.stat(corefile)
    assert corefile.read_text() == existing
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(("content", "message"), [
    (FOREIGN + "#" * (1 << 20), ":1: cannot parse the Corefile: 1048649 bytes, over the "
                                "1048576-byte limit"),
    (FOREIGN + "x {\n" + "a\n" * 100_000 + "}\n", "more than 100000 tokens"),
])
def test_a_corefile_over_a_cap_fails_its_state_and_is_left_alone(
        tmp_path: Path, root: Path, content: str, message: str) -> None:
    corefile = write(root / "etc/coredns/Corefile", content)
    before = os.stat(corefile)
    run, report = converge(states_file(tmp_path, ZONE_STATE), root)
    assert run.returncode == 1, run.output
    assert message in report["states"][0]["error"]
    after = os.stat(corefile)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(("line", "field"), [
    ('    zone: "evil.com {"\n', "zone"),
    ('    zone: "a.com\\nb.com"\n', "zone"),
    ("    zone: [ok.test, 'bad name.test']\n", "zone"),
    ('    bind: ["127.0.0.1 {"]\n', "bind"),
    ('    forward: ["8.8.8.8 # x"]\n', "forward"),
    ("    port: 70000\n", "port"),
    ("    aaaa: drop\n", "aaaa"),
])
def test_invalid_input_is_exit_3_with_file_line_field(
        tmp_path: Path, root: Path, line: str, field: str) -> None:
    body = ("  - id: bad\n    type: coredns_zone\n    phase: network\n"
            "    corefile: /etc/coredns/Corefile\n    forward: [1.1.1.1]\n    zone: ok.test\n")
    key = line.split(":", maxsplit=1)[0] + ":"
    body = "".join(x + "\n" for x in body.splitlines() if not x.startswith(key)) + line
    states = states_file(tmp_path, body)
    run = statekit(["converge", str(states), "--root", str(root)])
    assert run.returncode == 3, run.output
    assert f"{states}:" in run.output and f"states[bad].{field}" in run.output
    assert not (root / "etc").exists()


# --- the real CoreDNS --------------------------------------------------------------------

UPSTREAM = """\
.:53 {
    bind 127.0.0.10
    hosts {
        192.0.2.7 allowed.test
        2001:db8::7 allowed.test
        192.0.2.8 other.test
    }
}
"""
CATCH_ALL = """\
  - id: dns-catch-all
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: "."
    bind: [127.0.0.53]
    answer: nxdomain
"""
ALLOW = """\
  - id: allow-test
    type: coredns_zone
    phase: network
    ensure: "{{ env.ENSURE or 'present' }}"
    corefile: /etc/coredns/Corefile
    zone: allowed.test
    bind: [127.0.0.53]
    forward: [127.0.0.10]
    aaaa: noerror
    log: true
    cache: 300
    requires: [dns-catch-all]
  - id: reload-coredns
    type: signal
    phase: network
    signal: USR1
    pidfile: /run/coredns.pid
    missing_ok: true
    onchanges: [allow-test]
"""
NX: tuple[str, list[str]] = ("NXDOMAIN", [])


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["status"] for s in report["states"]}


@pytest.mark.netns
def test_real_coredns_allowlists_and_reloads(
        tmp_path: Path, root: Path, netns: str, coredns: Any) -> None:
    coredns(write(tmp_path / "upstream" / "Corefile", UPSTREAM))
    assert dns_query(netns, "127.0.0.10", "allowed.test", port=53,
                     expect=("NOERROR", ["192.0.2.7"])) == ("NOERROR", ["192.0.2.7"])
    states = states_file(tmp_path, CATCH_ALL)
    assert converge(states, root, netns=netns)[0].returncode == 0
    catch_all_only = (root / "etc/coredns/Corefile").read_bytes()
    (root / "run").mkdir(exist_ok=True)
    coredns(root / "etc/coredns/Corefile", pidfile=root / "run/coredns.pid")
    assert dns_query(netns, "127.0.0.53", "allowed.test", expect=NX) == NX
    write(states.parent / "zz-allow.yaml", "phases: [network]\nstates:\n" + ALLOW)

    run, report = converge(states.parent, root, netns=netns)
    assert run.returncode == 0, run.output
    assert statuses(report) == {"dns-catch-all": "ok", "allow-test": "changed",
                                "reload-coredns": "changed"}
    assert dns_query(netns, "127.0.0.53", "allowed.test",
                     expect=("NOERROR", ["192.0.2.7"])) == ("NOERROR", ["192.0.2.7"])
    assert dns_query(netns, "127.0.0.53", "allowed.test", "AAAA") == ("NOERROR", [])
    assert dns_query(netns, "127.0.0.53", "other.test") == NX
    assert dns_query(netns, "127.0.0.53", "other.test", "AAAA") == NX

    run, report = converge(states.parent, root, netns=netns)
    assert statuses(report)["reload-coredns"] == "ok" and report["summary"]["changed"] == 0

    run, report = converge(states.parent, root, env={"ENSURE": "absent"}, netns=netns)
    assert statuses(report) == {"dns-catch-all": "ok", "allow-test": "changed",
                                "reload-coredns": "changed"}
    assert (root / "etc/coredns/Corefile").read_bytes() == catch_all_only
    assert dns_query(netns, "127.0.0.53", "allowed.test", expect=NX) == NX


SERVED = """\
  - id: many
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: [a.test, b.test.]
    port: 1053
    bind: [127.0.0.1, "::1"]
    forward: ["127.0.0.10:53"]
    errors: true
    cache: 60
  - id: deny
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: "."
    port: 1053
    answer: nxdomain
    bind: [127.0.0.1]
    log: true
"""


@pytest.mark.netns
def test_coredns_serves_what_statekit_writes_next_to_foreign_blocks(
        tmp_path: Path, root: Path, netns: str, coredns: Any) -> None:
    foreign = ("(snip) {\n\terrors # glued#comment\n}\n\nhand.test:1053 {\n"
               "    bind 127.0.0.1\n    import snip\n    template IN A {\n\t answer \"{{ .Name }}"
               " 60 IN A 192.0.2.99\"\n    }\n}")
    corefile = write(root / "etc/coredns/Corefile", foreign)
    upstream = UPSTREAM.replace("allowed.test", "x.a.test").replace(
        "other.test", "x.b.test")
    coredns(write(tmp_path / "upstream" / "Corefile", upstream))
    run, _ = converge(states_file(tmp_path, SERVED), root, netns=netns)
    assert run.returncode == 0, run.output
    assert corefile.read_text().startswith(foreign + "\n\n# statekit:many\na.test:1053 {")
    coredns(corefile)
    assert dns_query(netns, "127.0.0.1", "x.a.test", port=1053,
                     expect=("NOERROR", ["192.0.2.7"])) == ("NOERROR", ["192.0.2.7"])
    assert dns_query(netns, "::1", "x.a.test", port=1053) == ("NOERROR", ["192.0.2.7"])
    assert dns_query(netns, "127.0.0.1", "x.b.test", port=1053) == ("NOERROR", ["192.0.2.8"])
    assert dns_query(netns, "127.0.0.1", "hand.test", port=1053) == ("NOERROR", ["192.0.2.99"])
    assert dns_query(netns, "127.0.0.1", "elsewhere.example", port=1053) == NX


OPEN_TEMPLATE = """\
.:53 {{
    bind {bind}
    forward . 127.0.0.10
}}
"""


@pytest.mark.netns
@pytest.mark.parametrize("bind", ["0.0.0.0", "lo"])
def test_real_coredns_a_wildcard_template_block_is_taken_over(
        tmp_path: Path, root: Path, netns: str, coredns: Any, bind: str) -> None:
    """Issue 19 item 6: the template's `.:53 { bind 0.0.0.0; forward }` was kept next to
    the catch-all on 127.0.0.53, and CoreDNS answered every name on 127.0.0.1. Adopted,
    only the catch-all is left: NXDOMAIN on 127.0.0.53, nothing listening on 127.0.0.1."""
    coredns(write(tmp_path / "upstream" / "Corefile", UPSTREAM))
    corefile = write(root / "etc/coredns/Corefile", OPEN_TEMPLATE.format(bind=bind))
    states = states_file(tmp_path, CATCH_ALL + "    adopt: true\n")
    write(states.parent / "zz-allow.yaml", "phases: [network]\nstates:\n" + ALLOW)
    run, report = converge(states.parent, root, netns=netns)
    assert run.returncode == 0, run.output
    assert statuses(report)["dns-catch-all"] == "changed"
    coredns(corefile)
    assert dns_query(netns, "127.0.0.53", "allowed.test",
                     expect=("NOERROR", ["192.0.2.7"])) == ("NOERROR", ["192.0.2.7"])
    assert dns_query(netns, "127.0.0.53", "other.test") == NX
    rcode, answers = dns_query(netns, "127.0.0.1", "other.test", timeout=2)
    assert rcode.startswith("ERROR") and not answers, (rcode, answers)  # was NOERROR
    text = corefile.read_text()
    assert text.count(".:53 {") == 1 and f"bind {bind}" not in text
    run, report = converge(states.parent, root, netns=netns)
    assert report["summary"]["changed"] == 0, run.output
