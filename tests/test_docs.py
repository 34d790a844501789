"""The documentation is true: every fenced sample of README.md and docs/*.md is checked
against statekit's real behaviour, the reference is what the schemas generate, and the
README stays short.

Conventions for a fenced block's info string (every block must have one of these):

- ``yaml``: a state sample. A mapping is a whole state file and must pass
  ``statekit validate``. A list is states as they stand in a ``states:`` list: a list
  quoted from a shipped state file must stand in it verbatim (the shipped files are
  validated and converged by their own tests); the other lists of one page are joined
  into one file (phases ``network`` and ``auth``, then any other phase in the order it
  appears) that must pass ``statekit validate``.
- ``json``: a JSON report sample. One with an ``error`` key must have the keys of the
  object statekit prints on exit 3 (and its ``error`` object's keys); one with a ``hint``
  key, those of a ``statekit drops --format json`` line; any other must have the keys of
  a real ``--format json`` report, of its states, changes and summary.
- ``sh``: shell lines. The block must pass ``bash -n``; every ``statekit`` command in it
  must be accepted by statekit's own parser; ``validate`` and ``show`` commands whose
  paths exist are run (exit 0) and ``converge`` ones are run with ``--check`` under a
  temporary ``--root`` in a private network namespace (valid input: not exit 3);
  ``make TARGET`` must name a Makefile target; ``pip``/``pipx install .`` needs the
  ``statekit`` entry point in pyproject.toml. ``drops`` commands are run in a private
  network namespace with ``--timeout 0`` (exit 0).
- ``text``: output or anything shown only; not checked.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from statekit import cli, drops
from tests.conftest import REPO, statekit, write

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CHECKED = ("yaml", "json", "sh", "text")
SEPARATORS = {";", "&", "&&", "||", "|", "do", "then", "done", "while", "if", "fi"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
# Written by other hands (the telemetry and failure-model docs): linked, not required here.
ELSEWHERE = {"docs/telemetry.md", "docs/failure-model.md"}
STATE = "phases: [main]\nstates:\n  - id: app-env\n    type: env_file\n    phase: main\n" \
        "    path: /etc/app/env\n    entries: {A: '1'}\n"


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """(info string, body, line) of each fenced block."""
    text = page.read_text()
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1)
            for m in FENCE.finditer(text)]


def ids(kind: str) -> list[Any]:
    return [pytest.param(page, body, id=f"{page.name}:{line}")
            for page in PAGES for info, body, line in blocks(page) if info == kind]


def test_every_block_has_a_known_info_string() -> None:
    unknown = [f"{p.name}:{line} {info!r}" for p in PAGES for info, _, line in blocks(p)
               if info not in CHECKED]
    assert unknown == [], "use yaml, json, sh or text (see the top of tests/test_docs.py)"


def test_there_are_samples_of_each_kind() -> None:
    kinds = {info for page in PAGES for info, _, _ in blocks(page)}
    assert {"yaml", "json", "sh"} <= kinds


# --- yaml --------------------------------------------------------------------------------

SHIPPED = "\n".join(p.read_text() for p in sorted((REPO / "states").glob("*.yaml")))


def page_files(tmp_path: Path) -> list[Path]:
    """Each whole-file sample as is; each page's state lists joined into one file."""
    files = []
    for page in PAGES:
        listed: list[Any] = []
        for index, (info, body, _) in enumerate(blocks(page)):
            if info != "yaml":
                continue
            data = yaml.safe_load(body)
            if isinstance(data, dict):
                files.append(write(tmp_path / f"{page.stem}-{index}.yaml", body))
            elif body in SHIPPED:
                continue  # quoted from states/: checked there, verbatim
            else:
                assert isinstance(data, list), f"{page.name}: a yaml block is a file or a list"
                listed.extend(data)
        if listed:
            phases = ["network", "auth", *dict.fromkeys(s["phase"] for s in listed)]
            doc = {"phases": list(dict.fromkeys(phases)), "states": listed}
            files.append(write(tmp_path / f"{page.stem}-states.yaml", yaml.safe_dump(doc)))
    return files


def test_yaml_samples_are_valid_state_files(tmp_path: Path) -> None:
    files = page_files(tmp_path)
    assert len(files) >= 2
    for path in files:
        run = statekit(["validate", str(path)])
        assert run.returncode == 0, f"{path.name}: {run.stderr}"


# --- json --------------------------------------------------------------------------------

def keys(value: Any) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "root").mkdir()
    state = write(tmp / "s.yaml", STATE)
    run = statekit(["converge", "--check", "--format", "json", "--root", str(tmp / "root"),
                    str(state)])
    assert run.returncode == 0, run.stderr
    return dict(json.loads(run.stdout))


@pytest.fixture(scope="module")
def real_error(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("error")
    state = write(tmp / "s.yaml", STATE.replace("'1'", "'{{ nope }}'"))
    run = statekit(["converge", "--format", "json", "--root", str(tmp), str(state)])
    assert run.returncode == 3
    return dict(json.loads(run.stdout))


@pytest.mark.parametrize(("page", "body"), ids("json"))
def test_json_samples_have_the_real_keys(page: Path, body: str, real_report: dict[str, Any],
                                         real_error: dict[str, Any]) -> None:
    sample = json.loads(body)
    if "hint" in sample:  # a `statekit drops --format json` line
        from tests.test_drops import SHOWN

        real = drops.as_dict(SHOWN)
        assert keys(sample) == keys(real)
        assert all(keys(name) == keys(real["names"][0]) for name in sample["names"])
        return
    if "error" in sample:
        assert keys(sample) == keys(real_error)
        assert keys(sample["error"]) == keys(real_error["error"])
        return
    assert keys(sample) == keys(real_report)
    assert keys(sample["summary"]) == keys(real_report["summary"])
    real_state = real_report["states"][0]
    for state in sample["states"]:
        assert keys(state) == keys(real_state)
        for change in state["changes"]:
            assert keys(change) == keys(real_state["changes"][0])


# --- sh ----------------------------------------------------------------------------------

def commands(body: str) -> list[list[str]]:
    """Each simple command of the block (split at ;, &, |, do, then), comments dropped."""
    out = []
    for line in body.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        redirect = False
        for word in [*lexer, ";"]:
            if word in SEPARATORS:
                if current:
                    out.append(current)
                current = []
            elif redirect:
                redirect = False  # the redirection's target: not an argument
            elif word in (">", ">>", "<", "2>", "&>") or word.endswith((">", ">>")):
                redirect = word[-1] in "<>"
            else:
                current.append(word)
    return out


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, re.M))


def run_statekit_sample(argv: list[str], netns: str, tmp: Path) -> None:
    """``argv`` (after ``statekit``): parsed; validate/show/converge --check run for real."""
    try:
        args = cli.parse_args(argv)  # argparse exits 3 on anything it refuses
    except SystemExit as exc:  # --version, --help
        assert exc.code == 0, argv
        assert statekit(argv).returncode == 0
        return
    paths = [REPO / p for p in getattr(args, "paths", []) or ["states"]]
    missing = [p for p in paths if not p.exists()]
    # a path of the container (/opt/statekit/states) is only parsed; a relative one must
    # exist in the repository
    assert all(p.is_absolute() and not p.is_relative_to(REPO) for p in missing) or \
        not missing, missing
    if missing:
        return
    if args.command in ("validate", "show"):
        run = statekit(argv, cwd=REPO)
        assert run.returncode == 0, run.stderr
    elif args.command == "drops":  # bound in a private namespace, ended at once
        run = statekit([*argv, "--timeout", "0"], netns=netns, cwd=REPO)
        assert run.returncode == 0, run.stderr
    elif args.command == "converge":
        root = tmp / "root"
        root.mkdir(exist_ok=True)
        run = statekit([*argv, "--check", "--root", str(root),
                        "--lock-file", str(tmp / "lock")], netns=netns, cwd=REPO,
                       env={"STATEKIT_NO_CACHE": "1"})
        assert run.returncode != 3, run.stderr


@pytest.mark.parametrize(("page", "body"), ids("sh"))
def test_shell_samples_are_true(page: Path, body: str, netns: str, tmp_path: Path) -> None:
    syntax = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True,
                            check=False)
    assert syntax.returncode == 0, syntax.stderr
    for command in commands(body):
        words = command[1:] if command[0] == "exec" else command
        if words[0] == "statekit":
            run_statekit_sample(words[1:], netns, tmp_path)
        elif words[0] == "make":
            assert set(words[1:]) <= makefile_targets(), words
        elif words[:2] in (["pip", "install"], ["pipx", "install"]):
            assert words[2:] == ["."]
            pyproject = (REPO / "pyproject.toml").read_text()  # the isolated launcher
            assert 'script-files = ["bin/statekit"]' in pyproject, "no statekit command"
        elif "/" in words[0]:
            assert (REPO / words[0]).exists(), words


# --- the pages themselves ----------------------------------------------------------------

def test_readme_is_short_and_names_the_two_commands_and_the_first_try() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) < 6 * 1024
    for needed in ("make demo", "make test", "pip install .", "pipx install .", "make try",
                   "Data residency"):
        assert needed in text


def test_links_point_to_files_that_exist() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            path = (page.parent / target).resolve()
            relative = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else target
            assert path.exists() or relative in ELSEWHERE, f"{page.name}: {target}"


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_reference", REPO / "scripts" / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_generated_from_the_schemas() -> None:
    committed = (REPO / "docs" / "reference.md").read_text()
    assert committed == load_generator().generate(), "run `make docs` and commit"


def test_reference_names_every_field_of_every_schema() -> None:
    text = (REPO / "docs" / "reference.md").read_text()
    for schema_file in sorted((REPO / "statekit" / "schema").glob("*.json")):
        schema = json.loads(schema_file.read_text())
        for field in schema["properties"]:
            assert f"| `{field}` |" in text, f"{schema_file.name}: {field}"


def test_generator_copes_with_fields_it_has_never_seen() -> None:
    """Other fields will be added to the schemas: any JSON Schema shape gives a row."""
    gen = load_generator()
    root = {"title": "x: a new type", "required": ["a"], "properties": {
        "a": {"type": "boolean", "default": False, "description": "new"},
        "b": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "c": {"type": "array", "items": {"type": "object", "properties": {"r": {}}}},
        "d": {"not": {"const": 1}}, "e": True, "f": {"pattern": "a|b"}}}
    table = gen.rows(root, root)
    assert len(table) == 2 + 6
    assert "| `a` | true or false | required |" in table[2]
    assert "a\\|b" in table[7]


def test_the_sh_package_decision_is_written_down_and_kept() -> None:
    """The design card lists `sh`; docs/development.md says why it is not used, and no
    code (runtime, tests, scripts, bench) imports it, as the page says."""
    text = (REPO / "docs" / "development.md").read_text()
    assert "## Why no `sh` package" in text
    sources = [p for d in ("statekit", "tests", "scripts", "bench")
               for p in (REPO / d).rglob("*.py")]
    importing = [str(p) for p in sources
                 if re.search(r"^\s*(import sh\b|from sh import)", p.read_text(), re.M)]
    assert importing == []
    assert '"sh' not in (REPO / "pyproject.toml").read_text().split("[project.optional")[0]
