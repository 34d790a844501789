"""The loaded program: phases, vars, secrets and states, ready for the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class State:
    """One state as declared, then rendered and parsed by the loader."""

    id: str
    type: str
    phase: str
    file: str
    line: int
    index: int  # position in the file, for messages (states[index])
    order: int  # position across all files, for deterministic tie-breaking
    requires: list[str] = field(default_factory=list)
    onchanges: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the type's own fields, unrendered
    ensure: str = "present"
    enabled: bool = True  # the rendered ``when``
    spec: Any = None  # the resource's parsed spec

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Program:
    """Everything a converge needs, validated and rendered before anything is touched."""

    phases: list[str]
    states: list[State]
    secrets: set[str] = field(default_factory=set)  # secret values, to mask in all output
    vars: dict[str, Any] = field(default_factory=dict)
    #: environment variables the program was rendered from (None: all of them)
    env_used: list[str] | None = None

    def by_id(self) -> dict[str, State]:
        return {s.id: s for s in self.states}
