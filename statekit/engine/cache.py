"""The compiled-program cache: a converge that changes nothing stays cheap.

Loading means YAML, JSON Schema and Jinja2: most of a no-op converge's time. The loaded
:class:`~statekit.program.Program` is a pure function of the state files, the ``--var``
overrides, the environment, the user and group databases and statekit itself (and the
Python that runs it: the data is :mod:`marshal`'s), so it is cached under a hash
(BLAKE2b) of all of them in ``/run/statekit/program.cache`` under ``--root`` (directory
0700, file 0600, owner root, never through a symlink). Of the environment, only the
variables the templates read count (the loader records them), so an unrelated variable
does not turn a hit into a miss.

Secrets never reach the cache, in any form. A state whose spec holds a secret (a value
of a variable the files declare ``secrets``, one of its base64 forms, or a field the type
marks sensitive, such as the env file's ``Authorization`` header) is written *sealed*: its
spec left out. A converge whose phases run a sealed state loads the files again (in
memory); the others, such as the 5-minute ``--phase network`` refresh with telemetry on,
run from the cache. Of a secret variable, the key records only whether it is set, never
its value or a hash of it; the secret values are read from the environment at run time.
A load that finds invalid input removes the cache. Check mode reads the cache but never
writes it.
"""

from __future__ import annotations

import marshal
import os
import sys
from types import MappingProxyType

from statekit import __version__
from statekit.errors import ApplyError
from statekit.host.files import STATE_FILE_LIMIT, read_path
from statekit.program import Program, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from statekit.host.files import FileSystem

# hashlib's BLAKE2b from its C module (the very function hashlib exports), without the
# OpenSSL that importing hashlib loads on every start.
try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover -- another Python implementation
    from hashlib import blake2b

CACHE_PATH = "/run/statekit/program.cache"
CACHE_LIMIT = 32 << 20  # a bigger cache file is a miss, never read
_VOLATILE = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})
_MAGIC = b"statekit-program-cache-4\n"


def key(files: Sequence[str], overrides: Mapping[str, Any]) -> str:
    """The hash of what the program depends on, except the environment."""
    digest = blake2b(f"{__version__}\n{sys.version}\n{_code_stamp()}\n".encode())
    for name in files:
        try:
            data = read_path(name, STATE_FILE_LIMIT)
        except (OSError, ApplyError):  # the loader says why; this key never matches
            data = os.urandom(16)
        digest.update(f"{name}\n".encode() + blake2b(data).digest())
    digest.update(repr(sorted(overrides.items())).encode())
    for db in ("/etc/passwd", "/etc/group"):
        digest.update(_stamp(db).encode())
    return digest.hexdigest()


def env_key(environ: Mapping[str, str], names: Sequence[str] | None,
            secret_names: Sequence[str] = ()) -> str:
    """The hash of the variables ``names`` (all but a few volatile ones when None); of a
    secret one, only whether it is set."""
    digest = blake2b()
    chosen = sorted(environ) if names is None else names
    for name in chosen:
        if name in secret_names:
            digest.update(f"{name}?{'set' if environ.get(name) else ''}\0".encode())
        elif names is not None or name not in _VOLATILE:
            digest.update(f"{name}={environ.get(name, '')}\0".encode(errors="surrogateescape"))
    return digest.hexdigest()


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _code_stamp() -> str:
    """Changes whenever any of statekit's modules or schemas changes (editable installs):
    the .py and .json files of the package and of each of its folders."""
    here = os.path.dirname(os.path.dirname(__file__))  # the package, above engine/
    parts = []
    folders = ["."]
    for sub in folders:  # the package's own folders are appended as they are found
        try:
            entries = list(os.scandir(os.path.join(here, sub)))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".py", ".json")):
                st = entry.stat()
                parts.append(f"{sub}/{entry.name}:{st.st_size}:{st.st_mtime_ns}")
            elif sub == "." and _is_folder(entry):
                folders.append(entry.name)
    return ";".join(sorted(parts))


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """A folder of the package (load, engine, schema...), not ``__pycache__``."""
    return (entry.is_dir(follow_symlinks=False) and entry.name.isidentifier()
            and not entry.name.startswith("_"))


def load(fs: FileSystem, cache_key: str, environ: Mapping[str, str]) -> Program | None:
    """The cached program, or None: missing, too large, damaged, or a file that is not
    ours or that others could have written (read through ``fs``: no symlink followed at
    any component of the path)."""
    try:
        found = fs.read(CACHE_PATH, CACHE_LIMIT).file
    except Exception:  # a symlink, too large, unreadable: a miss, rewritten by this run
        return None
    if found is None or found.uid != os.geteuid() or found.mode & 0o077:
        return None
    return _unpack(found.content, cache_key, environ)


def _names(text: str) -> list[str] | None:
    """A header's variable names: ``*`` for all, else NUL-separated (``""``: none)."""
    if text == "*":
        return None
    return text.split("\0") if text else []


def _unpack(data: bytes, cache_key: str, environ: Mapping[str, str]) -> Program | None:
    """The program, if ``data`` was written for this key and this environment; its
    secret values are read from the environment (they are never in the cache)."""
    try:
        magic, base, names, secret, env_hash, body = data.split(b"\n", 5)
        if magic + b"\n" != _MAGIC or base.decode() != cache_key:
            return None
        secret_names = _names(secret.decode()) or []
        if env_key(environ, _names(names.decode()), secret_names) != env_hash.decode():
            return None
        program = decode(marshal.loads(body))  # noqa: S302 -- root-only, ours; plain data
    except Exception:  # a damaged cache is a miss, never an error
        return None
    if not isinstance(program, Program):
        return None
    program.secrets = {environ[n] for n in program.secret_names if environ.get(n)}
    return program


def save(fs: FileSystem, cache_key: str, environ: Mapping[str, str], program: Program) -> None:
    if program.input_errors:
        remove(fs)  # what an earlier load cached no longer holds
        return
    used = program.env_used
    odd = [*(used or ()), *program.secret_names]
    if any("\n" in n or "\0" in n for n in odd):
        return  # an odd variable name would not survive the header: do not cache
    names = "*" if used is None else "\0".join(used)
    head = [cache_key, names, "\0".join(program.secret_names),
            env_key(environ, used, program.secret_names)]
    try:
        body = marshal.dumps(encode(sealed(program)))
    except (TypeError, ValueError):  # a value marshal cannot hold (a YAML date, say)
        return
    data = _MAGIC + "\n".join(head).encode() + b"\n" + body
    try:
        fs.write(CACHE_PATH, data, mode=0o600, uid=os.geteuid(), gid=os.getegid(),
                 dir_mode=0o700)
    except Exception:
        return


def remove(fs: FileSystem) -> None:
    try:  # noqa: SIM105 -- contextlib stays off the no-op path
        fs.remove(CACHE_PATH)
    except Exception:  # noqa: S110 -- a cache that cannot be removed is not used either
        pass


def sealed(program: Program) -> Program:
    """``program`` as it may be written: no secret values, and every state whose spec
    holds a secret (or a sensitive field) sealed, its spec left out."""
    from statekit import resources
    from statekit.masking import quick_forms

    needles: set[str] = set()
    for secret in program.secrets:  # plain, hex, percent-encoded and base64 forms
        needles |= quick_forms(secret)
    states = [_sealed_copy(s) if s.spec is not None and (
                  any(v for v in resources.get(s.type).secret_values(s.spec))
                  or _holds(encode(s.spec), needles)) else s
              for s in program.states]
    return Program(phases=program.phases, states=states, env_used=program.env_used,
                   secret_names=program.secret_names)


def _sealed_copy(state: State) -> State:
    copy = State.__new__(State)
    for slot in State.__slots__:
        setattr(copy, slot, getattr(state, slot))
    copy.spec, copy.sealed = None, True
    return copy


def _holds(data: Any, needles: set[str]) -> bool:
    """Whether any string (or bytes) in the encoded ``data`` contains a needle."""
    if isinstance(data, str | bytes):
        text = data if isinstance(data, str) else data.decode("latin-1")
        return any(n in text for n in needles)
    if isinstance(data, dict):
        return any(_holds(k, needles) or _holds(v, needles) for k, v in data.items())
    if isinstance(data, list | tuple | set | frozenset):
        return any(_holds(v, needles) for v in data)
    return False


# The program as marshal data. marshal is built in (pickle's C module alone imports
# functools, collections and copyreg: 13 M instructions per start), and it holds the
# plain values; a record, a State, the Program or a read-only mapping becomes
# ``(..., kind, data)``: Ellipsis, which no state file can produce, marks it. Decoding
# only builds statekit's records and model classes: nothing else can be named here.
_PLAIN = (str, int, float, bool, bytes, type(None), frozenset)
_MODEL: dict[str, type[State] | type[Program]] = {"State": State, "Program": Program}


def encode(value: Any) -> Any:
    """``value`` as marshal data; TypeError for what the cache cannot hold."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    if isinstance(value, tuple) and hasattr(kind, "_fields") and (
            kind.__module__.startswith("statekit.")):
        return (..., f"{kind.__module__}:{kind.__qualname__}", tuple(encode(v) for v in value))
    raise TypeError(f"the program cache cannot hold a {kind.__qualname__}")


def _encode_model(value: State | Program) -> Any:
    kind = type(value)
    return (..., kind.__name__, {k: encode(getattr(value, k)) for k in kind.__slots__})


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    list: lambda v: [encode(x) for x in v],
    dict: lambda v: {k: encode(x) for k, x in v.items()},
    tuple: lambda v: tuple(encode(x) for x in v),
    set: set,
    MappingProxyType: lambda v: (..., "mappingproxy", encode(dict(v))),
    State: _encode_model,
    Program: _encode_model,
}


_NESTED = frozenset({tuple, list, dict})


def decode(value: Any) -> Any:
    """What :func:`encode` was given. (Plain items are not passed down again: a program
    of thousands of rules holds tens of thousands of them.)"""
    kind = type(value)
    if kind is tuple:
        if value and value[0] is ...:
            return _decode_object(value[1], value[2])
        return tuple([decode(v) if type(v) in _NESTED else v for v in value])
    if kind is list:
        return [decode(v) if type(v) in _NESTED else v for v in value]
    if kind is dict:
        return {k: decode(v) if type(v) in _NESTED else v for k, v in value.items()}
    return value


def _decode_object(name: str, data: Any) -> Any:
    if name == "mappingproxy":
        return MappingProxyType(decode(data))
    if name in _MODEL:
        obj = _MODEL[name].__new__(_MODEL[name])
        for slot, item in data.items():
            setattr(obj, slot, decode(item))
        return obj
    cls = _RECORDS.get(name) or _record_class(name)
    return cls(*[decode(v) if type(v) in _NESTED else v for v in data])


_RECORDS: dict[str, type[tuple[Any, ...]]] = {}


def _record_class(name: str) -> type[tuple[Any, ...]]:
    """The record class ``module:qualname`` (only statekit's records can be named)."""
    module, _, qualname = name.partition(":")
    if not module.startswith("statekit."):
        raise TypeError(f"{name}: not a statekit record")
    cls = getattr(__import__(module, fromlist=[qualname]), qualname, None)
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"{name}: not a statekit record")
    _RECORDS[name] = cls
    return cls
