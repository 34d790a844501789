"""Which state files a PATH names: a file as given, a directory's *.yaml/*.yml sorted."""

from __future__ import annotations

import os

from statekit.errors import StateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def collect(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            try:
                entries = os.listdir(path)
            except OSError as exc:  # swapped for a file meanwhile, unreadable...
                raise StateError(f"cannot list the directory: {exc.strerror}", file=path) from None
            names = sorted(n for n in entries if n.endswith((".yaml", ".yml")))
            files.extend(os.path.join(path, n) for n in names)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise StateError("no such file or directory", file=path)
    if not files:
        raise StateError("no state files (*.yaml, *.yml) found", file=", ".join(paths))
    return files
