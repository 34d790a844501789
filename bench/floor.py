"""The floor: the least a converge of the benchmark's work can do, by hand.

``floor.py --lockdown SPEC.json``: the lockdown refresh's floor: both filter tables saved
(``iptables-save``, ``ip6tables-save``), each allowlisted name asked once (A over UDP, all
at once, from one socket), the Corefile read; nothing written.

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


def ask_all(resolver: str, names: list[str], timeout: float = 2.0) -> int:
    """One A query per name, all at once, to ``resolver`` over UDP; how many answered."""
    import _socket
    import select
    import time

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        sock.connect((resolver, 53))
        for ident, name in enumerate(names):
            qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
            sock.send(ident.to_bytes(2, "big") + b"\x01\x00\x00\x01\0\0\0\0\0\0"
                      + qname + b"\0\x01\0\x01")
        pending, deadline = set(range(len(names))), time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            if select.select([sock], [], [], deadline - time.monotonic())[0]:
                pending.discard(int.from_bytes(sock.recv(4096)[:2], "big"))
        return len(names) - len(pending)
    finally:
        sock.close()


def lockdown_refresh(spec: dict[str, Any]) -> str:
    """The least a no-op refresh of the lockdown can do: read both filter tables, ask
    every allowlisted name once, read the Corefile; nothing to write."""
    for tool in ("iptables-save", "ip6tables-save"):
        subprocess.run([tool, "-t", "filter"], capture_output=True, check=True)
    answered = ask_all(str(spec["resolver"]), [str(n) for n in spec["names"]])
    with open(str(spec["corefile"]), "rb") as f:
        f.read()
    return f"floor: lockdown, {answered} of {len(spec['names'])} names answered"


def main(argv: list[str]) -> int:
    """Converge the rules and the file of the spec file ``argv[0]`` (or, with
    ``--lockdown SPEC``, the lockdown refresh's floor)."""
    if argv[0] == "--lockdown":
        with open(argv[1], encoding="utf-8") as f:
            sys.stdout.write(lockdown_refresh(json.load(f)) + "\n")
        return 0
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    added = converge_rules(spec)
    wrote = converge_file(str(spec["file"]), str(spec["content"]).encode(),
                          int(spec["mode"]))
    sys.stdout.write(f"floor: {added} rules added, file {'written' if wrote else 'ok'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
