"""Loading state files: YAML with lines, schema, merge, graph checks and templating.

Everything that can be found wrong with the input is found here, for all phases, before
the engine touches anything: a converge never stops half-way on input it could have
checked first. Every error of the run is found, not only the first: each is a
:class:`~statekit.errors.StateError` naming file, line, field, raised together as
:class:`~statekit.errors.StateErrors`. An error that makes later checks of its part
meaningless stops that part only: YAML that does not parse stops its file, a field that
fails stops its state; the other files and states are still checked. What such an error
leaves unknown (the vars and phases of a file that could not be read, a var whose
template failed) is not reported again where it is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from statekit import resources
from statekit.engine.graph import check_graph
from statekit.errors import ApplyError, FieldError, StateError, StateErrors, every_error
from statekit.host.files import STATE_FILE_LIMIT, read_path
from statekit.load import schema_check, templating
from statekit.load.discover import collect
from statekit.load.yamlsource import Source, parse, state_id
from statekit.masking import check_secret
from statekit.program import Program, State
from statekit.resources.base import Meta

_GRAPH_KEYS = frozenset({"id", "type", "phase", "requires", "onchanges"})
ENSURE_VALUES = ("present", "absent")
#: The file keys whose error leaves the whole file unusable (the rest of it unchecked).
_HEADER = ("phases", "vars", "secrets", "on_invalid_input", "states")


class Found:
    """The input errors of one load, and what they leave unknown."""

    def __init__(self) -> None:
        self.errors: list[StateError] = []
        self.files: list[str] = []  # every state file, in load order
        self.unread = False  # a file could not be used: its vars and phases are unknown
        self.broken: dict[str, set[int]] = {}  # file -> states whose own errors are told
        self.other_ids: set[str] = set()  # ids of those states (a requisite may name one)
        self.broken_vars: set[str] = set()  # vars whose template failed

    def add(self, error: StateError | Iterable[StateError]) -> None:
        for one in every_error(error) if isinstance(error, StateError) else error:
            if not isinstance(one, _Quiet):
                self.errors.append(one)  # type: ignore[arg-type]

    def copy(self) -> Found:
        out = Found()
        out.errors, out.files, out.unread = list(self.errors), self.files, self.unread
        out.broken = {k: set(v) for k, v in self.broken.items()}
        out.other_ids = set(self.other_ids)
        return out


class _Quiet(StateError):
    """An error that follows from one already told (a var used after its own template
    failed): it stops its state, and is not told again."""


def read_sources(paths: Sequence[str], found: Found | None = None) -> list[Source]:
    """The state files that could be read and parsed, each checked against the file
    schema; every error goes to ``found`` (raised at once when it is not given)."""
    given, found = found, found if found is not None else Found()
    sources = []
    for name in collect(paths):
        found.files.append(name)
        source = _read(name, found)
        if source is not None and _usable(source, found):
            sources.append(source)
    if given is None and found.errors:
        raise StateErrors(found.errors)
    return sources


def _read(name: str, found: Found) -> Source | None:
    try:
        text = read_path(name, STATE_FILE_LIMIT).decode("utf-8")
        source = parse(name, text)
    except ApplyError as exc:  # too large, or not a regular file
        found.add(StateError(f"cannot read: {exc.message.removeprefix(name + ': ')}",
                             file=name))
    except OSError as exc:
        found.add(StateError(f"cannot read: {exc.strerror or exc}", file=name))
    except UnicodeDecodeError as exc:
        found.add(StateError(f"cannot read: not UTF-8 text (byte {exc.start})", file=name))
    except StateError as exc:  # YAML that does not parse: this file stops here
        found.add(exc)
    else:
        if source.data is None:
            source.data = {}
        return source
    found.unread = True
    return None


def _usable(source: Source, found: Found) -> bool:
    """Check ``source`` against the file schema: an error in a state leaves that state
    out (the others are checked), one in the file's own keys the whole file; an unknown
    key is only told."""
    problems = schema_check.problems("file", source.data)
    found.add(source.error(path, message) for path, message in problems)
    usable = isinstance(source.data, dict)
    for path, _ in problems:
        if len(path) > 1 and path[0] == "states" and isinstance(path[1], int):
            found.broken.setdefault(source.name, set()).add(path[1])
            name = state_id(source.data, path[1])
            if name is not None:
                found.other_ids.add(name)
        elif not path or path[0] in _HEADER:
            usable = False
    if not usable:
        found.unread = True
    elif problems:  # unknown top-level keys: told, then left out
        source.data = {k: v for k, v in source.data.items() if k in _HEADER}
    return usable


def load(
    paths: Sequence[str], overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    on_secrets: Callable[[Iterable[str]], None] | None = None,
) -> Program:
    """Read, validate and render every state in ``paths``: a :class:`Program`, or every
    input error at once (:class:`StateErrors`).

    ``on_secrets`` learns the secret values as soon as they are known, before anything
    is rendered, so that even an error message about a template is masked.
    """
    environ = os.environ if environ is None else environ
    read = Found()
    sources = read_sources(paths, read)
    secret_names = {n for s in sources for n in s.data.get("secrets", [])}
    degraded: dict[str, list[StateError]] = {}
    refused = _refused_secrets(sources, secret_names, environ, degraded, read)
    secrets = {environ[n] for n in sorted(secret_names - refused) if environ.get(n)}
    if on_secrets:
        on_secrets(secrets)
    phases = _merge_phases(sources, read)
    degradable = {s.name for s in sources if _degrades(s)}
    while True:
        found = read.copy()
        program = _build(sources, phases, overrides, environ, secrets, secret_names,
                         degraded, found)
        fresh = {e.file for e in found.errors if e.file in degradable - set(degraded)}
        hard = [e for e in found.errors if e.file not in degradable - set(degraded)]
        if fresh and not hard:  # load again with those files' states all absent
            for name in sorted(fresh):
                degraded[name] = [e for e in found.errors if e.file == name]
            continue
        told = [e for errors in degraded.values() for e in errors]
        if found.errors:
            raise StateErrors(_in_order(found.files, [*found.errors, *told]))
        program.input_errors = told
        return program


def _in_order(files: list[str], errors: list[StateError]) -> list[StateError]:
    """Errors by file (in load order; those of no file first), then line; each once."""
    rank = {name: i for i, name in enumerate(files)}
    unique = list({str(e): e for e in errors}.values())
    return sorted(unique, key=lambda e: (rank.get(e.file, -1) if e.file else -1,
                                         e.line or 0))


def _degrades(source: Source) -> bool:
    return bool(source.data.get("on_invalid_input") == "absent")


def _refused_secrets(sources: list[Source], names: set[str], environ: Mapping[str, str],
                     degraded: dict[str, list[StateError]], found: Found) -> set[str]:
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
            found.add(StateError(reason))
        for source in declaring:
            degraded.setdefault(source.name, [source.error(["secrets"], reason)])
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
           degraded: Mapping[str, Any], found: Found) -> Program:
    states = _declared_states(sources, phases, found)
    env = templating.EnvView(environ)
    renderer = templating.Renderer()
    context = _render_vars(sources, dict(overrides or {}), env, renderer, degraded, found)
    by_name = {s.name: s for s in sources}
    shown: dict[str, Any] = {}
    for state in states:
        source = by_name[state.file]
        try:
            shown[state.id] = _render_state(state, source, context, renderer, secrets,
                                            state.file in degraded, found)
        except StateError as exc:
            found.add(exc)
        except Exception as exc:
            found.add(_as_state_error(exc, source, ["states", state.index]))
    _link(states)
    _check(states, by_name, found)
    for state, field, problem in check_graph(states, phases, found.other_ids,
                                             complete=not found.unread):
        found.add(by_name[state.file].error(["states", state.index, *field.split(".")],
                                            problem))
    used = None if env.used is None else sorted(env.used | secret_names)
    program = Program(phases=phases, states=states, secrets=secrets, env_used=used,
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


def _check(states: list[State], sources: Mapping[str, Source], found: Found) -> None:
    """What each linked spec's type finds wrong only with the others in view
    (``Resource.check``): a jump to a typo of a chain, a zone served twice."""
    by_type: dict[str, list[Any]] = {}
    for state in states:
        if state.spec is not None:
            by_type.setdefault(state.type, []).append(state.spec)
    for state in states:
        if state.spec is None:
            continue
        for error in resources.get(state.type).check(state.spec, by_type):
            found.add(sources[state.file].error(
                ["states", state.index, *str(error.field).split(".")], error.message))


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


def _merge_phases(sources: list[Source], found: Found) -> list[str]:
    phases: list[str] | None = None
    first = ""
    for source in sources:
        declared = source.data.get("phases")
        if declared is None:
            continue
        if phases is None:
            phases, first = list(declared), source.name
        elif _disagree(phases, declared):
            found.add(source.error(["phases"], f"phases {declared} disagree with {phases} "
                                   f"declared in {first}"))
        else:
            phases.extend(p for p in declared if p not in phases)
    if phases is None and sources and not found.unread:
        found.add(StateError("no file declares `phases`", file=sources[0].name))
    return phases or []


def _disagree(a: list[str], b: list[str]) -> bool:
    """Two phase lists agree when the phases they share come in the same order."""
    shared = [p for p in a if p in b]
    return shared != [p for p in b if p in a]


def _declared_states(sources: list[Source], phases: list[str], found: Found) -> list[State]:
    states: list[State] = []
    seen: dict[str, State] = {}
    for source in sources:
        broken = found.broken.get(source.name, set())
        for index, raw in enumerate(source.data.get("states", [])):
            if index in broken:
                continue
            state = _declare(source, index, raw, phases, len(states), found)
            if state is None:
                continue
            if state.id in seen:
                found.add(source.error(["states", index, "id"], f"duplicate id {state.id!r} "
                                       f"(first at {seen[state.id].where})"))
                continue
            seen[state.id] = state
            states.append(state)
    return states


def _declare(source: Source, index: int, raw: dict[str, Any], phases: list[str],
             order: int, found: Found) -> State | None:
    """The state as declared, or None when its phase or type is unknown (told)."""
    base: list[str | int] = ["states", index]
    error = None
    if raw["phase"] not in phases and not found.unread:  # (else an unread file may declare it)
        error = source.error([*base, "phase"], f"unknown phase {raw['phase']!r} "
                             f"(declared: {', '.join(phases)})"
                             + schema_check.did_you_mean(raw["phase"], phases))
    elif raw["type"] not in resources.REGISTRY:
        known = resources.known_types()
        error = source.error([*base, "type"], f"unknown type {raw['type']!r} "
                             f"(known: {', '.join(known)})"
                             + schema_check.did_you_mean(raw["type"], known))
    if error is not None or raw["phase"] not in phases:
        found.add(error or [])
        found.other_ids.add(raw["id"])
        return None
    state = State(
        id=raw["id"], type=raw["type"], phase=raw["phase"], file=source.name,
        line=source.line(base), index=index, order=order,
        requires=list(raw.get("requires", [])), onchanges=list(raw.get("onchanges", [])),
        raw={k: v for k, v in raw.items() if k not in _GRAPH_KEYS},
    )
    state.lines = {k: source.line([*base, k]) for k in raw}
    return state


def _render_vars(sources: list[Source], overrides: dict[str, Any],
                 env: templating.EnvView, renderer: templating.Renderer,
                 degraded: Mapping[str, Any], found: Found) -> dict[str, Any]:
    context: dict[str, Any] = {"env": env}
    defined: dict[str, tuple[Any, str]] = {}
    for source in sources:
        for name, value in source.data.get("vars", {}).items():
            if name in defined and defined[name][0] != value:
                found.add(source.error(["vars", name], f"var {name!r} is also defined, "
                                       f"differently, in {defined[name][1]}"))
                continue
            defined[name] = (value, source.name)
            if name in overrides:
                context[name] = overrides[name]
                continue
            try:
                context[name] = renderer.render(value, context)
            except Exception as exc:
                if source.name in degraded:
                    continue  # left undefined: only identity fields are rendered
                found.add(_render_error(exc, value, ["vars", name], source, context,
                                        renderer, found))
                found.broken_vars.add(name)
    unknown = sorted(set(overrides) - set(defined))
    if unknown and not found.unread:
        found.add(StateError(_unknown_var(unknown[0], sorted(defined))))
    return context


def _unknown_var(name: str, declared: list[str]) -> str:
    """A typo in ``--var NAME`` is an error, with the closest declared var."""
    listed = ", ".join(declared) if declared else "none"
    return (f"--var {name}: no such var in the state files"
            f"{schema_check.did_you_mean(name, declared)} (declared: {listed})")


def _render_state(state: State, source: Source, context: dict[str, Any],
                  renderer: templating.Renderer, secrets: set[str],
                  degraded: bool = False, found: Found | None = None) -> dict[str, Any]:
    """Render, validate and parse ``state`` (``state.spec``): the type's fields as the
    state gave them, rendered (``show`` prints them), of a disabled or absent state only
    its identity fields (the others are not checked, so they may hold unknown secrets).
    Every error of its fields is raised at once (:class:`StateErrors`)."""
    found = found or Found()
    base: list[str | int] = ["states", state.index]
    raw = dict(state.raw)
    resource = resources.get(state.type)
    when = raw.pop("when", True)
    ensure = raw.pop("ensure", "present")
    if degraded and not resource.is_action:
        when, ensure = True, "absent"  # invalid input: what this file added goes
    state.enabled = _truth(_render(when, "when", base, source, context, renderer, found,
                                   expression=True))
    ensure = _render(ensure, "ensure", base, source, context, renderer, found)
    if ensure not in ENSURE_VALUES:
        raise source.error([*base, "ensure"], f"{ensure!r} is not one of present, absent"
                           + schema_check.did_you_mean(ensure, ENSURE_VALUES))
    state.ensure = ensure
    if degraded and ensure == "absent":  # the other fields may need the refused input
        raw = {k: v for k, v in raw.items() if k in resource.identity_fields}
    fields = _render_fields(raw, base, source, context, renderer, found)
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
    _raise_all(schema_check.validate(state.type, fields, source, base))
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
            state.spec = None
            raise source.error([*base, "sensitive"], reason)
    secrets.update(values)
    return shown


def _render_fields(raw: dict[str, Any], base: list[str | int], source: Source,
                   context: dict[str, Any], renderer: templating.Renderer,
                   found: Found) -> dict[str, Any]:
    """Every field rendered; every field that fails, told at once."""
    fields, errors = {}, []
    for key, value in raw.items():
        try:
            fields[key] = _render(value, key, base, source, context, renderer, found)
        except StateError as exc:
            errors.append(exc)
    _raise_all(errors)
    return fields


def _raise_all(errors: Sequence[StateError]) -> None:
    if errors:
        raise StateErrors(errors)


def _check_unknown(fields: dict[str, Any], type_schema: dict[str, Any], source: Source,
                   base: list[str | int]) -> None:
    known = list(type_schema.get("properties", {}))
    _raise_all([source.error([*base, key], schema_check.unknown_field(key, known))
                for key in fields if key not in known])


def _render(value: Any, key: str, base: list[str | int], source: Source,
            context: dict[str, Any], renderer: templating.Renderer, found: Found,
            expression: bool = False) -> Any:
    try:
        if expression and isinstance(value, str) and "{{" not in value:
            return renderer.expression(value, context)
        return renderer.render(value, context)
    except Exception as exc:
        raise _render_error(exc, value, [*base, key], source, context, renderer,
                            found) from None


def _render_error(exc: Exception, value: Any, path: list[str | int], source: Source,
                  context: dict[str, Any], renderer: templating.Renderer,
                  found: Found) -> StateError:
    """The error of a template, at the innermost part of ``value`` that fails, with the
    nearest name for an undefined one; quiet when the name is undefined only because
    its own error was told (a var that failed, a file that could not be read)."""
    where = _failing_path(value, path, context, renderer)
    name = templating.undefined_name(exc)
    if name is not None and (name in found.broken_vars or found.unread):
        return _Quiet(f"{name!r} is undefined", file=source.name)
    return source.error(where, templating.describe(exc, list(context)))


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
