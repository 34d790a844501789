"""What each subcommand does, once its arguments are parsed."""

from __future__ import annotations

import sys

from statekit.contract import DEFAULT_PATH, EXIT_CHANGED, EXIT_FAILED, EXIT_INVALID, EXIT_OK
from statekit.out.masking import Masker
from statekit.program import Program

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def run(args: argparse.Namespace, masker: Masker) -> int:
    if args.command == "converge":
        _check_root(args.root)
        args.program = _load_cached(args, masker)  # for --require-lockdown's check
        return _converge(args, args.program, masker)
    if args.command == "status":
        from statekit import status

        _check_root(args.root)
        return status.run(args, _load_cached(args, masker), masker)
    if args.command == "drops":  # its module only here: off the converge's import path
        from statekit import drops

        _check_root(args.root)
        given = args.paths or args.group is None  # --group alone needs no states
        return drops.run(args, _load(args, masker) if given else None, masker)
    program = _load(args, masker)
    if args.command == "validate":
        if program.input_errors:
            _input_errors(program, masker)
            return EXIT_INVALID
        sys.stdout.write(f"{len(program.states)} states in {len(program.phases)} phases: "
                         "valid\n")
        return EXIT_OK
    if args.command == "show":
        import json

        from statekit.out.report import masked_tree

        sys.stdout.write(json.dumps(masked_tree(_shown(program), masker), indent=2) + "\n")
        return EXIT_OK
    raise AssertionError(args.command)


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

    from statekit.load.discover import collect
    from statekit.run import cache
    from statekit.run.files import FileSystem

    if os.environ.get("STATEKIT_NO_CACHE"):
        return _load(args, masker)
    fs = FileSystem(args.root)
    key = cache.key(collect(args.paths or [DEFAULT_PATH]), _raw_vars(args.var))
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


def _shown(program: Program) -> dict[str, Any]:
    """The rendered states; ``masked_tree`` turns the specs into JSON data."""
    return {"phases": program.phases, "states": [
        {"id": s.id, "type": s.type, "phase": s.phase, "ensure": s.ensure,
         "enabled": s.enabled, "file": s.where, "spec": _readable(s.spec)}
        for s in program.states]}


def _input_errors(program: Program, masker: Masker) -> None:
    """Refused input values of files that converged absent instead (exit 3)."""
    for error in program.input_errors:
        sys.stderr.write(masker(f"statekit: {error} (its file's states were converged "
                                "absent; fix the value and converge again)") + "\n")
_MODE_FIELDS = ("mode", "dir_mode")


def _readable(value: Any, key: str = "") -> Any:
    """A spec as a person reads it: file modes as octal strings ("0600"), not 384 (bytes
    become text in ``masked_tree``)."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {k: _readable(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_readable(v) for v in value]
    if key in _MODE_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:04o}"
    return value


def _converge(args: argparse.Namespace, program: Program, masker: Masker) -> int:
    from statekit.out import report
    from statekit.run import lock
    from statekit.run.engine import Engine
    from statekit.run.host import Host

    unknown = [p for p in args.phase if p not in program.phases]
    if unknown:
        from statekit.errors import StateError

        raise StateError(f"--phase {unknown[0]!r}: unknown phase "
                         f"(declared: {', '.join(program.phases)})")
    host = Host(root=args.root)
    Engine(program, host, check=True).preflight(args.phase)  # exit 3 before anything
    if _should_ask(args, program) and not _confirmed(args, program, masker):
        sys.stderr.write("statekit: not confirmed: nothing changed\n")
        return EXIT_FAILED
    text = report.TextReport(masker, check=args.check, diff=args.diff)
    on_outcome = text.outcome if args.format == "text" else None
    with lock.hold(host.fs, args.lock_file or lock.DEFAULT_LOCK, args.lock_timeout,
                   shared=args.check):
        engine = Engine(program, host, check=args.check, on_outcome=on_outcome)
        outcomes = engine.converge(args.phase or None)
    if args.format == "json":
        sys.stdout.write(report.as_json(outcomes, check=args.check, phases=args.phase
                                        or program.phases, mask=masker,
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
        _input_errors(program, masker)
        return EXIT_INVALID
    if counts["failed"]:
        return EXIT_FAILED
    if counts["changed"] and args.detailed_exitcode:
        return EXIT_CHANGED
    return EXIT_OK


def _record(host: Any, outcomes: list[Any], phases: list[str], code: int,
            masker: Masker) -> None:
    """Keep this run for `statekit status` and `drops`; never fails the converge."""
    from statekit.out import last_run

    try:
        last_run.record(host.fs, outcomes, now=host.now, phases=phases, exit_code=code,
                        mask=masker)
    except Exception as exc:
        sys.stderr.write(masker(f"statekit: warning: the run was not recorded for "
                                f"`statekit status`: {exc}") + "\n")


# --- the guard: ask before cutting the machine's own traffic (as `terraform apply`) ------

_CUTTING = ("DROP", "REJECT")
QUESTION = ("\nThis converge runs on this machine (--root /) and {what}: its own outbound "
            "traffic will be cut.\nDo you want to converge? Only 'yes' will be accepted "
            "(--yes skips this question): ")


def cuts_own_traffic(state: Any) -> bool:
    """A present state that sets the filter table's OUTPUT policy to DROP or adds a
    DROP/REJECT rule to OUTPUT."""
    spec = state.spec
    if not state.enabled or spec is None or not getattr(spec, "present", False):
        return False
    if getattr(spec, "table", "") != "filter" or getattr(spec, "chain", "") != "OUTPUT":
        return False
    if state.type == "iptables_chain":
        return getattr(spec, "policy", None) == "DROP"
    template = getattr(spec, "template", None)
    return state.type == "iptables_rule" and template is not None and \
        template.target.jump in _CUTTING


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
    from statekit.out import report
    from statekit.run import lock
    from statekit.run.engine import CHANGED, Engine
    from statekit.run.host import Host

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
    sys.stderr.write(QUESTION.format(what="would drop outbound packets ("
                                     + ", ".join(cutting) + ")"))
    sys.stderr.flush()
    return sys.stdin.readline().strip() == "yes"
