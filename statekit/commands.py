"""What each subcommand does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from statekit import loader
from statekit.cli import DEFAULT_PATH, EXIT_CHANGED, EXIT_FAILED, EXIT_OK, parse_vars
from statekit.masking import Masker
from statekit.model import Program


def run(args: argparse.Namespace, masker: Masker) -> int:
    program = _load(args, masker)
    if args.command == "validate":
        sys.stdout.write(f"{len(program.states)} states in {len(program.phases)} phases: "
                         "valid\n")
        return EXIT_OK
    if args.command == "show":
        sys.stdout.write(masker(json.dumps(_shown(program), indent=2, default=str)) + "\n")
        return EXIT_OK
    return _converge(args, program, masker)


def _load(args: argparse.Namespace, masker: Masker) -> Program:
    overrides = parse_vars(args.var)
    program = loader.load(args.paths or [DEFAULT_PATH], overrides, on_secrets=masker.add)
    masker.add(program.secrets)
    return program


def _shown(program: Program) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    def plain(spec: Any) -> Any:
        return asdict(spec) if is_dataclass(spec) and not isinstance(spec, type) else spec

    return {"phases": program.phases, "states": [
        {"id": s.id, "type": s.type, "phase": s.phase, "ensure": s.ensure,
         "enabled": s.enabled, "file": s.where, "spec": plain(s.spec)}
        for s in program.states]}


def _converge(args: argparse.Namespace, program: Program, masker: Masker) -> int:
    from statekit import lock, report
    from statekit.engine import Engine
    from statekit.host import Host

    unknown = [p for p in args.phase if p not in program.phases]
    if unknown:
        from statekit.errors import StateError

        raise StateError(f"--phase {unknown[0]!r}: unknown phase "
                         f"(declared: {', '.join(program.phases)})")
    host = Host(root=args.root)
    text = report.TextReport(masker, check=args.check, diff=args.diff)
    on_outcome = text.outcome if args.format == "text" else None
    with lock.hold(host.fs, args.lock_file or lock.DEFAULT_LOCK, args.lock_timeout,
                   shared=args.check):
        engine = Engine(program, host, check=args.check, on_outcome=on_outcome)
        outcomes = engine.converge(args.phase or None)
    if args.format == "json":
        sys.stdout.write(report.as_json(outcomes, check=args.check, phases=args.phase
                                        or program.phases, mask=masker) + "\n")
    else:
        text.recap(outcomes)
    counts = report.summary(outcomes)
    if counts["failed"]:
        return EXIT_FAILED
    if counts["changed"] and args.detailed_exitcode:
        return EXIT_CHANGED
    return EXIT_OK
