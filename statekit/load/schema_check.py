"""JSON Schema (draft 2020-12) validation, with errors that name the file, line and field.

Schemas ship as package data: ``file.json`` for a state file and one per resource type for
its own fields. ``coerce`` converts rendered template output to the schema's types first
(``"443"`` -> 443, ``"true"`` -> True), as Ansible and Salt users expect. A field whose
schema says ``"pattern": "^/"`` is a path under ``--root`` and is checked as one
(:func:`statekit.host.files.path_problem`: no ``..``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from statekit.digits import digits
from statekit.errors import StateError
from statekit.errors import did_you_mean as did_you_mean  # noqa: PLC0414 (re-exported)
from statekit.load.yamlsource import Source

SCHEMA_DIR = Path(__file__).parent.parent / "schema"  # statekit/schema/
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
OCTAL_MODE = "octal-mode"  # the schemas' format of a file mode: a quoted octal string
#: What a schema node accepts, in words: every ``pattern`` has one (a message never
#: shows a regex), and any node may (a port: "a port number ... or a range ...").
EXPLAIN = "x-explain"


@cache
def schema(name: str) -> dict[str, Any]:
    with open(SCHEMA_DIR / f"{name}.json", encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
        return loaded


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(name))


def validate(name: str, instance: Any, source: Source,
             base: Sequence[str | int]) -> list[StateError]:
    """Every error of ``instance`` (found at ``base`` in ``source``), one per field, in
    the order of the fields (``[]``: valid)."""
    return [source.error([*base, *path], message) for path, message in problems(name, instance)]


def problems(name: str, instance: Any) -> list[tuple[list[str | int], str]]:
    """Each field of ``instance`` that schema ``name`` refuses, with the message.

    The message names what was expected (the allowed values, the type, an example, a
    pattern in words: never the regex) and, for an unknown field or value, the nearest
    valid spelling: never jsonschema's "is not valid under any of the given schemas".
    """
    from statekit.load.schema_fast import proves_valid

    if proves_valid(schema(name), instance):  # jsonschema is not even imported
        return _check_paths(schema(name), instance)
    found: dict[tuple[str | int, ...], str] = {}
    errors = sorted(_validator(name).iter_errors(instance),
                    key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        for path, message in explain(error, schema(name)):
            found.setdefault(tuple(path), message)
    out = [(list(path), message) for path, message in found.items()]
    return out or _check_paths(schema(name), instance)


def _check_paths(node: dict[str, Any], instance: Any) -> list[tuple[list[str | int], str]]:
    """Absolute-path fields (``"pattern": "^/"``) must name a file under ``--root``: what a
    converge would refuse, ``validate`` refuses first."""
    from statekit.host.files import path_problem

    if not isinstance(instance, dict):
        return []
    out: list[tuple[list[str | int], str]] = []
    for key, sub in node.get("properties", {}).items():
        value = instance.get(key)
        problem = path_problem(value) if sub.get("pattern") == "^/" and \
            isinstance(value, str) else None
        if problem:
            out.append(([key], f"{value!r}: {problem} (e.g. {example_of(sub, node)!r})"))
    return out


def explain(error: Any, root: dict[str, Any]) -> list[tuple[list[str | int], str]]:
    """The paths (relative to the validated instance) and messages for one error (an
    unknown field each, when a mapping has several)."""
    path: list[str | int] = list(error.absolute_path)
    node, value, kind = error.schema, error.instance, error.validator
    if kind == "additionalProperties":
        known = sorted(node.get("properties", {}))
        extra = sorted(set(value) - set(known))
        return [([*path, key], unknown_field(key, known)) for key in extra]
    if "propertyNames" in error.schema_path and isinstance(value, str):
        return [([*path, value], f"invalid key {value!r}: expected {describe(node, root)}")]
    if kind == "required":
        missing = [k for k in node["required"] if k not in value]
        return [([*path, key], "missing required field: expected "
                 + describe(node.get("properties", {}).get(key, {}), root))
                for key in missing]
    if kind in ("oneOf", "anyOf"):
        for sub in error.context or ():
            if sub.validator == "additionalProperties":  # a typo inside a mapping branch
                return explain(sub, root)
    return [(path, _mismatch(error, root))]


def _mismatch(error: Any, root: dict[str, Any]) -> str:
    """A value of the wrong type, choice or form: what was expected, the nearest choice."""
    node, value, kind = error.schema, error.instance, error.validator
    expected = describe(node, root)
    if kind == "enum":
        return f"{value!r} is not allowed: expected {expected}" + \
            did_you_mean(value, [str(v) for v in node["enum"]])
    if kind == "type" and _unquoted_mode(value, node):
        return (f"a mode is a quoted octal string: YAML read this unquoted number as "
                f"{value} (write mode: \"0{value:o}\" if you meant 0{value:o})")
    if kind == "type":
        return f"{_show(value)} is {_kind(value)}: expected {expected}"
    if kind in ("oneOf", "anyOf"):
        choices = [str(v) for b in node[kind] for v in resolve(b, root).get("enum", ())]
        return f"{_show(value)} is not valid: expected {expected}" + \
            did_you_mean(value, choices)
    if kind == "pattern":  # jsonschema's message shows the regex: words instead
        return f"{_show(value)} is not valid: expected {expected}"
    return f"{error.message}: expected {expected}"


def unknown_field(name: str, known: Sequence[str]) -> str:
    """``unknown field (known: a, b)``, with the nearest spelling when there is one."""
    return f"unknown field{did_you_mean(name, known)} (known: {', '.join(sorted(known))})"


_TYPES = {"string": "a string", "integer": "an integer", "number": "a number",
          "boolean": "true or false", "array": "a list", "object": "a mapping",
          "null": "null"}


def describe(node: dict[str, Any], root: dict[str, Any], example: bool = True) -> str:
    """What ``node`` (a schema) accepts, in words, with an example: ``an integer from 1
    to 65535 (e.g. 53)``."""
    node = resolve(node, root)
    if EXPLAIN in node:
        text = str(node[EXPLAIN])
    elif "enum" in node:
        text = "one of " + ", ".join(str(v) for v in node["enum"])
    elif "oneOf" in node or "anyOf" in node:
        subs = node.get("oneOf") or node.get("anyOf") or []
        text = " or ".join(describe(s, root, example=False) for s in subs)
    else:
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else types
        text = " or ".join(_one_type(t, node, root) for t in types)
        if not text:  # a pattern without words (every schema pattern has them: tested)
            text = f"a name matching {node['pattern']}" if "pattern" in node else "any value"
    sample = example_of(node, root) if example else None
    return text + (f" (e.g. {_show(sample)})" if sample is not None else "")


def _one_type(kind: str, node: dict[str, Any], root: dict[str, Any]) -> str:
    text = _TYPES.get(kind, kind)
    if kind == "array" and "items" in node:
        items = resolve(node["items"], root)
        text = "a list of mappings" if items.get("type") == "object" else \
            f"a list of: {describe(items, root, example=False)}"
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum"))
        high = node.get("maximum")
        if low is not None and high is not None:
            text += f" from {low} to {high}"
        elif "exclusiveMinimum" in node:
            text += f" greater than {low}"
        elif low is not None:
            text += f" of at least {low}"
    if kind == "object" and node.get("properties"):
        text = "a mapping with " + ", ".join(
            f"{k} ({describe(v, root, example=False)})" for k, v in node["properties"].items())
    if kind == "string" and "pattern" in node:  # as above: the words, when given, win
        text += f" matching {node['pattern']}"
    if kind == "string" and node.get("minLength") == 1:
        text = "a non-empty string"
    return text


def resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/port``)."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return resolve(target, root)


def example_of(node: dict[str, Any], root: dict[str, Any]) -> Any:
    """A valid value for ``node``: its ``examples``, default or first choice, or None."""
    node = resolve(node, root)
    if node.get("examples"):
        return node["examples"][0]
    if "default" in node:
        return node["default"]
    if node.get("enum"):
        return node["enum"][0]
    for sub in node.get("oneOf") or node.get("anyOf") or []:
        found = example_of(sub, root)
        if found is not None:
            return found
    return _example_of_type(node, root)


def _example_of_type(node: dict[str, Any], root: dict[str, Any]) -> Any:
    kind = node.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    simple: dict[Any, Any] = {"integer": node.get("minimum", 1),
                              "number": node.get("minimum", 1), "boolean": True}
    if kind in simple:
        return simple[kind]
    if kind == "array" and "items" in node:
        item = example_of(node["items"], root)
        return None if item is None else [item]
    return "/etc/example" if kind == "string" and node.get("pattern") == "^/" else None


def _kind(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string",
             list: "list", dict: "mapping", type(None): "null"}
    name = kinds.get(type(value), type(value).__name__)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _show(value: Any) -> str:
    """``value`` as JSON (any object a template made: by its type name), in one line of
    at most 200 characters."""
    text = repr(value) if isinstance(value, str) else json.dumps(
        value, default=lambda o: f"<{type(o).__name__}>")
    return text if len(text) <= 200 else text[:197] + "..."


def coerce(value: Any, node: dict[str, Any]) -> Any:
    """Convert ``value`` towards the type ``node`` (a schema) declares, where it is clear."""
    types = node.get("type")
    allowed = [types] if isinstance(types, str) else list(types or [])
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {k: coerce(v, props.get(k, extra if isinstance(extra, dict) else {}))
                for k, v in value.items()}
    if isinstance(value, list):
        items = node.get("items", {})
        return [coerce(v, items) for v in value]
    if not allowed or _matches(value, allowed) or _unquoted_mode(value, node):
        return value
    for kind in allowed:
        converted = _convert(value, kind)
        if converted is not None:
            return converted
    return value


def _unquoted_mode(value: Any, node: dict[str, Any]) -> bool:
    """A mode given as a YAML number (``mode: 0640`` is the int 416 in YAML 1.1): never
    converted, so that validation refuses it and says to quote it."""
    return node.get("format") == OCTAL_MODE and type(value) is int


def _matches(value: Any, allowed: list[str]) -> bool:
    kinds = {str: "string", bool: "boolean", int: "integer", float: "number"}
    kind = kinds.get(type(value))
    return kind in allowed or (kind == "integer" and "number" in allowed)


def _convert(value: Any, kind: str) -> Any:
    converter = _CONVERTERS.get(kind)
    return converter(value) if converter else None


def _to_int(value: Any) -> int | None:
    ok = isinstance(value, str) and digits(value.strip())
    return int(value.strip()) if ok else None


def _to_number(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _to_bool(value: Any) -> bool | None:
    low = value.strip().lower() if isinstance(value, str) else None
    return True if low in _TRUE else False if low in _FALSE else None


def _to_str(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return str(value) if ok else None


def _to_list(value: Any) -> list[Any] | None:
    return [value] if isinstance(value, str | int) else None


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "integer": _to_int, "number": _to_number, "boolean": _to_bool, "string": _to_str,
    "array": _to_list,
}


@cache
def defaults(name: str) -> dict[str, Any]:
    """The ``default`` of each top-level field of type ``name``'s schema: the one source
    of the state language's defaults (the loader fills them in; the reference shows them)."""
    props = schema(name).get("properties", {})
    return {key: sub["default"] for key, sub in props.items()
            if isinstance(sub, dict) and "default" in sub}


def with_defaults(name: str, fields: Mapping[str, Any],
                  only: frozenset[str] | None = None) -> dict[str, Any]:
    """``fields`` with every missing field that has a default (of ``only``, if given)."""
    import copy

    out = {k: copy.deepcopy(v) for k, v in defaults(name).items()
           if k not in fields and (only is None or k in only)}
    out.update(fields)
    return out
