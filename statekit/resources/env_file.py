"""``env_file``: a ``KEY=value`` file (no quoting), root-only by default, written atomically.

Exactly what ``while IFS='=' read -r key value`` reads back: one entry a line, in order,
split at the first ``=``. Values of ``sensitive`` keys are masked in every output.
"""

from __future__ import annotations

from statekit.errors import FieldError
from statekit.host.files import MAX_READ, ReadResult
from statekit.host.host import Host
from statekit.masking import tag
from statekit.resources.base import Meta, Plan, Resource
from statekit.resources.managed_file import (
    FileSpec,
    apply_file,
    parse_mode,
    parse_owner,
    plan_absent,
    plan_file,
    predict_file,
    read_file,
)
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

# Every character str.splitlines() breaks at, and NUL: one entry a line for any reader.
_FORBIDDEN = frozenset("\n\r\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class EnvFileSpec(Record):
    path: str
    present: bool
    #: the entries to write; of a removal, those its state gives (hints: see display)
    entries: tuple[tuple[str, str], ...] = ()
    sensitive: frozenset[str] = frozenset()
    file: FileSpec | None = None

    def display(self, content: bytes) -> str:
        """The file's text with sensitive values masked (for diffs).

        A removal (``ensure: absent``) does not know the values it removes. It shows a
        value only when its state gives that very value for that key, and the key is not
        ``sensitive`` (``OTEL_METRICS_EXPORTER=otlp``); every other value is masked (a
        token copied under another key, a value its state no longer knows): a removed
        secret is never printed on its way out.
        """
        vouched = None if self.present else dict(self.entries)
        out = []
        for line in content.decode("utf-8", "replace").splitlines(keepends=True):
            key, sep, value = line.partition("=")
            value = value.rstrip("\n")
            masked = sep and (key in self.sensitive or (
                vouched is not None and vouched.get(key) != value))
            out.append(f"{key}={tag(value)}\n" if masked else line)
        return "".join(out)


def _hinted(hints: Mapping[str, Any]) -> EnvFileSpec:
    """What a removal's unvalidated fields say: the entries it gives (never a sensitive
    one's value: a removal holds no secret of its own) and which keys are sensitive; all
    of it ignored unless well formed."""
    entries, sensitive = hints.get("entries"), hints.get("sensitive")
    if not isinstance(entries, dict) or not isinstance(sensitive, list | type(None)):
        return EnvFileSpec(path="", present=False)
    keys = frozenset(k for k in sensitive or () if isinstance(k, str))
    pairs = tuple((k, v) for k, v in entries.items()
                  if isinstance(k, str) and isinstance(v, str) and k not in keys)
    return EnvFileSpec(path="", present=False, entries=pairs, sensitive=keys)


def render(entries: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in entries).encode()


class EnvFile(Resource[EnvFileSpec, ReadResult]):
    type_name = "env_file"
    identity_fields = frozenset({"path"})

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> EnvFileSpec:
        path = fields["path"]
        if not meta.present:
            return _hinted(meta.hints)._replace(path=path)
        entries = tuple((str(k), str(v)) for k, v in fields["entries"].items()
                        if v is not None)  # null omits the key, like Ansible's `omit`
        for key, value in entries:
            if not _FORBIDDEN.isdisjoint(value):
                raise FieldError(f"entries.{key}", "a value may not contain a newline, "
                                 "carriage return, Unicode line separator or NUL (the "
                                 "reader splits on lines)")
        sensitive = frozenset(fields["sensitive"])
        unknown = sensitive - set(fields["entries"])
        if unknown:
            raise FieldError("sensitive", f"not an entry: {', '.join(sorted(unknown))}")
        spec = FileSpec(
            path=path, content=render(entries), mode=parse_mode(fields["mode"], "mode"),
            uid=parse_owner(fields["owner"], "owner"),
            gid=parse_owner(fields["group"], "group", group=True),
            dir_mode=parse_mode(fields["dir_mode"], "dir_mode"),
            enforce_dir_mode="dir_mode" in meta.given,
        )
        return EnvFileSpec(path=path, present=True, entries=entries, sensitive=sensitive,
                           file=spec)

    def secret_values(self, spec: EnvFileSpec) -> Iterable[str]:
        return [v for k, v in spec.entries if k in spec.sensitive]

    def read(self, spec: EnvFileSpec, host: Host) -> ReadResult:
        # a file over the cap is not read into memory: its plan replaces it whole
        return read_file(host, spec.path, MAX_READ, oversize_ok=True)

    def plan(self, spec: EnvFileSpec, current: ReadResult) -> Plan:
        if spec.file is None:
            return plan_absent(spec.path, current, spec.display)
        return plan_file(spec.file, current, spec.display)

    def predict(self, spec: EnvFileSpec, plan: Plan, host: Host) -> None:
        predict_file(plan, host)

    def apply(self, spec: EnvFileSpec, plan: Plan, host: Host) -> None:
        if spec.file is None:
            host.fs.remove(spec.path)
        else:
            apply_file(spec.file, host)
