"""The house rule, checked: every folder is one layer, imports point down, no cycle.

The layers, top to bottom (ARCHITECTURE.md draws the map)::

    cli, __main__                  arguments, exit codes
    commands/                      what each command does; the lockdown check
    report/                        the report, the record of the last run
    load/                          state files -> Program
    engine/                        runs a Program; the program cache
    resources/                     one module per resource type
    netfilter/, corefile, masking  what the resources build on
    host/                          the machine: processes, files, the lock
    program, errors, contract, digits, dnsname, jsonlite, typeshim, testhook

A *folder* here is a subpackage of statekit (``statekit.host``), or a module that sits
directly in statekit/ (``statekit.errors``), which counts as a folder of its own. Every
``import`` of a statekit module in statekit/ (at module level, inside a function, or under
``TYPE_CHECKING``: a type-only import is a dependency too) is read with :mod:`ast`. The
tests fail on:

- an import into a folder of a higher layer (``upward``);
- a cycle between modules (``module_cycle``);
- a cycle between folders, drawn folder by folder (``folder_cycle``);
- a folder that holds two layers: one of its modules imports a module of another folder
  which, itself or through others outside the folder, imports back into the first folder
  (``splits``: the other folder's modules sit between the folder's own). Such a path is a
  folder cycle too; this check names the modules, so the fix is plain.

The last tests plant one violation of each kind in a small import graph and check that
the matching check finds it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Set
from pathlib import Path

from statekit.engine.graph import cycle_in

PACKAGE = Path(__file__).resolve().parents[1] / "statekit"
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"

#: The folders, layer by layer from the top: a folder imports only its own layer or lower.
LAYERS: list[tuple[str, ...]] = [
    ("statekit.cli", "statekit.__main__"),
    ("statekit.commands",),
    ("statekit.report",),
    ("statekit.load",),
    ("statekit.engine",),
    ("statekit.resources",),
    ("statekit.netfilter", "statekit.corefile", "statekit.masking"),
    ("statekit.host",),
    ("statekit.program", "statekit.errors", "statekit.contract", "statekit.digits",
     "statekit.dnsname", "statekit.jsonlite", "statekit.typeshim", "statekit.testhook",
     "statekit"),
]

Deps = Mapping[str, Set[str]]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def folder(module: str) -> str:
    """``statekit.host.files`` -> ``statekit.host``; ``statekit.errors`` stays itself."""
    return ".".join(module.split(".")[:2])


def layer(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if folder(module) in names:
            return index
    raise AssertionError(f"{folder(module)}: in no layer; add it to LAYERS (and to the map "
                         "in ARCHITECTURE.md)")


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
    """Every statekit module -> the statekit modules it imports."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports(path, modules) - {name} for name, path in files.items()}


# --- the checks: each takes an import graph, so a planted one can be checked too ---------

def upward(deps: Deps) -> list[str]:
    return [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
            for src in sorted(deps) for dst in sorted(deps[src]) if layer(dst) < layer(src)]


def module_cycle(deps: Deps) -> list[str] | None:
    return cycle_in({name: sorted(deps[name]) for name in sorted(deps)})


def folder_cycle(deps: Deps) -> list[str] | None:
    folders: dict[str, set[str]] = {}
    for src, targets in deps.items():
        folders.setdefault(folder(src), set()).update(
            folder(dst) for dst in targets if folder(dst) != folder(src))
    return cycle_in({name: sorted(folders[name]) for name in sorted(folders)})


def splits(deps: Deps) -> list[str]:
    """Each folder whose modules another folder's modules sit between: the first path
    found from one of its modules, out of it, and back into it."""
    found = []
    for home in sorted({folder(m) for m in deps}):
        path = _way_back(deps, home)
        if path:
            found.append(f"{home} holds two layers: " + " -> ".join(path))
    return found


def _way_back(deps: Deps, home: str) -> list[str] | None:
    """A path ``a -> x -> ... -> b``: ``a`` and ``b`` in ``home``, the rest outside it."""
    for start in sorted(m for m in deps if folder(m) == home):
        came_from: dict[str, str] = {}
        queue = sorted(m for m in deps[start] if folder(m) != home)
        for first in queue:
            came_from[first] = start
        while queue:
            node = queue.pop(0)
            for nxt in sorted(deps.get(node, ())):
                if folder(nxt) == home:
                    path = [nxt, node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if nxt not in came_from:
                    came_from[nxt] = node
                    queue.append(nxt)
    return None


# --- the house ---------------------------------------------------------------------------

def test_every_import_points_down() -> None:
    assert upward(graph()) == []


def test_no_cycle_between_modules() -> None:
    cycle = module_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_no_cycle_between_folders() -> None:
    cycle = folder_cycle(graph())
    assert cycle is None, "folder cycle: " + " -> ".join(cycle or ())


def test_every_folder_is_one_layer() -> None:
    assert splits(graph()) == []


def test_the_layers_name_the_folders_there_are() -> None:
    there = {folder(m) for m in graph()}
    listed = {name for names in LAYERS for name in names}
    assert sorted(listed - there) == [], "in LAYERS, not in statekit/: remove them"
    assert sorted(there - listed) == [], "in statekit/, in no layer: add them to LAYERS"


def test_the_map_in_architecture_draws_the_layers_in_order() -> None:
    """Every folder is on ARCHITECTURE.md's map (``host/``, ``errors.py``), and the map
    names them top to bottom in the order of LAYERS."""
    text = ARCHITECTURE.read_text()
    drawn = text[text.index("## The layers"):text.index("## Lean imports")]
    drawn_at = {}
    for name in (n for names in LAYERS for n in names if n != "statekit"):
        short = name.removeprefix("statekit.")
        shown = re.search(rf"(?<![\w./]){re.escape(short)}(/|\.py\b)", drawn)
        assert shown, f"{short}: not on the map in ARCHITECTURE.md"
        drawn_at[name] = shown.start()
    ranks = [layer(name) for name in sorted(drawn_at, key=drawn_at.__getitem__)]
    assert ranks == sorted(ranks), "the map draws a folder above one of a higher layer"


# --- the checks find what they are for ---------------------------------------------------

def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    planted = tmp_path / "x.py"
    planted.write_text("TYPE_CHECKING = False\nif TYPE_CHECKING:\n"
                       "    from statekit.cli import main\n"
                       "from statekit import digits\n"
                       "def f():\n    import statekit.engine.engine\n"
                       "    __import__('statekit.commands.status')\n")
    assert imports(planted, {"statekit.digits"}) == {
        "statekit.cli", "statekit.digits", "statekit.engine.engine",
        "statekit.commands.status"}


def test_an_upward_import_is_found() -> None:
    deps = {"statekit.host.files": {"statekit.errors", "statekit.engine.engine"},
            "statekit.engine.engine": {"statekit.host.files"}}
    assert upward(deps) == ["statekit.host.files (layer 7) imports statekit.engine.engine "
                            "(layer 4)"]


def test_a_cycle_between_modules_is_found() -> None:
    deps = {"statekit.host.a": {"statekit.host.b"}, "statekit.host.b": {"statekit.host.c"},
            "statekit.host.c": {"statekit.host.a"}}
    assert module_cycle(deps) == ["statekit.host.a", "statekit.host.b", "statekit.host.c",
                                  "statekit.host.a"]
    assert (folder_cycle(deps), splits(deps), upward(deps)) == (None, [], [])


def test_a_cycle_between_folders_is_found_even_when_no_module_path_closes_it() -> None:
    """load.a imports engine.b, and engine.c imports load.d: no module is on a cycle and
    no path leaves load and comes back, but the two folders point at each other."""
    deps = {"statekit.load.a": {"statekit.engine.b"}, "statekit.engine.b": set(),
            "statekit.engine.c": {"statekit.load.d"}, "statekit.load.d": set()}
    assert folder_cycle(deps) == ["statekit.engine", "statekit.load", "statekit.engine"]
    assert (module_cycle(deps), splits(deps)) == (None, [])


def test_a_folder_of_two_layers_is_found() -> None:
    """The old run/: its engine imports resources.base, which imports run.host (and, to
    show a longer way back, resources.env_file goes through masking)."""
    deps = {"statekit.run.engine": {"statekit.resources.base"},
            "statekit.resources.base": {"statekit.run.host"},
            "statekit.run.host": set(),
            "statekit.run.cache": {"statekit.resources.env_file"},
            "statekit.resources.env_file": {"statekit.masking"},
            "statekit.masking": {"statekit.run.files"}, "statekit.run.files": set()}
    assert splits(deps) == [
        "statekit.run holds two layers: statekit.run.cache -> statekit.resources.env_file"
        " -> statekit.masking -> statekit.run.files"]
    assert module_cycle(deps) is None
    assert folder_cycle(deps) is not None
    deps["statekit.run.cache"] = set()
    assert splits(deps) == ["statekit.run holds two layers: statekit.run.engine -> "
                            "statekit.resources.base -> statekit.run.host"]
