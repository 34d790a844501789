"""YAML with line numbers: a document plus a map from each value's path to its line.

Hostile YAML is invalid input (exit 3), found before anything is built from it:

- aliases may expand the document to at most :data:`EXPANSION_FACTOR` times its own
  node count (plus :data:`EXPANSION_SLACK`): an alias bomb ("billion laughs") stops
  after a few thousand nodes, not at a MemoryError;
- nesting deeper than :data:`MAX_DEPTH` is refused (no RecursionError);
- only the plain YAML tags are accepted (``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null``, ``!!timestamp``, ``!!map``, ``!!seq``): ``!!python/...`` and any other
  tag is refused, on a scalar, a mapping or a sequence alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from statekit.errors import StateError

Path = tuple[str | int, ...]
EXPANSION_FACTOR = 10
EXPANSION_SLACK = 10_000
MAX_DEPTH = 64
_YAML = "tag:yaml.org,2002:"
_TAGS = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null", "timestamp",
                                      "map", "seq"))

try:  # libyaml is much faster when present
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader


class Source:
    """One parsed YAML file: ``data`` and the line (1-based) of every path in it."""

    def __init__(self, name: str, data: Any, lines: dict[Path, int]) -> None:
        self.name = name
        self.data = data
        self.lines = lines

    def line(self, path: Sequence[str | int]) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return self.lines.get(p, 1)

    def error(self, path: Sequence[str | int], message: str) -> StateError:
        """Invalid input at ``path``: ``file:line: field: message``."""
        return StateError(message, file=self.name, line=self.line(path),
                          field=field_path(path))


def parse(name: str, text: str) -> Source:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StateError(f"invalid YAML: {problem}", file=name, line=line) from None
    except RecursionError:
        raise StateError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels",
                         file=name) from None
    lines: dict[Path, int] = {}
    if node is None:
        return Source(name, None, lines)
    budget = [EXPANSION_FACTOR * _distinct(node, name) + EXPANSION_SLACK]
    ctor = yaml.constructor.SafeConstructor()
    data = _convert(node, (), lines, name, ctor, budget)
    return Source(name, data, lines)


def _distinct(root: yaml.Node, name: str) -> int:
    """How many nodes the document really has (an alias counted once); refuses too deep
    a nesting and any tag but the plain ones."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in _TAGS:
            tag = "!!" + node.tag[len(_YAML):] if node.tag.startswith(_YAML) else node.tag
            raise StateError(f"unsupported YAML tag {tag!r} (only plain YAML is read; "
                             "remove the tag)", file=name, line=node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            raise StateError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", file=name,
                             line=node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            stack.extend((n, depth + 1) for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((n, depth + 1) for n in node.value)
    return len(seen)


def _convert(
    node: yaml.Node, path: Path, lines: dict[Path, int], name: str,
    ctor: yaml.constructor.SafeConstructor, budget: list[int],
) -> Any:
    if len(path) > MAX_DEPTH:  # through aliases (a recursive alias, say)
        raise StateError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", file=name,
                         line=node.start_mark.line + 1)
    budget[0] -= 1
    if budget[0] < 0:
        raise StateError("invalid YAML: aliases expand the document more than "
                         f"{EXPANSION_FACTOR} times its size (an alias bomb?)", file=name,
                         line=node.start_mark.line + 1)
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, name, ctor)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise StateError(f"duplicate key {key!r}", file=name,
                                 line=key_node.start_mark.line + 1)
            out[key] = _convert(value_node, (*path, key), lines, name, ctor, budget)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, (*path, i), lines, name, ctor, budget)
                for i, v in enumerate(node.value)]
    return _scalar(node, name, ctor)


def _scalar(node: yaml.Node, name: str, ctor: yaml.constructor.SafeConstructor) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise StateError("a mapping key must be a scalar", file=name,
                         line=node.start_mark.line + 1)
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise StateError(f"invalid YAML value: {exc}", file=name,
                         line=node.start_mark.line + 1) from None


def field_path(path: Sequence[str | int]) -> str:
    """``("states", 1, "mode")`` -> ``states[1].mode``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
