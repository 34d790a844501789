#!/usr/bin/env python3
"""Fetch a pinned Go toolchain through the Go module proxy, verified, into a directory.

    scripts/go_toolchain.py --version go1.26.8 --sha256 HEX --dest .tools/go

The Go project publishes each release as the module ``golang.org/toolchain`` (version
``v0.0.1-<goversion>.<goos>-<goarch>``); the module proxy serves it as a module zip like
any other module. This is what ``GOTOOLCHAIN=go1.x.y`` does inside a new enough ``go``
command; Debian 12's Go (1.19) predates GOTOOLCHAIN, so the build does it here instead.

The proxy is the first http(s) entry of ``$GOPROXY``, or of ``go env GOPROXY`` (the
stock default) when the variable is unset. Trust comes from the pinned SHA-256 of the
zip, not from the proxy or from whatever ``go`` is on PATH: a zip that does not match is
refused and nothing is installed. A no-op when ``DEST/VERSION`` already names the version.
Prints the path of the ``go`` binary. Only the standard library: no curl, no unzip.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

MODULE = "golang.org/toolchain"
CHUNK = 1 << 20


class ToolchainError(Exception):
    """A toolchain that cannot be fetched or does not verify."""


def module_version(go_version: str) -> str:
    """``go1.26.8`` -> ``v0.0.1-go1.26.8.linux-amd64`` for this machine."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"v0.0.1-{go_version}.linux-{arch}"


def proxy_base() -> str:
    """The first http(s) module proxy from $GOPROXY or ``go env GOPROXY``."""
    value = os.environ.get("GOPROXY", "")
    if not value and shutil.which("go"):
        value = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True,
                               check=False).stdout.strip()
    for entry in value.replace("|", ",").split(","):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    raise ToolchainError("no module proxy: set GOPROXY (e.g. the Go project's default proxy"
                         " URL) or install Debian's golang-go, whose `go env GOPROXY` has it")


def download(url: str, target: Path) -> str:
    """Stream ``url`` into ``target``, with progress on stderr (a line at each tenth:
    ``make`` logs stay readable); return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, target.open("wb") as out:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0)
            progress(f"downloading {url} ({megabytes(total) or 'size unknown'})")
            done, shown = 0, 0
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if total and done * 10 // total > shown:
                    shown = done * 10 // total
                    progress(f"{shown * 10}% ({megabytes(done)} of {megabytes(total)})")
    except OSError as exc:
        raise ToolchainError(f"cannot download {url}: {exc}") from exc
    return digest.hexdigest()


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size else ""


def progress(text: str) -> None:
    print(f"go-toolchain: {text}", file=sys.stderr, flush=True)


def executable(name: str) -> bool:
    """Files the toolchain runs: bin/* and pkg/tool/<os_arch>/* (zips carry no modes)."""
    parts = name.split("/")
    return (parts[0] == "bin" and len(parts) == 2) or (
        parts[:2] == ["pkg", "tool"] and len(parts) == 4)


def extract(zip_path: Path, prefix: str, into: Path) -> None:
    """Unpack the module zip, stripping ``prefix``; refuse any entry outside it."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            name = info.filename
            rel = name[len(prefix):] if name.startswith(prefix) else ""
            if not rel or rel.startswith("/") or ".." in rel.split("/"):
                raise ToolchainError(f"unexpected entry in the toolchain zip: {name!r}")
            if name.endswith("/"):
                continue
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            dest.chmod(0o755 if executable(rel) else 0o644)


def installed_version(dest: Path) -> str:
    """The first line of ``DEST/VERSION``, or '' when there is none."""
    try:
        return (dest / "VERSION").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def install(go_version: str, sha256: str, dest: Path) -> Path:
    """Fetch, verify and unpack the toolchain into ``dest`` (atomically); return go's path."""
    go = dest / "bin" / "go"
    if installed_version(dest) == go_version and go.is_file():
        return go
    version = module_version(go_version)
    url = f"{proxy_base()}/{MODULE}/@v/{version}.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".go-toolchain-") as tmp:
        zip_path = Path(tmp) / "toolchain.zip"
        got = download(url, zip_path)
        if got != sha256.lower():
            raise ToolchainError(f"{MODULE}@{version}: SHA-256 {got} does not match the pinned"
                                 f" {sha256} (GO_SHA256 in the Makefile); nothing installed")
        unpacked = Path(tmp) / "go"
        progress(f"SHA-256 verified; unpacking into {dest}")
        extract(zip_path, f"{MODULE}@{version}/", unpacked)
        if installed_version(unpacked) != go_version:
            raise ToolchainError(f"the zip's VERSION is not {go_version}")
        old = Path(tmp) / "old"
        if dest.exists():
            dest.rename(old)
        unpacked.rename(dest)
    return go


def main(argv: list[str] | None = None) -> int:
    """Parse, install, check ``go version``, print the go binary's path."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    top.add_argument("--version", required=True, help="e.g. go1.26.8")
    top.add_argument("--sha256", required=True, help="SHA-256 of the module zip")
    top.add_argument("--dest", type=Path, required=True, help="e.g. .tools/go")
    args = top.parse_args(argv)
    try:
        go = install(args.version, args.sha256, args.dest.resolve())
    except ToolchainError as exc:
        print(f"go-toolchain: {exc}", file=sys.stderr)
        return 1
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    env.pop("GOROOT", None)
    out = subprocess.run([str(go), "version"], capture_output=True, text=True, env=env,
                         check=False).stdout
    if f" {args.version} " not in out:
        print(f"go-toolchain: {go} version says {out.strip()!r}, not {args.version}",
              file=sys.stderr)
        return 1
    print(go)
    return 0


if __name__ == "__main__":
    sys.exit(main())
