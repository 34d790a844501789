"""Loading state files: YAML with lines, schema, merge, graph checks and templating.

Everything that can be found wrong with the input is found here, for all phases, before
the engine touches anything: a converge never stops half-way on input it could have
checked first. Errors are :class:`~statekit.errors.StateError` naming file, line, field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from statekit import resources
from statekit.errors import ApplyError, FieldError, StateError
from statekit.load import schema_check, templating
from statekit.load.discover import collect
from statekit.load.yamlsource import Source, parse
from statekit.out.masking import check_secret
from statekit.program import Program, State
from statekit.resources.base import Meta
from statekit.run.files import STATE_FILE_LIMIT, read_path
from statekit.run.graph import check_graph

_GRAPH_KEYS = frozenset({"id", "type", "phase", "requires", "onchanges"})
ENSURE_VALUES = ("present", "absent")


def read_sources(paths: Sequence[str]) -> list[Source]:
    sources = []
    for name in collect(paths):
        try:
            text = read_path(name, STATE_FILE_LIMIT).decode("utf-8")
        except ApplyError as exc:  # too large, or not a regular file
            raise StateError(f"cannot read: {exc.message.removeprefix(name + ': ')}",
                             file=name) from None
        except OSError as exc:
            raise StateError(f"cannot read: {exc.strerror or exc}", file=name) from None
        except UnicodeDecodeError as exc:
            raise StateError(f"cannot read: not UTF-8 text (byte {exc.start})",
                             file=name) from None
        source = parse(name, text)
        if source.data is None:
            source.data = {}
        schema_check.validate("file", source.data, source, [])
        sources.append(source)
    return sources


def load(
    paths: Sequence[str], overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    on_secrets: Callable[[Iterable[str]], None] | None = None,
) -> Program:
    """Read, validate and render every state in ``paths``: a :class:`Program`.

    ``on_secrets`` learns the secret values as soon as they are known, before anything
    is rendered, so that even an error message about a template is masked.
    """
    environ = os.environ if environ is None else environ
    sources = read_sources(paths)
    secret_names = {n for s in sources for n in s.data.get("secrets", [])}
    degraded: dict[str, StateError] = {}
    refused = _refused_secrets(sources, secret_names, environ, degraded)
    secrets = {environ[n] for n in sorted(secret_names - refused) if environ.get(n)}
    if on_secrets:
        on_secrets(secrets)
    phases = _merge_phases(sources)
    while True:
        try:
            return _build(sources, phases, overrides, environ, secrets, secret_names,
                          degraded)
        except _Degrade as fault:
            degraded[fault.file] = fault.error


class _Degrade(Exception):
    """Loading a file with ``on_invalid_input: absent`` raised: load again with that
    file's states all ``ensure: absent``."""

    def __init__(self, file: str, error: StateError) -> None:
        super().__init__(file)
        self.file = file
        self.error = error


def _degrades(source: Source) -> bool:
    return bool(source.data.get("on_invalid_input") == "absent")


def _refused_secrets(sources: list[Source], names: set[str], environ: Mapping[str, str],
                     degraded: dict[str, StateError]) -> set[str]:
    """The secret variables whose values cannot be used (too short to mask, not UTF-8).
    Each file that declares one is degraded; a file that declares one and does not
    converge absent on invalid input makes the whole run stop (exit 3)."""
    refused = set()
    for name in sorted(names):
        reason = _secret_problem(name, environ.get(name, ""))
        if reason is None:
            continue
        declaring = [s for s in sources if name in s.data.get("secrets", [])]
        if not all(_degrades(s) for s in declaring):
            raise StateError(reason)
        for source in declaring:
            degraded.setdefault(source.name, source.error(["secrets"], reason))
        refused.add(name)
    return refused


def _secret_problem(name: str, value: str) -> str | None:
    try:
        templating.utf8(name, value)
    except ValueError as exc:
        return f"invalid input: {exc}"
    reason = check_secret(name, value)
    return f"environment variable {reason}" if reason else None


def _build(sources: list[Source], phases: list[str], overrides: Mapping[str, Any] | None,
           environ: Mapping[str, str], secrets: set[str], secret_names: set[str],
           degraded: Mapping[str, StateError]) -> Program:
    states = _declared_states(sources, phases)
    env = templating.EnvView(environ)
    renderer = templating.Renderer()
    context = _render_vars(sources, dict(overrides or {}), env, renderer, degraded)
    by_name = {s.name: s for s in sources}
    shown: dict[str, Any] = {}
    for state in states:
        source = by_name[state.file]
        try:
            shown[state.id] = _render_state(state, source, context, renderer, secrets,
                                            state.file in degraded)
        except Exception as exc:
            error = _as_state_error(exc, source, ["states", state.index])
            raise _fault(source, error, degraded) from None
    _link(states)
    check_graph(states, phases, by_name)
    used = None if env.used is None else sorted(env.used | secret_names)
    program = Program(phases=phases, states=states, secrets=secrets, env_used=used,
                      input_errors=list(degraded.values()),
                      secret_names=sorted(secret_names))
    program.shown = shown
    program.vars = {k: v for k, v in context.items()
                    if k != "env" and not isinstance(v, templating.EnvView)}
    return program


def _as_state_error(exc: Exception, source: Source, path: list[str | int]) -> StateError:
    """``exc`` as an input error naming file, line and field: whatever a state's input
    makes raise (a resource's parse included) is exit 3, never an internal error."""
    if isinstance(exc, StateError):
        return exc
    return source.error(path, f"cannot be loaded: {type(exc).__name__}: {exc}")


def _fault(source: Source, error: StateError,
           degraded: Mapping[str, StateError]) -> Exception:
    """The error to raise for ``source``: a :class:`_Degrade` in a file that converges
    absent on invalid input (any error: schema, input check, encoding, field length),
    unless it is already loading absent; else ``error`` itself."""
    if _degrades(source) and source.name not in degraded:
        return _Degrade(source.name, error)
    return error


def parse_vars(items: Sequence[str]) -> dict[str, Any]:
    """The ``--var`` overrides, each VALUE read as YAML with the state files' limits
    (no alias bomb, no ``!!python`` tag)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise StateError(f"--var {key!r}: expected KEY=VALUE")
        try:
            out[key] = parse(f"--var {key}", value).data if value else ""
        except StateError as exc:
            raise StateError(f"--var {key}: VALUE is not valid YAML: {exc.message}") from None
    return out


def _link(states: list[State]) -> None:
    """Let each type see all its specs, and every other type's, at once (Resource.link)."""
    by_type: dict[str, list[Any]] = {}
    for state in states:
        if state.spec is not None:
            by_type.setdefault(state.type, []).append(state.spec)
    for type_name in sorted(by_type):
        members = [s for s in states if s.type == type_name and s.spec is not None]
        linked = resources.get(type_name).link(by_type[type_name], by_type)
        for state, spec in zip(members, linked, strict=True):
            state.spec = spec


def _merge_phases(sources: list[Source]) -> list[str]:
    phases: list[str] | None = None
    first = ""
    for source in sources:
        declared = source.data.get("phases")
        if declared is None:
            continue
        if phases is None:
            phases, first = list(declared), source.name
        elif _disagree(phases, declared):
            raise source.error(["phases"],
                               f"phases {declared} disagree with {phases} declared in {first}")
        else:
            phases.extend(p for p in declared if p not in phases)
    if phases is None:
        raise StateError("no file declares `phases`", file=sources[0].name)
    return phases


def _disagree(a: list[str], b: list[str]) -> bool:
    """Two phase lists agree when the phases they share come in the same order."""
    shared = [p for p in a if p in b]
    return shared != [p for p in b if p in a]


def _declared_states(sources: list[Source], phases: list[str]) -> list[State]:
    states: list[State] = []
    seen: dict[str, State] = {}
    for source in sources:
        for index, raw in enumerate(source.data.get("states", [])):
            state = _declare(source, index, raw, phases, len(states))
            if state.id in seen:
                other = seen[state.id]
                raise StateError(f"duplicate id {state.id!r} (first at {other.where})",
                                 file=source.name, line=state.line,
                                 field=f"states[{index}].id")
            seen[state.id] = state
            states.append(state)
    return states


def _declare(source: Source, index: int, raw: dict[str, Any], phases: list[str],
             order: int) -> State:
    base: list[str | int] = ["states", index]

    if raw["phase"] not in phases:
        raise source.error([*base, "phase"], f"unknown phase {raw['phase']!r} "
                           f"(declared: {', '.join(phases)})"
                           + schema_check.did_you_mean(raw["phase"], phases))
    if raw["type"] not in resources.REGISTRY:
        known = resources.known_types()
        raise source.error([*base, "type"], f"unknown type {raw['type']!r} "
                           f"(known: {', '.join(known)})"
                           + schema_check.did_you_mean(raw["type"], known))
    return State(
        id=raw["id"], type=raw["type"], phase=raw["phase"], file=source.name,
        line=source.line(base), index=index, order=order,
        requires=list(raw.get("requires", [])), onchanges=list(raw.get("onchanges", [])),
        raw={k: v for k, v in raw.items() if k not in _GRAPH_KEYS},
    )


def _render_vars(sources: list[Source], overrides: dict[str, Any],
                 env: templating.EnvView, renderer: templating.Renderer,
                 degraded: Mapping[str, StateError]) -> dict[str, Any]:
    context: dict[str, Any] = {"env": env}
    defined: dict[str, tuple[Any, str]] = {}
    for source in sources:
        for name, value in source.data.get("vars", {}).items():
            if name in defined and defined[name][0] != value:
                raise source.error(["vars", name], f"var {name!r} is also defined, "
                                   f"differently, in {defined[name][1]}")
            defined[name] = (value, source.name)
            if name in overrides:
                context[name] = overrides[name]
                continue
            try:
                context[name] = renderer.render(value, context)
            except Exception as exc:
                if source.name in degraded:
                    continue  # left undefined: only identity fields are rendered
                path = _failing_path(value, ["vars", name], context, renderer)
                error = source.error(path, templating.describe(exc))
                raise _fault(source, error, degraded) from None
    unknown = sorted(set(overrides) - set(defined))
    if unknown:
        raise StateError(_unknown_var(unknown[0], sorted(defined)))
    return context


def _unknown_var(name: str, declared: list[str]) -> str:
    """A typo in ``--var NAME`` is an error, with the closest declared var."""
    import difflib

    close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(declared) if declared else "none"
    return f"--var {name}: no such var in the state files{hint} (declared: {listed})"


def _render_state(state: State, source: Source, context: dict[str, Any],
                  renderer: templating.Renderer, secrets: set[str],
                  degraded: bool = False) -> dict[str, Any]:
    """Render, validate and parse ``state`` (``state.spec``): the type's fields as the
    state gave them, rendered (``show`` prints them), of a disabled or absent state only
    its identity fields (the others are not checked, so they may hold unknown secrets)."""
    base: list[str | int] = ["states", state.index]
    raw = dict(state.raw)
    resource = resources.get(state.type)
    when = raw.pop("when", True)
    ensure = raw.pop("ensure", "present")
    if degraded and not resource.is_action:
        when, ensure = True, "absent"  # invalid input: what this file added goes
    state.enabled = _truth(_render(when, "when", base, source, context, renderer,
                                   expression=True))
    ensure = _render(ensure, "ensure", base, source, context, renderer)
    if ensure not in ENSURE_VALUES:
        raise source.error([*base, "ensure"], f"{ensure!r} is not one of present, absent"
                           + schema_check.did_you_mean(ensure, ENSURE_VALUES))
    state.ensure = ensure
    if degraded and ensure == "absent":  # the other fields may need the refused input
        raw = {k: v for k, v in raw.items() if k in resource.identity_fields}
    fields = {k: _render(v, k, base, source, context, renderer) for k, v in raw.items()}
    type_schema = schema_check.schema(state.type)
    fields = schema_check.coerce(fields, type_schema)
    if not state.enabled:
        _check_unknown(fields, type_schema, source, base)
        return {k: v for k, v in fields.items() if k in resource.identity_fields}
    hints: dict[str, Any] = {}
    if ensure == "absent":
        _check_unknown(fields, type_schema, source, base)
        hints = {k: v for k, v in fields.items() if k not in resource.identity_fields}
        fields = {k: v for k, v in fields.items() if k in resource.identity_fields}
    schema_check.validate(state.type, fields, source, base)
    shown, given = dict(fields), frozenset(fields)
    fields = schema_check.with_defaults(  # the schema is the one source of defaults
        state.type, fields, resource.identity_fields if ensure == "absent" else None)
    try:
        state.spec = resource.parse(fields, Meta(id=state.id, ensure=ensure, phase=state.phase,
                                                 where=state.where, given=given, hints=hints))
    except FieldError as exc:
        raise source.error([*base, *str(exc.field).split(".")], exc.message) from None
    values = [v for v in resource.secret_values(state.spec) if v]
    for value in values:
        reason = check_secret("a sensitive value", value)
        if reason:
            raise source.error([*base, "sensitive"], reason)
    secrets.update(values)
    return shown


def _check_unknown(fields: dict[str, Any], type_schema: dict[str, Any], source: Source,
                   base: list[str | int]) -> None:
    known = type_schema.get("properties", {})
    for key in fields:
        if key not in known:
            raise source.error([*base, key], schema_check.unknown_field(key, list(known)))


def _render(value: Any, key: str, base: list[str | int], source: Source,
            context: dict[str, Any], renderer: templating.Renderer,
            expression: bool = False) -> Any:
    try:
        if expression and isinstance(value, str) and "{{" not in value:
            return renderer.expression(value, context)
        return renderer.render(value, context)
    except Exception as exc:
        path = _failing_path(value, [*base, key], context, renderer)
        raise source.error(path, templating.describe(exc)) from None


def _failing_path(value: Any, path: list[str | int], context: dict[str, Any],
                  renderer: templating.Renderer) -> list[str | int]:
    """The path of the innermost part of ``value`` that fails to render (so the error
    names the line that uses an undefined variable, not the mapping that holds it)."""
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for name, child in children:
        try:
            renderer.render(child, context)
        except Exception:  # the caller reports the first error
            return _failing_path(child, [*path, name], context, renderer)
    return path


def _truth(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "off", "0", "none")
    return bool(value)

