"""schema_fast: the quick proof that a load's input is valid agrees with jsonschema.

Its answers are True (valid), False (invalid) or None (not sure, jsonschema decides): on
instances generated from every schema (its examples, defaults and enums, wrong types,
NaN, 2.0, True for 1, unknown and non-string keys, nesting), a True or False answer is
always jsonschema's. The shipped states are proved, so a cold load of them never
imports jsonschema; a wrong input is still worded by jsonschema, as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from statekit.load import schema_check
from statekit.load.schema_fast import _check, proves_valid

REPO = Path(__file__).resolve().parent.parent
NAMES = sorted(p.stem for p in (REPO / "statekit" / "schema").glob("*.json"))

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.sampled_from(
        [0, 1, -1, 2.0, 0.5, float("nan"), float("inf"), 65535, 65536, 10**20]),
    st.text(max_size=12), st.sampled_from(["", "/etc/x", "a.example", "127.0.0.53",
                                           "ACCEPT", "tcp", "0644", "present", "../x"]))


def resolve(node: Any, root: dict[str, Any]) -> Any:
    ref = node.get("$ref", "") if isinstance(node, dict) else ""
    return root["$defs"][ref.split("/")[-1]] if ref.startswith("#/$defs/") else node


def values(node: Any, root: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values near what ``node`` accepts, and values that are not."""
    node = resolve(node, root)
    if not isinstance(node, dict) or depth > 4:
        return SCALARS
    options: list[st.SearchStrategy[Any]] = [SCALARS]
    for key in ("examples", "enum"):
        if node.get(key):
            options.append(st.sampled_from(node[key]))
    if "default" in node:
        options.append(st.just(node["default"]))
    for sub in [*node.get("oneOf", []), *node.get("anyOf", [])]:
        options.append(values(sub, root, depth + 1))
    if "items" in node:
        options.append(st.lists(values(node["items"], root, depth + 1), max_size=4))
    if "properties" in node or node.get("type") == "object":
        options.append(objects(node, root, depth + 1))
    options.append(st.lists(SCALARS, max_size=3))
    return st.one_of(options)


def objects(node: dict[str, Any], root: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props = node.get("properties", {})
    required = [k for k in node.get("required", []) if k in props]
    known = st.fixed_dictionaries(
        {k: values(props[k], root, depth) for k in required},
        optional={k: values(v, root, depth) for k, v in props.items() if k not in required})
    extra = st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3)), SCALARS,
                            max_size=2)
    return st.one_of(known, st.tuples(known, extra).map(lambda kv: {**kv[1], **kv[0]}))


TELEMETRY_ON = {"GRAFANA_INSTANCE_ID": "1", "GRAFANA_API_TOKEN": "glc_x",
                "GRAFANA_OTLP_ENDPOINT": "https://otlp-gateway-prod-us-west-2.grafana.net/otlp"}


def real_instances() -> dict[str, list[Any]]:
    """What the loader validates for the shipped states, by schema."""
    import os

    from statekit.cli import main

    found: dict[str, list[Any]] = {name: [] for name in NAMES}
    real = schema_check.problems

    def spy(name: str, instance: Any) -> list[tuple[list[str | int], str]]:
        found[name].append(json.loads(json.dumps(instance)))
        return real(name, instance)

    saved = dict(os.environ)
    schema_check.problems = spy
    os.environ.update(TELEMETRY_ON)
    try:
        assert main(["validate", str(REPO / "states")]) == 0
    finally:
        schema_check.problems = real
        os.environ.clear()
        os.environ.update(saved)
    return found


REAL = real_instances()


def near(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A real instance with one field changed, dropped or added (or none)."""
    if not REAL[name]:
        return values(schema, schema)
    props = schema.get("properties", {})

    def mutate(base: dict[str, Any], key: str, value: Any, how: int) -> dict[str, Any]:
        out = dict(base)
        if how == 0:
            return out
        if how == 1:
            out.pop(key, None)
        else:
            out[key] = value
        return out

    keys = st.sampled_from([*props, "unknown"]) if props else st.just("unknown")
    return st.builds(mutate, st.sampled_from(REAL[name]), keys,
                     st.one_of(values(schema, schema), *[values(v, schema) for v in
                                                          props.values()]),
                     st.integers(0, 2))


@pytest.mark.parametrize("name", NAMES)
def test_a_sure_answer_is_always_jsonschemas(name: str) -> None:
    schema = schema_check.schema(name)
    validator = Draft202012Validator(schema)
    answers: dict[bool | None, int] = {True: 0, False: 0, None: 0}

    @settings(max_examples=600, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(values(schema, schema), near(name, schema)))
    def agree(instance: Any) -> None:
        quick = _check(schema, instance, schema, 0)
        answers[quick] += 1
        if quick is not None:
            assert quick == validator.is_valid(instance), (name, instance, quick)

    agree()
    assert answers[True] and answers[False], answers  # both kinds were met, and judged


def test_every_state_of_the_shipped_files_is_proved() -> None:
    """And so a cold load of them does not import jsonschema at all."""
    code = ("import sys\nfrom statekit.load import schema_check, schema_fast\n"
            "seen = []\nreal = schema_check.problems\n"
            "def spy(name, instance):\n"
            "    seen.append(schema_fast.proves_valid(schema_check.schema(name), instance))\n"
            "    return real(name, instance)\n"
            "schema_check.problems = spy\nfrom statekit.cli import main\n"
            "sys.argv = ['statekit', 'validate', *sys.argv[1:]]\n"
            "try:\n    code = main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, len(seen), all(seen), 'jsonschema' in sys.modules)\n")
    for paths in ([REPO / "states"], [REPO / "states" / "network.yaml"]):
        out = subprocess.run([sys.executable, "-c", code, *map(str, paths)],
                             capture_output=True, text=True, cwd=REPO, check=False,
                             env={"PATH": "/usr/bin:/bin", **TELEMETRY_ON})
        rc, count, proved, imported = out.stdout.splitlines()[-1].split()
        assert (rc, proved, imported) == ("0", "True", "False"), (paths, out.stderr)
        assert int(count) >= 2


def test_a_wrong_field_is_still_worded_by_jsonschema() -> None:
    fields = {"chain": "OUTPUT", "jump": "ACCEPT", "dport": "http"}
    assert not proves_valid(schema_check.schema("iptables_rule"), fields)
    [(path, message)] = schema_check.problems("iptables_rule", fields)
    assert path == ["dport"] and "'http'" in message


def test_what_it_does_not_know_it_does_not_prove() -> None:
    assert _check({"type": "integer"}, 2.0, {}, 0) is None  # jsonschema: an integer
    assert _check({"type": "integer"}, True, {}, 0) is False
    assert _check({"enum": [1]}, True, {}, 0) is False
    assert _check({"enum": [1]}, 1.0, {}, 0) is True
    assert _check({"minimum": 1}, float("nan"), {}, 0) is None
    assert _check({"unknownKeyword": 1}, 1, {}, 0) is None
    assert _check({"$ref": "https://elsewhere/x"}, 1, {}, 0) is None
    assert _check({"properties": {"a": True}}, {1: 2}, {}, 0) is None
    assert _check({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, 3, {}, 0) is False
    assert _check({"oneOf": [{"type": "string"}, {"unknownKeyword": 0}]}, 3, {}, 0) is None
    assert json.dumps(sorted(NAMES)) == json.dumps(NAMES) and "file" in NAMES
