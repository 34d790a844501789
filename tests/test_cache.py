"""The compiled-program cache: hits when nothing changed, never holds a secret."""

from __future__ import annotations

import datetime
import marshal
import os
from pathlib import Path
from types import MappingProxyType

import pytest

from statekit.engine import cache
from statekit.load import loader
from statekit.program import Program, State
from tests.conftest import REPO, statekit, write

pytestmark = pytest.mark.root

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


SECRET_STATES = """\
phases: [a, b]
secrets: [TOKEN]
states:
  - id: with-secret
    type: env_file
    phase: a
    path: /etc/f
    entries:
      RAW: "{{ env.TOKEN }}"
      HEADER: "Basic {{ ('123456:' ~ env.TOKEN) | b64encode }}"
    sensitive: [HEADER]
  - id: derived-only
    type: env_file
    phase: a
    path: /etc/g
    entries: {B64: "{{ ('123456:' ~ env.TOKEN) | b64encode }}"}
    sensitive: [B64]
  - id: plain
    type: env_file
    phase: b
    path: /etc/h
    entries: {ENABLED: "{{ 'yes' if env.TOKEN else 'no' }}"}
"""
SECRET = "s3cr3t-token-value"


def secret_forms(secret: str) -> list[bytes]:
    import base64
    import hashlib

    from statekit.masking import base64_forms

    forms = [secret, base64.b64encode(secret.encode()).decode(),
             base64.b64encode(f"123456:{secret}".encode()).decode(),
             hashlib.sha256(secret.encode()).hexdigest(), *base64_forms(secret)]
    return [f.encode() for f in forms]


def test_secrets_never_reach_the_cache_and_their_states_are_sealed(
        tmp_path: Path, root: Path) -> None:
    path = write(tmp_path / "s.yaml", SECRET_STATES)
    args = ["converge", "--root", str(root), str(path)]
    assert statekit(args, env={"TOKEN": SECRET}).returncode == 0
    data = cache_file(root).read_bytes()
    for form in secret_forms(SECRET):
        assert form not in data, form
    program = cache.load(_fs(root), cache.key([str(path)], {}),  # type: ignore[arg-type]
                         {"TOKEN": SECRET})
    assert program is not None
    assert {s.id: s.sealed for s in program.states} == {
        "with-secret": True, "derived-only": True, "plain": False}
    assert program.secrets == {SECRET}  # read from the environment, in memory
    # phase b runs from the cache; phase a loads the files again, and still works
    assert "ok=1" in statekit([*args, "--phase", "b"], env={"TOKEN": SECRET}).stdout
    assert "ok=2" in statekit([*args, "--phase", "a"], env={"TOKEN": SECRET}).stdout
    rotated = statekit([*args, "--phase", "a"], env={"TOKEN": SECRET + "-2"})
    assert "changed=2" in rotated.stdout  # a new value: sealed states see it
    assert SECRET not in rotated.stdout + rotated.stderr


def _fs(root: Path) -> object:
    from statekit.host.files import FileSystem

    return FileSystem(str(root))


def test_the_cache_keys_a_secret_on_its_presence_only(tmp_path: Path, root: Path) -> None:
    a = cache.env_key({"TOKEN": "one", "V": "1"}, ["TOKEN", "V"], ["TOKEN"])
    assert a == cache.env_key({"TOKEN": "two", "V": "1"}, ["TOKEN", "V"], ["TOKEN"])
    assert a != cache.env_key({"TOKEN": "", "V": "1"}, ["TOKEN", "V"], ["TOKEN"])
    assert a != cache.env_key({"TOKEN": "one", "V": "2"}, ["TOKEN", "V"], ["TOKEN"])


def test_invalid_input_removes_the_cache(tmp_path: Path, root: Path) -> None:
    good = {"GRAFANA_INSTANCE_ID": "123456", "GRAFANA_API_TOKEN": SECRET,
            "GRAFANA_OTLP_ENDPOINT": "https://otlp.example.test/otlp"}
    args = ["converge", "--phase", "auth", "--root", str(root),
            str(REPO / "states" / "telemetry.yaml")]
    assert statekit(args, env=good).returncode == 0
    data = cache_file(root).read_bytes()
    for form in secret_forms(SECRET):
        assert form not in data, form
    bad = statekit(args, env={**good, "GRAFANA_OTLP_ENDPOINT": "http://x.example/otlp"})
    assert bad.returncode == 3
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


def test_the_code_stamp_covers_every_module_and_schema() -> None:
    """An edit to any of statekit's files (an editable install) misses the cache,
    whatever folder the file sits in."""
    package = REPO / "statekit"
    files = {f"{p.parent.relative_to(package)}/{p.name}" for p in package.rglob("*")
             if p.suffix in (".py", ".json") and "__pycache__" not in p.parts}
    stamped = {part.rsplit(":", 2)[0] for part in cache._code_stamp().split(";")}
    assert "engine/cache.py" in files
    assert stamped == files


def test_decoding_names_only_statekit_records() -> None:
    for name in ("os:system", "builtins:eval", "statekit.program:State.__init__",
                 "statekit.cli:Arg"):
        with pytest.raises(TypeError):
            cache.decode((..., name, ()))


def test_what_marshal_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        cache.encode({"when": datetime.date(2024, 1, 1)})  # save() then caches nothing


def test_a_cache_reached_through_a_symlinked_directory_is_never_read(
        tmp_path: Path, root: Path) -> None:
    """The cache is read and removed like every other file: no symlink is followed at
    any component of its path (a planted ``run -> elsewhere`` is a miss)."""
    path = write(tmp_path / "s.yaml", STATES)
    args = ["converge", "--root", str(root), str(path)]
    assert statekit(args, env={"VALUE": "1"}).returncode == 0
    program = loader.load([str(path)], environ={"VALUE": "1"})
    from statekit.host.files import FileSystem
    from statekit.load.discover import collect

    key = cache.key(collect([str(path)]), {})
    fs = FileSystem(str(root))
    assert cache.load(fs, key, {"VALUE": "1"}) is not None  # the control: a hit
    elsewhere = tmp_path / "elsewhere"
    (root / "run").rename(elsewhere)
    (root / "run").symlink_to(elsewhere)
    assert cache.load(fs, key, {"VALUE": "1"}) is None
    cache.remove(fs)
    assert (elsewhere / "statekit/program.cache").exists()  # not removed through it
    assert program.states[0].id == "f"
