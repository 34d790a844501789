"""env_file against real files under a temporary --root, checked with testinfra."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Run, statekit, write

pytestmark = pytest.mark.root

TOKEN = "glc_envfile_test_token_1f2e3d"
STATES = """\
phases: [auth]
secrets: [TOKEN]
states:
  - id: otel-env
    type: env_file
    phase: auth
    ensure: "{{ 'present' if env.TOKEN else 'absent' }}"
    path: /tmp/otel/otel-env
    entries:
      CLAUDE_CODE_ENABLE_TELEMETRY: "1"
      OTEL_EXPORTER_OTLP_HEADERS: "Authorization=Basic%20{{ ('42:' ~ env.TOKEN) | b64encode }}"
      PLAIN: "a=b=c"
    sensitive: [OTEL_EXPORTER_OTLP_HEADERS]
"""


@pytest.fixture
def states(tmp_path: Path) -> Path:
    return write(tmp_path / "states" / "env.yaml", STATES)


def converge(states: Path, root: Path, *extra: str, token: str | None = TOKEN) -> Run:
    env = {"TOKEN": token} if token else {}
    return statekit(["converge", "--root", str(root), *extra, str(states)], env=env)


def test_creates_file_with_mode_owner_and_exact_content(states: Path, root: Path,
                                                        local_host: Any) -> None:
    result = converge(states, root)
    assert result.returncode == 0, result.output
    assert "changed=1" in result.stdout
    f = local_host.file(str(root / "tmp/otel/otel-env"))
    assert f.is_file and f.mode == 0o600 and f.user == "root" and f.group == "root"
    assert f.content_string.splitlines() == [
        "CLAUDE_CODE_ENABLE_TELEMETRY=1",
        "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20NDI6Z2xjX2VudmZpbGVfdGVzdF90b2tlbl8xZjJlM2Q=",
        "PLAIN=a=b=c",
    ]
    d = local_host.file(str(root / "tmp/otel"))
    assert d.is_directory and d.mode == 0o700


def test_shell_reader_reads_it_back(states: Path, root: Path, local_host: Any) -> None:
    converge(states, root)
    script = ("while IFS='=' read -r key value; do printf '%s|%s\\n' \"$key\" \"$value\"; "
              f"done < {root}/tmp/otel/otel-env")
    out = local_host.run(script).stdout.splitlines()
    assert out[2] == "PLAIN|a=b=c"
    assert out[0] == "CLAUDE_CODE_ENABLE_TELEMETRY|1"


def test_second_converge_changes_nothing(states: Path, root: Path) -> None:
    converge(states, root)
    before = os.stat(root / "tmp/otel/otel-env")
    result = converge(states, root, "--detailed-exitcode")
    assert result.returncode == 0, result.output
    assert "ok=1 changed=0 failed=0 skipped=0" in result.stdout
    after = os.stat(root / "tmp/otel/otel-env")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_check_mode_changes_nothing_and_masks(states: Path, root: Path) -> None:
    result = converge(states, root, "--check", "--diff", "--detailed-exitcode")
    assert result.returncode == 2, result.output
    assert "would change" in result.stdout
    assert "+CLAUDE_CODE_ENABLE_TELEMETRY=1" in result.stdout
    assert "+OTEL_EXPORTER_OTLP_HEADERS=<secret>" in result.stdout  # no key made: no hash
    assert TOKEN not in result.output and "NDI6Z2xj" not in result.output
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(("drift", "expected"), [
    (lambda p: p.write_text("CLAUDE_CODE_ENABLE_TELEMETRY=0\n"), "-CLAUDE_CODE_ENABLE_TELEMETRY=0"),
    (lambda p: p.chmod(0o644), "mode: 0644 -> 0600"),
    (lambda p: os.chown(p, 1000, 1000), "owner: 1000:1000 -> 0:0"),
])
def test_drift_is_reported_then_repaired(states: Path, root: Path, drift: Any,
                                         expected: str) -> None:
    converge(states, root)
    path = root / "tmp/otel/otel-env"
    drift(path)
    check = converge(states, root, "--check", "--diff")
    assert expected in check.stdout
    assert "would change" in check.stdout
    fixed = converge(states, root)
    assert "changed=1" in fixed.stdout
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert converge(states, root).stdout.endswith("ok=1 changed=0 failed=0 skipped=0\n")


def test_absent_removes_without_knowing_values_and_masks_them(states: Path, root: Path) -> None:
    converge(states, root)
    result = converge(states, root, "--diff", token=None)
    assert "changed=1" in result.stdout
    assert "-OTEL_EXPORTER_OTLP_HEADERS=<secret:" in result.stdout
    assert "-PLAIN=a=b=c" in result.stdout  # the value its state gives: not a secret
    assert "-CLAUDE_CODE_ENABLE_TELEMETRY=1" in result.stdout
    assert not (root / "tmp/otel/otel-env").exists()
    again = converge(states, root, "--detailed-exitcode", token=None)
    assert again.returncode == 0 and "changed=0" in again.stdout


def test_a_removal_masks_only_what_it_cannot_vouch_for(states: Path, root: Path) -> None:
    """A key copied from a secret, not listed as sensitive: its value is unknown to a
    removal that runs without the secret, so it is masked; the state's own values not."""
    copied = 'PLAIN: "a=b=c"\n      COPY: "{{ env.TOKEN }}"'
    write(states, states.read_text().replace('PLAIN: "a=b=c"', copied))
    converge(states, root)
    gone = converge(states, root, "--diff", token=None)
    assert "-PLAIN=a=b=c" in gone.stdout and "-COPY=<secret:" in gone.stdout
    assert TOKEN not in gone.output


TELEMETRY_ON = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": TOKEN,
                "GRAFANA_OTLP_ENDPOINT": "https://otlp.example.test/otlp"}


@pytest.mark.parametrize(("off", "plain"), [
    ({}, True),  # telemetry switched off: the state still gives its constant values
    ({**TELEMETRY_ON, "GRAFANA_INSTANCE_ID": "12x"}, False),  # refused input: it cannot know
])
def test_the_shipped_env_file_removed_shows_its_constants(root: Path, off: dict[str, str],
                                                          plain: bool) -> None:
    """`OTEL_METRICS_EXPORTER=otlp` was shown as `<secret:e81fa7>` on its way out."""
    states = str(REPO / "states" / "telemetry.yaml")
    on = statekit(["converge", "--phase", "auth", "--root", str(root), states], env=TELEMETRY_ON)
    assert on.returncode == 0, on.output
    gone = statekit(["converge", "--phase", "auth", "--diff", "--root", str(root), states],
                    env=off)
    assert gone.returncode == (0 if plain else 3), gone.output
    assert not (root / "tmp/otel/otel-env").exists()
    assert "-OTEL_EXPORTER_OTLP_HEADERS=<secret:" in gone.stdout
    assert ("-OTEL_METRICS_EXPORTER=otlp" in gone.stdout) is plain
    assert ("-OTEL_METRICS_EXPORTER=<secret:" in gone.stdout) is not plain
    header = base64.b64encode(f"123456:{TOKEN}".encode()).decode()
    assert TOKEN not in gone.output and header not in gone.output


@pytest.mark.parametrize("where", ["file", "parent"])
def test_symlink_is_refused(states: Path, root: Path, tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "tmp").mkdir()
    if where == "file":
        (root / "tmp/otel").mkdir(mode=0o700)
        (root / "tmp/otel/otel-env").symlink_to(outside / "victim")
    else:
        (root / "tmp/otel").symlink_to(outside)
    result = converge(states, root)
    assert result.returncode == 1, result.output
    assert "refusing a symlink" in result.stdout
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("inside", [False, True])
def test_ancestor_symlink_is_refused_inside_the_root_too(states: Path, root: Path,
                                                         tmp_path: Path, inside: bool) -> None:
    elsewhere = root / "var" / "tmp" if inside else tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    (root / "tmp").symlink_to(elsewhere)
    result = converge(states, root)
    assert result.returncode == 1
    assert (f"/tmp/otel/otel-env: refusing the symlink /tmp on its path (-> {elsewhere}): "
            "no symlink is followed; give the real path") in result.stdout
    assert list(elsewhere.iterdir()) == []


def test_stale_temporary_file_is_cleaned_by_next_converge(states: Path, root: Path) -> None:
    converge(states, root)
    stale = root / "tmp/otel/.otel-env.statekit-tmp-deadbeef0000"
    stale.write_text("half")
    result = converge(states, root)
    assert "changed=1" in result.stdout
    assert not stale.exists()
    assert "changed=0" in converge(states, root).stdout


def test_existing_directory_mode_is_left_alone_unless_asked(tmp_path: Path, root: Path) -> None:
    (root / "etc/default").mkdir(parents=True, mode=0o755)
    os.chmod(root / "etc/default", 0o755)
    text = ("phases: [a]\nstates:\n  - id: d\n    type: env_file\n    phase: a\n"
            "    path: /etc/default/app\n    mode: '0644'\n    entries: {A: b}\n")
    path = write(tmp_path / "s.yaml", text)
    assert statekit(["converge", "--root", str(root), str(path)]).returncode == 0
    assert stat.S_IMODE(os.stat(root / "etc/default").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "etc/default/app").st_mode) == 0o644
    write(path, text + "    dir_mode: '0700'\n")
    result = statekit(["converge", "--diff", "--root", str(root), str(path)])
    assert "directory mode: 0755 -> 0700" in result.stdout
    assert stat.S_IMODE(os.stat(root / "etc/default").st_mode) == 0o700


def test_null_value_omits_the_key(tmp_path: Path, root: Path) -> None:
    text = ("phases: [a]\nstates:\n  - id: e\n    type: env_file\n    phase: a\n"
            "    path: /e\n    entries:\n      A: '1'\n      B: \"{{ env.B or None }}\"\n"
            "      C: '3'\n    sensitive: [B]\n")
    path = write(tmp_path / "s.yaml", text)
    assert statekit(["converge", "--root", str(root), str(path)]).returncode == 0
    assert (root / "e").read_text() == "A=1\nC=3\n"
    statekit(["converge", "--root", str(root), str(path)], env={"B": "xy"})
    assert (root / "e").read_text() == "A=1\nB=xy\nC=3\n"
