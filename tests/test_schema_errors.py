"""Schema errors say how to fix the input: file:line, field, what was expected, the
nearest spelling for a typo, and never jsonschema's "not valid under any of the given
schemas". The sweep over every schema field also covers fields added later."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from statekit.errors import StateError
from statekit.load import loader, schema_check
from statekit.resources import known_types
from tests.conftest import statekit, write

HEAD = "phases: [main]\nstates:\n  - id: s\n    type: {type}\n    phase: main\n"
RULE = HEAD.format(type="iptables_rule") + "    chain: OUTPUT\n    jump: DROP\n"

# (extra lines for the iptables_rule state, expected fragments of the message)
CASES = [
    ("    protocl: tcp\n",
     ["8: states[s].protocl: unknown field; did you mean 'protocol'?", "(known: "]),
    ("    family: ipv5\n",
     ["8: states[s].family: 'ipv5' is not allowed: expected one of ipv4, ipv6, both",
      "did you mean 'ipv6'?"]),
    ("    dport: 70000\n",
     ["8: states[s].dport: 70000 is not valid: expected a port number from 0 to 65535",
      "e.g. 443"]),
    ("    dport: [1, 2]\n", ["states[s].dport: [1, 2] is not valid: expected"]),
    ("    destination: {a: 1}\n", ["states[s].destination:", "expected a string or a list",
                                  "e.g. '192.0.2.0/24'"]),
    ("    position: frist\n", ["states[s].position:", "did you mean 'first'?"]),
    ("    position: {befor: x}\n",
     ["states[s].position.befor: unknown field; did you mean 'before'?"]),
    ("    ctstate: [ESTABLISHD]\n",
     ["states[s].ctstate[0]: 'ESTABLISHD' is not allowed",
      "did you mean 'ESTABLISHED'?"]),
    ("    nflog_group: yes\n", ["states[s].nflog_group: true is a boolean: expected an "
                              "integer from 0 to 65535"]),
]


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "s.yaml", text)
    with pytest.raises(StateError) as info:
        loader.load([str(path)], environ={})
    return str(info.value)


@pytest.mark.parametrize(("extra", "fragments"), CASES)
def test_schema_messages_say_how_to_fix(tmp_path: Path, extra: str,
                                        fragments: list[str]) -> None:
    message = error_of(tmp_path, RULE + extra)
    assert message.startswith(f"{tmp_path / 's.yaml'}:")
    for fragment in fragments:
        assert fragment in message
    assert "given schemas" not in message


@pytest.mark.parametrize(("text", "fragment"), [
    (RULE.replace("type: iptables_rule", "type: iptables_rul"),
     "states[s].type: unknown type 'iptables_rul' (known: command, coredns_zone, env_file, "
     "iptables_chain, iptables_rule, signal); did you mean 'iptables_rule'?"),
    (RULE.replace("phase: main", "phase: mian"), "did you mean 'main'?"),
    ("phase: [main]\n", "1: phase: unknown field; did you mean 'phases'?"),
    (RULE + "    ensure: abesnt\n", "did you mean 'absent'?"),
    (HEAD.format(type="command"), "states[s].argv: missing required field: expected a list"),
])
def test_loader_messages_name_the_nearest_spelling(tmp_path: Path, text: str,
                                                    fragment: str) -> None:
    assert fragment in error_of(tmp_path, text)


WRONG = {"nested": {"x": {"y": [1]}}}


@pytest.mark.parametrize("type_name", known_types())
def test_every_field_of_every_type_gets_an_expectation(tmp_path: Path,
                                                       type_name: str) -> None:
    """A mapping where no field takes one: each message says what was expected."""
    schema = schema_check.schema(type_name)
    for field, node in schema["properties"].items():
        if "object" in json.dumps(node):
            continue  # fields that take a mapping are covered above
        fields: dict[str, Any] = {
            k: schema_check.example_of(schema["properties"][k], schema) or "x"
            for k in schema.get("required", [])}
        fields[field] = WRONG
        text = HEAD.format(type=type_name) + "".join(
            f"    {k}: {json.dumps(v)}\n" for k, v in fields.items())
        message = error_of(tmp_path, text)
        assert f"states[s].{field}" in message, message
        assert "expected" in message and "given schemas" not in message, message


def test_cli_prints_one_line_with_exit_3(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", RULE + "    family: ipv5\n")
    run = statekit(["validate", str(path)])
    assert run.returncode == 3
    assert run.stderr.count("\n") == 1
    assert f"{path}:8: states[s].family:" in run.stderr and "did you mean" in run.stderr


@pytest.mark.parametrize(("type_name", "fields"), [
    ("env_file", "    path: /etc/../../x.env\n"),
    ("coredns_zone", "    corefile: /etc/coredns/../../../Corefile\n"),
    ("signal", "    signal: HUP\n    pidfile: /run/../../x.pid\n"),
    ("command", "    argv: ['true']\n    creates: /../done\n"),
    ("env_file", "    path: /etc/..\n    ensure: absent\n"),
])
def test_a_path_leaving_the_root_is_invalid_input(tmp_path: Path, type_name: str,
                                                  fields: str) -> None:
    """Found by validate (exit 3), not by converge (exit 1): it does not depend on the
    machine."""
    path = write(tmp_path / "s.yaml", HEAD.format(type=type_name) + fields)
    run = statekit(["validate", str(path)])
    assert run.returncode == 3, run.output
    assert "'..' would leave the root" in run.stderr
    line = 5 + fields.count("\n") if "/.." in fields.splitlines()[-1] else 6
    assert f"{path}:{line}: states[s]." in run.stderr
    root = tmp_path / "root"
    root.mkdir()
    converge = statekit(["converge", "--root", str(root), str(path)])
    assert converge.returncode == 3
    assert list(root.iterdir()) == [], "nothing touched"
