"""Item 8 of the hardening pass: check and apply agree; typos and timeouts are explained.

``jump: accept`` (lower case) passed ``--check`` and failed the real converge: both now
refuse it the same way (exit 3) before anything is touched. ``--var`` with a typo was
ignored: it is now exit 3 naming the closest declared var. A ``command`` killed at its
``timeout`` dropped its output: every failure now shows the tail of stdout and stderr,
secrets masked, in the text and the JSON report, with argv quoted as a shell reads it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statekit.digits import shell_join
from statekit.masking import host_key, keyed_tag
from tests.conftest import statekit, write
from tests.hardening import clean

TOKEN = "glc_hardening_consistency_77aa"
RULE = """\
phases: [network]
vars: {domains: [a.example.test]}
states:
  - id: fw
    type: iptables_rule
    phase: network
    chain: OUTPUT
    destination: 192.0.2.1
    jump: accept
"""
COMMAND = """\
phases: [run]
secrets: [TOKEN]
states:
  - id: slow
    type: command
    phase: run
    argv: [sh, -c, "echo out-$0; echo err-$0 >&2; {tail}", "{{{{ env.TOKEN }}}}"]
    timeout: 1
"""


def test_lowercase_jump_is_refused_alike_in_check_and_apply(tmp_path: Path,
                                                            root: Path) -> None:
    states = write(tmp_path / "s.yaml", RULE)
    runs = [statekit(["converge", "--root", str(root), *extra, str(states)])
            for extra in (["--check"], [])]
    for run in runs:
        clean(run, 3, "states[fw].jump: 'accept': targets are upper case, write 'ACCEPT'")
    assert runs[0].stderr == runs[1].stderr
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(("var", "hint"), [
    ("doamins", "did you mean 'domains'?"), ("zzz", "(declared: domains)")])
def test_an_unknown_var_is_refused_naming_the_closest(tmp_path: Path, root: Path, var: str,
                                                      hint: str) -> None:
    states = write(tmp_path / "s.yaml", RULE.replace("accept", "ACCEPT"))
    for command in (["validate"], ["converge", "--check", "--root", str(root)]):
        run = statekit([*command, "--var", f"{var}=[b.example.test]", str(states)])
        clean(run, 3, f"--var {var}: no such var in the state files", hint)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(("tail", "error"), [
    ("sleep 30", "timed out after 1 s"), ("exit 3", "command failed")])
def test_a_failed_command_shows_both_tails_masked(tmp_path: Path, root: Path, tail: str,
                                                  error: str) -> None:
    states = write(tmp_path / "s.yaml", COMMAND.format(tail=tail))
    argv = ["sh", "-c", f"echo out-$0; echo err-$0 >&2; {tail}", TOKEN]
    exit_code = -1 if "sleep" in tail else 3
    text = statekit(["converge", "--root", str(root), str(states)], env={"TOKEN": TOKEN})
    shown = keyed_tag(TOKEN, host_key(str(root), create=False))  # the key it made
    quoted = shell_join(argv).replace(TOKEN, shown)  # quoted, then masked
    expected = (f"{error} (command: {quoted}; exit {exit_code}): err-{shown}; "
                f"stdout: out-{shown}")
    clean(text, 1, expected)
    as_json = statekit(["converge", "--root", str(root), "--format", "json", str(states)],
                       env={"TOKEN": TOKEN})
    clean(as_json, 1)
    assert json.loads(as_json.stdout)["states"][0]["error"] == expected
    for run in (text, as_json):
        assert TOKEN not in run.output


@given(st.lists(st.text(), max_size=4))
def test_shell_join_is_shlex_join(argv: list[str]) -> None:
    assert shell_join(argv) == shlex.join(argv)
