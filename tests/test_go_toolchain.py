"""scripts/go_toolchain.py: the Go that builds CoreDNS, fetched and verified by the build.

The real fetch runs with a PATH that holds only Debian's Go (1.19, no /usr/local/go/bin),
as on a fresh Debian 12 machine; a tampered zip, served by a local fake proxy on
127.0.0.1, must be refused with nothing installed.
"""

from __future__ import annotations

import http.server
import importlib.util
import io
import re
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "go_toolchain.py"
STOCK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def makefile_pin(name: str) -> str:
    match = re.search(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"{name} missing from the Makefile"
    return match.group(1)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("go_toolchain", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(dest: Path, env: dict[str, str], sha256: str | None = None) -> \
        subprocess.CompletedProcess[str]:
    argv = ["/usr/bin/python3", str(SCRIPT), "--version", makefile_pin("GO_VERSION"),
            "--sha256", sha256 or makefile_pin("GO_SHA256"), "--dest", str(dest)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600,
                          check=False)


def test_stock_debian_go_on_path_is_too_old_for_coredns() -> None:
    """The premise: the PATH of the next test has Debian's Go, which lacks GOTOOLCHAIN."""
    which = subprocess.run(["sh", "-c", "command -v go"], capture_output=True, text=True,
                           env={"PATH": STOCK_PATH}, check=False).stdout.strip()
    assert which == "/usr/bin/go", "make deps installs Debian's golang-go"
    out = subprocess.run(["go", "version"], capture_output=True, text=True,
                         env={"PATH": STOCK_PATH}, check=True).stdout
    minor = int(re.search(r"go1\.(\d+)", out).group(1))  # type: ignore[union-attr]
    assert minor < 21, out


def test_fetches_the_pinned_toolchain_with_only_debian_go(tmp_path: Path) -> None:
    dest = tmp_path / "go"
    proc = run_script(dest, {"PATH": STOCK_PATH, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest / "bin" / "go")
    version = subprocess.run([str(dest / "bin" / "go"), "version"], capture_output=True,
                             text=True, env={"PATH": STOCK_PATH, "GOTOOLCHAIN": "local",
                                             "HOME": str(tmp_path)}, check=True).stdout
    assert version.split()[2] == makefile_pin("GO_VERSION")
    again = run_script(dest, {"PATH": STOCK_PATH, "HOME": str(tmp_path), "GOPROXY": "off"})
    assert again.returncode == 0, "a present toolchain is a no-op, no download"


class FakeProxy(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_proxy() -> Iterator[str]:
    buf = io.BytesIO()
    mod = load_script()
    prefix = f"golang.org/toolchain@{mod.module_version(makefile_pin('GO_VERSION'))}/"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(prefix + "VERSION", makefile_pin("GO_VERSION") + "\n")
        zf.writestr(prefix + "bin/go", "#!/bin/sh\necho go version evil\n")
    FakeProxy.body = buf.getvalue()
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_tampered_zip_is_refused(tmp_path: Path, fake_proxy: str) -> None:
    dest = tmp_path / "go"
    proc = run_script(dest, {"PATH": STOCK_PATH, "GOPROXY": fake_proxy})
    assert proc.returncode == 1
    assert "does not match the pinned" in proc.stderr
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_the_download_shows_its_progress_on_stderr(tmp_path: Path, fake_proxy: str) -> None:
    """`make go-toolchain` sends stdout (the go binary's path) to /dev/null; the progress
    of the large download goes to stderr, which make shows."""
    proc = run_script(tmp_path / "go", {"PATH": STOCK_PATH, "GOPROXY": fake_proxy})
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"go-toolchain: downloading {fake_proxy}/golang.org/toolchain/")
    assert any(line.startswith("go-toolchain: 100% (") for line in lines), proc.stderr
    assert proc.stdout == ""
    recipe = subprocess.run(["make", "-n", "go-toolchain"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    assert ">/dev/null" in recipe and "2>" not in recipe


def test_zip_entries_outside_the_module_are_refused(tmp_path: Path) -> None:
    mod = load_script()
    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("golang.org/toolchain@v/../../escape", "x")
    with pytest.raises(mod.ToolchainError, match="unexpected entry"):
        mod.extract(zpath, "golang.org/toolchain@v/", tmp_path / "out")
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(("name", "expected"), [
    ("bin/go", True), ("bin/gofmt", True), ("pkg/tool/linux_amd64/compile", True),
    ("src/fmt/print.go", False), ("bin/sub/x", False), ("VERSION", False),
])
def test_executable_bits(name: str, expected: bool) -> None:
    assert load_script().executable(name) is expected


def test_make_coredns_builds_with_the_fetched_go_whatever_is_on_path(tmp_path: Path) -> None:
    """`make -n coredns` in a fresh copy, stock PATH: the toolchain step, then the fetched
    go (GOTOOLCHAIN=local), never a bare `go` from PATH."""
    (tmp_path / "Makefile").write_text((REPO / "Makefile").read_text())
    proc = subprocess.run(["make", "-n", "coredns"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": STOCK_PATH}, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"scripts/go_toolchain.py --version {makefile_pin('GO_VERSION')}" in out
    assert "GOTOOLCHAIN=local" in out
    assert f"{tmp_path}/.tools/go/bin/go install github.com/coredns/coredns@" in out
    assert not re.search(r"(^|\s)go install", out), "no `go` from PATH"
