"""Draw the results: ``plot.py RESULTS.json OUT.png`` (run with bench/.venv's python).

Two log-log panels, first converge and no-op converge: median time against N, one line
per tool, the min-max spread as error bars.
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


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (scenario, title) in zip(axes, PANELS, strict=True):
        draw_panel(ax, cells, scenario, title)
    fig.suptitle("statekit benchmark: converge time against N (log-log)")
    fig.tight_layout()
    fig.savefig(argv[1], dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
