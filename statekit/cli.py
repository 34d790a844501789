"""The command line: ``statekit converge | validate | show | drops`` (SPEC.md's contract).

Exit codes: 0 success; 1 a state failed (or the lock timed out); 2 something changed (or
would) and ``--detailed-exitcode`` was given; 3 invalid input, nothing touched.

The command line is described once, in :data:`COMMANDS`. argparse, built from that table
by :func:`build_parser`, is the reference: it gives ``--help`` and the usage errors.
Importing it costs more than a no-op converge (``re``, ``enum``, ``gettext``), so
:func:`fast_parse` reads the plain argv forms from the same table and hands anything it
is not sure argparse would read identically back to argparse.
"""

from __future__ import annotations

import os
import sys

from statekit.contract import EXIT_FAILED, EXIT_INVALID, EXIT_UNLOCKED
from statekit.errors import StateError, StatekitError
from statekit.masking import Masker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from collections.abc import Callable, Sequence
    from typing import Any, TextIO


# The kinds of argument: a switch (store_true), an option taking one value (the last one
# given wins), a repeatable option (append), and the positional list (nargs="*").
FLAG, VALUE, APPEND, PATHS = "flag", "value", "append", "paths"


class Arg:
    """One argument of a subcommand, as told to argparse and as read by the fast parser."""

    __slots__ = ("choices", "default", "dest", "help", "kind", "metavar", "name", "type")

    def __init__(self, name: str, kind: str, *, type: Callable[[str], object] = str,
                 default: object = None, choices: tuple[str, ...] | None = None,
                 metavar: str | None = None, help: str | None = None) -> None:
        self.name, self.kind, self.type, self.default = name, kind, type, default
        self.choices, self.metavar, self.help = choices, metavar, help
        self.dest = name.lstrip("-").replace("-", "_")  # argparse's rule

    def initial(self) -> object:
        """The value when the argument is not given (a fresh list for the list kinds)."""
        if self.kind in (APPEND, PATHS):
            return []
        return False if self.kind == FLAG else self.default

    def convert(self, text: str) -> object:
        """The value of ``text``, or None when argparse would refuse it."""
        value: object = text
        if self.type is not str:
            try:
                value = self.type(text)
            except Exception:  # argparse's to refuse, with its usage message
                return None
        return value if self.choices is None or value in self.choices else None

    def add_to(self, parser: ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"metavar": self.metavar, "help": self.help}
        if self.kind == PATHS:
            kwargs["nargs"] = "*"
        elif self.kind == FLAG:
            kwargs["action"] = "store_true"
        elif self.kind == APPEND:
            kwargs.update(action="append", default=[])
        else:
            kwargs.update(default=self.default, choices=self.choices)
            if self.type is not str:
                kwargs["type"] = self.type
        parser.add_argument(self.name, **{k: v for k, v in kwargs.items() if v is not None})


def seconds(text: str) -> float:
    """A duration: a finite number of seconds, 0 or more (not nan, inf or negative)."""
    value = float(text)
    if not 0 <= value < float("inf"):  # false for nan too
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds "
                                         "(finite, 0 or more)")
    return value


def count(text: str) -> int:
    """A number of items: a whole number, 1 or more."""
    return _whole(text, 1, None, "a count (a whole number, 1 or more)")


def nflog_group(text: str) -> int:
    """An NFLOG group: 0 to 65535."""
    return _whole(text, 0, 0xFFFF, "an NFLOG group (0 to 65535)")


def _whole(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


DESCRIPTION = "Idempotent state engine."
_PATHS = Arg("paths", PATHS, metavar="PATH", help="state files or directories")
_VAR = Arg("--var", APPEND, metavar="KEY=VALUE", help="override a var (VALUE is read as YAML)")

#: subcommand -> (its help, its arguments in help order)
COMMANDS: dict[str, tuple[str, tuple[Arg, ...]]] = {
    "converge": ("read, diff and converge states", (
        _PATHS,
        _VAR,
        Arg("--phase", APPEND, metavar="NAME",
            help="converge only this phase (repeatable; default all)"),
        Arg("--check", FLAG, help="change nothing, report"),
        Arg("--diff", FLAG, help="show the diffs"),
        Arg("--format", VALUE, choices=("text", "json"), default="text",
            help="text: a line per state and a recap; json: one report object "
            "(default: %(default)s)"),
        Arg("--root", VALUE, default="/", metavar="DIR", help="take every file path under DIR"),
        Arg("--detailed-exitcode", FLAG, help="exit 2 when something changed (or would)"),
        Arg("--lock-file", VALUE, metavar="PATH",
            help="lock file (default /run/statekit/lock under --root)"),
        Arg("--lock-timeout", VALUE, type=seconds, default=30.0, metavar="SECONDS",
            help="how long to wait for another converge's lock before failing "
            "(default: %(default)g)"),
        Arg("--yes", FLAG, help="do not ask before a converge on / that cuts this machine's"
            " outbound traffic (asked only when stdin is a terminal)"),
        Arg("--require-lockdown", FLAG, help="after the run, whatever happened, exit 4 "
            "unless the lockdown is in place (the entrypoint's guard before the agent)"),
    )),
    "status": ("the lockdown's health: last converge, names, drift, CoreDNS, telemetry", (
        _PATHS,
        _VAR,
        Arg("--root", VALUE, default="/", metavar="DIR", help="take every file path under DIR"),
        Arg("--format", VALUE, choices=("text", "json"), default="text",
            help="text for a person, json for a script (default: %(default)s)"),
        Arg("--lock-file", VALUE, metavar="PATH",
            help="lock file (default /run/statekit/lock under --root)"),
        Arg("--lock-timeout", VALUE, type=seconds, default=30.0, metavar="SECONDS",
            help="wait this long for a converge that holds the lock (default: %(default)s)"),
    )),
    "validate": ("check files, schema and templates; touch nothing", (_PATHS, _VAR)),
    "show": ("print the states as rendered, in the shape they were written, and the vars;"
             " secrets masked", (
        _PATHS,
        _VAR,
        Arg("--id", APPEND, metavar="ID", help="show only this state (repeatable)"),
        Arg("--format", VALUE, choices=("yaml", "json"), default="yaml",
            help="output format (default: %(default)s)"),
    )),
    "drops": ("follow the firewall's drops live (NFLOG): who, where, and what to do", (
        _PATHS,
        _VAR,
        Arg("--root", VALUE, default="/", metavar="DIR", help="the machine's files "
            "(the pin history) under DIR"),
        Arg("--group", VALUE, type=nflog_group, metavar="N",
            help="the NFLOG group to read (default: the states' NFLOG rules)"),
        Arg("--count", VALUE, type=count, metavar="N", help="stop after N drops"),
        Arg("--timeout", VALUE, type=seconds, metavar="S", help="stop after S seconds"),
        Arg("--format", VALUE, choices=("text", "json"), default="text",
            help="json: one object per line"),
    )),
}


class _Namespace:
    """argparse's Namespace without argparse: attributes, ``vars()`` is the dict."""

    def __init__(self, **kwargs: object) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


if not TYPE_CHECKING:
    Namespace = _Namespace


def build_parser() -> ArgumentParser:
    """The argparse parser for :data:`COMMANDS` (imports argparse: off the common path)."""
    import argparse

    class _Formatter(argparse.HelpFormatter):
        """argparse's formatter, sized with ``os.get_terminal_size``: argparse's own sizing
        imports shutil (and the compression modules with it) on every start."""

        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None) -> None:
            if width is None:
                try:
                    width = os.get_terminal_size().columns - 2
                except OSError:
                    width = 78
            super().__init__(prog, indent_increment, max_help_position, width)

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # usage errors are invalid input too
            self.print_usage(sys.stderr)
            sys.stderr.write(f"statekit: error: {message}\n")
            raise SystemExit(EXIT_INVALID)

    from statekit import __version__

    parser = _Parser(prog="statekit", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"statekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, (text, args) in COMMANDS.items():
        command_parser = sub.add_parser(command, help=text, formatter_class=_Formatter)
        for arg in args:
            arg.add_to(command_parser)
    return parser


def fast_parse(argv: Sequence[str]) -> Namespace | None:
    """``build_parser().parse_args(argv)`` for the plain forms, without argparse; else None.

    Plain: the subcommand, then its exact long options (``--root DIR``, ``--root=DIR``,
    ``--check``) and one uninterrupted run of paths. Anything else (``-h``, ``--``, an
    abbreviation, a separate value starting with ``-``, a bad choice or number, a second
    run of paths, which argparse rejects) is argparse's to accept, explain or refuse.
    """
    if not argv or argv[0] not in COMMANDS:
        return None
    args = COMMANDS[argv[0]][1]
    values: dict[str, Any] = {"command": argv[0]} | {arg.dest: arg.initial() for arg in args}
    options = {arg.name: arg for arg in args if arg.kind != PATHS}
    positional: list[str] = []
    runs, in_run, index = 0, False, 1
    while index < len(argv):
        if argv[index].startswith("-"):
            index, in_run = _read_option(argv, index, options, values), False
            if not index:
                return None
        else:  # "" too: argparse takes it as a path
            runs, in_run = runs + (not in_run), True
            positional.append(argv[index])
            index += 1
    if positional:
        dests = [arg.dest for arg in args if arg.kind == PATHS]
        if runs > 1 or not dests:  # argparse: "unrecognized arguments"
            return None
        values[dests[0]] = positional
    return Namespace(**values)


def _read_option(argv: Sequence[str], index: int, options: dict[str, Arg],
                 values: dict[str, Any]) -> int:
    """Store the option at ``argv[index]`` in ``values``: the index after it, or 0 when
    argparse might read it otherwise (or refuse it)."""
    name, eq, text = argv[index].partition("=")
    option = options.get(name)
    index += 1
    if option is None or (eq and option.kind == FLAG):
        return 0
    if option.kind == FLAG:
        values[option.dest] = True
        return index
    if not eq:
        if index == len(argv) or argv[index].startswith("-"):
            return 0
        text = argv[index]
        index += 1
    value = option.convert(text)
    if value is None:
        return 0
    if option.kind == APPEND:
        values[option.dest].append(value)
    else:
        values[option.dest] = value
    return index


def parse_args(argv: Sequence[str] | None = None) -> Namespace:
    """The parsed command line: the fast parser's, else argparse's (which may exit 0 or 3)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = fast_parse(argv)
    return build_parser().parse_args(argv) if args is None else args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Output cut short by its reader (``| head``) is
    not an error: the command finishes its work and keeps its exit code."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    finally:
        _flush(sys.stdout)
        _flush(sys.stderr)


def _main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (3)
        if exc.code == EXIT_INVALID and _wants_json(argv):
            _json_error(StateError("usage error: see the message on stderr"), EXIT_INVALID)
        raise
    # the mask key: read on the first secret shown; made only by a real converge
    from statekit.masking import use_key_file

    use_key_file(getattr(args, "root", "/"), create=args.command == "converge"
                 and not getattr(args, "check", False))
    masker = Masker()
    code = _run(args, masker)
    if getattr(args, "require_lockdown", False):
        return _require_lockdown(args, masker, code)
    return code


def _run(args: Namespace, masker: Masker) -> int:
    try:
        from statekit.commands import subcommands as commands

        return int(commands.run(args, masker))
    except StateError as exc:
        return _fail(exc, args, masker, EXIT_INVALID)
    except StatekitError as exc:
        return _fail(exc, args, masker, EXIT_FAILED)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:
        _traceback(exc, masker)
        _error(masker(f"internal error: {type(exc).__name__}: {exc}"))
        return EXIT_FAILED


def _require_lockdown(args: Namespace, masker: Masker, code: int) -> int:
    """``code``, or 4 when the lockdown is not in place (read afresh, whatever the run
    did: the program it loaded, if any, says what the lockdown is)."""
    try:
        from statekit.commands import lockdown
        from statekit.host.host import Host

        found = lockdown.problems(Host(root=args.root), getattr(args, "program", None),
                                  args.phase)
    except Exception as exc:  # cannot tell: not in place
        found = [f"cannot check: {type(exc).__name__}: {exc}"]
    if not found:
        return code
    for problem in found:
        _error(masker(f"the lockdown is not in place: {problem}"))
    _error(f"exit {EXIT_UNLOCKED}: do not start the agent (the run itself exited {code})")
    return EXIT_UNLOCKED


def _fail(exc: StatekitError, args: Namespace, masker: Masker, code: int) -> int:
    """Report an error the user can act on: one line on stderr per error (at most
    ``SHOWN``, then how many more; a traceback too with STATEKIT_DEBUG=1) and, with
    ``--format json``, the errors as JSON on stdout."""
    from statekit.errors import SHOWN, every_error

    _traceback(exc, masker)
    errors = every_error(exc)
    for error in errors[:SHOWN]:
        _error(masker(str(error)))
    if len(errors) > SHOWN:
        _error(f"... and {len(errors) - SHOWN} more")
    if getattr(args, "format", None) == "json":
        _json_error(exc, code, masker, check=bool(getattr(args, "check", False)))
    return code


def _wants_json(argv: Sequence[str]) -> bool:
    pairs = (argv[i:i + 2] for i in range(len(argv)))  # itertools.pairwise, without its import
    return "--format=json" in argv or ["--format", "json"] in pairs


def _json_error(exc: StatekitError, code: int, masker: Masker | None = None,
                check: bool = False) -> None:
    """``{"format_version": 1, "check": .., "error": {file, line, field, message,
    exit_code}, "errors": [...]}`` on stdout: a machine never has to parse empty output.
    ``error`` is the first of ``errors`` (every input error of the run)."""
    import json

    from statekit.errors import every_error
    from statekit.report.report import FORMAT_VERSION, emit, masked_tree

    errors = [{"file": getattr(e, "file", None), "line": getattr(e, "line", None),
               "field": getattr(e, "field", None),
               "message": getattr(e, "message", str(e)), "exit_code": code}
              for e in every_error(exc)]
    doc = {"format_version": FORMAT_VERSION, "check": check, "error": errors[0],
           "errors": errors}
    emit(sys.stdout, json.dumps(masked_tree(doc, masker or Masker()), indent=2) + "\n")


def _traceback(exc: BaseException, masker: Masker) -> None:
    if os.environ.get("STATEKIT_DEBUG"):
        import traceback

        _error(masker("".join(traceback.format_exception(exc))))


def _error(text: str) -> None:
    from statekit.report.report import emit

    emit(sys.stderr, f"statekit: {text}\n")


def _flush(stream: TextIO) -> None:
    """Flush now, while a closed pipe can still be handled (at exit, Python would print
    "Exception ignored" and exit 120)."""
    try:
        stream.flush()
    except BrokenPipeError:
        from statekit.report.report import cut  # only when a reader went away

        cut(stream)
    except (OSError, ValueError):  # closed or not a file: nothing left to flush
        pass
