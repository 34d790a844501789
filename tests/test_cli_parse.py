"""The fast command-line parser against argparse, its reference (``statekit.cli``).

``fast_parse`` reads the plain argv forms without importing argparse; for anything else it
returns None and argparse decides. Whatever it accepts must parse exactly as argparse does.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from statekit import cli, contract

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """One argparse parser for every example: building it takes 6 ms, parsing 0.3 ms, and
    a parser keeps nothing of one ``parse_args`` for the next."""
    return cli.build_parser()


def reference(argv: list[str]) -> dict[str, Any] | None:
    """``vars()`` of argparse's result, or None when argparse exits (error or --help)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return vars(_parser().parse_args(argv))
        except SystemExit:
            return None


def fast(argv: list[str]) -> dict[str, Any] | None:
    args = cli.fast_parse(argv)
    return None if args is None else vars(args)


ACCEPTED = [
    ["converge"],
    ["validate"],
    ["show"],
    ["converge", "states"],
    ["converge", "a.yaml", "b.yaml", "dir/c"],
    ["converge", "--check"],
    ["converge", "--check", "--diff"],
    ["converge", "--check", "--check"],
    ["converge", "--diff", "--detailed-exitcode"],
    ["converge", "--root", "R", "--phase", "network", "states"],
    ["converge", "--root=R", "--phase=network", "states"],
    ["converge", "--root", "a", "--root", "b"],
    ["converge", "--root="],
    ["converge", "--root", ""],
    ["converge", "--root", "a b"],
    ["converge", "--root=-x"],
    ["converge", "--phase", "network", "--phase", "auth"],
    ["converge", "--phase", "a", "--phase=b", "--phase", "a"],
    ["converge", "--format", "json"],
    ["converge", "--format=text"],
    ["converge", "--format", "json", "--format", "text"],
    ["converge", "--format", "json", "--detailed-exitcode", "--lock-timeout", "5", "x.yaml"],
    ["converge", "--lock-timeout=0.5"],
    ["converge", "--lock-timeout", "1e3"],
    ["converge", "--lock-timeout", " 2 "],
    ["converge", "--lock-file", "/run/x.lock"],
    ["converge", "--lock-file=/run/x.lock", "--lock-file", "y"],
    ["converge", "--var", "a=1", "--var", "b=[1, 2]"],
    ["converge", "--var=a=1", "--var=b"],
    ["converge", "--var=--help"],
    ["converge", "a.yaml", "--check"],
    ["converge", "a.yaml", "b.yaml", "--check", "--root", "R"],
    ["converge", "--check", "a.yaml", "b.yaml", "--diff"],
    ["converge", "--root", "R", "a.yaml", "b.yaml"],
    ["converge", "", "x"],
    ["converge", "show"],
    ["converge", "--root", "converge", "validate"],
    ["validate", "states"],
    ["validate", "--var", "a=1"],
    ["validate", "a", "b", "--var=x=2"],
    ["show", "--var", "a=1", "states"],
    ["show", "states", "--var", "a=1", "--var", "b=2"],
    ["converge", "--check", "--diff", "--format", "json", "--root", "/", "--phase", "p",
     "--var", "k=v", "--detailed-exitcode", "--lock-file", "l", "--lock-timeout", "3", "s"],
    ["drops"],
    ["drops", "--group", "100", "--count", "3", "--timeout", "2.5", "--format", "json"],
    ["drops", "--root", "R", "--var", "nflog_group=7", "states", "--group=0", "--count=1"],
]

FALLBACK = [
    [],
    ["nope"],
    [""],
    ["--help"],
    ["-h"],
    ["--root", "x", "converge"],
    ["converge", "-h"],
    ["converge", "--help"],
    ["converge", "--he"],
    ["converge", "--ch"],
    ["converge", "--lock", "5"],
    ["converge", "--lock-t", "5"],
    ["converge", "--hlep"],
    ["converge", "-x"],
    ["converge", "-"],
    ["converge", "--"],
    ["converge", "--", "a"],
    ["converge", "---check"],
    ["converge", "--check=1"],
    ["converge", "--check="],
    ["converge", "--root"],
    ["converge", "--root", "--check"],
    ["converge", "--root", "-x"],
    ["converge", "--lock-timeout", "-5"],
    ["converge", "--lock-timeout", "abc"],
    ["converge", "--lock-timeout", "inf"],
    ["converge", "--lock-timeout", "nan"],
    ["converge", "--lock-timeout=-1"],
    ["converge", "--lock-timeout="],
    ["converge", "--format", "xml"],
    ["converge", "--format=JSON"],
    ["converge", "a.yaml", "--check", "b.yaml"],
    ["converge", "a", "--root", "R", "b"],
    ["validate", "--phase", "x"],
    ["validate", "--check"],
    ["show", "a", "--var", "x=1", "b"],
    ["drops", "--group", "65536"],
    ["drops", "--group", "-1"],
    ["drops", "--count", "0"],
    ["drops", "--count", "1.5"],
    ["drops", "--timeout", "-1"],
    ["drops", "--check"],
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_fast_parser_accepts_and_equals_argparse(argv: list[str]) -> None:
    got = fast(argv)
    assert got is not None
    assert got == reference(argv)


@pytest.mark.parametrize("argv", FALLBACK, ids=" ".join)
def test_fast_parser_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert cli.fast_parse(argv) is None


@pytest.mark.parametrize("argv", [
    ["converge", "--root", "R", "--phase", "network", "states"],
    ["converge", "--check", "--diff"],
    ["converge", "--format", "json", "--detailed-exitcode", "--lock-timeout", "5", "x.yaml"],
    ["converge", "--phase", "network", "/opt/statekit/states"],
    ["converge", "--phase", "auth", "--format", "json", "states"],
    ["validate", "states"],
    ["show", "--var", "a=1", "states"],
], ids=" ".join)
def test_the_shipped_callers_take_the_fast_path(argv: list[str]) -> None:
    args = cli.fast_parse(argv)
    assert args is not None
    assert vars(args) == reference(argv)


def test_defaults_are_argparse_defaults_and_fresh_lists() -> None:
    first = cli.fast_parse(["converge"])
    assert first is not None
    assert vars(first) == {
        "command": "converge", "paths": [], "var": [], "phase": [], "check": False,
        "diff": False, "format": "text", "root": "/", "detailed_exitcode": False,
        "lock_file": None, "lock_timeout": 30.0, "yes": False, "require_lockdown": False}
    first.phase.append("x")
    second = cli.fast_parse(["converge"])
    assert second is not None
    assert second.phase == []
    assert vars(cli.fast_parse(["show"]) or {}) == {"command": "show", "paths": [], "var": [],
                                                    "id": [], "format": "yaml"}


COMMANDS = ["converge", "validate", "show", "drops"]
OPTIONS = [
    "--var", "--phase", "--check", "--diff", "--format", "--root", "--detailed-exitcode",
    "--lock-file", "--lock-timeout", "--group", "--count", "--timeout",
    "--v", "--ph", "--ch", "--d", "--di", "--de", "--f", "--r", "--l", "--lock", "--lock-f",
    "--lock-t", "--det", "--h", "--he",
    "--nope", "-x", "-c", "-h", "--help", "-", "--", "---check", "-hx",
]
VALUES = [
    "a", "a.yaml", "states", "dir/x", "json", "text", "xml", "JSON", "5", "0.5", "-5", "-1.5",
    "1e3", "inf", " 2 ", "1_0", "", "x=1", "a=b=c", "a b", "-a b", "--check", "--root",
    "converge", "show", "=",
]
TOKENS = st.one_of(
    st.sampled_from(OPTIONS),
    st.sampled_from(VALUES),
    st.builds("{}={}".format, st.sampled_from(OPTIONS), st.sampled_from(VALUES)),
)
HEAD = st.one_of(st.sampled_from(COMMANDS), st.sampled_from(["nope", "", "--root", "-h"]))


def _agree(argv: list[str]) -> None:
    got, want = fast(argv), reference(argv)
    if want is None:  # argparse exits (usage error, --help): the fast parser must not decide
        assert got is None
    else:
        assert got is None or got == want


@settings(max_examples=1500, deadline=None)
@given(st.lists(TOKENS, max_size=8).flatmap(
    lambda rest: HEAD.map(lambda head: [head, *rest])))
@example(["converge", "a.yaml", "--check", "b.yaml"])
@example(["converge", "--lock-timeout", "-5"])
@example(["converge", "--root", "--check"])
def test_fast_is_none_or_argparse(argv: list[str]) -> None:
    _agree(argv)


def _option_with_value(option: str, value: str, joined: bool) -> list[str]:
    return [f"{option}={value}"] if joined else [option, value]


WELL_FORMED = st.lists(st.one_of(
    st.sampled_from(["--check", "--diff", "--detailed-exitcode"]).map(lambda o: [o]),
    st.builds(_option_with_value, st.sampled_from(
        ["--var", "--phase", "--format", "--root", "--lock-file", "--lock-timeout"]),
        st.sampled_from(VALUES), st.booleans()),
    st.lists(st.sampled_from(["a", "states", "b.yaml", ""]), min_size=1, max_size=3),
), max_size=6).map(lambda parts: [token for part in parts for token in part])


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(COMMANDS), WELL_FORMED)
def test_fast_is_none_or_argparse_on_mostly_valid_lines(command: str, rest: list[str]) -> None:
    _agree([command, *rest])


def test_an_abbreviation_goes_through_argparse() -> None:
    argv = ["converge", "--ch"]
    assert cli.fast_parse(argv) is None
    args = cli.parse_args(argv)
    assert vars(args) == reference(argv)
    assert args.check is True


def test_parse_args_reads_sys_argv_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["statekit", "validate", "x"])
    assert vars(cli.parse_args()) == {"command": "validate", "paths": ["x"], "var": []}


def _statekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statekit", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=False)


def test_a_usage_error_exits_3_with_the_usage() -> None:
    proc = _statekit("converge", "--hlep")
    assert proc.returncode == contract.EXIT_INVALID
    assert proc.stderr.startswith("usage: statekit")
    assert "unrecognized arguments: --hlep" in proc.stderr


def test_help_lists_the_subcommands() -> None:
    proc = _statekit("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: statekit")
    for command in COMMANDS:
        assert command in proc.stdout


# Imports cli and parses a common line in a fresh interpreter; prints the modules that
# came in with it. STUB: replace statekit.errors and statekit.masking (not cli's own
# imports) by empty stand-ins, so that only cli's own imports are measured.
_PROBE = """
import json, sys
if sys.argv[1] == "stub":
    for name, attrs in (("statekit.errors", ("StateError", "StatekitError")),
                        ("statekit.masking", ("Masker",))):
        module = type(sys)(name)
        for attr in attrs:
            setattr(module, attr, type(attr, (Exception,), {}))
        sys.modules[name] = module
before = set(sys.modules)
from statekit.cli import fast_parse
args = fast_parse(["converge", "--root", "/tmp", "--phase", "network", "--check", "states"])
assert args is not None and args.phase == ["network"], args
print(json.dumps(sorted(set(sys.modules) - before)))
"""
HEAVY = {"argparse", "re", "typing", "enum", "gettext", "collections", "collections.abc",
         "locale", "shutil"}


def _new_modules(mode: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=True)
    return set(json.loads(proc.stdout))


def test_cli_itself_imports_nothing_heavy() -> None:
    assert _new_modules("stub") & HEAVY == set()


def test_the_fast_path_never_imports_argparse() -> None:
    # re/typing may still come from statekit.errors or statekit.masking (not cli's own)
    assert _new_modules("real") & {"argparse", "gettext"} == set()
