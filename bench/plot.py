"""Draw the results: ``plot.py RESULTS.json OUT.png`` (run with bench/.venv's python).

Two log-log panels, first converge and no-op converge: median time against N, one line
per tool, the min-max spread as error bars. A third panel, the real paths (issue 15): one
bar per command, median with min-max, each labelled with its ratio to the floor of its
own loop.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib  # type: ignore[import-not-found,unused-ignore]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

PANELS = (("first", "first converge (empty namespace, no file)"),
          ("no-op", "no-op converge (already converged)"))
REAL_PATHS = ("telemetry refresh", "lockdown refresh", "cold boot")  # bench/results.py


def series(cells: list[dict[str, Any]], scenario: str) -> dict[str, list[dict[str, Any]]]:
    """Measured cells of ``scenario`` by tool, sorted by N."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["scenario"] == scenario and cell["median"] is not None:
            out.setdefault(cell["tool"], []).append(cell)
    return {tool: sorted(items, key=lambda c: c["n"]) for tool, items in out.items()}


def draw_panel(ax: Any, cells: list[dict[str, Any]], scenario: str, title: str) -> None:
    for tool, items in series(cells, scenario).items():
        xs = [c["n"] for c in items]
        ys = [c["median"] for c in items]
        err = [[c["median"] - c["low"] for c in items], [c["high"] - c["median"] for c in items]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=tool)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N rules")
    ax.set_ylabel("seconds (median, min-max)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def draw_real_paths(ax: Any, cells: list[dict[str, Any]]) -> None:
    """Horizontal bars, one per measured command of the real paths, grouped by scenario."""
    items = [c for s in REAL_PATHS for c in cells
             if c["scenario"] == s and c["median"] is not None]
    ys = list(range(len(items)))[::-1]
    err = [[c["median"] - c["low"] for c in items], [c["high"] - c["median"] for c in items]]
    colors = ["tab:gray" if c["tool"] == "floor" else "tab:blue" for c in items]
    ax.barh(ys, [c["median"] for c in items], xerr=err, capsize=3, color=colors)
    ax.set_yticks(ys, [f"{c['scenario']}: {c['tool']}" for c in items], fontsize=8)
    for y, c in zip(ys, items, strict=True):
        label = "floor" if c["tool"] == "floor" else f"{c['ratio'] or 0:.2f}x floor"
        ax.annotate(label, (c["high"], y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_xlabel("seconds (median, min-max)")
    ax.set_title("real paths: shipped states vs the floor (same loop)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.25)


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    real = any(c["scenario"] in REAL_PATHS and c["median"] is not None for c in cells)
    fig, axes = plt.subplots(1, 3 if real else 2, figsize=(19 if real else 12, 5))
    for ax, (scenario, title) in zip(axes, PANELS, strict=False):
        draw_panel(ax, cells, scenario, title)
    if real:
        draw_real_paths(axes[2], cells)
    fig.suptitle("statekit benchmark: converge time against N (log-log), and the real paths")
    fig.tight_layout()
    fig.savefig(argv[1], dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
