"""``command``: run an argv list (no shell), with an optional ``creates`` guard.

Like Salt's ``cmd.run``: it runs whenever it is reached (use ``onchanges`` to run it only
after a change), or not at all when the ``creates`` path exists. Its exit status decides
changed or failed; its output goes into the report, secrets masked (on a failure, or
when killed at ``timeout``, the tails of both stdout and stderr).

A bare program name is looked up only in the trusted system directories (and
``STATEKIT_TOOL_DIRS``), never in ``PATH``; see :mod:`statekit.host.runner`.
"""

from __future__ import annotations

from statekit.errors import ApplyError, FieldError
from statekit.host.host import Host
from statekit.resources.base import Change, Meta, Plan, Resource
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_OUTPUT_LIMIT = 4000
_ERROR_TAIL = 1000  # of each stream, in a failure's one-line message


def _tail(text: str) -> str:
    """The last lines of ``text`` (at most ``_ERROR_TAIL`` characters), on one line."""
    tail = text[-_ERROR_TAIL:].strip()
    return ("..." if len(text.strip()) > len(tail) else "") + " | ".join(tail.splitlines())


class CommandSpec(Record):
    present: bool
    argv: tuple[str, ...] = ()
    creates: str | None = None
    timeout: float = 60.0


class Command(Resource[CommandSpec, bool]):
    type_name = "command"
    is_action = True

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> CommandSpec:
        if not meta.present:
            return CommandSpec(present=False)
        argv = tuple(str(a) for a in fields["argv"])
        if any("\0" in a for a in argv):
            raise FieldError("argv", "an argument may not contain NUL")
        return CommandSpec(present=True, argv=argv, creates=fields.get("creates"),
                           timeout=float(fields["timeout"]))

    def read(self, spec: CommandSpec, host: Host) -> bool:
        """Whether the ``creates`` guard exists."""
        return bool(spec.creates) and host.fs.exists(str(spec.creates))

    def plan(self, spec: CommandSpec, current: bool) -> Plan:
        if not spec.present:
            return Plan(notes=("ensure: absent, nothing to run",))
        if current:
            return Plan(notes=(f"{spec.creates} exists",))
        from statekit.digits import shell_join

        return Plan((Change("run", spec.argv[0], "command runs when reached"),),
                    diff="run: " + shell_join(spec.argv))

    def apply(self, spec: CommandSpec, plan: Plan, host: Host) -> Mapping[str, Any]:
        """Run it; a failure (non-zero exit, or killed at ``timeout``) reports the tails
        of both stdout and stderr (masked on the way out, like all output)."""
        try:
            result = host.run(spec.argv, timeout=spec.timeout, check=False)
        except ApplyError as exc:  # timed out (or could not start)
            raise ApplyError(exc.message, argv=spec.argv, returncode=exc.returncode,
                             stderr=_tail(exc.stderr), stdout=_tail(exc.stdout)) from None
        output = {"returncode": result.returncode, "stdout": result.stdout[-_OUTPUT_LIMIT:],
                  "stderr": result.stderr[-_OUTPUT_LIMIT:]}
        if not result.ok:
            raise ApplyError("command failed", argv=spec.argv, returncode=result.returncode,
                             stderr=_tail(result.stderr), stdout=_tail(result.stdout))
        return output
