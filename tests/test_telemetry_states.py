"""The shipped states/telemetry.yaml: the env file (phase auth) and the input checks.

The network phase is exercised for real in tests/test_boot_e2e.py; here only files are
written (under a temporary --root), and invalid input is refused before anything runs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Run, statekit, statekit_in_process

pytestmark = pytest.mark.netns

STATES = str(REPO / "states" / "telemetry.yaml")
TOKEN = "glc_eyJvIjoiOTk5IiwibiI6InRlc3QifQ=="
ENDPOINT = "https://otlp-gateway-prod-us-west-2.grafana.net/otlp"
ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": ENDPOINT}
HEADER = "Authorization=Basic " + base64.b64encode(f"123456:{TOKEN}".encode()).decode()


def auth(root: Path, env: dict[str, str], *extra: str) -> Run:
    """The auth phase (the env file only: no namespace needed), in this process."""
    return statekit_in_process(["converge", "--phase", "auth", "--root", str(root), *extra,
                                STATES], env=env)


def env_file(root: Path) -> Path:
    return root / "tmp/otel/otel-env"


def test_env_file_has_exactly_the_spec_keys(root: Path, local_host: Any) -> None:
    result = auth(root, {**ON, "FLY_APP_NAME": "agent-app", "FLY_MACHINE_ID": "m-42"})
    assert result.returncode == 0, result.output
    assert env_file(root).read_text().splitlines() == [
        "CLAUDE_CODE_ENABLE_TELEMETRY=1",
        "OTEL_METRICS_EXPORTER=otlp",
        "OTEL_LOGS_EXPORTER=otlp",
        "OTEL_TRACES_EXPORTER=otlp",
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA=1",
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
        f"OTEL_EXPORTER_OTLP_ENDPOINT={ENDPOINT}",
        f"OTEL_EXPORTER_OTLP_HEADERS={HEADER}",
        "OTEL_LOG_USER_PROMPTS=1",
        "OTEL_LOG_TOOL_DETAILS=1",
        "OTEL_LOG_TOOL_CONTENT=0",
        "OTEL_RESOURCE_ATTRIBUTES=fly.app_name=agent-app,fly.machine_id=m-42",
    ]
    f = local_host.file(str(env_file(root)))
    assert (f.mode, f.user, f.group) == (0o600, "root", "root")
    d = local_host.file(str(env_file(root).parent))
    assert (d.mode, d.user) == (0o700, "root")
    assert TOKEN not in result.output


@pytest.mark.parametrize("missing", [*ON, "all"])
def test_off_when_any_credential_is_missing(root: Path, missing: str) -> None:
    env = {} if missing == "all" else {k: v for k, v in ON.items() if k != missing}
    result = auth(root, env, "--detailed-exitcode")
    assert result.returncode == 0, result.output
    assert "changed=0" in result.stdout
    assert not env_file(root).exists()


def test_turning_off_removes_the_file(root: Path) -> None:
    auth(root, ON)
    assert env_file(root).exists()
    result = auth(root, {k: v for k, v in ON.items() if k != "GRAFANA_API_TOKEN"}, "--diff")
    assert "changed=1" in result.stdout
    assert not env_file(root).exists()
    assert TOKEN not in result.output
    assert HEADER.split(" ")[1] not in result.output


def test_privacy_knobs(root: Path) -> None:
    auth(root, {**ON, "OTEL_LOG_USER_PROMPTS": "0", "OTEL_LOG_TOOL_DETAILS": "0"})
    lines = env_file(root).read_text().splitlines()
    assert "OTEL_LOG_USER_PROMPTS=0" in lines
    assert "OTEL_LOG_TOOL_DETAILS=0" in lines
    assert "OTEL_LOG_TOOL_CONTENT=0" in lines


@pytest.mark.parametrize(("prompts", "details", "want"), [
    ("true", "false", ("1", "0")), ("YES", "no", ("1", "0")), (" off ", "On", ("0", "1")),
    ("", "", ("1", "1")),
])
def test_privacy_knob_spellings(root: Path, prompts: str, details: str,
                                want: tuple[str, str]) -> None:
    result = auth(root, {**ON, "OTEL_LOG_USER_PROMPTS": prompts,
                         "OTEL_LOG_TOOL_DETAILS": details})
    assert result.returncode == 0, result.output
    lines = env_file(root).read_text().splitlines()
    assert f"OTEL_LOG_USER_PROMPTS={want[0]}" in lines
    assert f"OTEL_LOG_TOOL_DETAILS={want[1]}" in lines
    assert "OTEL_LOG_TOOL_CONTENT=0" in lines  # never mirrors TOOL_DETAILS


def test_operator_attributes_merge_and_win(root: Path) -> None:
    auth(root, {**ON, "FLY_APP_NAME": "app", "FLY_MACHINE_ID": "m1",
                "OTEL_RESOURCE_ATTRIBUTES": "fly.app_name=override,team=ai"})
    lines = env_file(root).read_text().splitlines()
    assert "OTEL_RESOURCE_ATTRIBUTES=fly.app_name=override,fly.machine_id=m1,team=ai" in lines


def test_attribute_values_are_percent_encoded(root: Path) -> None:
    auth(root, {**ON, "FLY_APP_NAME": "a%b,c=d", "FLY_MACHINE_ID": "m1",
                "OTEL_RESOURCE_ATTRIBUTES": "team = my%20team, city=Zürich"})
    lines = env_file(root).read_text().splitlines()
    assert ("OTEL_RESOURCE_ATTRIBUTES=fly.app_name=a%25b%2Cc%3Dd,fly.machine_id=m1,"
            "team=my%20team,city=Z%C3%BCrich") in lines


def test_no_attributes_no_key(root: Path) -> None:
    auth(root, ON)
    assert "OTEL_RESOURCE_ATTRIBUTES" not in env_file(root).read_text()


def test_endpoint_port_and_ip_literal(root: Path) -> None:
    env = {**ON, "GRAFANA_OTLP_ENDPOINT": "https://192.0.2.10:4318/otlp"}
    result = statekit(["show", "--format", "json", "--id", "otlp-dns", "--id",
                       "otlp-firewall", STATES], env=env)
    assert result.returncode == 0, result.output
    dns, firewall = json.loads(result.stdout)["states"]
    assert dns["ensure"] == "absent"  # no DNS entry for an IP literal
    assert (firewall["destination_host"], firewall["dport"]) == ("192.0.2.10", 4318)


BAD = [
    ("GRAFANA_OTLP_ENDPOINT", "http://otlp.grafana.net/otlp", "http is refused"),
    ("GRAFANA_OTLP_ENDPOINT", "https://u:p@otlp.grafana.net/otlp", "user info"),
    ("GRAFANA_OTLP_ENDPOINT", "https://otlp.grafana.net:70000/", "not a valid URL"),
    ("GRAFANA_OTLP_ENDPOINT", "https://otlp grafana.net/", "spaces or control"),
    ("GRAFANA_OTLP_ENDPOINT", "https://evil.com{/", "neither a DNS name"),
    ("GRAFANA_OTLP_ENDPOINT", "https://otlp.grafana.net/otlp?x=1", "must not contain a query"),
    ("GRAFANA_OTLP_ENDPOINT", "https://otlp.grafana.net/otlp#", "or a fragment"),
    ("GRAFANA_OTLP_ENDPOINT", "https://127.1/otlp", "loopback address space"),
    ("GRAFANA_OTLP_ENDPOINT", "https://0xa9fea9fe/otlp", "link-local address space"),
    ("GRAFANA_OTLP_ENDPOINT", "https://10.1.2.3/otlp", "private address space"),
    ("GRAFANA_OTLP_ENDPOINT", "https://[2001:db8::1]/otlp", "IPv6 address literal"),
    ("GRAFANA_INSTANCE_ID", "12x", "digits only"),
    ("GRAFANA_API_TOKEN", "glc_a b", "printable, without whitespace"),
    ("OTEL_LOG_USER_PROMPTS", "maybe", "must be 1 or 0"),
    ("OTEL_LOG_TOOL_DETAILS", "2", "must be 1 or 0"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team=a b", "the value of 'team' contains a space"),
    ("OTEL_RESOURCE_ATTRIBUTES", "=x", "empty or invalid key"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", "has no '='"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=1\nb=2", "contains a space or a control"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=b=c", "contains '='"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz", "does not start a %XX escape"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=" + "x" * 256, "longer than 255 characters"),
    ("FLY_APP_NAME", "x" * 256, "FLY_APP_NAME: is longer than 255"),
    ("FLY_APP_NAME", "my app", "FLY_APP_NAME: must not contain spaces"),
    ("FLY_MACHINE_ID", "m\n1", "FLY_MACHINE_ID: must not contain spaces"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
@pytest.mark.parametrize("phase", ["network", "auth"])
def test_bad_input_exit_3_in_every_phase(netns: str, root: Path, name: str, value: str,
                                         message: str, phase: str) -> None:
    """on_invalid_input: absent: telemetry stays off (nothing written), the error names
    the variable on one line, the run exits 3."""
    result = statekit(["converge", "--phase", phase, "--root", str(root), STATES],
                      env={**ON, name: value}, netns=netns)
    assert result.returncode == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and name in lines[0]
    assert lines[0].startswith(f"statekit: {STATES}:")
    assert TOKEN not in result.output and f"123456:{TOKEN}" not in result.output
    assert not (root / "tmp").exists() and not (root / "etc").exists()


# --- any input error degrades telemetry, the lockdown still converges (issue 19, item 2) ---

IP_ENDPOINT = "https://192.0.2.10:4318/otlp"  # an address: no name to resolve in a netns
LOCKDOWN = [":OUTPUT DROP [0:0]",
            '-A OUTPUT -o lo -m comment --comment "statekit:fw-loopback" -j ACCEPT']
# Hooks that let an input reach a resource's parse, a field's schema and a template, in a
# copy of the shipped telemetry.yaml (each defaults to the shipped value).
HOOKS = [
    ("    comment: grafana-otlp\n",
     "    comment: \"{{ env.T_COMMENT or 'grafana-otlp' }}\"\n"),
    ("    resolve_timeout: 5\n", "    resolve_timeout: \"{{ env.T_TIMEOUT or 5 }}\"\n"),
    ("    dport: \"{{ otlp_port }}\"\n", "    dport: \"{{ env.T_PORT or otlp_port }}\"\n"),
    ("    pin_ttl: \"{{ pin_ttl }}\"\n",
     "    pin_ttl: \"{{ pin_ttl // ((env.T_DIVISOR or 1) | int) }}\"\n"),
]


def hooked_states(tmp_path: Path) -> Path:
    states = tmp_path / "states"
    states.mkdir()
    (states / "network.yaml").write_text((REPO / "states/network.yaml").read_text())
    text = (REPO / "states/telemetry.yaml").read_text()
    for old, new in HOOKS:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (states / "telemetry.yaml").write_text(text)
    return states


def converge_all(netns: str, root: Path, states: Path, env: dict[bytes, bytes]) -> Run:
    """Every phase of network.yaml + telemetry.yaml, in ``netns``, with the environment
    given as bytes (os.environb: a value need not be UTF-8)."""
    import subprocess
    import sys

    from tests.conftest import record_output

    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "statekit", "converge",
            "--root", str(root), "--var", "domains=[]", str(states)]
    full = {b"PATH": b"/usr/sbin:/usr/bin:/sbin:/bin", b"LANG": b"C.UTF-8",
            b"PYTHONPATH": str(REPO).encode(), **env}
    proc = subprocess.run(argv, capture_output=True, env=full, timeout=120, check=False)
    run = Run(proc.returncode, proc.stdout.decode(errors="replace"),
              proc.stderr.decode(errors="replace"))
    record_output(run.stdout, run.stderr)
    return run


def otlp_rules(netns: str) -> list[str]:
    from tests.conftest import saved

    return [r for r in saved(netns) if "otlp" in r or "192.0.2.10" in r]


def on_bytes(**extra: bytes) -> dict[bytes, bytes]:
    env = {k.encode(): v.encode() for k, v in ON.items()}
    env[b"GRAFANA_OTLP_ENDPOINT"] = IP_ENDPOINT.encode()
    return {**env, **{k.encode(): v for k, v in extra.items()}}


DEGRADE = [  # (variable, value, what the one error line says)
    ("GRAFANA_API_TOKEN", b"x", "secrets: environment variable GRAFANA_API_TOKEN: a secret "
     "of 1 character cannot be masked"),
    ("GRAFANA_API_TOKEN", b"glc_caf\xe9\xff_token", "secrets: invalid input: environment "
     "variable GRAFANA_API_TOKEN is not valid UTF-8 text"),
    ("OTEL_RESOURCE_ATTRIBUTES", b"team=caf\xe9", "OTEL_RESOURCE_ATTRIBUTES is not valid UTF-8"),
    ("T_PORT", b"9:1", "states[otlp-firewall].dport: '9:1': ports are 0-65535 and a range "
     "is low:high"),  # a FieldError from the resource's parse
    ("T_COMMENT", b'grafana "otlp"', "states[otlp-firewall].comment: 'grafana \"otlp\"' is "
     "not valid: expected printable ASCII without quotes"),  # the schema's pattern, in words
    ("T_TIMEOUT", b"soon", "states[otlp-firewall].resolve_timeout: 'soon' is a string: "
     "expected a number"),
    ("T_DIVISOR", b"0", "states[otlp-dns].pin_ttl: template error: integer division or "
     "modulo by zero"),
]


@pytest.mark.parametrize(("name", "value", "message"), DEGRADE,
                         ids=["short-secret", "secret-not-utf8", "attributes-not-utf8",
                              "field-error", "schema-pattern", "schema-error",
                              "template-error"])
def test_any_input_error_turns_telemetry_off_and_still_locks_down(
        netns: str, root: Path, tmp_path: Path, name: str, value: bytes,
        message: str) -> None:
    """Telemetry on first (so that there is something to remove), then one input that
    makes loading telemetry.yaml raise, whatever raises it: exit 3 naming it, every
    telemetry state absent, the lockdown converged."""
    states = hooked_states(tmp_path)
    first = converge_all(netns, root, states, on_bytes())
    assert first.returncode == 0, first.output
    assert env_file(root).exists() and otlp_rules(netns)
    run = converge_all(netns, root, states, on_bytes(**{name: value}))
    assert run.returncode == 3, run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert message in lines[0] and "telemetry.yaml:" in lines[0]
    assert "converged absent" in lines[0]
    assert "internal error" not in run.output and "Traceback" not in run.output
    assert TOKEN not in run.output
    assert not env_file(root).exists()
    assert otlp_rules(netns) == []
    from tests.conftest import saved

    table = saved(netns)
    assert all(rule in table for rule in LOCKDOWN), table
    assert any("statekit:fw-dns-local-udp" in r for r in table), table
    again = converge_all(netns, root, states, on_bytes(**{name: value}))
    assert again.returncode == 3 and "changed=0" in again.stdout, again.output


def test_an_otlp_host_of_253_characters_is_valid_and_fits_the_rule_tag() -> None:
    """A valid 253-character host turned telemetry off with a FieldError on the rule
    comment's length (255) before issue 19: its name now fits the tag, cut and digested,
    with room for a gone= mark."""
    from statekit.load import loader
    from statekit.netfilter.table import COMMENT_LIMIT, name_tag

    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(host) == 253
    env = {"GRAFANA_INSTANCE_ID": "424242", "GRAFANA_API_TOKEN": "glc_long_host_token",
           "GRAFANA_OTLP_ENDPOINT": f"https://{host}/otlp"}
    program = loader.load([str(REPO / "states")], {"domains": []}, environ=env)
    assert program.input_errors == []
    states = {s.id: s for s in program.states}
    rule = states["otlp-firewall"].spec
    assert rule.present and rule.hosts == (host,)
    tag = name_tag(rule.template.tag, host)
    assert len(f"{tag} gone=1800000000") <= COMMENT_LIMIT
    assert states["otlp-dns"].spec.zones == (host,)
