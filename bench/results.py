"""Results: cells of samples, ratios pair by pair, the table, the targets, RESULTS.md."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from harness import Sample, Spread, log

REFERENCE = "statekit"
FIRST, NOOP, TELEMETRY = "first", "no-op", "telemetry no-op"
# the real paths (issue 15, bench/realpaths.py): each against the floor of the same loop
TELEMETRY_REFRESH, LOCKDOWN, COLD = "telemetry refresh", "lockdown refresh", "cold boot"
REAL_PATHS = (TELEMETRY_REFRESH, LOCKDOWN, COLD)
LOCKDOWN_FLOOR = "lockdown floor"  # both tables saved, each name asked once, no write
FLOOR = "floor"
TELEMETRY_OFF, TELEMETRY_ON = "statekit telemetry off", "statekit telemetry on"


@dataclass
class Cell:
    """One tool on one piece of work: its samples by repetition, and notes."""

    scenario: str
    n: int
    tool: str
    seconds: dict[int, float] = field(default_factory=dict)  # repetition -> seconds
    rss_kb: list[int] = field(default_factory=list)
    procs: int | None = None
    note: str = ""

    @property
    def spread(self) -> Spread | None:
        return Spread.of(list(self.seconds.values())) if self.seconds else None

    def ratios(self, ref: Cell | None) -> list[float]:
        """This cell's time over the reference's, repetition by repetition."""
        if ref is None:
            return []
        return [s / ref.seconds[i] for i, s in self.seconds.items() if i in ref.seconds]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        spread = self.spread
        data["median"] = spread.median if spread else None
        data["low"] = spread.low if spread else None
        data["high"] = spread.high if spread else None
        return data


@dataclass
class Results:
    """Every cell of one benchmark run, in the order they were measured."""

    cells: list[Cell] = field(default_factory=list)

    def add(self, cell: Cell) -> Cell:
        self.cells.append(cell)
        return cell

    def get(self, scenario: str, n: int, tool: str) -> Cell | None:
        return next((c for c in self.cells if (c.scenario, c.n, c.tool) == (scenario, n, tool)),
                    None)

    def reference(self, cell: Cell) -> Cell | None:
        """The cell a ratio is taken against: statekit's, the telemetry run's, or (real
        paths) the floor's."""
        if cell.scenario == TELEMETRY:
            return self.get(TELEMETRY, cell.n, "statekit telemetry")
        if cell.scenario in REAL_PATHS:
            return self.get(cell.scenario, cell.n, FLOOR)
        return self.get(cell.scenario, cell.n, REFERENCE)


class Named(Protocol):
    """A contender: a peer tool, or one of the real paths' commands."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


def rotate(items: Sequence[T], by: int) -> list[T]:
    k = by % len(items)
    return [*items[k:], *items[:k]]


class CellRunner:
    """Records samples into cells, and drops a tool from a cell once it fails or is slow."""

    def __init__(self, results: Results, scenario: str, n: int, tools: Sequence[Named],
                 budget: float) -> None:
        self.cells = {t.name: results.add(Cell(scenario, n, t.name)) for t in tools}
        self.used = dict.fromkeys(self.cells, 0.0)
        self.budget = budget

    def active(self, tools: Sequence[T]) -> list[T]:
        """Tools still to run: not failed, and under budget or still without a sample."""
        return [t for t in tools if not self.cells[t.name].note.startswith("failed")
                and (self.used[t.name] <= self.budget or not self.cells[t.name].seconds)]

    def record(self, tool: Named, rep: int, sample: Sample) -> None:
        self.used[tool.name] += sample.seconds
        if rep >= 0:
            self.cells[tool.name].seconds[rep] = sample.seconds
            self.cells[tool.name].rss_kb.append(sample.maxrss_kb)
        if self.used[tool.name] > self.budget and self.cells[tool.name].seconds:
            self.cells[tool.name].note = f"stopped: over the {self.budget:g} s cell budget"

    def fail(self, tool: Named, exc: Exception) -> None:
        log(f"{tool.name}: {exc}")
        self.cells[tool.name].note = f"failed: {str(exc).splitlines()[0][:120]}"


def _secs(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _ratio_text(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    med = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{med:.2f}x"
    return f"{med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


HEADER = ("work", "N", "tool", "median", "min-max", "IQR", "runs", "ratio (pairs)",
          "peak RSS", "procs", "note")


def rows(results: Results) -> list[tuple[str, ...]]:
    """The table's rows, one per cell."""
    out: list[tuple[str, ...]] = []
    measured = [c for c in results.cells
                if c.n or c.scenario == TELEMETRY or c.scenario in REAL_PATHS]
    for cell in [*measured, *(c for c in results.cells if c not in measured)]:
        spread = cell.spread
        ref = results.reference(cell)
        ratio = "1 (ref)" if ref is cell else _ratio_text(cell.ratios(ref))
        rss = f"{max(cell.rss_kb) / 1024:.0f} MiB" if cell.rss_kb else "-"
        procs = "-" if cell.procs is None else str(cell.procs)
        if spread is None:
            out.append((cell.scenario, str(cell.n or "-"), cell.tool, "-", "-", "-", "0", "-",
                        rss, procs, cell.note))
            continue
        out.append((cell.scenario, str(cell.n or "-"), cell.tool, _secs(spread.median),
                    f"{_secs(spread.low)}-{_secs(spread.high)}",
                    f"{_secs(spread.q1)}-{_secs(spread.q3)}", str(spread.count), ratio, rss,
                    procs, cell.note))
    return out


def text_table(results: Results) -> str:
    """A fixed-width table for the terminal."""
    table = [HEADER, *rows(results)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1]
             for r in table]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(results: Results) -> str:
    table = [HEADER, tuple("---" for _ in HEADER), *rows(results)]
    return "\n".join("| " + " | ".join(v.replace("|", "/") for v in r) + " |" for r in table)


@dataclass(frozen=True)
class Target:
    """One target of the issue, what was measured, and whether it is met (None: unknown)."""

    text: str
    measured: str
    met: bool | None


def _median_ratio(results: Results, scenario: str, n: int, tool: str) -> float | None:
    cell = results.get(scenario, n, tool)
    ratios = cell.ratios(results.reference(cell)) if cell else []
    return statistics.median(ratios) if ratios else None


def _check(text: str, value: float | None, ok: bool | None, shown: str) -> Target:
    if value is None:
        return Target(text, "not measured", None)
    return Target(text, shown, ok)


def targets(results: Results) -> list[Target]:
    """The issue's targets, evaluated on this run."""
    floor = _median_ratio(results, NOOP, 50, "floor")
    pyinfra = _median_ratio(results, NOOP, 50, "pyinfra")
    sk5000 = results.get(NOOP, 5000, REFERENCE)
    med5000 = sk5000.spread.median if sk5000 and sk5000.spread else None
    tele = _median_ratio(results, TELEMETRY, 0, "python -c pass")
    return [
        _check("no-op, 50 rules: statekit within 1.5x of the floor", floor,
               floor is not None and 1 / floor <= 1.5,
               f"statekit = {1 / floor:.2f}x the floor" if floor else ""),
        _check("no-op, 50 rules: statekit at least 8x faster than pyinfra", pyinfra,
               pyinfra is not None and pyinfra >= 8,
               f"pyinfra = {pyinfra:.1f}x statekit" if pyinfra else ""),
        _check("no-op, 5000 rules: statekit under 1 s", med5000,
               med5000 is not None and med5000 < 1, _secs(med5000) if med5000 else ""),
        _procs_target(results),
        _check("telemetry states no-op within 3x of `python3 -c pass`", tele,
               tele is not None and 1 / tele <= 3,
               f"statekit telemetry = {1 / tele:.2f}x python3 -c pass" if tele else ""),
        _telemetry_on_off(results),
        _lockdown_refresh(results),
    ]


def _lockdown_refresh(results: Results) -> Target:
    """Issue 20: the lockdown refresh, pins and all, within 1.2x of its own floor."""
    text = "lockdown refresh (pins, IPv6, every name asked) within 1.2x of the lockdown floor"
    cell = results.get(LOCKDOWN, 0, "statekit lockdown")
    ratios = cell.ratios(results.get(LOCKDOWN, 0, LOCKDOWN_FLOOR)) if cell else []
    if not ratios:
        return Target(text, "not measured", None)
    return Target(text, f"statekit lockdown = {_ratio_text(ratios)} the lockdown floor",
                  statistics.median(ratios) <= 1.2)


def _telemetry_on_off(results: Results) -> Target:
    """Issue 15: the telemetry-on refresh within 1.3x of the telemetry-off one, pair by pair."""
    text = "refresh (`--phase network`): telemetry on within 1.3x of telemetry off"
    on = results.get(TELEMETRY_REFRESH, 0, TELEMETRY_ON)
    ratios = on.ratios(results.get(TELEMETRY_REFRESH, 0, TELEMETRY_OFF)) if on else []
    if not ratios:
        return Target(text, "not measured", None)
    return Target(text, f"telemetry on = {_ratio_text(ratios)} telemetry off",
                  statistics.median(ratios) <= 1.3)


def _procs_target(results: Results) -> Target:
    text = "processes statekit spawns do not grow with N"
    counts = {(c.scenario, c.n): c.procs for c in results.cells
              if c.tool == REFERENCE and c.procs is not None}
    if len({n for _, n in counts}) < 2:
        return Target(text, "needs two sizes", None)
    shown = ", ".join(f"{s} N={n}: {p}" for (s, n), p in sorted(counts.items()))
    grows = any(counts[(s, n)] != counts[(s, m)] for (s, n) in counts for (t, m) in counts
                if s == t)
    return Target(text, shown, not grows)


def targets_markdown(items: Iterable[Target]) -> str:
    marks = {True: "met", False: "MISSED", None: "not measured"}
    lines = ["| target | measured | verdict |", "| --- | --- | --- |"]
    lines += [f"| {t.text} | {t.measured} | {marks[t.met]} |" for t in items]
    return "\n".join(lines)
