"""A quick proof that an instance is valid under one of statekit's JSON Schemas, so that a
load whose state files are right never imports jsonschema (about 0.1 s of a cold start,
a third of it: the container's boot loads its states cold, twice).

It is conservative, not a second validator: :func:`proves_valid` is True only when every
keyword on the way is one it knows (the ones statekit's schemas use) and holds, with
jsonschema's own meaning (draft 2020-12, formats not asserted, as
:func:`statekit.load.schema_check.problems` runs it). Anything else (a keyword it does not
know, a float where an integer is wanted, a list compared with an enum) is "not proved",
and jsonschema decides, and words the errors, exactly as before. Each check answers True
(holds), False (fails: jsonschema fails it too) or None (not sure): ``oneOf`` needs the
False answers, to know that one branch alone holds. ``tests/test_schema_fast.py``
compares it with jsonschema on generated instances of every schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Check = Callable[[Any, Any, dict[str, Any], dict[str, Any], int], bool | None]

#: Keywords that only annotate: they never make an instance invalid.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description",
                          "default", "examples", "format", "x-explain"})
_DEPTH = 64  # deeper than any schema of statekit's: not sure


def proves_valid(schema: dict[str, Any], instance: Any) -> bool:
    """True only when ``instance`` is valid under ``schema`` for sure (see above)."""
    return _check(schema, instance, schema, 0) is True


def _check(node: Any, value: Any, root: dict[str, Any], depth: int) -> bool | None:
    if node is True or node is False:
        return bool(node)
    if not isinstance(node, dict) or depth > _DEPTH:
        return None
    result: bool | None = True
    for keyword, argument in node.items():
        if keyword in _ANNOTATIONS:
            continue
        check = _KEYWORDS.get(keyword)
        found = None if check is None else check(argument, value, node, root, depth + 1)
        if found is False:
            return False
        if found is None:
            result = None
    return result


def _all(answers: list[bool | None]) -> bool | None:
    """Every answer holds (False as soon as one fails)."""
    if False in answers:
        return False
    return None if None in answers else True


def _any(answers: list[bool | None]) -> bool | None:
    """One answer holds at least (False only when every one fails)."""
    if True in answers:
        return True
    return None if None in answers else False


# --- types and values ----------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_PLAIN_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}


def _is_type(kind: Any, value: Any) -> bool | None:
    plain = _PLAIN_TYPES.get(kind)
    if plain is not None:
        return plain(value)
    known = isinstance(value, str | list | dict | bool) or value is None
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return True
    if kind == "integer":
        return False if known else None  # a float such as 2.0 is an integer there
    if kind == "number":
        return True if _is_number(value) else (False if known else None)
    return None


def _type(argument: Any, value: Any, *_: Any) -> bool | None:
    kinds = argument if isinstance(argument, list) else [argument]
    return _any([_is_type(kind, value) for kind in kinds])


def _equal(one: Any, two: Any) -> bool | None:
    """jsonschema's equality for scalars (True is not 1; 1 is 1.0); None for the rest."""
    if isinstance(one, bool) or isinstance(two, bool):
        return isinstance(one, bool) and isinstance(two, bool) and one == two
    if _is_number(one) and _is_number(two):
        return bool(one == two)
    if isinstance(one, str) and isinstance(two, str):
        return one == two
    if one is None or two is None:
        return one is None and two is None
    scalar = (str, int, float)
    if isinstance(one, scalar) and isinstance(two, scalar):
        return False  # a string is never a number
    return None


def _enum(argument: Any, value: Any, *_: Any) -> bool | None:
    if not isinstance(argument, list):
        return None
    return _any([_equal(item, value) for item in argument])


def _pattern(argument: Any, value: Any, *_: Any) -> bool | None:
    if not isinstance(value, str):
        return True
    return re.search(argument, value) is not None


def _bound(test: Callable[[Any, Any], bool], of: Callable[[Any], bool],
           size: Callable[[Any], Any]) -> Check:
    def check(argument: Any, value: Any, *_: Any) -> bool | None:
        if not of(value):
            return True
        measured = size(value)
        if not (_is_number(argument) and measured - measured == 0):
            return None  # NaN and infinities compare as jsonschema's code happens to
        return test(measured, argument)
    return check


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _same(value: Any) -> Any:
    return value


# --- arrays ----------------------------------------------------------------------------

def _items(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
           depth: int) -> bool | None:
    if not isinstance(value, list):
        return True
    if "prefixItems" in node:
        return None
    return _all([_check(argument, item, root, depth) for item in value])


def _unique(argument: Any, value: Any, *_: Any) -> bool | None:
    if argument is False or not isinstance(value, list):
        return True
    if argument is not True:
        return None
    if all(isinstance(item, str) for item in value) or all(
            isinstance(item, int) and not isinstance(item, bool) for item in value):
        return len(set(value)) == len(value)
    return None  # jsonschema's equality for the rest (1 == 1.0, True != 1): not here


# --- objects ---------------------------------------------------------------------------

def _object_keys(value: Any) -> bool | None:
    """Whether ``value`` is a mapping whose keys are all strings (None: other keys)."""
    if not isinstance(value, dict):
        return False
    return True if all(isinstance(key, str) for key in value) else None


def _properties(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
                depth: int) -> bool | None:
    keys = _object_keys(value)
    if keys is False:
        return True
    if keys is None or not isinstance(argument, dict):
        return None
    return _all([_check(sub, value[name], root, depth)
                 for name, sub in argument.items() if name in value])


def _additional(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
                depth: int) -> bool | None:
    keys = _object_keys(value)
    if keys is False:
        return True
    if keys is None or "patternProperties" in node:
        return None
    known = node.get("properties", {})
    extras = [name for name in value if name not in known]
    if argument is False:
        return not extras
    return _all([_check(argument, value[name], root, depth) for name in extras])


def _required(argument: Any, value: Any, *_: Any) -> bool | None:
    if not isinstance(value, dict):
        return True
    if not isinstance(argument, list):
        return None
    return all(name in value for name in argument)


def _property_names(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
                    depth: int) -> bool | None:
    if not isinstance(value, dict):
        return True
    return _all([_check(argument, name, root, depth) for name in value])


# --- combinations and references -------------------------------------------------------

def _branches(argument: Any, value: Any, root: dict[str, Any],
              depth: int) -> list[bool | None] | None:
    """Each subschema's answer for ``value`` (None: not a list of subschemas)."""
    if not isinstance(argument, list):
        return None
    return [_check(sub, value, root, depth) for sub in argument]


def _one_of(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
            depth: int) -> bool | None:
    answers = _branches(argument, value, root, depth)
    if answers is None:
        return None
    holding = answers.count(True)
    if holding > 1:
        return False
    if None in answers:
        return None
    return holding == 1


def _any_of(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
            depth: int) -> bool | None:
    answers = _branches(argument, value, root, depth)
    return None if answers is None else _any(answers)


def _all_of(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
            depth: int) -> bool | None:
    answers = _branches(argument, value, root, depth)
    return None if answers is None else _all(answers)


def _ref(argument: Any, value: Any, node: dict[str, Any], root: dict[str, Any],
         depth: int) -> bool | None:
    prefix = "#/$defs/"
    if not isinstance(argument, str) or not argument.startswith(prefix):
        return None
    target = root.get("$defs", {}).get(argument[len(prefix):])
    return None if target is None else _check(target, value, root, depth)


def _at_least(size: Any, bound: Any) -> bool:
    return bool(size >= bound)


def _at_most(size: Any, bound: Any) -> bool:
    return bool(size <= bound)


def _above(size: Any, bound: Any) -> bool:
    return bool(size > bound)


def _below(size: Any, bound: Any) -> bool:
    return bool(size < bound)


_KEYWORDS: dict[str, Check] = {
    "type": _type,
    "enum": _enum,
    "pattern": _pattern,
    "minLength": _bound(_at_least, _is_str, len),
    "maxLength": _bound(_at_most, _is_str, len),
    "minimum": _bound(_at_least, _is_number, _same),
    "maximum": _bound(_at_most, _is_number, _same),
    "exclusiveMinimum": _bound(_above, _is_number, _same),
    "exclusiveMaximum": _bound(_below, _is_number, _same),
    "items": _items,
    "minItems": _bound(_at_least, _is_list, len),
    "maxItems": _bound(_at_most, _is_list, len),
    "uniqueItems": _unique,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "propertyNames": _property_names,
    "oneOf": _one_of,
    "anyOf": _any_of,
    "allOf": _all_of,
    "$ref": _ref,
}
