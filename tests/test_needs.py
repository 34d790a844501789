"""tests/needs.py keeps the markers true: planted violations fail, and say what to add."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.needs import COREDNS, wanted_by_command

PLANTED = '''
import subprocess
import pytest

@pytest.fixture
def netns():
    yield "planted"

def test_uses_the_netns_fixture_unmarked(netns):
    pass

def test_starts_ip_netns_unmarked():
    subprocess.run(["sh", "-c", ": ip netns list"], check=True)

def test_skips():
    pytest.skip("CoreDNS is not there")

def test_plain():
    subprocess.run(["true"], check=True)
'''

CONFTEST = '''
from tests.needs import (  # noqa: F401
    pytest_collection_finish, pytest_runtest_makereport, pytest_runtest_protocol,
    pytest_runtest_setup)
'''

INI = '''[pytest]
markers =
    netns: x
    root: x
    needs: x
'''


@pytest.mark.parametrize(("argv", "want"), [
    (["ip", "netns", "exec", "ns", "true"], {"netns"}),
    (["ip", "-n", "ns", "link"], {"netns"}),
    (["unshare", "-rn", "true"], {"netns", "root"}),
    (["unshare", "-m", "sh", "-c", "mount --bind a b"], {"root"}),
    ("sh -c 'ip netns add x'", {"netns"}),
    (["setpriv", "--reuid=1000", "true"], {"root"}),
    ([str(COREDNS), "-conf", "Corefile"], {"needs:coredns"}),
    (["ip", "netns", "exec", "ns", "/usr/bin/node", "a.js"], {"netns", "needs:node"}),
    ([sys.executable, "-m", "pip", "install", "."], {"needs:pypi"}),
    (["iptables-save", "-t", "filter"], set()),
    ([sys.executable, "-m", "statekit", "validate", "states"], set()),
])
def test_what_a_command_needs(argv: list[str] | str, want: set[str]) -> None:
    assert wanted_by_command(argv) == want


def run_planted(tmp_path: Path, tests: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_planted.py").write_text(tests)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text(INI)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p",
         "no:xdist", str(tmp_path)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120, check=False)


def test_planted_violations_fail_and_name_the_marker(tmp_path: Path) -> None:
    proc = run_planted(tmp_path, PLANTED)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "2 failed, 1 passed, 1 error" in out, out
    assert "uses the fixture `netns`, which needs the marker pytest.mark.netns" in out
    assert "started `sh -c : ip netns list`, which needs the marker pytest.mark.netns" in out
    assert "skipped (CoreDNS is not there): a test here runs or fails, never skips" in out
    assert "PASSED test_planted.py::test_plain" in out


def test_an_unknown_component_stops_the_run_before_any_test(tmp_path: Path) -> None:
    proc = run_planted(tmp_path, 'import pytest\n\n@pytest.mark.needs("no-such-thing")\n'
                                 'def test_x():\n    pass\n')
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "ERROR: pytest.mark.needs names 'no-such-thing', not a known component" in \
        proc.stderr
    assert "no tests ran" in proc.stdout
