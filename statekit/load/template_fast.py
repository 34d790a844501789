"""A quick evaluator of the simplest templates, so that a cold load of the shipped states
never imports Jinja2 (about 40 ms, and 20 more to compile their templates: a fifth of the
container's cold boot).

It is conservative, not a second template engine (as :mod:`statekit.load.schema_fast` is
to jsonschema). It reads a small part of Jinja2's expression language, with Jinja2's
precedence: string, integer and constant literals, names of the context, ``a.b`` on a
mapping, ``x | f(args)`` with statekit's own filters, ``x is [not] t`` with its own tests,
``~``, ``==`` and ``!=``, ``not``, ``and``, ``or``, ``a if c else b`` and parentheses; a
template is text and ``{{ expression }}`` parts. Anything else (a keyword where a name
is expected, a name not in the context, an attribute a mapping also has as a method, a
``{%`` or ``{#`` block, a carriage return, a value of more than :data:`MAX_SIZE`
characters, any exception) raises :class:`Unsupported`, and Jinja2 renders the source,
with its sandbox, its limits and its own errors, as before. So a value it gives is the
one Jinja2 gives: ``tests/test_template_fast.py`` compares the two on generated sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

MAX_SIZE = 100_000  # characters a concatenation or a template makes here (Jinja2: 1 M)
_TOKEN = re.compile(r"(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>0(?![0-9])|[1-9][0-9]*)"
                    r"|'(?P<s1>[ -&(-\[\]-~]*)'|\"(?P<s2>[ !#-\[\]-~]*)\"|(?P<op>==|!=|[~|(),.]))")
_SPACE = re.compile(r"[ \t\n]*")
_CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "none": None,
              "None": None}
_KEYWORDS = frozenset({"and", "or", "not", "if", "else", "is", "in"})
_COMPARE = frozenset({("op", "=="), ("op", "!=")})
_PART = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)

Node = tuple[Any, ...]


class Unsupported(Exception):
    """Not for this evaluator: Jinja2 decides."""


def parse(source: str) -> Node:
    """The expression's tree, or Unsupported."""
    tokens = _tokens(source)
    parser = _Parser(tokens)
    node = parser.condexpr()
    if parser.at < len(tokens):
        raise Unsupported(source)
    return node


def parse_template(source: str) -> list[str | Node]:
    """Text and expression parts, or Unsupported."""
    if "\r" in source:
        raise Unsupported("Jinja2 rewrites line ends in text")
    parts: list[str | Node] = []
    at = 0
    for match in _PART.finditer(source):
        parts.append(_text(source[at:match.start()]))
        parts.append(parse(match.group(1)))
        at = match.end()
    parts.append(_text(source[at:]))
    return [p for p in parts if p != ""]


def _text(text: str) -> str:
    if "{" in text or "}" in text:
        raise Unsupported("a block, a comment or a brace in text")
    return text


def _tokens(source: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    at, end = 0, len(source)
    while True:
        at = _SPACE.match(source, at).end()  # type: ignore[union-attr]
        if at == end:
            return tokens
        match = _TOKEN.match(source, at)
        if match is None:
            raise Unsupported(source)
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "int":
            tokens.append(("const", int(value)))
        elif kind in ("s1", "s2"):
            tokens.append(("str", value))
        else:
            tokens.append((kind, value))
        at = match.end()


class _Parser:
    """Recursive descent in the order of Jinja2's own parser (jinja2/parser.py)."""

    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens, self.at = tokens, 0

    def _peek(self, offset: int = 0) -> tuple[str, Any]:
        at = self.at + offset
        return self.tokens[at] if at < len(self.tokens) else ("end", None)

    def _is(self, kind: str, value: Any = None) -> bool:
        token = self._peek()
        return token[0] == kind and (value is None or token[1] == value)

    def _take(self, kind: str, value: Any = None) -> Any:
        if not self._is(kind, value):
            raise Unsupported(f"expected {value or kind}")
        token = self.tokens[self.at]
        self.at += 1
        return token[1]

    def condexpr(self) -> Node:
        node = self._or()
        while self._is("name", "if"):
            self.at += 1
            test = self._or()
            self._take("name", "else")  # no else: an undefined value
            node = ("cond", test, node, self.condexpr())
        return node

    def _or(self) -> Node:
        return self._chain("or", self._and)

    def _and(self) -> Node:
        return self._chain("and", self._not)

    def _chain(self, word: str, operand: Callable[[], Node]) -> Node:
        """``operand (word operand)*``, left to right."""
        node = operand()
        while self._is("name", word):
            self.at += 1
            node = (word, node, operand())
        return node

    def _not(self) -> Node:
        if self._is("name", "not"):
            self.at += 1
            return ("not", self._not())
        return self._compare()

    def _compare(self) -> Node:
        node = self._concat()
        if self._peek() in _COMPARE:
            node = ("compare", self._take("op"), node, self._concat())
        if self._peek() in _COMPARE or self._is("name", "in") or (
                self._is("name", "not") and self._peek(1) == ("name", "in")):
            raise Unsupported("a chained comparison or 'in'")
        return node

    def _concat(self) -> Node:
        parts = [self._unary()]
        while self._is("op", "~"):
            self.at += 1
            parts.append(self._unary())
        return ("concat", parts) if len(parts) > 1 else parts[0]

    def _unary(self) -> Node:
        node = self._primary()
        while self._is("op", "."):
            self.at += 1
            node = ("attr", node, self._take("name"))
        return self._filters(node)

    def _primary(self) -> Node:
        kind, value = self._peek()
        self.at += 1
        if kind == "name" and value in _CONSTANTS:
            return ("const", _CONSTANTS[value])
        if kind == "name" and value not in _KEYWORDS:
            return ("name", value)
        if kind == "const":
            return ("const", value)
        if kind == "str":
            text = [value]
            while self._is("str"):  # adjacent literals are one, as in Python
                text.append(self._take("str"))
            return ("const", "".join(text))
        if (kind, value) == ("op", "("):
            node = self.condexpr()
            self._take("op", ")")
            return node
        raise Unsupported(f"{value!r} where a value is expected")

    def _filters(self, node: Node) -> Node:
        while True:
            if self._is("op", "|"):
                self.at += 1
                name, args = self._take("name"), []
                if self._is("op", "("):
                    args = self._arguments()
                node = ("filter", name, node, args)
            elif self._is("name", "is"):
                self.at += 1
                negated = self._is("name", "not")
                self.at += negated
                name = self._take("name")
                follows = self._peek()
                if follows[0] in ("str", "const") or follows == ("op", "(") or (
                        follows[0] == "name" and follows[1] not in ("else", "or", "and")):
                    raise Unsupported("a test with an argument")
                node = ("test", name, node, negated)
            elif self._is("op", "(") or self._is("op", "."):
                raise Unsupported("a call, or an attribute of a filter's value")
            else:
                return node

    def _arguments(self) -> list[Node]:
        self._take("op", "(")
        args: list[Node] = []
        while not self._is("op", ")"):
            if args:
                self._take("op", ",")
            args.append(self.condexpr())
        self._take("op", ")")
        return args


class Evaluator:
    """Evaluates trees against a context with the filters and tests of the sandbox."""

    def __init__(self, filters: Mapping[str, Callable[..., Any]],
                 tests: Mapping[str, Callable[..., Any]]) -> None:
        self.filters, self.tests = filters, tests

    def value(self, node: Node, context: Mapping[str, Any]) -> Any:
        return _KINDS[node[0]](self, node, context)

    def _const(self, node: Node, context: Mapping[str, Any]) -> Any:
        return node[1]

    def _name(self, node: Node, context: Mapping[str, Any]) -> Any:
        if node[1] not in context:
            raise Unsupported("undefined")
        return context[node[1]]

    def _attr(self, node: Node, context: Mapping[str, Any]) -> Any:
        return _attribute(self.value(node[1], context), node[2])

    def _filter(self, node: Node, context: Mapping[str, Any]) -> Any:
        function = self._own(self.filters, node[1])
        return function(self.value(node[2], context),
                        *[self.value(arg, context) for arg in node[3]])

    def _test(self, node: Node, context: Mapping[str, Any]) -> Any:
        result = self._own(self.tests, node[1])(self.value(node[2], context))
        return not result if node[3] else result

    def _concat(self, node: Node, context: Mapping[str, Any]) -> Any:
        return sized("".join(str(self.value(part, context)) for part in node[1]))

    def _compare(self, node: Node, context: Mapping[str, Any]) -> Any:
        left, right = self.value(node[2], context), self.value(node[3], context)
        return left == right if node[1] == "==" else left != right

    def _not(self, node: Node, context: Mapping[str, Any]) -> Any:
        return not self.value(node[1], context)

    def _and(self, node: Node, context: Mapping[str, Any]) -> Any:
        return self.value(node[1], context) and self.value(node[2], context)

    def _or(self, node: Node, context: Mapping[str, Any]) -> Any:
        return self.value(node[1], context) or self.value(node[2], context)

    def _cond(self, node: Node, context: Mapping[str, Any]) -> Any:
        return self.value(node[2] if self.value(node[1], context) else node[3], context)

    def render(self, parts: list[str | Node], context: Mapping[str, Any]) -> str:
        return sized("".join(part if isinstance(part, str)
                             else str(self.value(part, context)) for part in parts))

    @staticmethod
    def _own(functions: Mapping[str, Callable[..., Any]], name: str) -> Callable[..., Any]:
        function = functions.get(name)
        if function is None or hasattr(function, "jinja_pass_arg"):
            raise Unsupported(f"not statekit's own: {name}")
        return function


_KINDS: dict[str, Callable[[Evaluator, Node, Mapping[str, Any]], Any]] = {
    "const": Evaluator._const, "name": Evaluator._name, "attr": Evaluator._attr,
    "filter": Evaluator._filter, "test": Evaluator._test, "concat": Evaluator._concat,
    "compare": Evaluator._compare, "not": Evaluator._not, "and": Evaluator._and,
    "or": Evaluator._or, "cond": Evaluator._cond,
}


def _attribute(base: Any, name: str) -> Any:
    """``base.name`` as the sandbox gives it on a mapping (an item, when the mapping has no
    attribute of that name: ``env.HOME``); anything else is Jinja2's to decide."""
    if not isinstance(base, dict) or hasattr(base, name):
        raise Unsupported("an attribute")
    try:
        return base[name]
    except (LookupError, TypeError):
        raise Unsupported("undefined") from None


def sized(text: str) -> str:
    if len(text) > MAX_SIZE:
        raise Unsupported("large: Jinja2's limits decide")
    return text
