"""The work, and how each tool is told to do it: statekit, the floor, pyinfra, ansible-core.

Each tool writes its input (state file, spec, params) into a per-run directory, and gives
the argv and environment of one converge. Every tool's env file lands under
``WORKDIR/root`` (statekit through ``--root``, the others by absolute path): nothing is
written under the host's /etc.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from harness import BENCH, BenchError, in_ns

REPO = BENCH.parent
PEERS_VENV = BENCH / ".venv"
PEERS_BIN = PEERS_VENV / "bin"
FIRST_ADDRESS = ipaddress.IPv4Address("198.18.0.1")  # RFC 2544 benchmarking range
ENV_FILE = "etc/statekit-bench/agent.env"
ENV_ENTRIES = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.invalid/otlp",
    "OTEL_LOG_USER_PROMPTS": "1",
    "OTEL_LOG_TOOL_DETAILS": "1",
}


@dataclass(frozen=True)
class Workload:
    """N owned rules (TCP ACCEPT to N distinct addresses, one port) plus one env file."""

    n: int
    port: int = 443
    chain: str = "OUTPUT"

    def addresses(self) -> list[str]:
        return [str(FIRST_ADDRESS + i) for i in range(self.n)]

    @staticmethod
    def content() -> str:
        return "".join(f"{k}={v}\n" for k, v in ENV_ENTRIES.items())

    def params(self, workdir: Path, tag: str) -> dict[str, object]:
        """The work as plain data, for the tools that read a JSON file."""
        return {"addresses": self.addresses(), "port": self.port, "chain": self.chain,
                "tag": tag, "file": str(workdir / "root" / ENV_FILE),
                "content": self.content(), "mode": 0o600}


def statekit_command() -> list[str]:
    """``statekit`` as people and the entrypoint run it: the console script beside this
    interpreter. (``python -m statekit`` would add runpy's own imports, about 10 ms, to
    every run.)"""
    script = Path(sys.executable).parent / "statekit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "statekit"]


def base_env() -> dict[str, str]:
    """A small, fixed environment: no GRAFANA_* (telemetry off), no user config."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}


class Tool(ABC):
    """One contender: how to lay out its input and the argv of one converge."""

    name: str = ""
    #: the peer's own program in bench/.venv, when it has one
    peer_program: str | None = None

    def missing(self) -> str | None:
        """Why this tool cannot run here, or None."""
        if self.peer_program is None:
            return None
        exe = PEERS_BIN / self.peer_program
        return None if exe.exists() else f"{exe} not installed"

    @abstractmethod
    def prepare(self, work: Workload, workdir: Path) -> None:
        """Write this tool's input for ``work`` into ``workdir``."""

    @abstractmethod
    def argv(self, workdir: Path) -> list[str]:
        """The argv of one converge."""

    def env(self, workdir: Path) -> dict[str, str]:
        return base_env()


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


class Statekit(Tool):
    """``statekit converge --root WORKDIR/root state.yaml``."""

    name = "statekit"

    def prepare(self, work: Workload, workdir: Path) -> None:
        import yaml

        doc = {"phases": ["bench"], "states": [
            {"id": "bench-rules", "type": "iptables_rule", "phase": "bench",
             "table": "filter", "chain": work.chain, "protocol": "tcp",
             "destination": work.addresses(), "dport": work.port, "jump": "ACCEPT"},
            {"id": "bench-env", "type": "env_file", "phase": "bench",
             "path": "/" + ENV_FILE, "entries": ENV_ENTRIES, "mode": "0600"},
        ]}
        (workdir / "root").mkdir(exist_ok=True)
        (workdir / "state.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def argv(self, workdir: Path) -> list[str]:
        return [*statekit_command(), "converge", "--root",
                str(workdir / "root"), str(workdir / "state.yaml")]


class Floor(Tool):
    """``python bench/floor.py spec.json`` with statekit's interpreter."""

    name = "floor"

    def prepare(self, work: Workload, workdir: Path) -> None:
        _write_json(workdir / "floor.json", work.params(workdir, "bench-floor"))

    def argv(self, workdir: Path) -> list[str]:
        return [sys.executable, str(BENCH / "floor.py"), str(workdir / "floor.json")]


class Pyinfra(Tool):
    """``pyinfra @local bench/peers/deploy.py -y``, the work in BENCH_PARAMS."""

    name = "pyinfra"

    peer_program = "pyinfra"

    def prepare(self, work: Workload, workdir: Path) -> None:
        _write_json(workdir / "params.json", work.params(workdir, "bench-pyinfra"))

    def argv(self, workdir: Path) -> list[str]:
        return [str(PEERS_BIN / "pyinfra"), "@local", str(BENCH / "peers" / "deploy.py"),
                "-y"]

    def env(self, workdir: Path) -> dict[str, str]:
        return {**base_env(), "BENCH_PARAMS": str(workdir / "params.json")}


class Ansible(Tool):
    """``ansible-playbook -i localhost, -c local bench/peers/playbook.yml``."""

    name = "ansible"

    peer_program = "ansible-playbook"

    def prepare(self, work: Workload, workdir: Path) -> None:
        params = work.params(workdir, "bench-ansible")
        params["ansible_python_interpreter"] = str(PEERS_BIN / "python")
        _write_json(workdir / "params.json", params)

    def argv(self, workdir: Path) -> list[str]:
        return [str(PEERS_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                str(BENCH / "peers" / "playbook.yml"), "-e", f"@{workdir / 'params.json'}"]

    def env(self, workdir: Path) -> dict[str, str]:
        home = workdir / "ansible-home"
        return {**base_env(), "ANSIBLE_HOME": str(home),
                "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
                "ANSIBLE_REMOTE_TEMP": str(home / "remote-tmp"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0"}


TOOLS: dict[str, Tool] = {t.name: t for t in (Statekit(), Floor(), Pyinfra(), Ansible())}


def owned_rules(saved: list[str], work: Workload) -> list[str]:
    """The filter table's rules that accept the work's port (what every tool adds)."""
    return [ln for ln in saved if ln.startswith(f"-A {work.chain} ")
            and f"--dport {work.port}" in ln and ln.endswith("-j ACCEPT")]


def verify(ns: str, work: Workload, wd: Path) -> list[str]:
    """Check the converge did the work (N rules, the 0600 file, no DROP policy)."""
    saved = in_ns(ns, ["iptables-save", "-t", "filter"]).stdout.splitlines()
    if any(ln.startswith(":") and " DROP " in ln for ln in saved):
        raise BenchError("a DROP policy was set")
    rules = owned_rules(saved, work)
    if len(rules) != work.n:
        raise BenchError(f"expected {work.n} rules, found {len(rules)}")
    env = wd / "root" / "etc" / "statekit-bench" / "agent.env"
    if env.read_text() != work.content() or env.stat().st_mode & 0o777 != 0o600:
        raise BenchError(f"{env}: wrong content or mode")
    return rules
