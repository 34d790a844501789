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

A ``json`` report sample right after a ``yaml`` list of states is what statekit prints
for those states (``converge --check --format json`` on an empty root), exactly.

The prose is checked too, for the kinds of drift that happened: every repository path
in backquotes exists; every ``--option`` is one of statekit's (or a listed tool's); the
usage synopsis lists each subcommand's options, no more, no fewer; every path under
``/run/statekit`` or ``/var/lib/statekit`` is one statekit uses; the state language's
top-level keys (and their count) are the file schema's; the list of places where a typo
gets its nearest spelling is true, each place tried.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from statekit import cli
from statekit.commands import drops
from tests.conftest import REPO, statekit, write

pytestmark = pytest.mark.netns

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


def report_samples() -> list[Any]:
    """(page, states yaml, report json) for each json report that follows a yaml list."""
    out = []
    for page in PAGES:
        for (info, body, _), (after, sample, line) in itertools.pairwise(blocks(page)):
            if info == "yaml" and after == "json" and isinstance(yaml.safe_load(body), list):
                out.append(pytest.param(body, sample, id=f"{page.name}:{line}"))
    return out


@pytest.mark.parametrize(("states", "sample"), report_samples())
def test_json_report_samples_are_what_statekit_prints(states: str, sample: str,
                                                      tmp_path: Path) -> None:
    expected = json.loads(sample)
    doc = {"phases": expected["phases"], "states": yaml.safe_load(states)}
    path = write(tmp_path / "s.yaml", yaml.safe_dump(doc))
    (tmp_path / "root").mkdir()
    run = statekit(["converge", "--check", "--format", "json", "--root",
                    str(tmp_path / "root"), str(path)])
    assert json.loads(run.stdout) == expected, run.stdout


def test_there_is_an_exact_report_sample() -> None:
    assert report_samples()


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
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]  # NAME=value before a command: its environment
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


def test_readme_says_who_it_is_for_shows_the_language_and_what_the_first_run_costs() -> None:
    from statekit.resources import REGISTRY

    text = (REPO / "README.md").read_text()
    first = " ".join(text.split("## ", 2)[0].split())  # before the first section
    assert "Claude Code" in first and "Fly.io" in first
    sample = next(body for info, body, _ in blocks(REPO / "README.md") if info == "yaml")
    assert len(sample.splitlines()) <= 12 and "states:" in sample and "{{" in sample
    assert all(f"`{name}`" in text for name in REGISTRY), "the resource types"
    for cost in ("4 minutes", "3.3 GB", "progress"):
        assert cost in text
    assert "pipx ensurepath" in text and "PIPX_BIN_DIR=/usr/local/bin pipx install ." in text


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


# --- the prose ---------------------------------------------------------------------------

PROSE = [*PAGES, REPO / "ARCHITECTURE.md", REPO / "RELIABILITY.md"]
#: the options of other tools the docs name (iptables, ip6tables, mypy)
OTHER_OPTIONS = {"--noflush", "--wait", "--comment", "--strict", "--help", "--version",
                 "--uid-owner", "--syn", "--tcp-flags", "--icmpv6-type"}
REPO_PATH = re.compile(r"`((?:states|statekit|scripts|tests|docs|bench|examples|bin|\.tools)"
                       r"/[^`\s]*)`")


def statekit_options() -> dict[str, set[str]]:
    return {command: {a.name for a in args if a.name.startswith("--")}
            for command, (_, args) in cli.COMMANDS.items()}


def test_every_repository_path_in_the_docs_exists() -> None:
    missing = []
    for page in PROSE:
        for path in REPO_PATH.findall(page.read_text()):
            if "<" in path:
                continue  # a pattern: tests/test_<module>.py
            if not (any(REPO.glob(path.rstrip("/"))) if "*" in path else (REPO / path).exists()):
                missing.append(f"{page.name}: {path}")
    assert missing == []


def test_every_option_in_the_docs_exists() -> None:
    known = set().union(*statekit_options().values()) | OTHER_OPTIONS
    unknown = {f"{page.name}: {option}" for page in PROSE
               for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", page.read_text())
               if option not in known}
    assert unknown == set()


def test_the_usage_synopsis_lists_each_subcommand_with_its_options() -> None:
    text = (REPO / "docs" / "usage.md").read_text()
    synopsis = blocks(REPO / "docs" / "usage.md")[0][1]
    shown: dict[str, set[str]] = {}
    command = ""
    for line in synopsis.splitlines():
        words = line.split()
        if words[:1] == ["statekit"]:  # a subcommand, or a top-level option ("")
            command = "" if words[1].startswith("-") else words[1]
        shown.setdefault(command, set()).update(re.findall(r"--[a-z][a-z-]*", line))
    shown.pop("", None)
    assert shown == statekit_options(), "docs/usage.md's first block: the synopsis"
    assert "statekit --version" in text


def test_the_runtime_paths_in_the_docs_are_the_ones_statekit_uses() -> None:
    from statekit.engine.cache import CACHE_PATH
    from statekit.host.host import MEMO_DIR
    from statekit.host.lock import DEFAULT_LOCK
    from statekit.masking import KEY_PATH
    from statekit.report.last_run import PATH as LAST_RUN

    used = {DEFAULT_LOCK, CACHE_PATH, KEY_PATH, LAST_RUN, MEMO_DIR}
    dirs = {str(Path(p).parent) for p in used}
    named = {f"{page.name}: {path}" for page in PROSE
             for path in re.findall(r"(?:/run|/var/lib)/statekit[^\s`'\),;:]*",
                                    page.read_text())
             if path.rstrip("/.") not in used | dirs}
    assert named == set()
    assert "/run/statekit/lock" in (REPO / "docs" / "usage.md").read_text()


NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_the_state_language_names_the_schemas_top_level_keys() -> None:
    text = " ".join((REPO / "docs" / "state-language.md").read_text().split())
    keys = list(json.loads((REPO / "statekit" / "schema" / "file.json").read_text())
                ["properties"])
    count = re.search(r"A state file is YAML with (\w+) top-level keys", text)
    assert count and count.group(1) == NUMBERS[len(keys)]
    listed = re.search(r"Top-level keys: ((?:`\w+`,? (?:and )?)+)and nothing else", text)
    assert listed, "state-language.md: the 'Top-level keys: ...' line"
    assert sorted(re.findall(r"`(\w+)`", listed.group(1))) == sorted(keys)


#: each place usage.md says a typo gets its nearest spelling: (argv, file text, expected)
TYPO = "phases: [main]\nstates:\n  - id: app-env\n    type: env_file\n    phase: main\n" \
       "    path: /etc/app/env\n    entries: {A: '{{ app_mode }}'}\nvars: {app_mode: x}\n"
TYPOS: dict[str, tuple[list[str], str, str]] = {
    "field names": (["validate"], TYPO.replace("path:", "pth:"), "did you mean 'path'?"),
    "types": (["validate"], TYPO.replace("type: env_file", "type: env_fil"),
              "did you mean 'env_file'?"),
    "phases": (["validate"], TYPO.replace("phase: main", "phase: mian"),
               "did you mean 'main'?"),
    "fixed values": (["validate"], TYPO.replace("path:", "ensure: absnt\n    path:"),
                     "did you mean 'absent'?"),
    "requisites": (["validate"], TYPO.replace("path:", "requires: [app-evn]\n    path:"),
                   "did you mean 'app-env'?"),
    "template variables": (["validate"], TYPO.replace("{{ app_mode }}", "{{ app_mod }}"),
                           "did you mean 'app_mode'?"),
    "targets and chains": (["validate"], TYPO.replace("vars:", "  - id: fw\n    type: "
                           "iptables_rule\n    phase: main\n    chain: OUTPUT\n"
                           "    jump: ACCEPTT\nvars:"), "did you mean 'ACCEPT'?"),
    "`--var` names": (["validate", "--var", "app_mdoe=1"], TYPO,
                      "did you mean 'app_mode'?"),
    "`--phase` names": (["converge", "--check", "--phase", "mian"], TYPO,
                        "did you mean 'main'?"),
    "`--id` names": (["show", "--id", "app-evn"], TYPO, "did you mean 'app-env'?"),
}


def test_the_nearest_spelling_is_given_wherever_the_docs_promise_it(tmp_path: Path) -> None:
    text = " ".join((REPO / "docs" / "usage.md").read_text().split())
    promise = re.search(r"A typo gets the nearest valid spelling \(`did you mean`\) in: "
                        r"([^.]+)\.", text)
    assert promise, "usage.md: the sentence that says where a typo gets its nearest spelling"
    assert promise.group(1).split(", ") == list(TYPOS)
    (tmp_path / "root").mkdir()
    for argv, state, expected in TYPOS.values():
        path = write(tmp_path / "s.yaml", state)
        extra = ["--root", str(tmp_path / "root")] if argv[0] == "converge" else []
        run = statekit([*argv, *extra, str(path)])
        assert run.returncode == 3 and expected in run.stderr, (argv, run.stderr)


GRAPH_KEYS = {"id", "type", "phase", "requires", "onchanges", "when", "ensure"}


def test_every_field_the_shipped_states_use_is_explained_in_resources_md() -> None:
    """Each field the shipped states rely on (`purge` and `ignore` were missing) is named
    in its type's section of docs/resources.md, in its text or its example."""
    text = (REPO / "docs" / "resources.md").read_text()
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", text, re.M | re.S))
    missing = []
    for path in sorted((REPO / "states").rglob("*.yaml")):
        for state in yaml.safe_load(path.read_text()).get("states", []):
            section = sections.get(state["type"], "")
            missing += [f"{state['type']}.{field}" for field in state
                        if field not in GRAPH_KEYS and not re.search(
                            rf"`{field}[`:]|^\s*-? ?{field}:", section, re.M)]
    assert sorted(set(missing)) == []
