"""``make bench``: statekit against the floor, pyinfra and ansible-core, in one run.

Every converge runs in a fresh private network namespace created (and deleted) here;
files go to a temporary directory. Runs are interleaved (statekit, then each peer, the
order rotating every repetition) so that each peer's time can be divided by statekit's
time measured next to it: the ratios, pair by pair, are the result on a noisy machine.
Then the real paths (``bench/realpaths.py``): the shipped states' telemetry refresh (on and
off), lockdown refresh and cold boot, each against the floor run in the same loop.

    python bench/run.py --sizes 50,500,5000 --runs 5 --warmup 1 \\
        --peers statekit,floor,pyinfra,ansible --out bench/RESULTS.md --plot bench/results.png
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from harness import (
    BenchError,
    Sample,
    count_execs,
    have,
    in_ns,
    log,
    namespace,
    timed,
    workdir,
)
from realpaths import measure_real_paths
from results import FIRST, NOOP, REAL_PATHS, TELEMETRY, Cell, CellRunner, Results, rotate
from tools import (
    PEERS_BIN,
    PEERS_VENV,
    REPO,
    TOOLS,
    Tool,
    Workload,
    base_env,
    statekit_command,
    verify,
)
from writeup import write_markdown

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default="50,500,5000", help="comma-separated N (default %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="measured runs per cell")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    p.add_argument("--peers", default="statekit,floor,pyinfra,ansible",
                   help="tools to run (statekit is always the reference)")
    p.add_argument("--max-n", default="ansible=50,pyinfra=500", metavar="TOOL=N,...",
                   help="run these tools only up to N (default %(default)s: ansible takes "
                        "~30 s at 50 rules; pyinfra was still preparing its operations "
                        "after 5 min at 5000)")
    p.add_argument("--cell-budget", type=float, default=600.0, metavar="SECONDS",
                   help="stop repeating a tool in a cell once it has used this much time")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per converge")
    p.add_argument("--telemetry", default=str(REPO / "states" / "telemetry.yaml"),
                   help="the shipped telemetry states (timed no-op, telemetry off)")
    p.add_argument("--states", default=str(REPO / "states"),
                   help="the shipped states (the real paths: network.yaml, telemetry.yaml)")
    p.add_argument("--no-real-paths", action="store_true",
                   help="skip the real paths (telemetry refresh, lockdown refresh, cold boot)")
    p.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    p.add_argument("--plot", default=str(REPO / "bench" / "results.png"),
                   help="PNG to draw ('' to skip)")
    p.add_argument("--json", default="", help="also write the raw results here")
    p.add_argument("--no-install", action="store_true",
                   help="do not create bench/.venv; peers missing from it are reported")
    return p.parse_args(argv)


def install_peers() -> None:
    """Create bench/.venv with the peers (pyinfra, ansible-core) and matplotlib."""
    if (PEERS_BIN / "pyinfra").exists() and (PEERS_BIN / "ansible-playbook").exists():
        return
    log(f"installing the peers into {PEERS_VENV} (pip, {REQUIREMENTS.name})")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_BIN / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)],
                   check=True)


def preflight() -> None:
    """Root, ip, iptables and strace are needed; refuse to start without them."""
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (ip netns add); nothing was run")
    for program in ("ip", "iptables-save", "iptables-restore", "strace"):
        if not have(program):
            raise SystemExit(f"bench: {program} not found (make deps); nothing was run")


def run_tool(tool: Tool, ns: str, wd: Path, timeout: float) -> Sample:
    return timed(ns, tool.argv(wd), env=tool.env(wd), cwd=wd, timeout=timeout)


def first_once(tool: Tool, work: Workload, timeout: float) -> Sample:
    """One first converge: fresh namespace, empty directory; checked afterwards."""
    with namespace() as ns, workdir() as wd:
        tool.prepare(work, wd)
        sample = run_tool(tool, ns, wd, timeout)
        verify(ns, work, wd)
    return sample


def measure_first(results: Results, tools: Sequence[Tool], work: Workload,
                  args: argparse.Namespace) -> None:
    cells = CellRunner(results, FIRST, work.n, tools, args.cell_budget)
    for rep in range(-args.warmup, args.runs):
        for tool in rotate(cells.active(tools), rep):
            try:
                cells.record(tool, rep, first_once(tool, work, args.timeout))
            except (BenchError, subprocess.CalledProcessError, OSError) as exc:
                cells.fail(tool, exc)


def measure_noop(results: Results, tools: Sequence[Tool], work: Workload,
                 args: argparse.Namespace) -> None:
    cells = CellRunner(results, NOOP, work.n, tools, args.cell_budget)
    with ExitStack() as stack:
        ready = _converged(stack, cells, tools, work, args.timeout)
        for rep in range(-args.warmup, args.runs):
            for tool in rotate(cells.active(list(ready)), rep):
                ns, wd, before = ready[tool]
                try:
                    cells.record(tool, rep, run_tool(tool, ns, wd, args.timeout))
                    if verify(ns, work, wd) != before:
                        raise BenchError("the no-op converge changed the rules")
                except (BenchError, subprocess.CalledProcessError, OSError) as exc:
                    cells.fail(tool, exc)


def _converged(stack: ExitStack, cells: CellRunner, tools: Sequence[Tool], work: Workload,
               timeout: float) -> dict[Tool, tuple[str, Path, list[str]]]:
    """A converged namespace and directory per tool (set up, not timed)."""
    ready = {}
    for tool in tools:
        ns, wd = stack.enter_context(namespace()), stack.enter_context(workdir())
        try:
            tool.prepare(work, wd)
            run_tool(tool, ns, wd, timeout)
            ready[tool] = (ns, wd, verify(ns, work, wd))
        except (BenchError, subprocess.CalledProcessError, OSError) as exc:
            cells.fail(tool, exc)
    return ready


def count_statekit(results: Results, work: Workload, timeout: float) -> None:
    """Processes statekit spawns, first and no-op (strace, one untimed run each)."""
    tool = TOOLS["statekit"]
    with namespace() as ns, workdir() as wd:
        tool.prepare(work, wd)
        for scenario in (FIRST, NOOP):
            count = count_execs(ns, tool.argv(wd), env=tool.env(wd), cwd=wd, timeout=timeout)
            cell = results.get(scenario, work.n, tool.name)
            if cell is not None:
                cell.procs = count
        verify(ns, work, wd)


def python_pass() -> list[str]:
    """``python3 -c pass`` with statekit's own interpreter (same venv, same site start-up)."""
    return [sys.executable, "-c", "pass"]


def measure_telemetry(results: Results, args: argparse.Namespace) -> None:
    """statekit's shipped telemetry states, no-op with GRAFANA_* unset, vs python3 -c pass."""
    tele = results.add(Cell(TELEMETRY, 0, "statekit telemetry"))
    path = Path(args.telemetry)
    why = _telemetry_missing(path)
    if why:
        tele.note = f"not available: {why}"
        log(tele.note)
        return
    base = results.add(Cell(TELEMETRY, 0, "python -c pass"))
    argv = [*statekit_command(), "converge", "--root", "ROOT", str(path)]
    with namespace() as ns, workdir() as wd:
        argv[argv.index("ROOT")] = str(wd / "root")
        (wd / "root").mkdir()
        try:
            _telemetry_loop(ns, wd, argv, tele, base, args)
        except (BenchError, subprocess.CalledProcessError) as exc:
            tele.note = f"failed: {str(exc).splitlines()[0][:120]}"
            log(f"telemetry: {exc}")


def _telemetry_missing(path: Path) -> str | None:
    if not path.exists():
        return f"{path} does not exist (yet)"
    check = subprocess.run([*statekit_command(), "validate", str(path)],
                           capture_output=True, text=True, env=base_env(), check=False)
    if check.returncode != 0:
        return f"{path.name} does not validate alone: {check.stderr.strip()[:160]}"
    return None


def _telemetry_loop(ns: str, wd: Path, argv: list[str], tele: Cell, base: Cell,
                    args: argparse.Namespace) -> None:
    env = base_env()
    timed(ns, argv, env=env, cwd=wd, timeout=args.timeout)  # set up (untimed)
    if ":OUTPUT DROP" in in_ns(ns, ["iptables-save", "-t", "filter"]).stdout:
        raise BenchError("the telemetry states set a DROP policy: stopped")
    pairs = ((tele, argv), (base, python_pass()))
    for rep in range(-args.warmup, args.runs):
        for cell, cmd in (pairs if rep % 2 == 0 else pairs[::-1]):
            sample = timed(ns, cmd, env=env, cwd=wd, timeout=args.timeout)
            if rep >= 0:
                cell.seconds[rep] = sample.seconds
                cell.rss_kb.append(sample.maxrss_kb)


def select_tools(results: Results, args: argparse.Namespace) -> list[Tool]:
    """The requested tools that can run; a row says why any other cannot."""
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise SystemExit(f"bench: unknown peer(s): {', '.join(unknown)} (known: "
                         f"{', '.join(TOOLS)})")
    if "statekit" not in names:
        names.insert(0, "statekit")
    tools = []
    for name in names:
        why = TOOLS[name].missing()
        if why:
            log(f"{name}: not available: {why}")
            results.add(Cell(FIRST, 0, name, note=f"not available: {why}"))
        else:
            tools.append(TOOLS[name])
    for name in TOOLS:
        if name not in names:
            results.add(Cell(FIRST, 0, name, note="skipped: not in --peers"))
    return tools


def measure_all(results: Results, tools: list[Tool], args: argparse.Namespace) -> None:
    limits = {k: int(v) for k, _, v in (i.partition("=") for i in args.max_n.split(",") if i)}
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        work = Workload(n)
        sized = [t for t in tools if n <= limits.get(t.name, n)]
        for tool in (t for t in tools if t not in sized):
            results.add(Cell(FIRST, n, tool.name, note=f"not run at this N (--max-n "
                             f"{tool.name}={limits[tool.name]})"))
        for measure in (measure_first, measure_noop):
            log(f"N={n}: {measure.__name__.removeprefix('measure_')}: "
                f"{', '.join(t.name for t in sized)}")
            measure(results, sized, work, args)
        count_statekit(results, work, args.timeout)
    log("telemetry states")
    measure_telemetry(results, args)
    if args.no_real_paths:
        for scenario in REAL_PATHS:
            results.add(Cell(scenario, 0, "statekit", note="skipped: --no-real-paths"))
    else:
        measure_real_paths(results, args)


def cells_json(results: Results) -> str:
    """Every cell, with its median ratio to its reference (for the plot and --json)."""
    cells = []
    for cell in results.cells:
        ratios = cell.ratios(results.reference(cell))
        cells.append({**cell.as_dict(), "ratio": statistics.median(ratios) if ratios else None})
    return json.dumps({"cells": cells}, indent=1)


def draw(results: Results, args: argparse.Namespace) -> str:
    """Draw the plot with bench/.venv's matplotlib; a note on what happened."""
    if not args.plot:
        return "plot: skipped (--plot '')"
    python = PEERS_BIN / "python"
    if not python.exists():
        return f"plot: not drawn: {python} missing (matplotlib lives in bench/.venv)"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(cells_json(results))
    try:
        subprocess.run([str(python), str(Path(__file__).with_name("plot.py")), f.name,
                        args.plot], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        return f"plot: failed: {exc.stderr.strip()[-300:]}"
    finally:
        os.unlink(f.name)
    return f"plot: {args.plot}"


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGINT, even when ignored by a parent) unwinds: namespaces get deleted."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _terminate)
    preflight()
    if not args.no_install:
        install_peers()
    results = Results()
    tools = select_tools(results, args)
    started = time.monotonic()
    measure_all(results, tools, args)
    plot_note = draw(results, args)
    write_markdown(results, args, plot_note, time.monotonic() - started)
    if args.json:
        Path(args.json).write_text(cells_json(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
