"""Jinja2 templating, sandboxed and strict, with the filters states need.

Context: ``env`` (the process environment; a missing variable reads as ``""``), then each
var by name. A value that is exactly one ``{{ expression }}`` keeps the expression's type
(a list stays a list, as in Ansible); anything else renders to a string.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from statekit.load import input_checks as inputs
from statekit.load import template_fast as fast

if TYPE_CHECKING:
    from statekit.load.template_limits import LimitedEnvironment

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}).)*)\}\}\s*$", re.DOTALL)
_MEMO = 512  # parsed or compiled sources kept: a state file's templates, many times over
_DEFAULT_PORTS = {"https": 443, "http": 80, "grpc": 443, "dns": 53, "tls": 853}


class FilterInputError(ValueError):
    """A filter was given a value it cannot work on."""


class EnvView(dict[str, str]):
    """The process environment as templates see it: a missing variable is ``""``.

    It records which variables were read (``used``; ``None`` once anything iterated over
    it), so that the program cache depends on those variables only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.used: set[str] | None = set()

    def _note(self, key: str) -> None:
        if self.used is not None:
            self.used.add(key)

    def __getitem__(self, key: str) -> str:
        self._note(key)
        return utf8(key, super().get(key, ""))

    def get(self, key: str, default: Any = None) -> Any:
        self._note(key)
        value = super().get(key, default)
        return utf8(key, value) if isinstance(value, str) else value

    def __contains__(self, key: object) -> bool:
        self._note(str(key))
        return super().__contains__(key)

    def _everything(self) -> None:
        self.used = None

    def __iter__(self) -> Any:
        self._everything()
        return super().__iter__()

    def keys(self) -> Any:
        self._everything()
        return super().keys()

    def items(self) -> Any:
        self._everything()
        return super().items()

    def values(self) -> Any:
        self._everything()
        return super().values()


def utf8(name: str, value: str) -> str:
    """``value`` of environment variable ``name``, refused (InputError, exit 3) when its
    bytes are not UTF-8 (Python keeps them as lone surrogates, which no encoder takes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        from statekit.load.input_checks import InputError

        raise InputError(f"environment variable {name} is not valid UTF-8 text "
                         "(set it in UTF-8)") from None
    return value


def _split(url: str) -> Any:
    if not isinstance(url, str):
        raise FilterInputError(f"expected a URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as exc:
        raise FilterInputError(f"not a valid URL: {exc}") from exc
    return parts


def url_host(url: str) -> str:
    """The host of a URL (lower case, IPv6 without brackets); ``""`` for ``""``."""
    return str(_split(url).hostname or "") if url else ""


def url_scheme(url: str) -> str:
    return str(_split(url).scheme) if url else ""


def url_port(url: str) -> int | str:
    """The URL's port, else the scheme's default (https: 443); ``""`` for ``""``."""
    if not url:
        return ""
    parts = _split(url)
    if parts.port is not None:
        return int(parts.port)
    if parts.scheme in _DEFAULT_PORTS:
        return _DEFAULT_PORTS[parts.scheme]
    raise FilterInputError(f"no port in the URL and no default for scheme {parts.scheme!r}")


def b64encode(value: str) -> str:
    if not isinstance(value, str):
        raise FilterInputError(f"expected a string, got {type(value).__name__}")
    return base64.b64encode(value.encode()).decode()


def is_ip(value: Any) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


FILTERS: dict[str, Callable[..., Any]] = {
    "url_host": url_host,
    "url_port": url_port,
    "url_scheme": url_scheme,
    "b64encode": b64encode,
}
TESTS: dict[str, Callable[..., bool]] = {"ip": is_ip}


class Renderer:
    """Renders values (recursively, strings only) against a context, each string within
    the limits of :mod:`statekit.load.template_limits` (size, work, time).

    What :mod:`statekit.load.template_fast` can read (names, filters, ``if``... the
    shipped states' templates) it evaluates without Jinja2, to the value Jinja2 gives;
    anything else Jinja2 compiles, once per process (see :class:`_Compiled`).
    """

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        """Render every string inside ``value``; raise TemplateError or FilterInputError."""
        if isinstance(value, str):
            return self._render_str(value, context)
        if isinstance(value, list):
            return [self.render(v, context) for v in value]
        if isinstance(value, dict):
            return {k: self.render(v, context) for k, v in value.items()}
        return value

    def _render_str(self, text: str, context: Mapping[str, Any]) -> Any:
        if "{" not in text:
            return text
        match = _SINGLE_EXPR.match(text)
        if match:
            return self.expression(match.group("expr"), context)
        quick = _quick(_FAST_TEMPLATES, text, fast.parse_template, _FAST.render, context)
        if quick is not _MISS:
            return quick
        from statekit.load import template_limits as limits

        jinja = _budgeted()
        with limits.clock():
            return limits.joined(jinja.template(text).generate(context))

    def expression(self, expr: str, context: Mapping[str, Any]) -> Any:
        """Evaluate one expression (``when:``, or a whole-value ``{{ ... }}``)."""
        quick = _quick(_FAST_EXPRESSIONS, expr, fast.parse, _FAST.value, context)
        if quick is not _MISS:
            return quick
        from jinja2 import StrictUndefined

        from statekit.load import template_limits as limits

        jinja = _budgeted()
        with limits.clock():
            result = jinja.expression(expr)(**context)
        if isinstance(result, StrictUndefined):
            str(result)  # raises UndefinedError with the name
        return result


class _Compiled:
    """The process's one sandboxed environment, and what it compiled, by source.

    The code Jinja2 makes of a source depends on nothing else (each render gets a new
    budget from :meth:`LimitedEnvironment.begin`, its context comes with the call), and
    compiling it is most of what a template costs Jinja2 (a state file repeats its
    templates: the shipped ones hold 71, 16 of them distinct). At most :data:`_MEMO` of
    each kind are kept.
    """

    def __init__(self) -> None:
        from jinja2 import StrictUndefined

        from statekit.load import template_limits as limits

        self.env: LimitedEnvironment = limits.LimitedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
        )
        self.env.filters.update(_FAST.filters)
        self.env.tests.update(_FAST.tests)
        self.templates: dict[str, Any] = {}
        self.expressions: dict[str, Any] = {}

    def template(self, source: str) -> Any:
        return _memo(self.templates, source, self.env.from_string)

    def expression(self, source: str) -> Any:
        return _memo(self.expressions, source,
                     lambda text: self.env.compile_expression(text, undefined_to_none=False))


def _memo(memo: dict[str, Any], source: str, make: Callable[[str], Any]) -> Any:
    if source not in memo:
        if len(memo) >= _MEMO:
            memo.clear()
        memo[source] = make(source)  # a source that raises here is not kept
    return memo[source]


def _quick(memo: dict[str, Any], source: str, parse: Callable[[str], Any],
           run: Callable[[Any, Mapping[str, Any]], Any], context: Mapping[str, Any]) -> Any:
    """What the quick path makes of ``source`` (read once per process), or :data:`_MISS`
    when it is not for it: Jinja2 then renders it, and words any error."""
    def read(text: str) -> Any:
        try:
            return parse(text)
        except Exception:  # Unsupported, or anything else: Jinja2's to read
            return None
    tree = _memo(memo, source, read)
    if tree is None:
        return _MISS
    try:
        return run(tree, context)
    except Exception:  # Unsupported, or an error Jinja2 gives in its own words
        return _MISS


def _budgeted() -> _Compiled:
    """The shared sandbox, with a new budget for one render."""
    jinja = _compiled()
    jinja.env.begin()
    return jinja


_MISS = object()


_SHARED: list[_Compiled] = []
_FAST = fast.Evaluator({**FILTERS, **inputs.FILTERS},
                       {**TESTS, "dns_name": inputs.is_dns_name})
_FAST_EXPRESSIONS: dict[str, Any] = {}
_FAST_TEMPLATES: dict[str, Any] = {}


def _compiled() -> _Compiled:
    if not _SHARED:
        _SHARED.append(_Compiled())
    return _SHARED[0]


def describe(exc: Exception, names: list[str] | None = None) -> str:
    """A one-line account of a template error; an undefined name gets the nearest of
    ``names`` (the vars and ``env``): ``'app_mod' is undefined; did you mean 'app_mode'?``."""
    from statekit.errors import did_you_mean
    from statekit.load.input_checks import InputError

    if isinstance(exc, InputError):
        return f"invalid input: {exc}"
    name = undefined_name(exc)
    if name is not None:
        return f"template error: {name!r} is undefined" + did_you_mean(name, names or [])
    from jinja2 import TemplateError

    if isinstance(exc, TemplateError):
        return f"template error: {exc.message or exc}"
    return f"template error: {exc}"


def undefined_name(exc: Exception) -> str | None:
    """The name a template used that is neither a var nor ``env``, or None."""
    from jinja2 import UndefinedError

    match = re.fullmatch(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", str(exc))
    return match.group(1) if isinstance(exc, UndefinedError) and match else None
