"""The floor: the least a converge of the benchmark's work can do, by hand.

``floor.py SPEC.json``: one ``iptables-save -t filter``; the rules missing from it go in
with one ``iptables-restore --noflush`` (none when nothing is missing: the no-op case);
the env file is rewritten (atomically, mode 0600) only when its bytes or mode differ.
No validation, no ownership, no report: what is left of a state engine once everything
but its I/O is taken away. Only the standard library's lightest modules are imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing import at run time: the floor stays lean
    from typing import Any


def rule_line(chain: str, address: str, port: int, tag: str) -> str:
    """One rule exactly as ``iptables-save`` prints it."""
    shown = tag if tag and all(c.isalnum() or c in "-_" for c in tag) else f'"{tag}"'
    return (f"-A {chain} -d {address}/32 -p tcp -m tcp --dport {port} "
            f"-m comment --comment {shown} -j ACCEPT")


def converge_rules(spec: dict[str, Any]) -> int:
    """Add the missing rules with one restore; how many were added."""
    chain, port, tag = str(spec["chain"]), int(spec["port"]), str(spec["tag"])
    wanted = [rule_line(chain, str(a), port, tag) for a in spec["addresses"]]
    saved = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True,
                           text=True, check=True).stdout
    have = set(saved.splitlines())
    missing = [line for line in wanted if line not in have]
    if missing:
        script = "*filter\n" + "".join(f"{line}\n" for line in missing) + "COMMIT\n"
        subprocess.run(["iptables-restore", "--noflush", "--wait"], input=script,
                       text=True, check=True)
    return len(missing)


def converge_file(path: str, content: bytes, mode: int) -> bool:
    """Write ``content`` to ``path`` with ``mode`` unless it is there already."""
    try:
        with open(path, "rb") as f:
            if f.read() == content and os.fstat(f.fileno()).st_mode & 0o7777 == mode:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def main(argv: list[str]) -> int:
    """Converge the rules and the file of the spec file ``argv[0]``."""
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    added = converge_rules(spec)
    wrote = converge_file(str(spec["file"]), str(spec["content"]).encode(),
                          int(spec["mode"]))
    sys.stdout.write(f"floor: {added} rules added, file {'written' if wrote else 'ok'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
