"""The command line: ``statekit converge | validate | show`` (SPEC.md's contract).

Exit codes: 0 success; 1 a state failed (or the lock timed out); 2 something changed (or
would) and ``--detailed-exitcode`` was given; 3 invalid input, nothing touched.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from statekit.errors import StateError, StatekitError
from statekit.masking import Masker

EXIT_OK, EXIT_FAILED, EXIT_CHANGED, EXIT_INVALID = 0, 1, 2, 3
DEFAULT_PATH = "states"


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="statekit", description="Idempotent state engine.",
                     formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("converge", help="read, diff and converge states",
                          formatter_class=_Formatter)
    _common(conv)
    conv.add_argument("--phase", action="append", default=[], metavar="NAME",
                      help="converge only this phase (repeatable; default all)")
    conv.add_argument("--check", action="store_true", help="change nothing, report")
    conv.add_argument("--diff", action="store_true", help="show the diffs")
    conv.add_argument("--format", choices=("text", "json"), default="text")
    conv.add_argument("--root", default="/", metavar="DIR",
                      help="take every file path under DIR")
    conv.add_argument("--detailed-exitcode", action="store_true",
                      help="exit 2 when something changed (or would)")
    conv.add_argument("--lock-file", default=None, metavar="PATH",
                      help="lock file (default /run/statekit.lock under --root)")
    conv.add_argument("--lock-timeout", type=float, default=30.0, metavar="SECONDS")
    for name, text in (("validate", "check files, schema and templates; touch nothing"),
                       ("show", "print the rendered desired states, secrets masked")):
        _common(sub.add_parser(name, help=text, formatter_class=_Formatter))
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="state files or directories")
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="override a var (VALUE is read as YAML)")


def parse_vars(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise StateError(f"--var {key!r}: expected KEY=VALUE")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise StateError(f"--var {key}: VALUE is not valid YAML") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    masker = Masker()
    try:
        from statekit import commands

        return int(commands.run(args, masker))
    except StateError as exc:
        _error(masker(str(exc)))
        return EXIT_INVALID
    except StatekitError as exc:
        _error(masker(str(exc)))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("STATEKIT_DEBUG"):
            import traceback

            _error(masker("".join(traceback.format_exception(exc))))
        _error(masker(f"internal error: {type(exc).__name__}: {exc}"))
        return EXIT_FAILED


def _error(text: str) -> None:
    sys.stderr.write(f"statekit: {text}\n")
