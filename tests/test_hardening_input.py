"""Item 6 of the hardening pass: hostile YAML, options and environment.

An alias bomb, a recursive alias and deep nesting (in a state file and in ``--var``),
``!!python/...`` tags that would run a command, ``--lock-timeout nan|inf|-1``, a
non-UTF-8 input variable, a read-only file system and a directory swapped for a symlink
mid-write: each is a one-line error (exit 3 for input, 1 for the machine), quickly,
never "internal error", nothing written outside the root.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from statekit import cli, testhook
from statekit.errors import StateError
from statekit.load import loader
from tests.conftest import REPO, Run, record_output, statekit, write
from tests.hardening import clean, tree

pytestmark = pytest.mark.root

LAUGHS = ("phases: [p]\nstates: []\nvars:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol]\n"
          + "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)))
ENV_STATE = """\
phases: [auth]
states:
  - id: env
    type: env_file
    phase: auth
    path: /tmp/otel/otel-env
    entries: {{OTEL_LOG_TOOL_CONTENT: "0"}}
{extra}"""


def test_an_alias_bomb_exits_3_within_a_second(tmp_path: Path, root: Path) -> None:
    bomb = write(tmp_path / "bomb.yaml", LAUGHS)
    start = time.monotonic()
    with pytest.raises(StateError, match="aliases expand the document more than 10 times"):
        loader.load([str(bomb)], environ={})
    assert time.monotonic() - start < 1.0
    run = statekit(["converge", "--root", str(root), str(bomb)])
    clean(run, 3, f"{bomb}:4: invalid YAML: aliases expand the document")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(("text", "message"), [
    ("phases: [p]\nx: &x [*x]\n", "nested deeper than 64 levels"),
    ("phases: [p]\nx: " + "[" * 3000 + "]" * 3000 + "\n", "invalid YAML"),
    ("phases: [p]\nstates: !!python/object/apply:os.system [\"touch {marker}\"]\n",
     "unsupported YAML tag '!!python/object/apply:os.system'"),
    ("phases: [p]\nstates:\n  - !!python/object:os.system {{cmd: x}}\n",
     "unsupported YAML tag '!!python/object:os.system'"),
    ("phases: [p]\nx: !!python/name:os.system\n", "unsupported YAML tag '!!python/name:os.system'"),
    ("phases: [p]\nx: !custom 1\n", "unsupported YAML tag '!custom'"),
    ("phases: [p]\nx: !!binary aGk=\n", "unsupported YAML tag '!!binary'"),
])
def test_hostile_yaml_is_invalid_input(tmp_path: Path, root: Path, text: str,
                                       message: str) -> None:
    marker = tmp_path / "marker"
    states = write(tmp_path / "s.yaml", text.format(marker=marker))
    run = statekit(["converge", "--root", str(root), str(states)])
    clean(run, 3, message)
    assert len(run.stderr.splitlines()) == 1
    assert not marker.exists()
    assert list(root.iterdir()) == []


def test_a_var_bomb_is_invalid_input(tmp_path: Path, root: Path) -> None:
    states = write(tmp_path / "s.yaml", "phases: [p]\nvars: {x: 1}\nstates: []\n")
    value = LAUGHS.split("vars:\n", 1)[1].replace("  l", "l")
    value = "{" + ", ".join(value.splitlines()) + "}"
    start = time.monotonic()
    run = statekit(["converge", "--root", str(root), "--var", f"x={value}", str(states)])
    clean(run, 3, "--var x: VALUE is not valid YAML: invalid YAML: aliases expand")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e400", "NaN"])
def test_a_lock_timeout_that_never_ends_is_a_usage_error(root: Path, value: str) -> None:
    run = statekit(["converge", "--root", str(root), f"--lock-timeout={value}", "x.yaml"])
    clean(run, 3, "argument --lock-timeout: ", "is not a number of seconds (finite, 0 or more)")
    assert run.stdout == ""


@pytest.mark.parametrize("name", ["GRAFANA_API_TOKEN", "GRAFANA_OTLP_ENDPOINT",
                                  "OTEL_RESOURCE_ATTRIBUTES"])
def test_a_non_utf8_input_variable_exits_3_naming_it(root: Path, name: str) -> None:
    env = {b"PATH": b"/usr/bin:/bin", b"GRAFANA_INSTANCE_ID": b"123456",
           b"GRAFANA_API_TOKEN": b"glc_secret_token",
           b"GRAFANA_OTLP_ENDPOINT": b"https://otlp-gateway-prod-us-west-2.grafana.net/otlp"}
    env[name.encode()] = b"caf\xe9\xff"
    proc = subprocess.run([sys.executable, "-m", "statekit", "converge", "--root", str(root),
                           "--phase", "auth", str(REPO / "states")], capture_output=True,
                          env=env, cwd=REPO, timeout=60, check=False)
    run = Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    record_output(run.stdout, run.stderr)
    clean(run, 3, f"environment variable {name} is not valid UTF-8 text")
    assert "glc_secret_token" not in run.output
    assert not (root / "tmp").exists()  # telemetry off: no env file


def test_a_read_only_file_system_names_the_path_and_operation(tmp_path: Path,
                                                              root: Path) -> None:
    states = write(tmp_path / "s.yaml", ENV_STATE.format(extra=""))
    (root / "tmp").mkdir()
    script = (f'mount --bind {root}/tmp {root}/tmp && mount -o remount,bind,ro {root}/tmp && '
              f'exec {sys.executable} -m statekit converge --root {root} {states}')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    clean(run, 1, "/tmp/otel/otel-env: cannot write: Read-only file system (otel)")
    assert list((root / "tmp").iterdir()) == []


def test_a_directory_swapped_for_a_symlink_mid_write(tmp_path: Path, root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    before = tree(outside)
    states = write(tmp_path / "s.yaml", ENV_STATE.format(extra=""))
    (root / "tmp").mkdir()
    real_point = testhook.point

    def race(kind: str, what: str) -> None:
        if kind == "mkdir" and what == "otel":  # between the lookup and the mkdir
            (root / "tmp/otel").symlink_to(outside)
        real_point(kind, what)

    monkeypatch.setattr(testhook, "point", race)
    monkeypatch.setenv("STATEKIT_NO_CACHE", "1")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["converge", "--root", str(root), str(states)])
    run = Run(code, out.getvalue(), err.getvalue())
    record_output(run.stdout, run.stderr)
    clean(run, 1, "/tmp/otel/otel-env: cannot write: File exists (otel)")
    assert tree(outside) == before


# --- issue 19, item 8: template work and ignore patterns are bounded --------------------

TEMPLATE_STATE = """\
phases: [network]
states:
  - id: app
    type: env_file
    phase: network
    path: /etc/app.env
    entries:
      A: "{template}"
"""
HOSTILE_TEMPLATES = [  # issue 19: 3.9 GB and 19 s; over 20 s
    ("{{ 'x' * 1000000000 }}", "'*' would make a value of 1000000000 characters"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
     "range() would give more than 100000 numbers in all"),
]


@pytest.mark.parametrize(("template", "message"), HOSTILE_TEMPLATES)
def test_a_template_that_would_run_away_is_exit_3_at_once(tmp_path: Path, root: Path,
                                                          template: str, message: str) -> None:
    from tests.test_hardening_reads import measured

    states = write(tmp_path / "s.yaml", TEMPLATE_STATE.format(template=template))
    start = time.monotonic()
    run, kib = measured(["converge", "--root", str(root), str(states)])
    elapsed = time.monotonic() - start
    clean(run, 3, f"{states}:8: states[app].entries.A: template error: {message}",
          "templates compute names and small values")
    assert len(run.stderr.splitlines()) == 1
    assert list(root.iterdir()) == []
    print(f"\n{template[:30]}...: exit 3 in {elapsed:.2f} s (interpreter included), "
          f"peak {kib // 1024} MiB")
    assert kib < 100 * 1024 and elapsed < 5
