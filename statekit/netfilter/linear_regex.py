"""Linear-time regular expressions: the ``ignore`` patterns of a purged chain.

Python's ``re`` backtracks: ``(\\S+ ?)+$Z`` against one foreign rule runs for longer than
any converge may hold its lock, and ``a{4294967295}`` raises OverflowError. The patterns
come from state files, so they are matched here instead. A pattern is parsed with
Python's own parser (the same syntax and the same syntax errors as ``re``), compiled to a
Thompson NFA of at most :data:`MAX_STATES` states, and searched with a DFA built lazily
from it: once warm, one dict lookup per character of the line; on a miss, work
proportional to the number of states. Only the yes/no answer of ``re.search`` is
computed (which substring matched does not matter), so greedy or lazy repeats and the
order of alternatives make no difference to it.

Supported: literals, ``.``, classes (``[a-z]``, ``[^...]``, ``\\d \\s \\w`` and their
negations), alternation, groups (capturing, named, non-capturing), repeats
(``* + ? {m,n}``, greedy or lazy), the anchors ``^ $ \\A \\Z \\b \\B``, and the flags
``s``, ``m``, ``x`` (global or scoped) and ``a`` (global). Refused with the reason
(:class:`PatternError`): backreferences, lookahead and lookbehind, conditionals, atomic
groups, possessive repeats, ``(?i)``, a pattern longer than :data:`MAX_LENGTH` characters
or compiling to more than :data:`MAX_STATES` states (a large repeat count).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_LENGTH = 1000  # characters of a pattern
MAX_STATES = 1000  # NFA states: a repeat copies what it repeats
MAX_DEPTH = 50  # nested groups (parsing and compiling recurse)
MAX_CACHE = 20000  # DFA transitions kept per pattern (then the cache starts again)

_CHAR, _SPLIT, _ASSERT, _MATCH = range(4)
_START, _NEWLINE, _WORD, _OTHER = range(4)  # what precedes a position
_UNICODE, _IGNORECASE, _ASCII = 32, 2, 256
_ALLOWED_FLAGS = 8 | 16 | 32 | 64 | 256  # MULTILINE, DOTALL, UNICODE, VERBOSE, ASCII
_REFUSED = {
    "GROUPREF": "a backreference", "GROUPREF_EXISTS": "a conditional group",
    "ASSERT": "a lookahead or lookbehind", "ASSERT_NOT": "a lookahead or lookbehind",
    "ATOMIC_GROUP": "an atomic group", "POSSESSIVE_REPEAT": "a possessive repeat",
}
_ANCHORS = ("AT_BEGINNING", "AT_BEGINNING_STRING", "AT_END", "AT_END_STRING",
            "AT_BOUNDARY", "AT_NON_BOUNDARY")
_HOW = ("(supported: literals, ., classes, \\d \\s \\w, |, groups, * + ? {m,n}, "
        "^ $ \\A \\Z \\b \\B)")


class PatternError(ValueError):
    """A pattern that is not a regular expression, or one this module refuses."""


def _word(ch: str, ascii_only: bool) -> bool:
    if ascii_only:
        return ch < "\x80" and (ch.isalnum() or ch == "_")
    return ch.isalnum() or ch == "_"


def _category(name: str, ascii_only: bool) -> Callable[[str], bool]:
    """``\\d \\s \\w`` (and negations) as ``re`` reads them for a str pattern."""
    kind = name.removeprefix("CATEGORY_").removeprefix("NOT_")
    if kind == "DIGIT":
        def test(ch: str) -> bool:
            return "0" <= ch <= "9" if ascii_only else ch.isdecimal()
    elif kind == "SPACE":
        def test(ch: str) -> bool:
            return ch in " \t\n\r\x0b\x0c" if ascii_only else ch.isspace()
    elif kind == "WORD":
        def test(ch: str) -> bool:
            return _word(ch, ascii_only)
    else:
        raise PatternError(f"the class {name} is not supported {_HOW}")
    if "NOT_" in name:
        return lambda ch: not test(ch)
    return test


class _Builder:
    """Python's parse tree of a pattern -> NFA states (kind, argument, next states)."""

    def __init__(self, parser: Any) -> None:
        self.p = parser
        self.kinds: list[int] = []
        self.args: list[Any] = []
        self.outs: list[list[int]] = []

    def new(self, kind: int, arg: Any, outs: list[int]) -> int:
        if len(self.kinds) >= MAX_STATES:
            raise PatternError(f"too large: more than {MAX_STATES} states (a repeat "
                               "such as {m,n} copies what it repeats)")
        self.kinds.append(kind)
        self.args.append(arg)
        self.outs.append(outs)
        return len(self.kinds) - 1

    def seq(self, items: Any, nxt: int, flags: int) -> int:
        for op, av in reversed(list(items)):
            nxt = self.item(op.name, av, nxt, flags)
        return nxt

    def item(self, op: str, av: Any, nxt: int, flags: int) -> int:
        if op in _REFUSED:
            raise PatternError(f"{_REFUSED[op]} is not supported: it cannot be matched "
                               f"in linear time {_HOW}")
        if op in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
            return self.new(_CHAR, self.char_test(op, av, flags), [nxt])
        if op == "AT":
            if av.name not in _ANCHORS:
                raise PatternError(f"the anchor {av.name} is not supported {_HOW}")
            return self.new(_ASSERT, (av.name, flags), [nxt])
        if op == "BRANCH":
            return self.new(_SPLIT, None, [self.seq(b, nxt, flags) for b in av[1]])
        if op == "SUBPATTERN":
            _group, add, remove, sub = av
            if (add | remove) & _ASCII:  # re itself is inconsistent there (its prefix scan)
                raise PatternError("(?a:...) is not supported: write (?a) at the start")
            return self.seq(sub, nxt, _check_flags((flags | add) & ~remove))
        if op in ("MAX_REPEAT", "MIN_REPEAT"):
            return self.repeat(av, nxt, flags)
        raise PatternError(f"{op.lower()} is not supported {_HOW}")

    def repeat(self, av: Any, nxt: int, flags: int) -> int:
        low, high, sub = av
        if high == self.p.MAXREPEAT:
            loop = self.new(_SPLIT, None, [])
            self.outs[loop] = [self.seq(sub, loop, flags), nxt]
            current = loop
        else:
            current = nxt
            for _ in range(high - low):
                current = self.new(_SPLIT, None, [self.seq(sub, current, flags), nxt])
        for _ in range(low):
            current = self.seq(sub, current, flags)
        return current

    def char_test(self, op: str, av: Any, flags: int) -> Callable[[str], bool]:
        if op == "LITERAL":
            lit = chr(av)
            return lambda ch: ch == lit
        if op == "NOT_LITERAL":
            lit = chr(av)
            return lambda ch: ch != lit
        if op == "ANY":
            return (lambda ch: True) if flags & 16 else (lambda ch: ch != "\n")
        return self.class_test(av, bool(flags & _ASCII))

    def class_test(self, items: Any, ascii_only: bool) -> Callable[[str], bool]:
        negate = False
        literals: set[str] = set()
        ranges: list[tuple[int, int]] = []
        tests: list[Callable[[str], bool]] = []
        for op, av in items:
            name = op.name
            if name == "NEGATE":
                negate = True
            elif name == "LITERAL":
                literals.add(chr(av))
            elif name == "RANGE":
                ranges.append((av[0], av[1]))
            elif name == "CATEGORY":
                tests.append(_category(av.name, ascii_only))
            else:
                raise PatternError(f"{name.lower()} in a class is not supported {_HOW}")

        def test(ch: str) -> bool:
            hit = (ch in literals or any(lo <= ord(ch) <= hi for lo, hi in ranges)
                   or any(t(ch) for t in tests))
            return hit != negate
        return test


def _check_flags(flags: int) -> int:
    if flags & _IGNORECASE:
        raise PatternError("(?i) is not supported: write both cases, e.g. [Dd]ocker")
    if flags & ~_ALLOWED_FLAGS:
        raise PatternError(f"the flags {flags & ~_ALLOWED_FLAGS:#x} are not supported "
                           "(supported: s, m, a, x)")
    return flags


def _depth(source: str) -> int:
    """How deep groups nest (escapes and classes skipped), before Python's recursive
    parser sees the pattern."""
    depth = deepest = 0
    index, in_class = 0, False
    while index < len(source):
        ch = source[index]
        if ch == "\\":
            index += 1
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            index += source.startswith("[^", index)
            index += source.startswith("]", index + 1)  # a leading ] is a literal
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        index += 1
    return deepest


def _parse(source: str) -> Any:
    import importlib
    import re

    try:  # Python's own parser (private: used for its parse tree, checked op by op)
        parser: Any = importlib.import_module("re._parser")
    except ImportError:  # pragma: no cover -- before Python 3.11
        parser = importlib.import_module("sre_parse")
    try:
        return parser, parser.parse(source, 0)
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from None
    except OverflowError:
        raise PatternError(f"a repeat count is too large (at most {MAX_STATES} states "
                           "in all)") from None
    except RecursionError:
        raise PatternError("groups are nested too deeply") from None


class Pattern:
    """A compiled pattern; :meth:`search` answers as ``re.search(...) is not None``."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_LENGTH:
            raise PatternError(f"longer than {MAX_LENGTH} characters")
        if _depth(source) > MAX_DEPTH:
            raise PatternError(f"groups are nested too deeply (at most {MAX_DEPTH})")
        parser, tree = _parse(source)
        flags = _check_flags(tree.state.flags)
        build = _Builder(parser)
        try:
            self.start = build.seq(tree, build.new(_MATCH, None, []), flags)
        except RecursionError:
            raise PatternError("groups are nested too deeply") from None
        self.source = source
        self.kinds, self.args, self.outs = build.kinds, build.args, build.outs
        self.ascii = bool(flags & _ASCII)
        self.context = _ASSERT in self.kinds  # anchors need what surrounds a position
        self._sets: dict[frozenset[int], int] = {}
        self._by_id: list[frozenset[int]] = []
        self._cache: dict[tuple[int, int, str | None, bool], tuple[bool, int]] = {}

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text``: one step per character."""
        state = self._intern(frozenset())
        before = _START
        last = len(text) - 1
        for index, ch in enumerate(text):
            key = (state, before, ch, index == last) if self.context else (state, 0, ch,
                                                                             False)
            step = self._cache.get(key) or self._step(key)
            if step[0]:
                return True
            state = step[1]
            before = (_NEWLINE if ch == "\n" else _WORD if _word(ch, self.ascii)
                      else _OTHER)
        return self._step((state, before, None, False))[0]

    def _intern(self, states: frozenset[int]) -> int:
        if states not in self._sets:
            self._sets[states] = len(self._by_id)
            self._by_id.append(states)
        return self._sets[states]

    def _step(self, key: tuple[int, int, str | None, bool]) -> tuple[bool, int]:
        """From the state set ``key[0]`` (plus a match starting here): whether a match
        ends at this position, and the set after reading the next character."""
        if len(self._cache) > MAX_CACHE:
            self._cache.clear()
        state, before, ch, last = key
        reached = self._closure(self._by_id[state] | {self.start}, before, ch, last)
        if any(self.kinds[s] == _MATCH for s in reached) or ch is None:
            result = (any(self.kinds[s] == _MATCH for s in reached), state)
        else:
            result = (False, self._intern(frozenset(
                self.outs[s][0] for s in reached
                if self.kinds[s] == _CHAR and self.args[s](ch))))
        self._cache[key] = result
        return result

    def _closure(self, states: frozenset[int], before: int, ch: str | None,
                 last: bool) -> set[int]:
        seen: set[int] = set()
        stack = list(states)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            kind = self.kinds[s]
            if kind == _SPLIT or (kind == _ASSERT and _holds(self.args[s], before, ch,
                                                                last)):
                stack.extend(self.outs[s])
        return seen


def _holds(arg: tuple[str, int], before: int, ch: str | None, last: bool) -> bool:
    """An anchor at a position: ``before`` says what precedes it, ``ch`` what follows
    (None: the end), ``last`` whether that is the last character."""
    at, flags = arg
    multiline = bool(flags & 8)
    if at == "AT_BEGINNING_STRING":
        return before == _START
    if at == "AT_BEGINNING":
        return before == _START or (multiline and before == _NEWLINE)
    if at == "AT_END_STRING":
        return ch is None
    if at == "AT_END":
        return ch is None or (ch == "\n" and (last or multiline))
    if before == _START and ch is None:
        return False  # as re: neither \b nor \B matches in an empty string
    boundary = (ch is not None and _word(ch, bool(flags & _ASCII))) != (before == _WORD)
    return boundary if at == "AT_BOUNDARY" else not boundary


def compile(source: str) -> Pattern:
    """``source`` compiled, or :class:`PatternError` saying why not."""
    return Pattern(source)
