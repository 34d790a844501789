#!/usr/bin/env python3
"""`make try`: a shell where statekit can do no harm, for a first try on your own states.

The shell runs in the "container" network namespace of the end-to-end sandbox
(tests/e2e/harness.py: a private namespace joined to an "internet" namespace that
answers DNS for a few test names). ``statekit`` on its PATH takes every file under a
throwaway ``--root`` ($STATEKIT_ROOT) and the sandbox's resolvers; the shipped states are
in $STATES. Firewall rules change the namespace's iptables, never the machine's. On exit
(or Ctrl-D) the namespaces, the root and every process in them are removed.

Needs root (it creates network namespaces). Without a terminal on stdin, the shell reads
its commands from stdin (that is how the test drives it).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e import harness  # noqa: E402
from tests.e2e.harness import ALLOWED, Sandbox  # noqa: E402

VARS = ["--var", f"upstream_resolvers=[{harness.UPSTREAM_DNS}]", "--var", f"domains=[{ALLOWED}]"]
BANNER = """\
statekit sandbox: network namespace {netns}, --root {root}
  `statekit` here is a wrapper that adds to every converge
      --root {root} {vars_}
  (and the --var ones to validate and show): the sandbox's "internet" answers DNS at
  {resolver} for one test name, {allowed}, which stands in for the shipped allowlist.
  statekit converge --check --diff $STATES   # what would change (nothing does)
  statekit converge $STATES                  # converge: files under $STATEKIT_ROOT,
  iptables -S OUTPUT                         #   firewall in this namespace only
  exit                                       # remove everything
"""


def banner(netns: str, root: Path) -> str:
    """What the shell is, and what its ``statekit`` adds to each command (:func:`wrapper`)."""
    vars_ = " ".join(f"{flag} {value}" for flag, value in zip(VARS[::2], VARS[1::2],
                                                              strict=True))
    return BANNER.format(netns=netns, root=root, vars_=vars_, resolver=harness.UPSTREAM_DNS,
                         allowed=ALLOWED)


def wrapper(root: Path) -> str:
    """The ``statekit`` on the shell's PATH: the sandbox's vars, converge under ``root``."""
    py, vars_ = shlex.quote(sys.executable), " ".join(shlex.quote(v) for v in VARS)
    return ("#!/bin/sh\n# statekit in `make try`: converge takes its files under the "
            "throwaway root.\n"
            'case "$1" in\n'
            f'  converge) shift; exec {py} -m statekit converge --root {shlex.quote(str(root))}'
            f' {vars_} "$@" ;;\n'
            f'  validate|show) cmd=$1; shift; exec {py} -m statekit "$cmd" {vars_} "$@" ;;\n'
            "esac\n"
            f'exec {py} -m statekit "$@"\n')


def shell_env(box: Sandbox, root: Path, bin_dir: Path) -> dict[str, str]:
    """A small, known environment: no host variables leak into the try."""
    return {"PATH": f"{bin_dir}:{harness.MINIMAL_PATH}", "LANG": "C.UTF-8",
            "HOME": str(box.workdir), "TERM": os.environ.get("TERM", "dumb"),
            "STATES": str(REPO / "states"), "STATEKIT_ROOT": str(root),
            "STATEKIT_NETNS": box.container, "PS1": r"(statekit try) \w# "}


def shell_argv() -> list[str]:
    bash = shutil.which("bash")
    if not bash:
        return ["sh", "-i"] if sys.stdin.isatty() else ["sh", "-s"]
    return [bash, "--noprofile", "--norc", "-i" if sys.stdin.isatty() else "-s"]


def main() -> int:
    if os.geteuid() != 0:
        print("make try: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    with Sandbox() as box:
        root, bin_dir = box.workdir / "root", box.workdir / "bin"
        root.mkdir()
        bin_dir.mkdir()
        (bin_dir / "statekit").write_text(wrapper(root))
        (bin_dir / "statekit").chmod(0o755)
        print(banner(box.container, root), file=sys.stderr, flush=True)
        argv = box.container_argv(shell_argv(), "upstream")
        code = subprocess.run(argv, env=shell_env(box, root, bin_dir), cwd=root,
                              check=False).returncode
    print("statekit sandbox: removed (namespaces, root, processes)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
