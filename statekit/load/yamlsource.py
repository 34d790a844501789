"""YAML with line numbers: a document plus a map from each value's path to its line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from statekit.errors import StateError

Path = tuple[str | int, ...]

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
    lines: dict[Path, int] = {}
    ctor = yaml.constructor.SafeConstructor()
    data = _convert(node, (), lines, name, ctor) if node is not None else None
    return Source(name, data, lines)


def _convert(
    node: yaml.Node, path: Path, lines: dict[Path, int], name: str,
    ctor: yaml.constructor.SafeConstructor,
) -> Any:
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
            out[key] = _convert(value_node, (*path, key), lines, name, ctor)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, (*path, i), lines, name, ctor) for i, v in enumerate(node.value)]
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
