"""Loading state files: YAML with lines, schema, merge, graph checks and templating.

Everything that can be found wrong with the input is found here, for all phases, before
the engine touches anything: a converge never stops half-way on input it could have
checked first. Errors are :class:`~statekit.errors.StateError` naming file, line, field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from statekit import resources, schema_check, templating
from statekit.discover import collect
from statekit.errors import FieldError, StateError
from statekit.graph import check_graph
from statekit.masking import check_secret
from statekit.model import Program, State
from statekit.resources.base import Meta
from statekit.yamlsource import Source, parse

_GRAPH_KEYS = frozenset({"id", "type", "phase", "requires", "onchanges"})
ENSURE_VALUES = ("present", "absent")


def read_sources(paths: Sequence[str]) -> list[Source]:
    sources = []
    for name in collect(paths):
        try:
            with open(name, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"cannot read: {exc}", file=name) from None
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
    for name in sorted(secret_names):
        reason = check_secret(name, environ.get(name, ""))
        if reason:
            raise StateError(f"environment variable {reason}")
    secrets = {environ[n] for n in secret_names if environ.get(n)}
    if on_secrets:
        on_secrets(secrets)
    phases = _merge_phases(sources)
    states = _declared_states(sources, phases)
    env = templating.EnvView(environ)
    renderer = templating.Renderer()
    context = _render_vars(sources, dict(overrides or {}), env, renderer)
    by_name = {s.name: s for s in sources}
    for state in states:
        _render_state(state, by_name[state.file], context, renderer, secrets)
    _link(states)
    check_graph(states, phases, by_name)
    used = None if env.used is None else sorted(env.used | secret_names)
    return Program(phases=phases, states=states, secrets=secrets, env_used=used)


def _link(states: list[State]) -> None:
    """Let each type see all its specs at once (see Resource.link)."""
    for type_name in sorted({s.type for s in states}):
        members = [s for s in states if s.type == type_name and s.spec is not None]
        for state, spec in zip(members, resources.get(type_name).link(
                [s.spec for s in members]), strict=True):
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
                 env: templating.EnvView, renderer: templating.Renderer) -> dict[str, Any]:
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
                path = _failing_path(value, ["vars", name], context, renderer)
                raise source.error(path, templating.describe(exc)) from None
    for name, value in overrides.items():
        context.setdefault(name, value)
    return context


def _render_state(state: State, source: Source, context: dict[str, Any],
                  renderer: templating.Renderer, secrets: set[str]) -> None:
    base: list[str | int] = ["states", state.index]
    raw = dict(state.raw)
    state.enabled = _truth(_render(raw.pop("when", True), "when", base, source, context,
                                   renderer, expression=True))
    ensure = _render(raw.pop("ensure", "present"), "ensure", base, source, context, renderer)
    if ensure not in ENSURE_VALUES:
        raise source.error([*base, "ensure"], f"{ensure!r} is not one of present, absent"
                           + schema_check.did_you_mean(ensure, ENSURE_VALUES))
    state.ensure = ensure
    fields = {k: _render(v, k, base, source, context, renderer) for k, v in raw.items()}
    resource = resources.get(state.type)
    type_schema = schema_check.schema(state.type)
    fields = schema_check.coerce(fields, type_schema)
    if not state.enabled:
        _check_unknown(fields, type_schema, source, base)
        return
    if ensure == "absent":
        _check_unknown(fields, type_schema, source, base)
        fields = {k: v for k, v in fields.items() if k in resource.identity_fields}
    schema_check.validate(state.type, fields, source, base)
    try:
        state.spec = resource.parse(fields, Meta(state.id, ensure, state.phase, state.where))
    except FieldError as exc:
        raise source.error([*base, *str(exc.field).split(".")], exc.message) from None
    values = [v for v in resource.secret_values(state.spec) if v]
    for value in values:
        reason = check_secret("a sensitive value", value)
        if reason:
            raise source.error([*base, "sensitive"], reason)
    secrets.update(values)


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

