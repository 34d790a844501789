"""The error hierarchy: bad input (exit 3) versus a failure while applying (exit 1)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """``; did you mean 'x'?`` for the nearest of ``choices`` (any case), or ''."""
    if not isinstance(word, str):
        return ""
    from difflib import get_close_matches  # only when there is an error to explain

    lower = {c.lower(): c for c in choices}
    close = get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean {lower[close[0]]!r}?" if close else ""


class StatekitError(Exception):
    """Base of every error statekit reports to its user (never as a traceback)."""


class StateError(StatekitError):
    """Invalid input: a state file, schema, template or environment value.

    Rendered as ``file:line: field: message``; the CLI exits 3 and nothing is touched.
    """

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class StateErrors(StateError):
    """Every input error of one run (a list of :class:`StateError`, in file order).

    It reads as its first error (``file``, ``line``, ``field``, ``message``: what a
    reader of one error expects); ``str()`` is every error, one a line, and the CLI
    prints at most :data:`SHOWN` of them, then how many more there are.
    """

    def __init__(self, errors: Sequence[StateError]) -> None:
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


#: How many input errors the text output lists before "... and N more".
SHOWN = 20


def every_error(exc: StatekitError) -> list[StatekitError]:
    """The errors ``exc`` stands for: its list, or itself."""
    return list(exc.errors) if isinstance(exc, StateErrors) else [exc]


class FieldError(StateError):
    """Invalid value of one field, raised by a resource's ``parse``.

    ``field`` is relative to the state (``mode``, ``entries.FOO``); the loader adds the
    file, the line and the ``states[<id>].`` prefix.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class ApplyError(StatekitError):
    """A failure while reading or changing the machine; the state is ``failed`` (exit 1)."""

    def __init__(
        self, message: str, *, argv: Sequence[str] | None = None, returncode: int | None = None,
        stderr: str = "", stdout: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.argv = list(argv) if argv is not None else None
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout

    def __str__(self) -> str:
        """The message, the command (quoted as a shell would read it), its stderr, and its
        stdout when kept (a ``command`` state's output, tails only)."""
        text = self.message
        if self.argv is not None:
            from statekit.digits import shell_join

            text += f" (command: {shell_join(self.argv)}; exit {self.returncode})"
        if self.stderr.strip():
            text += f": {self.stderr.strip()}"
        if self.stdout.strip():
            text += f"; stdout: {self.stdout.strip()}"
        return text


class LockTimeout(StatekitError):
    """Another converge held the lock for longer than ``--lock-timeout`` (exit 1)."""
