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


# --- issue 22, item 3: states by id, patterns in words, typos of names, YAML hints -------

SCHEMAS = sorted(p.stem for p in schema_check.SCHEMA_DIR.glob("*.json"))


def nodes(node: Any) -> list[dict[str, Any]]:
    """Every mapping in a schema, nested ones included."""
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in nodes(v))]
    if isinstance(node, list):
        return [n for v in node for n in nodes(v)]
    return []


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_pattern_of_the_schemas_has_words(name: str) -> None:
    """The schema is the one source of the words: a message never shows a regex."""
    bare = [n["pattern"] for n in nodes(schema_check.schema(name))
            if "pattern" in n and schema_check.EXPLAIN not in n]
    assert bare == []


def test_the_targets_are_the_schemas() -> None:
    from statekit.netfilter import fields

    jump = schema_check.schema("iptables_rule")["properties"]["jump"]
    assert tuple(jump["anyOf"][0]["enum"]) == fields.TARGETS
    chain = schema_check.schema("iptables_rule")["$defs"]["chain"]["pattern"]
    assert chain == f"^{fields._CHAIN}$"
    assert schema_check.schema("iptables_chain")["properties"]["chain"]["pattern"] == chain


ENV = HEAD.format(type="env_file") + "    path: /etc/app.env\n"
SIGNAL = HEAD.format(type="signal") + "    signal: HUP\n"
ZONE = HEAD.format(type="coredns_zone") + "    corefile: /etc/Corefile\n    zone: a.test\n" \
    "    forward: [1.1.1.1]\n"

# (state file, the field, the words expected) for a value each pattern refuses
PATTERNS = [
    (RULE + "    dport: https\n", "states[s].dport", "'https' is not valid: expected a port "
     "number from 0 to 65535, or a range low:high (8000:8080) (e.g. 443)"),
    (RULE + "    protocol: sctp\n", "states[s].protocol", "expected tcp, udp, icmp or all"),
    (RULE + "    protocol: icmp\n    family: ipv6\n    icmpv6_type: Packet-Too-Big\n",
     "states[s].icmpv6_type", "expected an integer from 0 to 255 or an ICMPv6 type's name"),
    (RULE + "    uid_owner: 1root\n", "states[s].uid_owner",
     "expected a uid from 0 to 4294967294, or a user name"),
    (RULE + "    position: {before: Other}\n", "states[s].position",
     "expected one of first, last or a mapping with before (a state id: lower-case letters"),
    (RULE.replace("chain: OUTPUT", "chain: 'BAD CHAIN'"), "states[s].chain",
     "expected a chain name: letters, digits"),
    (RULE + "    out_interface: eth0/1\n", "states[s].out_interface",
     "expected an interface name"),
    (RULE.replace("jump: DROP", "jump: NFLOG") + "    log_prefix: 'a\\\\b'\n",
     "states[s].log_prefix", "expected printable ASCII without quotes or backslashes"),
    (RULE + "    comment: 'say \"hi\"'\n", "states[s].comment", "expected printable ASCII"),
    (ENV.replace("/etc/app.env", "etc/app.env"), "states[s].path",
     "expected an absolute path (starting with /)"),
    (ENV + "    entries: {lower: x}\n", "states[s].entries.lower",
     "expected a variable name: upper-case letters"),
    (ENV + "    sensitive: [a-b]\n", "states[s].sensitive[0]", "expected a variable name"),
    (SIGNAL + "    process: a/b\n", "states[s].process", "expected a process name"),
    (HEAD.format(type="coredns_zone") + "    corefile: /C\n    zone: a.test\n"
     "    answer: pinned\n    pins_from: Fw\n", "states[s].pins_from", "expected a state id"),
    (ZONE.replace("/etc/Corefile", "Corefile"), "states[s].corefile", "an absolute path"),
    ("phases: [Main]\n", "phases[0]", "expected a phase name: lower-case letters"),
    ("phases: [main]\nsecrets: [A-B]\n", "secrets[0]", "an environment variable's name"),
    ("phases: [main]\nvars: {a-b: 1}\n", "vars.a-b", "expected a var name"),
    (HEAD.format(type="env_file").replace("id: s", "id: S1") + "    path: /e\n", "states[0].id",
     "expected a state id: lower-case letters, digits, _ and -, starting with a letter or "
     "digit"),
]


@pytest.mark.parametrize(("text", "field", "words"), PATTERNS)
def test_a_pattern_is_explained_in_words_never_as_a_regex(
        tmp_path: Path, text: str, field: str, words: str) -> None:
    message = error_of(tmp_path, text)
    assert f": {field}: " in message and words in message, message
    assert "matching" not in message and "^" not in message and "$" not in message, message


STATES = """\
phases: [network]
vars:
  app_mode: production
states:
  - id: fw-api
    type: iptables_rule
    phase: network
    chain: OUTPUT
    jump: ACCEPT
  - type: iptables_rule
    phase: network
    chain: OUTPUT
    jump: ACCEPT
  - id: Fw-Bad
    type: iptables_rule
    phase: network
    chain: OUTPUT
    jump: ACCEPT
  - id: fw-b
    type: iptables_rule
    phase: network
    chain: OUTPUT
    jump: ACCEPT
    requires: [fw-apii]
    onchanges: [fw-ap]
    position: {before: fw-aip}
  - id: fw-c
    type: iptables_rule
    phase: network
    chain: OUTPUT
    jump: ACCEPT
    comment: "{{ app_mod }}"
  - id: fw-d
    type: iptables_rule
    phase: network
    chain: OUTPUT
    jump: ACCEPT
    comment: "{{ evn.HOME }}"
"""


def test_states_are_named_by_id_and_typos_of_names_get_the_nearest(tmp_path: Path) -> None:
    """``states[fw-api]`` in every message; the index only for a state without a valid id;
    requisites and template variables get a did-you-mean (issue 22, item 3)."""
    path = write(tmp_path / "s.yaml", STATES)
    run = statekit(["validate", str(path)])
    assert run.returncode == 3, run.output
    assert run.stderr.splitlines() == [f"statekit: {path}:{line}: {text}" for line, text in [
        (10, "states[1].id: missing required field: expected a state id: lower-case "
             "letters, digits, _ and -, starting with a letter or digit (e.g. "
             "'dns-allowlist')"),
        (14, "states[2].id: 'Fw-Bad' is not valid: expected a state id: lower-case letters, "
             "digits, _ and -, starting with a letter or digit (e.g. 'dns-allowlist')"),
        (24, "states[fw-b].requires: unknown state 'fw-apii'; did you mean 'fw-api'?"),
        (25, "states[fw-b].onchanges: unknown state 'fw-ap'; did you mean 'fw-api'?"),
        (26, "states[fw-b].position.before: unknown state 'fw-aip'; did you mean 'fw-api'?"),
        (32, "states[fw-c].comment: template error: 'app_mod' is undefined; did you mean "
             "'app_mode'?"),
        (38, "states[fw-d].comment: template error: 'evn' is undefined; did you mean 'env'?"),
    ]]


@pytest.mark.parametrize(("text", "expected"), [
    ("phases: [a]\nstates:\n  - id: x\n\ttype: env_file\n",
     ":4: invalid YAML at column 1: found a tab character that violates indentation; a tab: "
     "YAML indents with spaces only; replace the tab with spaces"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n   phase: a\n",
     ":5: invalid YAML at column 4: did not find expected '-' indicator; check the "
     "indentation: the keys of one mapping, and the items of one list, start in the same "
     "column (the block at line 3 starts in column 3)"),
    ("phases: [a]\nstates:\n  - id: x\n    path: {{ dir }}/env\n",
     ":4: invalid YAML at column 20: did not find expected key; a value that starts with a "
     'template must be quoted: "{{ ... }}"'),
    ("phases: [a]\nvars: {dir: {{ d }}}\n", ": a mapping key must be a scalar (a value that "
     'starts with a template must be quoted: "{{ ... }}")'),
    ("phases: [a\n", ":2: invalid YAML at column 1: did not find expected ',' or ']'; an "
     "unclosed quote or bracket: the one opened at line 1, column 9"),
    ("phases: [a]\nstates:\n  - id: x\n    path:/x\n    type: env_file\n",
     ":4: invalid YAML at column 5: could not find expected ':'; a key needs a colon and a "
     "space after it (key: value)"),
    ("a: b: c\n", ":1: invalid YAML at column 5: mapping values are not allowed in this "
     "context; a value that holds ': ' must be quoted, or this line is indented too far"),
])
def test_yaml_errors_give_the_column_and_a_hint(tmp_path: Path, text: str,
                                               expected: str) -> None:
    path = write(tmp_path / "s.yaml", text)
    run = statekit(["validate", str(path)])
    assert run.returncode == 3
    assert run.stderr.startswith(f"statekit: {path}"), run.stderr
    assert expected in run.stderr, run.stderr
