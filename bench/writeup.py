"""The machine the benchmark ran on, and RESULTS.md (the table is printed too)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from results import Results, markdown_table, targets, targets_markdown, text_table
from tools import PEERS_BIN, REPO

STATE_FORM = ("one `iptables_rule` state whose `destination` lists the N addresses "
              "(statekit's idiomatic form: one owned block, one save, one restore) and one "
              "`env_file` state, in one phase")


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _memory() -> str:
    with open("/proc/meminfo", encoding="utf-8") as f:
        kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    return f"{kb / 1024 / 1024:.1f} GiB"


def machine() -> list[tuple[str, str]]:
    """What ran the benchmark: the facts RESULTS.md starts with."""
    rev = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    # the bench's own outputs do not count: the plot is drawn before this table is written
    dirty = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--", ".",
                         ":!bench/RESULTS.md", ":!bench/results.png"])
    return [
        ("date", time.strftime("%Y-%m-%d %H:%M %Z")),
        ("cpus (nproc)", str(os.cpu_count())),
        ("memory", _memory()),
        ("kernel", platform.release()),
        ("python", f"{platform.python_version()} ({os.path.realpath(sys.executable)})"),
        ("iptables", _first_line(["iptables", "--version"])),
        ("pyinfra", _first_line([str(PEERS_BIN / "pyinfra"), "--version"])),
        ("ansible-core", _first_line([str(PEERS_BIN / "ansible-playbook"), "--version"])),
        ("statekit", f"{rev}{' + uncommitted changes' if dirty != 'unknown' else ''}"),
    ]


def command(args: argparse.Namespace) -> str:
    return (f"python bench/run.py --sizes {args.sizes} --runs {args.runs} "
            f"--warmup {args.warmup} --peers {args.peers} --cell-budget {args.cell_budget:g}")


METHOD = """\
- Each converge runs in a fresh private network namespace (`ip netns add`, deleted
  afterwards); files go under a temporary directory. *first*: a new namespace and an
  empty directory for every run. *no-op*: one namespace per tool, converged once
  (untimed), then timed again and again; the rules are checked unchanged afterwards.
- Times are wall-clock, taken inside the namespace around fork/exec/wait of the tool's
  process (`bench/stopwatch.py`): neither `ip netns exec` nor the runner is counted.
  Peak RSS is the largest `ru_maxrss` of the tool's process tree (`wait4`).
- Runs are interleaved (statekit, then each peer, the order rotating each repetition):
  *ratio (pairs)* is the tool's time over statekit's time of the same repetition,
  median (min-max) over the repetitions: below 1 the tool was faster than statekit.
- *procs*: processes statekit spawned (successful `execve`s under `strace -f`, less its
  own), one extra untimed run each.
- statekit's work: {form}. pyinfra: `pyinfra @local bench/peers/deploy.py -y`, one
  `iptables.rule` per address and one `files.put`. ansible-core:
  `ansible-playbook -c local bench/peers/playbook.yml`, `ansible.builtin.iptables` looped
  over the addresses, `ansible.builtin.file` + `ansible.builtin.copy`. The floor:
  `bench/floor.py`, one `iptables-save`, one `iptables-restore --noflush` (none when
  nothing is missing) and the file, with statekit's interpreter. statekit runs as the
  `statekit` console script of its venv, as the entrypoint runs it. The floor imports
  `json` and `subprocess` (54 M instructions under callgrind, more than the interpreter's
  own start, 38 M); statekit's no-op path imports neither, which is how it can
  beat the floor at small N.
- Telemetry: `statekit converge --root TMP states/telemetry.yaml` (all its phases), no-op,
  GRAFANA_* unset, against `python -c pass` run by statekit's own venv interpreter (the
  same site start-up statekit pays), interleaved.
- Real paths (issue 15, `bench/realpaths.py`): the shipped states as the container runs
  them, `statekit converge --phase network --var upstream_resolvers=[127.0.0.11]`.
  Every statekit namespace runs the real CoreDNS (`.tools/bin/coredns`) on
  127.0.0.11:53 with the `hosts` plugin answering each shipped allowlisted name and the
  OTLP gateway (one 198.18.1.x address each), so that every name resolves, at loopback
  speed (a real refresh also waits on the upstream resolvers' round trips). *telemetry
  refresh*: `states/telemetry.yaml`, telemetry on (GRAFANA_INSTANCE_ID, GRAFANA_API_TOKEN,
  GRAFANA_OTLP_ENDPOINT set) and off, each in its own namespace and `--root` (each has its
  own program cache), converged once, then the no-op timed; the target compares on with
  off pair by pair. *lockdown refresh*: `states/` (network.yaml + telemetry.yaml,
  telemetry on), converged once, then the no-op timed. Each refresh runs with
  `--detailed-exitcode`, so a refresh that changed anything would fail the cell. *cold
  boot*: the same converge on a fresh namespace and an empty `--root` (no program cache,
  empty filter table), as the container's boot runs it; the OUTPUT policy and a rule per
  name are checked afterwards. CoreDNS is started and answering before the clock starts.
- The real paths' ratios are to the floor run in the same loop (the same `bench/floor.py`
  on the 50-rule work, interleaved; no-op for the refreshes, first converge on a fresh
  namespace for the cold boot). That floor is the least a converge of 50 rules and a
  file can do. A refresh cell takes nine times `--runs` (45 by default): a refresh takes
  about 60 ms, and on this shared VM the lockdown's pair-by-pair median of the same code
  moved from 1.05x to 1.40x between two runs of 5; one run of 15 gave 1.29x where
  interleaved runs of 30 to 40 on one world gave 1.14x to 1.19x. The lockdown refresh also has a
  floor of its own, *lockdown floor*
  (`bench/floor.py --lockdown`, interleaved, its own namespace with the same CoreDNS):
  both filter tables saved (`iptables-save`, `ip6tables-save`, one after the other), each
  allowlisted name asked once (A over UDP, all at once, from one socket), the Corefile
  read; nothing parsed, compared or written. Its target compares statekit's lockdown
  refresh with it pair by pair. On such a no-op statekit starts both saves together
  before its first state (they run while the Corefile states plan), and parses no
  Corefile: an earlier converge of the same program proved the file already as each
  `coredns_zone` state wants it (`/run/statekit/memo/`, docs/state-language.md).
"""


def write_markdown(results: Results, args: argparse.Namespace, plot_note: str,
                   elapsed: float) -> None:
    """Print the table and targets; write RESULTS.md."""
    verdicts = targets(results)
    sys.stdout.write(text_table(results) + "\n\n")
    for t in verdicts:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t.met]
        sys.stdout.write(f"target: {t.text}: {t.measured or '-'}: {mark}\n")
    sys.stdout.write(f"{plot_note}\n")
    facts = "\n".join(f"| {k} | {v} |" for k, v in machine())
    plot = Path(args.plot).name if args.plot and plot_note.startswith("plot: /") else ""
    text = "\n\n".join(part for part in (
        "# statekit benchmark results",
        f"Reproduce: `make bench` (`python bench/run.py` with its defaults). This run: "
        f"`{command(args)}`, {elapsed / 60:.1f} min.",
        "## Machine\n\n| what | value |\n| --- | --- |\n" + facts,
        "## Results\n\n" + markdown_table(results),
        "## Targets (issues 6 and 15)\n\n" + targets_markdown(verdicts),
        f"![converge time against N]({plot})" if plot else plot_note,
        "## How it is measured\n\n" + METHOD.format(form=STATE_FORM),
    ) if part)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {args.out}\n")
