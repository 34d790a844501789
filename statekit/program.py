"""The loaded program: phases, vars, secrets and states, ready for the engine.

Plain classes rather than dataclasses: this module is on the no-op converge's path, where
importing ``dataclasses`` (and ``inspect`` with it) and generating their methods costs
more than statekit's own work (``make bench``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any



class State:
    """One state as declared, then rendered and parsed by the loader."""

    __slots__ = ("enabled", "ensure", "file", "id", "index", "line", "lines", "onchanges",
                 "order", "phase", "raw", "requires", "sealed", "spec", "type")

    def __init__(
        self, *, id: str, type: str, phase: str, file: str, line: int, index: int, order: int,
        requires: list[str] | None = None, onchanges: list[str] | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        self.id, self.type, self.phase = id, type, phase
        self.file, self.line = file, line
        self.index = index  # position in the file, for messages (states[index])
        self.order = order  # position across all files, for deterministic tie-breaking
        self.requires: list[str] = requires or []
        self.onchanges: list[str] = onchanges or []
        self.raw: dict[str, Any] = raw or {}  # the type's own fields, unrendered
        #: the line of each of the state's fields, for errors found after loading
        self.lines: dict[str, int] = {}
        self.ensure = "present"
        self.enabled = True  # the rendered ``when``
        self.spec: Any = None  # the resource's parsed spec
        #: in a cached program: the spec held a secret, so it was not written; a converge
        #: that runs this state loads the files again (statekit/engine/cache.py)
        self.sealed = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def label(self) -> str:
        """How messages name the state: ``states[fw-api]``."""
        return f"states[{self.id}]"

    def __repr__(self) -> str:
        return f"State({self.id!r}, {self.type!r}, {self.phase!r}, {self.where})"


class Program:
    """Everything a converge needs, validated and rendered before anything is touched."""

    __slots__ = ("env_used", "input_errors", "phases", "secret_names", "secrets", "shown",
                 "states", "vars")

    def __init__(
        self, *, phases: list[str], states: list[State], secrets: set[str] | None = None,
        env_used: list[str] | None = None, input_errors: list[Any] | None = None,
        secret_names: list[str] | None = None,
    ) -> None:
        self.phases = phases
        self.states = states
        self.secrets: set[str] = secrets or set()  # secret values, to mask in all output
        #: the environment variables the files declare secret (their values: ``secrets``)
        self.secret_names: list[str] = secret_names or []
        #: environment variables the program was rendered from (None: all of them)
        self.env_used = env_used
        #: refused input values of files with ``on_invalid_input: absent`` (StateErrors):
        #: those files' states converge absent, and the run exits 3
        self.input_errors: list[Any] = input_errors or []
        #: for ``show``, as the loader rendered them: each state's own fields as it gave
        #: them (by id), and the vars. Never cached (engine/cache.py writes a new Program).
        self.shown: dict[str, dict[str, Any]] = {}
        self.vars: dict[str, Any] = {}
