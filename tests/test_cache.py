"""The compiled-program cache: hits when nothing changed, never holds a secret."""

from __future__ import annotations

import datetime
import marshal
import os
from pathlib import Path
from types import MappingProxyType

import pytest

from statekit import cache, loader
from statekit.model import Program, State
from tests.conftest import REPO, statekit, write

STATES = """\
phases: [a]
secrets: [TOKEN]
states:
  - id: f
    type: env_file
    phase: a
    path: /etc/f
    entries: {A: "{{ env.VALUE }}"}
"""


def cache_file(root: Path) -> Path:
    return root / "run/statekit/program.cache"


def test_cache_written_and_invalidated(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    assert statekit(args, env={"VALUE": "1"}).returncode == 0
    cached = cache_file(root)
    assert cached.exists() and (cached.stat().st_mode & 0o777) == 0o600
    first = cached.stat().st_ino
    assert "ok=1" in statekit(args, env={"VALUE": "1"}).stdout
    assert cached.stat().st_ino == first  # a hit rewrites nothing (a write is a rename)
    assert "changed=1" in statekit(args, env={"VALUE": "2"}).stdout  # env change: a miss
    assert (root / "etc/f").read_text() == "A=2\n"
    write(path, STATES.replace("A:", "B:"))  # file change: a miss
    assert "changed=1" in statekit(args, env={"VALUE": "2"}).stdout
    assert (root / "etc/f").read_text() == "B=2\n"


def test_no_cache_when_a_secret_is_set(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    statekit(["converge", "--root", str(root), str(path)], env={"TOKEN": "s3cr3t-token"})
    assert not cache_file(root).exists()


def test_check_mode_writes_no_cache(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    statekit(["converge", "--check", "--root", str(root), str(path)])
    assert list(root.iterdir()) == []


def test_untrusted_cache_is_ignored(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    statekit(args, env={"VALUE": "1"})
    cached = cache_file(root)
    os.chmod(cached, 0o666)
    cached.write_bytes(cached.read_bytes()[:-20] + b"garbage-garbage-garb")
    result = statekit(args, env={"VALUE": "1"})
    assert result.returncode == 0 and "ok=1" in result.stdout


def test_unrelated_environment_does_not_miss(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    statekit(args, env={"VALUE": "1", "UNRELATED": "a"})
    first = cache_file(root).read_bytes()
    assert first.split(b"\n")[2] == b"TOKEN\0VALUE"  # the variables read, secrets too
    inode = cache_file(root).stat().st_ino
    statekit(args, env={"VALUE": "1", "UNRELATED": "b"})
    assert cache_file(root).stat().st_ino == inode  # a hit: not rewritten


# --- the marshal codec -------------------------------------------------------------------

SHIPPED = [[REPO / "states" / "network.yaml", REPO / "states" / "telemetry.yaml"],
           [REPO / "states" / "examples" / "coredns-reload.yaml"]]
TELEMETRY_ON = {"GRAFANA_OTLP_ENDPOINT": "https://otlp.example.net/otlp",
                "GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": "glc_token-for-codec"}


def shape(value: object) -> object:
    """Everything a program holds, as comparable plain data (types included)."""
    if isinstance(value, (State, Program)):
        return (type(value).__name__, {k: shape(getattr(value, k)) for k in value.__slots__})
    if isinstance(value, tuple):
        return (type(value).__qualname__, [shape(v) for v in value])
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, (dict, MappingProxyType)):
        return (type(value).__name__, {k: shape(v) for k, v in value.items()})
    return (type(value).__name__, value)


@pytest.mark.parametrize("env", [{}, TELEMETRY_ON], ids=["telemetry-off", "telemetry-on"])
def test_codec_round_trips_the_shipped_programs(env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    specs = []
    for files in SHIPPED:
        program = loader.load([str(p) for p in files], {})
        back = cache.decode(marshal.loads(marshal.dumps(cache.encode(program))))
        assert shape(back) == shape(program)
        specs += [type(s.spec).__name__ for s in back.states]
    assert {"RuleSpec", "ChainSpec", "ZoneSpec", "SignalSpec", "EnvFileSpec"} <= set(specs)


def test_decoding_names_only_statekit_records() -> None:
    for name in ("os:system", "builtins:eval", "statekit.model:State.__init__",
                 "statekit.cli:Arg"):
        with pytest.raises(TypeError):
            cache.decode((..., name, ()))


def test_what_marshal_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        cache.encode({"when": datetime.date(2024, 1, 1)})  # save() then caches nothing
