"""Bounds on what one template render may do: value sizes, total work, ranges, time.

A state file is input, and Jinja2's sandbox keeps a template from the machine but not
from the CPU or the memory: ``{{ 'x' * 1000000000 }}`` took 3.9 GB and 19 s, nested
``range(99999)`` loops minutes. Each render (one value of a state file) gets a budget:

- no value it makes holds more than :data:`MAX_VALUE` characters or items, counted as
  they print (a list holding one large list ten times is ten times as large): checked
  *before* the operation (``*``, ``+``, ``%``, ``**``, ``~``, list and dict literals, the
  filters and ``str`` methods that can multiply a size);
- the values it makes together weigh at most :data:`MAX_WORK`, its ranges hold at most
  :data:`MAX_RANGE` items in all, and the text it renders is at most :data:`MAX_VALUE`
  characters;
- it runs at most :data:`TIME_LIMIT` seconds of wall clock (SIGALRM, in the main thread;
  the previous handler and timer are restored), for whatever loops slip through.

Each refusal is a :class:`LimitError` (a template error: exit 3, naming file, line and
field) that says which limit was hit.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import signal
from collections.abc import Callable, Iterator
from string import Formatter
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_VALUE = 1_000_000  # characters or items in one value a template makes, or renders
MAX_WORK = 20_000_000  # characters and items of all the values one render makes
MAX_RANGE = 100_000  # items of all the ranges of one render
MAX_INT_BITS = 16_384  # an integer a template makes (~4 900 digits)
TIME_LIMIT = 1.0  # seconds of one render
_HINT = "(templates compute names and small values, not bulk data)"
# str methods that multiply a size by an argument: the filters do it, within limits
_UNSAFE_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace",
                             "join"})
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")


class LimitError(SecurityError):
    """A template went over one of its limits."""


def weight(value: Any, limit: int = MAX_VALUE) -> int:
    """Characters and items of ``value`` as it prints, each shared part counted every
    time it appears; counting stops once past ``limit``."""
    total, stack = 0, [value]
    pop, extend = stack.pop, stack.extend
    while stack and total <= limit:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or kind is float or item is None:
            total += len(item) if kind is str else 1 + (
                item.bit_length() // 3 if kind is int else 0)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1 + len(item)
            extend(item)
        elif isinstance(item, dict):
            total += 1 + len(item)
            extend(item.keys())
            extend(item.values())
        elif isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, range):
            total += 1 + 2 * len(item)
        elif isinstance(item, int):
            total += 1 + item.bit_length() // 3
        else:
            total += 1
    return total


def _size_error(what: str, size: int) -> LimitError:
    return LimitError(f"{what} would make a value of {size} characters or items; a "
                      f"template may make at most {MAX_VALUE} {_HINT}")


class _Generator(CodeGenerator):
    """Jinja2's code generator, with ``~`` and list, tuple and dict literals sized."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.tilde((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _sized(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment.sized(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._sized(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._sized(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target: (a, b) in a for or a set
            super().visit_Tuple(node, frame)
        else:
            self._sized(super().visit_Tuple, node, frame)


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every size-multiplying operation checked first."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"+", "*", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.work = self.ranged = 0
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)  # megabytes of text from one call
        for name in ("urlize", "xmlattr", "striptags"):  # HTML; regexes that backtrack
            self.filters.pop(name, None)
        for name, estimate in _FILTER_SIZES.items():
            self.filters[name] = _limited_filter(self, name, self.filters[name], estimate)
        self.globals["dict"] = lambda *args, **kwargs: self.sized(dict(*args, **kwargs))

    def begin(self) -> None:
        """A new render: a new budget."""
        self.work = self.ranged = 0

    def charge(self, size: int, what: str) -> None:
        if size > MAX_VALUE:
            raise _size_error(what, size)
        self.work += size
        if self.work > MAX_WORK:
            raise LimitError(f"the template made more than {MAX_WORK} characters and "
                             f"items in all {_HINT}")

    def sized(self, value: Any) -> Any:
        self.charge(weight(value), "a literal")
        return value

    def tilde(self, parts: tuple[Any, ...]) -> str:
        self.charge(sum(weight(p) for p in parts), "'~'")
        return "".join(str(p) for p in parts)

    def _finalize(self, value: Any) -> Any:
        self.charge(weight(value), "'{{ }}'")
        return value

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        self.ranged += len(numbers)
        if self.ranged > MAX_RANGE:
            raise LimitError(f"range() would give more than {MAX_RANGE} numbers in all in "
                             f"one template (loops nested too deeply?) {_HINT}")
        return numbers

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            self.charge(_printf_size(left, right), "'%'")
        elif isinstance(left, int) and isinstance(right, int):
            _check_int(operator, left, right)
        elif operator == "*":
            self.charge(_repeat_size(left, right), "'*'")
        elif operator == "+":
            self.charge(weight(left) + weight(right), "'+'")
        return self.binop_table[operator](left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str | bytes) and attr in _UNSAFE_METHODS:
            return False  # the filters of the same names check their sizes
        return bool(super().is_safe_attribute(obj, attr, value))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map``, its widths and arguments checked first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__
        checked: Callable[..., str] = wrapped

        def limited(*args: Any, **kwargs: Any) -> str:
            self.charge(_format_size(text) + weight([args, kwargs]), "str.format")
            return checked(*args, **kwargs)
        return limited


def _repeat_size(left: Any, right: Any) -> int:
    """The weight of ``left * right`` (a sequence times a count, either way round)."""
    for seq, count in ((left, right), (right, left)):
        if isinstance(count, int) and isinstance(seq, str | bytes | list | tuple):
            return weight(seq) * max(count, 0)
    return 0


def _check_int(operator: str, left: int, right: int) -> None:
    bits = {"*": left.bit_length() + right.bit_length(),
            "**": left.bit_length() * right if right > 0 else 0}.get(operator, 0)
    if bits > MAX_INT_BITS:
        raise LimitError(f"'{operator}' would make an integer of about {bits} bits; a "
                         f"template may make at most {MAX_INT_BITS} {_HINT}")


def _printf_size(text: str, args: Any) -> int:
    """An upper bound of the length of ``text % args``: its widths and precisions, and
    the arguments as they print; a width taken from the arguments (``*``) is refused."""
    total = len(text) + 4 * weight(args)
    for width, precision in _PRINTF.findall(text):
        if "*" in (width, precision):
            raise LimitError("'%' with a '*' width is not allowed in a template")
        total += int(width or 0) + int(precision or 0)
    return total


def _format_size(text: str) -> int:
    """An upper bound of what the format string ``text`` adds to its arguments."""
    total = len(text)
    try:
        parts = list(Formatter().parse(text))
    except ValueError:
        return total  # format() raises the same error
    for _literal, _field, spec, _conversion in parts:
        if spec and "{" in spec:
            raise LimitError("a nested '{}' in a format spec is not allowed in a template")
        total += sum(int(n) for n in re.findall(r"\d+", spec or ""))
    return total


# --- filters that can multiply a size: the bound of their result, from their arguments --

def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _indent_size(a: dict[str, Any]) -> int:
    width = a["width"]
    step = len(width) if isinstance(width, str) else int(width)
    return weight(a["s"]) + (_text(a["s"]).count("\n") + 1) * max(step, 0)


def _replace_size(a: dict[str, Any]) -> int:
    text, old = _text(a["s"]), _text(a["old"])
    found = text.count(old) if old else len(text) + 1
    if a["count"] is not None:
        found = min(found, max(int(a["count"]), 0))
    return len(text) + found * len(_text(a["new"]))


def _wordwrap_size(a: dict[str, Any]) -> int:
    text = _text(a["s"])
    breaks = len(text) // max(int(a["width"]), 1) + text.count("\n") + 1
    return len(text) + breaks * len(a["wrapstring"] or "\n")


def _join_size(a: dict[str, Any]) -> int:
    items = a["value"]
    return weight(items) + len(_text(a["d"])) * len(items)


_FILTER_SIZES: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: max(weight(a["value"]), int(a["width"])),
    "indent": _indent_size,
    "replace": _replace_size,
    "wordwrap": _wordwrap_size,
    "join": _join_size,
    "format": lambda a: _printf_size(_text(a["value"]), a["args"] or a["kwargs"]),
    "batch": lambda a: weight(a["value"]) + max(int(a["linecount"]), 0),
    "slice": lambda a: weight(a["value"]) + max(int(a["slices"]), 0),
    "sum": lambda a: weight(a["iterable"]) + weight(a["start"]),
}


def _limited_filter(env: LimitedEnvironment, name: str, function: Callable[..., Any],
                    estimate: Callable[[dict[str, Any]], int]) -> Callable[..., Any]:
    """``function`` (a Jinja2 filter), called only when ``estimate`` of its result,
    from its bound arguments, is within the limits. An iterator argument is read into a
    list first (it is counted, then passed on)."""
    import functools

    lead = 1 if hasattr(function, "jinja_pass_arg") else 0  # eval context, environment
    params = list(inspect.signature(function).parameters.values())
    if lead and params[0].name in ("eval_ctx", "environment", "context"):
        params = params[1:]  # (an async variant's signature does not show it)
    signature = inspect.Signature(params)
    first = params[0].name

    @functools.wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args[lead:], **kwargs)
        bound.apply_defaults()
        value = bound.arguments[first]
        if hasattr(value, "__next__"):  # an iterator (map, select...): read it once
            bound.arguments[first] = list(value)
        env.charge(estimate(bound.arguments), f"the {name} filter")
        if name == "sum" and isinstance(bound.arguments["start"], list | tuple):
            return _concatenated(bound.arguments)
        return function(*args[:lead], *bound.args, **bound.kwargs)
    return limited


def _concatenated(a: dict[str, Any]) -> Any:
    """``sum(lists, start=[])`` in linear time (``sum`` copies the growing list at each
    step: quadratic, in C, where no clock can stop it)."""
    start = a["start"]
    out = list(start)
    for item in a["iterable"]:
        if a["attribute"] is not None:
            raise LimitError("sum with attribute and a list start is not allowed in a "
                             "template")
        if not isinstance(item, type(start)):
            raise TypeError(f"can only concatenate {type(start).__name__} (not "
                            f"\"{type(item).__name__}\") to {type(start).__name__}")
        out.extend(item)
    return type(start)(out)


# --- the clock -------------------------------------------------------------------------

@contextlib.contextmanager
def clock(seconds: float = TIME_LIMIT) -> Iterator[None]:
    """Raise :class:`LimitError` in the block once ``seconds`` have passed (SIGALRM, in
    the main thread; elsewhere the other limits still hold). The previous handler and
    timer are put back."""

    def expire(signum: int, frame: Any) -> None:
        raise LimitError(f"the template ran for more than {seconds:g} s (a loop too "
                         f"large?) {_HINT}")

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    before = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if before[0]:
            signal.setitimer(signal.ITIMER_REAL, *before)


def joined(chunks: Iterator[str]) -> str:
    """A template's rendered text, stopped once it passes :data:`MAX_VALUE`."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_VALUE:
            raise LimitError(f"the rendered text would exceed {MAX_VALUE} characters "
                             f"{_HINT}")
        out.append(chunk)
    return "".join(out)
