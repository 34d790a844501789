"""What each subcommand does, once its arguments are parsed."""

from __future__ import annotations

import sys

from statekit.contract import DEFAULT_PATH, EXIT_CHANGED, EXIT_FAILED, EXIT_INVALID, EXIT_OK
from statekit.masking import Masker
from statekit.program import Program, State
from statekit.report.report import emit

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any


def run(args: argparse.Namespace, masker: Masker) -> int:
    """Run the subcommand ``args.command``; its exit code."""
    return _COMMANDS[args.command](args, masker)


def _converge_command(args: argparse.Namespace, masker: Masker) -> int:
    _check_root(args.root)
    args.program = _load_cached(args, masker)  # for --require-lockdown's check
    return _converge(args, args.program, masker)


def _status_command(args: argparse.Namespace, masker: Masker) -> int:
    from statekit.commands import status  # its module only here: off the converge's import path

    _check_root(args.root)
    return status.run(args, _load_cached(args, masker), masker)


def _drops_command(args: argparse.Namespace, masker: Masker) -> int:
    from statekit.commands import drops  # its module only here: off the converge's import path

    _check_root(args.root)
    given = args.paths or args.group is None  # --group alone needs no states
    return drops.run(args, _load(args, masker) if given else None, masker)


def _validate_command(args: argparse.Namespace, masker: Masker) -> int:
    program = _load(args, masker)
    if program.input_errors:
        _input_errors(program, masker, "would be")
        return EXIT_INVALID
    emit(sys.stdout, f"{_count(len(program.states), 'state')} in "
         f"{_count(len(program.phases), 'phase')}: valid\n")
    return EXIT_OK


def _show_command(args: argparse.Namespace, masker: Masker) -> int:
    program = _load(args, masker)
    emit(sys.stdout, _show(program, masker, args.id, args.format))
    if program.input_errors:  # shown as they would converge: absent, and why
        _input_errors(program, masker, "would be")
        return EXIT_INVALID
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, Masker], int]] = {
    "converge": _converge_command, "status": _status_command, "drops": _drops_command,
    "validate": _validate_command, "show": _show_command}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_root(root: str) -> None:
    import os

    from statekit.errors import StateError

    if not os.path.isdir(root):
        raise StateError(f"--root {root}: no such directory")


def _load(args: argparse.Namespace, masker: Masker) -> Program:
    from statekit.load import loader

    overrides = loader.parse_vars(args.var)
    program = loader.load(args.paths or [DEFAULT_PATH], overrides, on_secrets=masker.add)
    masker.add(program.secrets)
    return program


def _load_cached(args: argparse.Namespace, masker: Masker) -> Program:
    """The program from the cache when nothing it depends on changed and no state it
    would run is sealed (held a secret), else loaded (and cached, secrets left out)."""
    import os

    from statekit.engine import cache
    from statekit.host.files import FileSystem
    from statekit.load.discover import collect

    args.program_key = ""  # no cache key, no memos (Host.recall)
    if os.environ.get("STATEKIT_NO_CACHE"):
        return _load(args, masker)
    fs = FileSystem(args.root)
    key = cache.key(collect(args.paths or [DEFAULT_PATH]), _raw_vars(args.var))
    args.program_key = key  # the host's memos are this program's (Host.recall)
    program = cache.load(fs, key, os.environ)
    phases = set(getattr(args, "phase", None) or ())
    if program is not None and not any(
            s.sealed and (not phases or s.phase in phases) for s in program.states):
        masker.add(program.secrets)
        return program
    program = _load(args, masker)
    if args.command == "converge" and not args.check:
        cache.save(fs, key, os.environ, program)
    return program


def _raw_vars(items: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


# --- show: the rendered states, in the shape they were written -------------------------

def _show(program: Program, masker: Masker, ids: list[str], fmt: str) -> str:
    """The states (those of ``ids``, else all, with the phases, secrets and vars) as YAML
    (each state under a ``# file:line`` comment) or JSON, every string masked."""
    from statekit.report.report import masked_tree

    _check_ids(ids, program)
    states = [s for s in program.states if not ids or s.id in ids]
    doc: dict[str, Any] = {} if ids else {
        "phases": program.phases, "secrets": program.secret_names, "vars": program.vars}
    shown = [masked_tree(_as_written(s, program), masker) for s in states]
    if fmt == "json":
        import json

        return json.dumps({**masked_tree(doc, masker), "states": shown}, indent=2) + "\n"
    return _yaml(masked_tree(doc, masker), shown, [masker(s.where) for s in states])


def _check_ids(ids: list[str], program: Program) -> None:
    known = [s.id for s in program.states]
    for wanted in ids:
        if wanted not in known:
            from statekit.errors import StateError
            from statekit.load.schema_check import did_you_mean

            raise StateError(f"--id {wanted!r}: no such state"
                             f"{did_you_mean(wanted, known)}")


def _as_written(state: State, program: Program) -> dict[str, Any]:
    """One state as a state file holds it: its graph keys, ``when``/``ensure`` when it
    wrote them, then its own fields, rendered."""
    out: dict[str, Any] = {"id": state.id, "type": state.type, "phase": state.phase}
    for key, value in (("requires", state.requires), ("onchanges", state.onchanges)):
        if value:
            out[key] = value
    fields = program.shown.get(state.id, {})
    rendered = {"when": state.enabled, "ensure": state.ensure, **fields}
    # shown even when the file did not write it: a refused input of a file with
    # `on_invalid_input: absent` made the state absent
    if state.ensure != "present":
        out["ensure"] = state.ensure
    out |= {k: rendered[k] for k in state.raw if k in rendered}  # in the order written
    return out | fields


def _yaml(doc: dict[str, Any], states: list[dict[str, Any]], where: list[str]) -> str:
    import yaml

    def dump(data: object) -> str:
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                  default_flow_style=False, width=1 << 16))

    parts = [dump(doc) if doc else "", "states:\n" if states else "states: []\n"]
    parts += [f"# {at}\n{dump([state])}" for at, state in zip(where, states, strict=True)]
    return "".join(parts)


def _input_errors(program: Program, masker: Masker, mode: str) -> None:
    """Refused input values of files whose states converge absent instead (exit 3),
    worded for the run: they ``were`` (a converge) or ``would be`` (check, validate)."""
    for error in program.input_errors:
        emit(sys.stderr, masker(f"statekit: {error} (its file's states {mode} converged "
                                "absent; fix the value and converge again)") + "\n")


def _converge(args: argparse.Namespace, program: Program, masker: Masker) -> int:
    from statekit.engine.engine import Engine
    from statekit.host import lock
    from statekit.host.host import Host
    from statekit.report import report

    unknown = [p for p in args.phase if p not in program.phases]
    if unknown:
        from statekit.errors import StateError, did_you_mean

        raise StateError(f"--phase {unknown[0]!r}: unknown phase "
                         f"(declared: {', '.join(program.phases)})"
                         + did_you_mean(unknown[0], program.phases))
    host = Host(root=args.root)
    host.memo_key = args.program_key
    Engine(program, host, check=True).preflight(args.phase)  # exit 3 before anything
    if _should_ask(args, program) and not _confirmed(args, program, masker):
        emit(sys.stderr, "statekit: not confirmed: nothing changed\n")
        return EXIT_FAILED
    text = report.TextReport(masker, check=args.check, diff=args.diff)
    on_outcome = text.outcome if args.format == "text" else None
    with lock.hold(host.fs, args.lock_file or lock.DEFAULT_LOCK, args.lock_timeout,
                   shared=args.check):
        engine = Engine(program, host, check=args.check, on_outcome=on_outcome)
        outcomes = engine.converge(args.phase or None)
        if not args.check:
            host.keep_learnt()
    if args.format == "json":
        emit(sys.stdout, report.as_json(
            outcomes, check=args.check, phases=args.phase or program.phases, mask=masker,
            input_errors=program.input_errors) + "\n")
    else:
        text.recap(outcomes)
    code = _exit_code(report.summary(outcomes), program, args, masker)
    if not args.check:
        _record(host, outcomes, args.phase or program.phases, code, masker)
    return code


def _exit_code(counts: dict[str, int], program: Program, args: argparse.Namespace,
               masker: Masker) -> int:
    if program.input_errors:
        _input_errors(program, masker, "would be" if args.check else "were")
        return EXIT_INVALID
    if counts["failed"]:
        return EXIT_FAILED
    if counts["changed"] and args.detailed_exitcode:
        return EXIT_CHANGED
    return EXIT_OK


def _record(host: Any, outcomes: list[Any], phases: list[str], code: int,
            masker: Masker) -> None:
    """Keep this run for `statekit status` and `drops`; never fails the converge."""
    from statekit.report import last_run

    try:
        last_run.record(host.fs, outcomes, now=host.now, phases=phases, exit_code=code,
                        mask=masker)
    except Exception as exc:
        sys.stderr.write(masker(f"statekit: warning: the run was not recorded for "
                                f"`statekit status`: {exc}") + "\n")


# --- the guard: ask before cutting the machine's own traffic (as `terraform apply`) ------

QUESTION = ("\nThis converge runs on this machine (--root /) and {what}: its own outbound "
            "traffic will be cut.\nDo you want to converge? Only 'yes' will be accepted "
            "(--yes skips this question): ")


def cuts_own_traffic(state: State) -> bool:
    """An enabled state whose type says it cuts this machine's outbound traffic
    (``Resource.cuts_traffic``: a DROP policy or a DROP/REJECT rule on OUTPUT)."""
    from statekit import resources

    return state.enabled and state.spec is not None and \
        resources.get(state.type).cuts_traffic(state.spec)


def _should_ask(args: argparse.Namespace, program: Program) -> bool:
    """A person at the terminal, a real converge on the real root, a traffic cut in it."""
    import os

    if args.check or getattr(args, "yes", False) or not sys.stdin.isatty():
        return False
    if os.path.realpath(args.root) != "/":
        return False
    phases = set(args.phase or program.phases)
    return any(cuts_own_traffic(s) for s in program.states if s.phase in phases)


def _confirmed(args: argparse.Namespace, program: Program, masker: Masker) -> bool:
    """Show the plan (a check-mode run); True when nothing would cut traffic or the
    person answers ``yes``."""
    from statekit.engine.engine import CHANGED, Engine
    from statekit.host import lock
    from statekit.host.host import Host
    from statekit.report import report

    host = Host(root=args.root)
    stream = sys.stdout if args.format == "text" else sys.stderr
    text = report.TextReport(masker, check=True, diff=True, stream=stream)
    with lock.hold(host.fs, args.lock_file or lock.DEFAULT_LOCK, args.lock_timeout,
                   shared=True):
        outcomes = Engine(program, host, check=True, on_outcome=text.outcome).converge(
            args.phase or None)
    text.recap(outcomes)
    cutting = [o.state.id for o in outcomes if o.status == CHANGED
               and cuts_own_traffic(o.state)]
    if not cutting:
        return True
    emit(sys.stderr, QUESTION.format(what="would drop outbound packets ("
                                            + ", ".join(cutting) + ")"))
    return sys.stdin.readline().strip() == "yes"
