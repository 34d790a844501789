"""The compiled-program cache: a converge that changes nothing stays cheap.

Loading means YAML, JSON Schema and Jinja2: most of a no-op converge's time. The loaded
:class:`~statekit.model.Program` is a pure function of the state files, the ``--var``
overrides, the environment, the user and group databases and statekit itself (and the
Python that runs it: the data is :mod:`marshal`'s), so it is cached under a hash
(BLAKE2b) of all of them in ``/run/statekit/program.cache`` under ``--root`` (directory
0700, file 0600, owner root, never through a symlink). Of the environment, only the
variables the templates read count (the loader records them), so an unrelated variable
does not turn a hit into a miss.

A program that holds any secret value is never cached: secrets stay in memory only.
Check mode reads the cache but never writes it.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
from types import MappingProxyType

from statekit import __version__
from statekit.errors import ApplyError
from statekit.files import STATE_FILE_LIMIT, read_capped, read_path
from statekit.model import Program, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from statekit.files import FileSystem

# hashlib's BLAKE2b from its C module (the very function hashlib exports), without the
# OpenSSL that importing hashlib loads on every start.
try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover -- another Python implementation
    from hashlib import blake2b

CACHE_PATH = "/run/statekit/program.cache"
CACHE_LIMIT = 32 << 20  # a bigger cache file is a miss, never read
_VOLATILE = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})
_MAGIC = b"statekit-program-cache-3\n"


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


def env_key(environ: Mapping[str, str], names: Sequence[str] | None) -> str:
    """The hash of the variables ``names`` (all but a few volatile ones when None)."""
    digest = blake2b()
    chosen = sorted(environ) if names is None else names
    for name in chosen:
        if names is not None or name not in _VOLATILE:
            digest.update(f"{name}={environ.get(name, '')}\0".encode(errors="surrogateescape"))
    return digest.hexdigest()


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _code_stamp() -> str:
    """Changes whenever any of statekit's modules or schemas changes (editable installs)."""
    here = os.path.dirname(__file__)
    parts = []
    for sub in (".", "resources", "schema", "netfilter"):
        try:
            entries = list(os.scandir(os.path.join(here, sub)))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".py", ".json")):
                st = entry.stat()
                parts.append(f"{sub}/{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(sorted(parts))


def load(fs: FileSystem, cache_key: str, environ: Mapping[str, str]) -> Program | None:
    path = fs.host_path(CACHE_PATH)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077
                or not stat.S_ISREG(st.st_mode)):
            return None  # not ours, or others could have written it: ignore
        data = read_capped(fd, CACHE_LIMIT, path)
    except (OSError, ApplyError):  # too large: a miss, rewritten by this converge
        return None
    finally:
        os.close(fd)
    return _unpack(data, cache_key, environ)


def _names(text: str) -> list[str] | None:
    """The header's variable names: ``*`` for all, else NUL-separated (``""``: none)."""
    if text == "*":
        return None
    return text.split("\0") if text else []


def _unpack(data: bytes, cache_key: str, environ: Mapping[str, str]) -> Program | None:
    """The program, if ``data`` was written for this key and this environment."""
    try:
        magic, base, names, env_hash, body = data.split(b"\n", 4)
        if magic + b"\n" != _MAGIC or base.decode() != cache_key:
            return None
        if env_key(environ, _names(names.decode())) != env_hash.decode():
            return None
        program = decode(marshal.loads(body))  # noqa: S302 -- root-only, ours; plain data
    except Exception:  # a damaged cache is a miss, never an error
        return None
    return program if isinstance(program, Program) else None


def save(fs: FileSystem, cache_key: str, environ: Mapping[str, str], program: Program) -> None:
    if program.secrets:
        return
    used = program.env_used
    if used is not None and any("\n" in n or "\0" in n for n in used):
        return  # an odd variable name would not survive the header: do not cache
    names = "*" if used is None else "\0".join(used)
    head = [cache_key, names, env_key(environ, used)]
    try:
        body = marshal.dumps(encode(program))
    except (TypeError, ValueError):  # a value marshal cannot hold (a YAML date, say)
        return
    data = _MAGIC + "\n".join(head).encode() + b"\n" + body
    try:
        fs.write(CACHE_PATH, data, mode=0o600, uid=os.geteuid(), gid=os.getegid(),
                 dir_mode=0o700)
    except Exception:
        return


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
