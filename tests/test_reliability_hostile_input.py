"""Hostile input, property-based (hypothesis): arbitrary strings where statekit takes input.

1. Every ``GRAFANA_*``, ``OTEL_*`` and ``FLY_*`` input of states/telemetry.yaml: one of
   them hostile (any text: newlines, braces, quotes, ``=``, ``,``, spaces, unicode line
   separators), the others valid. ``statekit converge --phase auth --format json`` into a
   fresh temporary root, in-process (``statekit.cli.main`` with the environment set, so
   hundreds of runs stay fast). Either it converges and the env file, read by the
   strictest common reader (``str.splitlines``, which also splits at U+2028, U+0085...),
   has exactly the spec's keys, each once, mode 0600; or it exits 3 with exactly one
   line on stderr, no output, and the root is still empty. Never a traceback.
   NUL cannot be in a process environment; it is fed through ``loader.load(environ=)``.
2. Zone names, bind and forward addresses and ports (coredns_zone), addresses, ports and
   host names (iptables_rule), through small generated state files loaded in-process
   (``statekit.load.loader.load``, the same validation a converge does first): either a
   ``StateError`` (exit 3) or specs whose rendered Corefile parses back to exactly the
   wanted blocks, and whose rule lines are single rules. The rule lines accepted are then
   loaded for real with ``iptables-restore`` in a private namespace: the kernel takes
   each as one rule.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekit.corefile import parse as parse_corefile
from statekit.errors import StateError
from statekit.host.files import ReadResult
from statekit.load import loader
from statekit.resources.coredns_zone import CorednsZone, ZoneCurrent, ZoneSpec
from statekit.resources.iptables_rule import RuleSpec, expand
from tests.conftest import (
    REPO,
    in_netns,
    record_output,
    register_token,
    saved,
    statekit_in_process,
)
from tests.otel_parsers import python_sdk_attributes

pytestmark = pytest.mark.netns

TOKEN = "glc_hypothesis_token_0a1b2c3d4e"
register_token(TOKEN)
TELEMETRY = str(REPO / "states" / "telemetry.yaml")
VALID: dict[str, str] = {
    "GRAFANA_INSTANCE_ID": "123456",
    "GRAFANA_API_TOKEN": TOKEN,
    "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp",
    "OTEL_LOG_USER_PROMPTS": "0",
    "OTEL_LOG_TOOL_DETAILS": "1",
    "OTEL_RESOURCE_ATTRIBUTES": "team=core,deployment.environment=prod",
    "FLY_APP_NAME": "agent-app",
    "FLY_MACHINE_ID": "e784079b449483",
}
ENV_VARIANTS = {
    "GRAFANA_OTLP_ENDPOINT": ("https://192.0.2.10:4318/otlp", "https://h.example.test",
                              "https://[2001:db8::1]/otlp", "https://h.example.test/a=b,c"),
    "OTEL_RESOURCE_ATTRIBUTES": ("fly.app_name=override", "a=b=c", "k/x=1,k.y=2", "a=,b=",
                                 "a=1, b = 2,", "team=my%20team", "x=%C3%A9%2C%3D%25"),
    "OTEL_LOG_USER_PROMPTS": ("1", "true", "No"), "OTEL_LOG_TOOL_DETAILS": ("0", " on"),
}
SPEC_KEYS = {
    "CLAUDE_CODE_ENABLE_TELEMETRY", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER",
    "OTEL_TRACES_EXPORTER", "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_LOG_USER_PROMPTS", "OTEL_LOG_TOOL_DETAILS", "OTEL_LOG_TOOL_CONTENT",
}
INJECTIONS = ["\n", "\r", "\r\n", "\nEVIL=1", "\u2028EVIL=1", "\x85", "\x0b", "\x0c", "}",
              "{", "}\n. {", '"', "'", "=", ",", ", ", ",evil=1", "=x,y=z", " ", "\t", "\\",
              "#", ";", "$(id)", "`id`", "%0a", "\u00a0", "\ufeff", "é", "/../..", ":99999",
              "@evil.example", "?x=1", "#frag"]
COUNT = {"env": 0, "nul": 0, "zone": 0, "rule": 0}


def hostile(base: str, valid: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Any text (no NUL, no surrogates: a process environment cannot hold them), a valid
    value with an injection spliced in, or one of the ``valid`` forms."""
    text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"),
                   max_size=40)
    spliced = st.builds(lambda cut, inj, tail: base[:cut] + inj + base[cut:] + tail,
                        st.integers(0, len(base)), st.sampled_from(INJECTIONS),
                        st.sampled_from(["", "EVIL=1", "x", " y", "}"]))
    return st.one_of(text, spliced, st.sampled_from(["", *INJECTIONS]),
                     st.sampled_from([base, *valid]))


def run_cli(argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    run = statekit_in_process(argv, env={"STATEKIT_NO_CACHE": "1", **env})
    return run.returncode, run.stdout, run.stderr


def read_env_file(path: Path) -> dict[str, str]:
    """The strictest reader: any Unicode line break ends a line; a key appears once."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    entries: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not KEY=value: {line!r}"
        assert key not in entries, f"second {key}"
        entries[key] = value
    return entries


def expected_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """What was meant: FLY_* raw, the operator's values percent-decoded (trimmed)."""
    attrs = {k: env[v] for k, v in (("fly.app_name", "FLY_APP_NAME"),
                                    ("fly.machine_id", "FLY_MACHINE_ID")) if env[v]}
    for item in env["OTEL_RESOURCE_ATTRIBUTES"].split(","):
        key, _, value = item.partition("=")
        if item.strip(" "):
            attrs[key.strip(" ")] = unquote(value.strip(" "), errors="strict")
    return attrs


def check_converged(root: Path, env: Mapping[str, str]) -> None:
    path = root / "tmp/otel/otel-env"
    if not all(env[k] for k in ("GRAFANA_INSTANCE_ID", "GRAFANA_API_TOKEN",
                                "GRAFANA_OTLP_ENDPOINT")):
        assert not path.exists()
        return
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = read_env_file(path)
    attrs = expected_attributes(env)
    assert set(got) == SPEC_KEYS | ({"OTEL_RESOURCE_ATTRIBUTES"} if attrs else set())
    assert got["OTEL_EXPORTER_OTLP_ENDPOINT"] == env["GRAFANA_OTLP_ENDPOINT"]
    auth = base64.b64encode(
        f"{env['GRAFANA_INSTANCE_ID']}:{env['GRAFANA_API_TOKEN']}".encode()).decode()
    assert got["OTEL_EXPORTER_OTLP_HEADERS"] == f"Authorization=Basic {auth}"
    assert got["OTEL_LOG_USER_PROMPTS"] in ("0", "1")
    assert got["OTEL_LOG_TOOL_DETAILS"] in ("0", "1")
    assert got["OTEL_LOG_TOOL_CONTENT"] == "0"
    if attrs:
        pairs = [p.partition("=") for p in got["OTEL_RESOURCE_ATTRIBUTES"].split(",")]
        assert python_sdk_attributes(got["OTEL_RESOURCE_ATTRIBUTES"]) == attrs
        assert len(pairs) == len(attrs)  # each key once
        assert all(re.fullmatch(r"[A-Za-z0-9_.\-/]+", k) for k, _, _ in pairs)
        assert all(re.fullmatch(r"[A-Za-z0-9_.\-/~:@%]{1,255}", v) for _, _, v in pairs)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), key=st.sampled_from(sorted(VALID)))
def test_telemetry_inputs_converge_validly_or_exit_3_touching_nothing(data: Any,
                                                                      key: str) -> None:
    value = data.draw(hostile(VALID[key], ENV_VARIANTS.get(key, ())), label=key)
    env = {**VALID, key: value}
    COUNT["env"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        code, out, err = run_cli(["converge", "--phase", "auth", "--format", "json",
                                  "--root", str(root), TELEMETRY], env)
        assert "Traceback" not in out + err and "internal error" not in out + err
        if code == 3:  # telemetry off (its states absent), one line naming the input
            doc = json.loads(out)  # --format json: the report with input_errors, or the error
            assert doc.get("input_errors") or doc["error"]["exit_code"] == 3
            assert err.startswith("statekit: ")
            assert err.endswith("\n") and err.count("\n") == 1, err
            assert not (root / "tmp").exists()
        else:
            assert (code, err) == (0, ""), err
            assert json.loads(out)["summary"]["failed"] == 0
            check_converged(root, env)
        for secret in {TOKEN, env["GRAFANA_API_TOKEN"]}:
            if len(secret) >= 8 and secret.isprintable() and code == 0:
                assert secret not in out + err


@pytest.mark.parametrize("key", sorted(VALID))
def test_nul_in_any_input_is_refused(key: str) -> None:
    """A NUL cannot reach a process environment; fed in directly, it is still refused."""
    COUNT["nul"] += 1
    env = {**VALID, key: VALID[key][:3] + "\0EVIL=1"}
    try:
        program = loader.load([TELEMETRY], environ=env)
    except StateError as exc:
        assert "\0" not in str(exc) and "\n" not in str(exc)
        return
    state = next(s for s in program.states if s.id == "otlp-env")
    assert state.ensure == "absent", f"accepted a NUL in {key}"
    assert [e for e in program.input_errors if "\0" not in str(e) and "\n" not in str(e)]


# --- network inputs: zones, addresses, ports, host names -------------------------------

ZONE_STATE = """\
phases: [network]
states:
  - id: z
    type: coredns_zone
    phase: network
    corefile: /etc/coredns/Corefile
    zone: "{{ env.ZONE }}"
    port: "{{ env.PORT }}"
    bind: ["{{ env.BIND }}"]
    forward: ["{{ env.FORWARD }}"]
"""
RULE_STATE = """\
phases: [network]
states:
  - id: r
    type: iptables_rule
    phase: network
    chain: OUTPUT
    protocol: tcp
    destination: "{{ env.DEST }}"
    dport: "{{ env.PORT }}"
    jump: ACCEPT
  - id: h
    type: iptables_rule
    phase: network
    chain: OUTPUT
    destination_host: "{{ env.HOST }}"
    jump: ACCEPT
"""
ZONE_VALID = {"ZONE": "api.example.test", "PORT": "53", "BIND": "127.0.0.53",
              "FORWARD": "192.0.2.53"}
RULE_VALID = {"DEST": "192.0.2.7", "PORT": "443", "HOST": "192.0.2.8"}
VARIANTS = {  # other valid forms, so that accepted inputs are generated too
    "ZONE": (".", "Example.COM.", "xn--bcher-kva.example", "a-b.c-d.test", "x" * 63 + ".io"),
    "PORT": ("1", "65535", "1024:2048", "0053"),
    "BIND": ("0.0.0.0", "::1", "2001:db8::53"),
    "FORWARD": ("tls://192.0.2.1", "192.0.2.1:5353", "[2001:db8::1]:53", "dns://1.1.1.1"),
    "DEST": ("10.0.0.0/8", "192.0.2.7/32", "0.0.0.0/0", "198.51.100.255"),
    "HOST": ("10.1.2.3", "gw.example.test", "GW.Example.Test."),
}


def load_states(tmp: Path, text: str, env: Mapping[str, str]) -> list[Any] | None:
    path = tmp / "s.yaml"
    path.write_text(text)
    try:
        program = loader.load([str(path)], environ=dict(env))
    except StateError as exc:
        message = str(exc)
        assert "\n" not in message and "Traceback" not in message
        return None
    return [s.spec for s in program.states]


def nul_or_text(key: str, base: str) -> st.SearchStrategy[str]:
    return st.one_of(hostile(base, VARIANTS.get(key, ())), st.just(base + "\0"))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), key=st.sampled_from(sorted(ZONE_VALID)))
def test_zone_inputs_render_only_the_wanted_block(tmp_path: Path, data: Any, key: str) -> None:
    value = data.draw(nul_or_text(key, ZONE_VALID[key]), label=key)
    COUNT["zone"] += 1
    specs = load_states(tmp_path, ZONE_STATE, {**ZONE_VALID, key: value})
    if specs is None:
        return
    spec: ZoneSpec = specs[0]
    plan = CorednsZone().plan(spec, ZoneCurrent(ReadResult(None, None)))
    content: bytes = plan.payload.content
    blocks = parse_corefile(content).servers()
    assert len(blocks) == len(spec.zones) == 1
    zone = spec.zones[0].lower().rstrip(".") or "."
    assert blocks[0].keys == (f"{zone}:{spec.port}" if zone != "." else f".:{spec.port}",)
    assert blocks[0].marker == "z"
    text = content.decode()
    assert text.count("{") == text.count("}") == 1
    for bad in ("EVIL", "\r", "\u2028", "\0", '"', "'", "`", "$("):
        assert bad not in text


ACCEPTED_RULES: list[str] = []


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), key=st.sampled_from(sorted(RULE_VALID)))
def test_rule_inputs_render_single_rules(tmp_path: Path, data: Any, key: str) -> None:
    value = data.draw(nul_or_text(key, RULE_VALID[key]), label=key)
    COUNT["rule"] += 1
    specs = load_states(tmp_path, RULE_STATE, {**RULE_VALID, key: value})
    if specs is None:
        return
    for spec in specs:
        assert isinstance(spec, RuleSpec)
        for line in expand(spec, "ipv4", {}):
            words = shlex.split(line)
            assert "\n" not in line and words[:2] == ["-A", "OUTPUT"]
            assert words.count("-A") == words.count("-j") == words.count("--comment") == 1
            assert words.count("-d") <= 1 and words.count("--dport") <= 1
            assert words[words.index("--comment") + 1] == f"statekit:{spec.id}"
            ACCEPTED_RULES.append(line)


def valid_rule_lines() -> list[str]:
    specs = load_states(Path(tempfile.mkdtemp()), RULE_STATE, RULE_VALID)
    assert specs is not None
    return [ln for spec in specs for ln in expand(spec, "ipv4", {})]


def test_accepted_rules_are_single_rules_for_the_kernel(netns: str) -> None:
    """Every distinct rule line the property test accepted, loaded for real."""
    lines = sorted(set(ACCEPTED_RULES)) or valid_rule_lines()  # run alone: the valid ones
    text = "".join(f"{ln}\n" for ln in ["*filter", *lines, "COMMIT"])
    in_netns(netns, ["iptables-restore", "--noflush"], input=text)
    rules = [ln for ln in saved(netns) if ln.startswith("-A OUTPUT ")]
    assert len(rules) == len(lines)
    assert all('--comment "statekit:' in r for r in rules)
    print(f"\ngenerated inputs: {COUNT}; {len(lines)} distinct accepted rules loaded")


# --- 3. every telemetry input at once, through the loader (issue 19) ------------------------
#
# Any mix of the telemetry inputs (each valid, unset, empty or hostile: any text, bytes that
# are not UTF-8 as os.environb gives them, control characters, huge values, Unicode, the
# valid value with an injection spliced in) loaded with the shipped states/ by the real
# loader. The property: loading never raises (telemetry.yaml converges absent on any error
# from its input: nothing may stop the lockdown), and the outcome is either telemetry as the
# inputs say (on when all three GRAFANA_* are set) or every telemetry state absent with one
# error naming the variable. A few cases then converge for real in a private namespace.

STATES_DIR = str(REPO / "states")
FUZZED = [*sorted(VALID), "OTEL_LOG_TOOL_CONTENT"]  # the last is never read: always 0
REQUIRED = ("GRAFANA_INSTANCE_ID", "GRAFANA_API_TOKEN", "GRAFANA_OTLP_ENDPOINT")
CONTROL = ["\x01", "\x1b[31m", "\x7f", "\r", "\n", "\t", "\x85", "\u2028", "\u200b", "\ufeff"]
LONG_HOST = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters: a valid DNS name
FUZZ: dict[str, Any] = {"cases": 0, "on": 0, "off": 0, "degraded": 0, "worst": 0.0,
                        "worst_case": ""}


def not_utf8(base: str) -> st.SearchStrategy[str]:
    """``base`` with bytes that are not UTF-8, as os.environ shows them (surrogateescape)."""
    raw = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b)
    return st.builds(lambda cut, b: base[:cut] + b.decode("utf-8", "surrogateescape")
                     + base[cut:], st.integers(0, len(base)), raw)


def fuzzed_value(key: str) -> st.SearchStrategy[str]:
    base = VALID.get(key, "1")
    huge = st.integers(200, 140_000).map(lambda n: base + "x" * n)
    control = st.builds(lambda cut, c: base[:cut] + c + base[cut:],
                        st.integers(0, len(base)), st.sampled_from(CONTROL))
    unicode = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"),
                      min_size=1, max_size=30)
    special = [f"https://{LONG_HOST}/otlp", "https://" + "a" * 64 + ".example/otlp"] \
        if key == "GRAFANA_OTLP_ENDPOINT" else ["x", "0", "-1", "1" * 30]
    return st.one_of(hostile(base, ENV_VARIANTS.get(key, ())), not_utf8(base), huge,
                     control, unicode, st.sampled_from(special))


@st.composite
def telemetry_env(draw: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for key in FUZZED:
        valid = 6 if key in REQUIRED else 3  # telemetry on often enough to check it
        kind = draw(st.sampled_from(["valid"] * valid + ["hostile", "hostile", "unset",
                                                         "empty"]), label=f"{key} is")
        if kind == "valid" and key in VALID:
            env[key] = VALID[key]
        elif kind == "hostile":
            env[key] = draw(fuzzed_value(key), label=key)
        elif kind == "empty":
            env[key] = ""
    return env


def check_loaded(env: dict[str, str], program: Any) -> None:
    telemetry = [s for s in program.states if s.file.endswith("telemetry.yaml")
                 and s.type != "signal"]
    assert telemetry and all(s.ensure == "present" for s in program.states
                             if s.file.endswith("network.yaml") and s.type != "signal")
    token = env.get("GRAFANA_API_TOKEN", "")
    errors = [str(e) for e in program.input_errors]
    for text in errors:
        assert "\n" not in text and "\r" not in text and "Traceback" not in text
        if len(token) >= 8 and token.isprintable():
            assert token not in text
    if errors:
        FUZZ["degraded"] += 1
        for error in errors:  # each names file:line:field and the variable
            assert error.startswith(f"{STATES_DIR}/telemetry.yaml:"), errors
            named = [k for k in FUZZED if k in error]
            assert named or "states[otlp-firewall].comment: the tag" in error, errors
        assert all(s.ensure == "absent" for s in telemetry), errors
        return
    on = all(env.get(k) for k in REQUIRED)
    FUZZ["on" if on else "off"] += 1
    by_id = {s.id: s for s in telemetry}
    assert by_id["otlp-env"].ensure == ("present" if on else "absent")
    assert by_id["otlp-firewall"].ensure == ("present" if on else "absent")
    if on:
        entries = dict(by_id["otlp-env"].spec.entries)
        assert entries["OTEL_EXPORTER_OTLP_ENDPOINT"] == env["GRAFANA_OTLP_ENDPOINT"]
        assert entries["OTEL_LOG_TOOL_CONTENT"] == "0"
        assert token in program.secrets


@settings(max_examples=40, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(env=telemetry_env())
def test_any_telemetry_input_leaves_telemetry_valid_or_off_never_stops_the_run(
        env: dict[str, str]) -> None:
    import time

    if not FUZZ["cases"]:
        loader.load([STATES_DIR], environ=VALID)  # the imports, out of the figures
    FUZZ["cases"] += 1
    start = time.perf_counter()
    try:
        program = loader.load([STATES_DIR], environ=env)
    except Exception as exc:  # the property: never (telemetry.yaml degrades instead)
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None
    elapsed = time.perf_counter() - start
    if elapsed > FUZZ["worst"]:
        FUZZ["worst"] = elapsed
        FUZZ["worst_case"] = ", ".join(f"{k}={len(v)} chars" for k, v in env.items()
                                       if v != VALID.get(k))
    check_loaded(env, program)


NETNS_CASES = [  # (what, the environment as bytes): converged for real, with network.yaml
    ("valid, the endpoint an address", {"GRAFANA_OTLP_ENDPOINT": b"https://192.0.2.10/otlp"}),
    ("token not UTF-8", {"GRAFANA_API_TOKEN": b"glc_\xff\xfe_token_0a1b2c"}),
    ("token of one character", {"GRAFANA_API_TOKEN": b"x"}),
    ("attributes with control characters", {"OTEL_RESOURCE_ATTRIBUTES": b"a=\x1b[31m,b=\x01"}),
    ("a huge endpoint", {"GRAFANA_OTLP_ENDPOINT": b"https://" + b"a" * 100_000 + b".net/"}),
]


@pytest.mark.parametrize(("what", "change"), NETNS_CASES, ids=[c[0] for c in NETNS_CASES])
def test_a_fuzzed_telemetry_input_still_locks_down_in_a_namespace(
        netns: str, tmp_path: Path, what: str, change: dict[str, bytes]) -> None:
    import subprocess
    import sys

    root = tmp_path / "root"
    root.mkdir()
    env = {k.encode(): v.encode() for k, v in VALID.items()}
    env.update({k.encode(): v for k, v in change.items()})
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "statekit", "converge",
            "--phase", "network", "--root", str(root), "--var", "domains=[]", STATES_DIR]
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False, cwd=REPO,
                          env={b"PATH": b"/usr/sbin:/usr/bin:/sbin:/bin",
                               b"LANG": b"C.UTF-8", **env})
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    record_output(out)
    assert "internal error" not in out and "Traceback" not in out, out
    assert proc.returncode in (0, 3), out
    if proc.returncode == 3:
        assert [k for k in change if k in out], out
    table = saved(netns)
    assert ":OUTPUT DROP [0:0]" in table, table
    for tag in ("fw-loopback", "fw-dns-local-udp", "fw-dns-local-tcp", "fw-dns-upstream"):
        assert any(f'"statekit:{tag}"' in rule for rule in table), (tag, table)
    assert any("192.0.2.10" in rule for rule in table) == (proc.returncode == 0)
    print(f"\n{what}: exit {proc.returncode}; telemetry fuzz so far: {FUZZ}")
