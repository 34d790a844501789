"""The house rule, checked: imports point down and never make a cycle.

The layers, top to bottom (ARCHITECTURE.md)::

    cli -> subcommands, lockdown, status, drops -> out.report, out.last_run
        -> load/ and run/engine, run/cache -> resources/
        -> netfilter/, run/host, corefile -> run/runner, run/files, run/lock, out.masking,
           program -> errors, digits, dnsname, typeshim, testhook, contract

Every ``import`` of a statekit module in statekit/ (at module level, inside a function,
or under ``TYPE_CHECKING``: a type-only import is a dependency too) is read with
:mod:`ast`. An import from a lower layer to a higher one fails the test, and so does any
cycle between modules, whatever their layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

from statekit.engine.graph import cycle_in

PACKAGE = Path(__file__).resolve().parents[1] / "statekit"

LAYERS: list[tuple[str, ...]] = [
    ("statekit.cli", "statekit.__main__"),
    ("statekit.commands.subcommands", "statekit.commands.lockdown", "statekit.commands.status", "statekit.commands.drops"),
    ("statekit.report.report", "statekit.report.last_run"),
    ("statekit.load.", "statekit.engine.engine", "statekit.engine.cache", "statekit.engine.graph"),
    ("statekit.resources.",),
    ("statekit.netfilter.", "statekit.host.host", "statekit.corefile"),
    ("statekit.host.runner", "statekit.host.files", "statekit.run.lock", "statekit.masking",
     "statekit.program"),
    ("statekit.errors", "statekit.digits", "statekit.dnsname", "statekit.typeshim",
     "statekit.testhook", "statekit.contract", "statekit.jsonlite", "statekit"),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    for index, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name.endswith(".") and (
                    module.startswith(name) or module == name[:-1])):
                return index
    if module in ("statekit.load", "statekit.run", "statekit.out"):
        return len(LAYERS) - 1  # a folder's __init__: only a docstring
    raise AssertionError(f"{module}: in no layer; add it to LAYERS (and ARCHITECTURE.md)")


def imports(path: Path, modules: set[str]) -> set[str]:
    """The statekit modules ``path`` imports (``from statekit.x import y`` names module
    ``statekit.x.y`` when that is a module, else ``statekit.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("statekit")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("statekit"):
            base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("statekit"):
                found.add(str(arg.value))
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports(path, modules) - {name} for name, path in files.items()}


def test_every_import_points_down() -> None:
    deps = graph()
    upward = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
              for src, targets in deps.items() for dst in targets
              if dst in deps and layer(dst) < layer(src)]
    assert upward == []


def test_no_import_cycle() -> None:
    deps = graph()
    cycle = cycle_in({name: sorted(deps[name]) for name in sorted(deps)})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_check_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The walk itself: a planted upward import is found."""
    planted = tmp_path / "x.py"
    planted.write_text("from statekit.cli import main\nfrom statekit import digits\n")
    assert imports(planted, {"statekit.digits"}) == {"statekit.cli", "statekit.digits"}
    assert layer("statekit.cli") < layer("statekit.host.runner")
    assert cycle_in({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
