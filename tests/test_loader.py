"""Bad input: exit 3, one line naming file, line and field, and nothing touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from statekit.errors import StateError
from statekit.load import loader
from tests.conftest import statekit, write

GOOD = """\
phases: [network, auth]
vars:
  dir: /etc/app
states:
  - id: app-env
    type: env_file
    phase: auth
    path: "{{ dir }}/env"
    entries:
      A: "1"
"""

# (file text, expected "line: field: message" fragment)
BAD = [
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n"
     "    path: /f\n    mode: '0o7777'\n",
     "7: states[x].mode: '0o7777' is not a valid mode"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n"
     "    path: /f\n    colour: red\n",
     "7: states[x].colour: unknown field"),
    ("phases: [a]\nbogus: 1\n", "2: bogus: unknown field"),
    ("phases: [a]\nstates:\n  - id: Bad_Id\n    type: env_file\n    phase: a\n    path: /f\n",
     "3: states[0].id: 'Bad_Id' is not valid: expected a state id: lower-case "
     "letters, digits, _ and -, starting with a letter or digit"),
    ("phases: [a]\nstates:\n  - id: x\n    type: nope\n    phase: a\n",
     "4: states[x].type: unknown type 'nope' (known: command, "),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: b\n    path: /f\n",
     "5: states[x].phase: unknown phase 'b' (declared: a)"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "  - id: x\n    type: env_file\n    phase: a\n    path: /g\n",
     "7: states[x].id: duplicate id 'x'"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    requires: [ghost]\n", "7: states[x].requires: unknown state 'ghost'"),
    ("phases: [a, b]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    requires: [y]\n  - id: y\n    type: env_file\n    phase: b\n    path: /g\n",
     "7: states[x].requires: 'y' is in phase 'b', which runs after 'a'"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    requires: [y]\n  - id: y\n    type: env_file\n    phase: a\n    path: /g\n"
     "    requires: [x]\n", "states[x].requires: dependency cycle: x -> y -> x"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n"
     "    path: \"{{ nothere }}\"\n", "6: states[x].path: template error: 'nothere' is undefined"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n"
     "    path: \"/{{ 'x' | url_port }}\"\n", "6: states[x].path: template error"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    entries:\n      K: \"a\\nB=2\"\n",
     "states[x].entries.K: a value may not contain a newline"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    entries:\n      lower: x\n",
     "8: states[x].entries.lower: invalid key 'lower': expected a variable name: "
     "upper-case letters"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    ensure: maybe\n", "7: states[x].ensure: 'maybe' is not one of present, absent"),
    ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n    path: /f\n"
     "    owner: no-such-user-here\n", "7: states[x].owner: no such user"),
    ("phases: [a]\nvars:\n  v: \"{{ undefined_thing }}\"\n",
     "3: vars.v: template error: 'undefined_thing' is undefined"),
    ("phases: [a\n", "invalid YAML"),
    ("phases: [a]\nstates:\n  - id: x\n    type: command\n    phase: a\n    argv: ['true']\n"
     "    timeout: soon\n",
     "7: states[x].timeout: 'soon' is a string: expected a number greater than 0"),
    ("phases: [a]\nstates:\n  - id: x\n    type: signal\n    phase: a\n    signal: WAT\n"
     "    process: x\n", "6: states[x].signal: 'WAT' is not a signal name"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_input_exits_3_with_location(tmp_path: Path, root: Path, text: str,
                                         expected: str) -> None:
    path = write(tmp_path / "states" / "app.yaml", text)
    for command in (["validate", str(path)], ["converge", "--root", str(root), str(path)]):
        result = statekit(command)
        assert result.returncode == 3, result.output
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"statekit: {path}:" if "YAML" not in expected
                                   else "statekit: "), lines
        assert expected in lines[0]
        assert "Traceback" not in result.stderr
    assert list(root.iterdir()) == []  # nothing touched, not even the lock file


def test_phase_orders_must_agree(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "phases: [network, auth]\n")
    write(tmp_path / "b.yaml", "phases: [auth, network]\n")
    result = statekit(["validate", str(tmp_path)])
    assert result.returncode == 3
    assert "b.yaml:1: phases: phases ['auth', 'network'] disagree" in result.stderr


def test_files_merge_and_vars_from_other_files(tmp_path: Path) -> None:
    write(tmp_path / "10-vars.yaml", "phases: [a]\nvars:\n  base: /srv\n")
    write(tmp_path / "20-app.yml", GOOD.replace("phases: [network, auth]", "phases: [auth]")
          .replace("vars:\n  dir: /etc/app\n", "").replace("{{ dir }}", "{{ base }}"))
    write(tmp_path / "ignored.txt", "not yaml: [")
    program = loader.load([str(tmp_path)], environ={})
    assert program.phases == ["a", "auth"]
    assert [s.spec.path for s in program.states] == ["/srv/env"]


def test_var_override_is_read_as_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", GOOD)
    program = loader.load([str(path)], overrides={"dir": "/opt/x"}, environ={})
    assert program.states[0].spec.path == "/opt/x/env"
    result = statekit(["show", "--var", "dir=[a, b]", str(path)])
    assert result.returncode == 3
    assert "states[app-env].path" in result.stderr


def test_rendering_errors_are_found_for_every_phase(tmp_path: Path, root: Path) -> None:
    text = GOOD + ("  - id: later\n    type: env_file\n    phase: network\n"
                   "    path: \"{{ missing_var }}\"\n")
    path = write(tmp_path / "s.yaml", text)
    result = statekit(["converge", "--phase", "auth", "--root", str(root), str(path)])
    assert result.returncode == 3
    assert "states[later].path: template error: 'missing_var' is undefined" in result.stderr
    assert list(root.iterdir()) == []


def test_absent_state_needs_only_its_identity(tmp_path: Path) -> None:
    text = ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n"
            "    ensure: absent\n    path: /f\n    mode: 'not-a-mode'\n")
    program = loader.load([str(write(tmp_path / "s.yaml", text))], environ={})
    assert program.states[0].ensure == "absent"


def test_when_false_still_rejects_unknown_fields(tmp_path: Path) -> None:
    text = ("phases: [a]\nstates:\n  - id: x\n    type: env_file\n    phase: a\n"
            "    when: false\n    path: /f\n    typo: 1\n")
    with pytest.raises(StateError, match=r"states\[x\]\.typo: unknown field"):
        loader.load([str(write(tmp_path / "s.yaml", text))], environ={})


def test_templated_types_are_converted(tmp_path: Path) -> None:
    text = ("phases: [a]\nvars:\n  t: '2.5'\n  flag: 'yes'\nstates:\n"
            "  - id: c\n    type: command\n    phase: a\n    argv: ['true']\n"
            "    timeout: '{{ t }}'\n"
            "  - id: s\n    type: signal\n    phase: a\n    signal: HUP\n    process: x\n"
            "    missing_ok: '{{ flag }}'\n")
    program = loader.load([str(write(tmp_path / "s.yaml", text))], environ={})
    assert program.states[0].spec.timeout == 2.5
    assert program.states[1].spec.missing_ok is True


def test_missing_path_is_invalid_input() -> None:
    result = statekit(["validate", "/nonexistent/states"])
    assert result.returncode == 3
    assert "statekit: /nonexistent/states: no such file or directory" in result.stderr


# --- on_invalid_input: absent degrades the file on any error from its input ---------------

OPTIONAL = """\
phases: [a]
on_invalid_input: absent
secrets: [OPT_TOKEN]
vars:
  opt_dir: /etc/opt
states:
  - id: opt-env
    type: env_file
    phase: a
    path: "{{ opt_dir }}/env"
    mode: "{{ env.OPT_MODE or '0600' }}"
    entries:
      TOKEN: "{{ env.OPT_TOKEN }}"
      PORT: "{{ 443 // ((env.OPT_DIVISOR or 1) | int) }}"
  - id: opt-rule
    type: iptables_rule
    phase: a
    chain: OUTPUT
    destination: "{{ env.OPT_DEST or '192.0.2.1' }}"
    jump: ACCEPT
"""
MAIN = "phases: [a]\nstates:\n  - id: main-env\n    type: env_file\n    phase: a\n" \
       "    path: /etc/main/env\n    entries:\n      A: '1'\n"


@pytest.mark.parametrize(("env", "field"), [
    ({"OPT_TOKEN": "x"}, "secrets"),  # a secret too short to mask
    ({"OPT_TOKEN": "caf\udce9-token"}, "secrets"),  # a byte that is not UTF-8
    ({"OPT_MODE": "0o7777"}, "states[opt-env].mode"),  # a FieldError from the type's parse
    ({"OPT_MODE": "abc"}, "states[opt-env].mode"),
    ({"OPT_DEST": "not-an-address"}, "states[opt-rule].destination"),
    ({"OPT_DIVISOR": "0"}, "states[opt-env].entries.PORT"),  # a template error
])
def test_any_error_from_a_degrading_files_input_converges_it_absent(
        tmp_path: Path, env: dict[str, str], field: str) -> None:
    write(tmp_path / "main.yaml", MAIN)
    write(tmp_path / "opt.yaml", OPTIONAL)
    program = loader.load([str(tmp_path)], environ={"OPT_TOKEN": "opt-token-1", **env})
    assert [e.field for e in program.input_errors] == [field]
    assert str(program.input_errors[0]).startswith(f"{tmp_path}/opt.yaml:")
    by_id = {s.id: s for s in program.states}
    assert (by_id["opt-env"].ensure, by_id["opt-rule"].ensure) == ("absent", "absent")
    assert by_id["opt-env"].spec.path == "/etc/opt/env"
    assert by_id["main-env"].ensure == "present"
    assert not {"x", "caf\udce9-token"} & program.secrets


def test_a_degraded_file_that_still_fails_stops_the_run(tmp_path: Path) -> None:
    """Its identity fields need the refused input too: nothing can be removed safely,
    so the error stops everything (once: no endless retry)."""
    text = OPTIONAL.replace('path: "{{ opt_dir }}/env"', 'path: "{{ env.OPT_PATH }}"')
    write(tmp_path / "opt.yaml", text)
    with pytest.raises(StateError, match=r"opt\.yaml:10: states\[opt-env\]\.path: "):
        loader.load([str(tmp_path)], environ={"OPT_TOKEN": "x", "OPT_PATH": "relative"})


def test_a_refused_secret_of_a_file_that_does_not_degrade_stops_the_run(
        tmp_path: Path) -> None:
    write(tmp_path / "opt.yaml", OPTIONAL)
    write(tmp_path / "main.yaml", MAIN.replace("states:", "secrets: [OPT_TOKEN]\nstates:"))
    with pytest.raises(StateError, match="OPT_TOKEN: a secret of 1 character"):
        loader.load([str(tmp_path)], environ={"OPT_TOKEN": "x"})


def test_an_error_in_a_file_that_does_not_degrade_still_stops_the_run(
        tmp_path: Path) -> None:
    write(tmp_path / "opt.yaml", OPTIONAL)
    write(tmp_path / "main.yaml", MAIN.replace("/etc/main/env", "'{{ env.MAIN_PATH }}'"))
    with pytest.raises(StateError, match=r"main\.yaml:6: states\[main-env\]\.path: "):
        loader.load([str(tmp_path)], environ={"OPT_TOKEN": "x", "MAIN_PATH": "rel"})


# --- every input error of the run, each on its own line (issue 22, item 2) --------------

THREE = """\
phases: [a]
states:
  - id: one
    type: env_file
    phase: a
    path: /etc/one.env
    mode: '0o7777'
  - id: two
    type: iptables_rule
    phase: a
    chain: OUTPUT
    jump: ACCEPTT
  - id: three
    type: env_file
    phase: a
    path: /etc/three.env
    colour: red
"""


def test_a_file_with_three_mistakes_reports_three(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", THREE)
    for command in (["validate", str(path)], ["converge", "--root", str(root), str(path)]):
        run = statekit(command)
        assert run.returncode == 3, run.output
        assert run.stderr.splitlines() == [
            f"statekit: {path}:7: states[one].mode: '0o7777' is not a valid mode (an octal "
            "string like '0600')",
            f"statekit: {path}:12: states[two].jump: 'ACCEPTT' is neither a target (ACCEPT, "
            "DROP, REJECT, RETURN, LOG, NFLOG) nor a chain the states declare; did you mean "
            "'ACCEPT'?",
            f"statekit: {path}:17: states[three].colour: unknown field (known: dir_mode, "
            "entries, group, mode, owner, path, sensitive)"]
    assert list(root.iterdir()) == []


def test_a_directory_reports_every_bad_file_and_yaml_stops_only_its_own(
        tmp_path: Path, root: Path) -> None:
    """A file whose YAML does not parse stops there; the others are still checked, and
    what the broken file would have declared (its vars) is not reported again: the state
    that uses ``dir`` stops quietly (its mode is not checked), the others are told."""
    write(tmp_path / "a.yaml", "phases: [a]\nvars:\n  dir: /etc\n  [oops\n")
    write(tmp_path / "b.yaml", THREE.replace("phases: [a]\n", "")
          .replace("/etc/one.env", "'{{ dir }}/one.env'"))
    write(tmp_path / "c.yaml", "phases: [a]\nstates:\n  - id: four\n    type: signal\n"
          "    phase: a\n    signal: WAT\n    process: x\n")
    run = statekit(["converge", "--root", str(root), str(tmp_path)])
    assert run.returncode == 3, run.output
    lines = run.stderr.splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        f"{tmp_path}/a.yaml:4", f"{tmp_path}/b.yaml:11", f"{tmp_path}/b.yaml:16",
        f"{tmp_path}/c.yaml:6"], run.stderr
    assert "invalid YAML at column" in lines[0] and "'dir' is undefined" not in run.stderr
    assert "states[four].signal: 'WAT' is not a signal name" in lines[3]
    assert list(root.iterdir()) == []


def test_a_var_that_fails_is_told_once_not_at_every_use(tmp_path: Path) -> None:
    text = ("phases: [a]\nvars:\n  base: \"{{ nope }}\"\nstates:\n"
            + "".join(f"  - id: e{i}\n    type: env_file\n    phase: a\n"
                      f"    path: \"{{{{ base }}}}/{i}.env\"\n" for i in range(3)))
    with pytest.raises(StateError) as info:
        loader.load([str(write(tmp_path / "s.yaml", text))], environ={})
    assert str(info.value) == f"{tmp_path}/s.yaml:3: vars.base: template error: 'nope' is " \
        "undefined"


def test_at_most_20_lines_then_how_many_more_and_every_one_in_json(
        tmp_path: Path, root: Path) -> None:
    text = "phases: [a]\nstates:\n" + "".join(
        f"  - id: s{i}\n    type: env_file\n    phase: a\n    path: /e{i}\n    bad: 1\n"
        for i in range(25))
    path = write(tmp_path / "s.yaml", text)
    run = statekit(["converge", "--format", "json", "--root", str(root), str(path)])
    assert run.returncode == 3
    lines = run.stderr.splitlines()
    assert len(lines) == 21 and lines[-1] == "statekit: ... and 5 more", run.stderr
    assert all(f"states[s{i}].bad: unknown field" in lines[i] for i in range(20))
    doc = json.loads(run.stdout)
    assert doc["format_version"] == 1 and doc["error"] == doc["errors"][0]
    assert [e["field"] for e in doc["errors"]] == [f"states[s{i}].bad" for i in range(25)]
    assert {e["line"] for e in doc["errors"]} == {7 + 5 * i for i in range(25)}
    assert all(e["exit_code"] == 3 and e["file"] == str(path) for e in doc["errors"])


def test_a_degraded_file_lists_every_error_of_its_input(tmp_path: Path) -> None:
    """on_invalid_input: absent: the file converges absent, each of its errors listed."""
    write(tmp_path / "main.yaml", MAIN)
    write(tmp_path / "opt.yaml", OPTIONAL)
    program = loader.load([str(tmp_path)], environ={
        "OPT_TOKEN": "opt-token-1", "OPT_MODE": "abc", "OPT_DEST": "not-an-address"})
    assert [e.field for e in program.input_errors] == ["states[opt-env].mode",
                                                       "states[opt-rule].destination"]
    assert {s.id: s.ensure for s in program.states} == {
        "main-env": "present", "opt-env": "absent", "opt-rule": "absent"}
