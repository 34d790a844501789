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
        """Invalid input at ``path``: ``file:line: field: message``, a state named by its
        id (``states[fw-api].jump``)."""
        return StateError(message, file=self.name, line=self.line(path),
                          field=field_path(self.named(path)))

    def named(self, path: Sequence[str | int]) -> list[str | int]:
        """``path`` with a state's index replaced by its id (``["states", "fw-api",
        "jump"]``), when the state has a valid id; else as it is."""
        out = list(path)
        if len(out) > 1 and out[0] == "states" and isinstance(out[1], int):
            name = state_id(self.data, out[1])
            if name is not None:
                out[1] = name
        return out


def state_id(data: Any, index: int) -> str | None:
    """The id of state ``index`` of a file's ``data``, if it is a valid id."""
    states = data.get("states") if isinstance(data, dict) else None
    state = states[index] if isinstance(states, list) and 0 <= index < len(states) else None
    name = state.get("id") if isinstance(state, dict) else None
    return name if isinstance(name, str) and is_id(name) else None


_ID_START = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ID_START | {"_", "-"}


def is_id(name: str) -> bool:
    """A state id: ``[a-z0-9][a-z0-9_-]*`` (the schema's ``$defs/id``)."""
    return bool(name) and name[0] in _ID_START and set(name) <= _ID_CHARS


def parse(name: str, text: str) -> Source:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise yaml_error(name, text, exc) from None
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


_INDENTATION = ("mapping values are not allowed", "did not find expected key",
                "expected <block end>", "did not find expected '-' indicator")
_UNCLOSED = ("end of stream", "did not find expected ',' or", "expected ',' or")


def yaml_error(name: str, text: str, exc: yaml.YAMLError) -> StateError:
    """A YAML syntax error: the line and column, and a hint for the usual causes (a tab,
    the indentation, an unquoted template, a missing space after a colon, an unclosed
    quote or bracket)."""
    problem = str(getattr(exc, "problem", None) or str(exc).splitlines()[0])
    mark, start = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    if mark is None:
        return StateError(f"invalid YAML: {problem}", file=name)
    if "expected ':'" in problem and start is not None:
        mark = start  # the key that has no colon, not the line after it
    lines = text.splitlines()
    here = lines[mark.line] if mark.line < len(lines) else ""
    hint = _yaml_hint(problem, here, start)
    return StateError(f"invalid YAML at column {mark.column + 1}: {problem}"
                      + (f"; {hint}" if hint else ""), file=name, line=mark.line + 1)


def _yaml_hint(problem: str, here: str, start: Any) -> str:
    """Words for the usual causes of ``problem`` (found on the line ``here``)."""
    indent = here[:len(here) - len(here.lstrip())]
    block = "" if start is None else \
        f" (the block at line {start.line + 1} starts in column {start.column + 1})"
    opened = "" if start is None else \
        f": the one opened at line {start.line + 1}, column {start.column + 1}"
    hints = [
        ("tab" in problem or "\t" in problem or "\t" in indent,
         "a tab: YAML indents with spaces only; replace the tab with spaces"),
        ("{{" in here and not _quoted_template(here),
         'a value that starts with a template must be quoted: "{{ ... }}"'),
        ("expected ':'" in problem, "a key needs a colon and a space after it (key: value)"),
        (any(p in problem for p in _UNCLOSED), f"an unclosed quote or bracket{opened}"),
        ("mapping values" in problem,
         "a value that holds ': ' must be quoted, or this line is indented too far (the "
         "keys of one mapping start in the same column)"),
        (any(p in problem for p in _INDENTATION),
         "check the indentation: the keys of one mapping, and the items of one list, "
         f"start in the same column{block}"),
    ]
    return next((hint for matched, hint in hints if matched), "")


def _quoted_template(line: str) -> bool:
    """Whether the first ``{{`` of ``line`` is inside a quoted value."""
    before = line[:line.find("{{")]
    return "'" in before or '"' in before


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
        raise StateError("a mapping key must be a scalar (a value that starts with a "
                         'template must be quoted: "{{ ... }}")', file=name,
                         line=node.start_mark.line + 1)
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise StateError(f"invalid YAML value: {exc}", file=name,
                         line=node.start_mark.line + 1) from None


def field_path(path: Sequence[str | int]) -> str:
    """``("states", 1, "mode")`` -> ``states[1].mode``; ``("states", "fw", "jump")`` ->
    ``states[fw].jump`` (a state named by its id)."""
    out = ""
    for index, part in enumerate(path):
        named = index == 1 and path[0] == "states"
        out += f"[{part}]" if isinstance(part, int) or named else (
            f".{part}" if out else part)
    return out
