"""JSON Schema (draft 2020-12) validation, with errors that name the file, line and field.

Schemas ship as package data: ``file.json`` for a state file and one per resource type for
its own fields. ``coerce`` converts rendered template output to the schema's types first
(``"443"`` -> 443, ``"true"`` -> True), as Ansible and Salt users expect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from statekit.digits import digits
from statekit.load.yamlsource import Source

SCHEMA_DIR = Path(__file__).parent.parent / "schema"  # statekit/schema/
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
OCTAL_MODE = "octal-mode"  # the schemas' format of a file mode: a quoted octal string


@cache
def schema(name: str) -> dict[str, Any]:
    with open(SCHEMA_DIR / f"{name}.json", encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
        return loaded


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(name))


def validate(name: str, instance: Any, source: Source, base: Sequence[str | int]) -> None:
    """Validate ``instance`` (found at ``base`` in ``source``); raise the first error."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    error = errors[0]
    path = [*base, *error.absolute_path]
    message = error.message
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra:
            path.append(extra[0])
            known = ", ".join(sorted(error.schema.get("properties", {})))
            message = f"unknown field (known: {known})"
    elif "propertyNames" in error.schema_path and isinstance(error.instance, str):
        path.append(error.instance)
        message = f"invalid key: {message}"
    elif error.validator == "type" and _unquoted_mode(error.instance, error.schema):
        message = (f"a mode is a quoted octal string: YAML read this unquoted number as "
                   f"{error.instance} (write mode: \"0{error.instance:o}\" if you meant "
                   f"0{error.instance:o})")
    elif error.validator == "required":
        message = message.replace("is a required property", "is required")
    raise source.error(path, message)


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
