"""The engine: phases in order, states in dependency order, read-plan-apply-verify.

For each state: read the current state, plan (pure), apply unless ``check``, then read
again and plan again: anything left to change means ``failed``. A plan may carry errors
that did not stop it (a name that did not resolve): it is applied, and the state is
``failed``. A requirement that failed makes its dependents ``skipped`` (``blocked_by``
names it); ``onchanges`` runs a state only when a listed state changed (or would, in
check mode). Transactional types (iptables) are staged and committed together before
anything that depends on them runs, and at the phase's end; their outcomes are reported
then, in check mode too, so both modes print the same lines in the same order.
"""

from __future__ import annotations

from statekit import resources
from statekit.engine import graph
from statekit.errors import ApplyError
from statekit.host.host import Host
from statekit.program import Program, State
from statekit.resources.base import Plan, Resource, Transactional
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable
    from typing import Any

OK, CHANGED, FAILED, SKIPPED = "ok", "changed", "failed", "skipped"


class Outcome:
    """What happened to one state (the report's row)."""

    __slots__ = ("blocked_by", "error", "plan", "reason", "state", "status")

    def __init__(self, state: State, status: str, plan: Plan | None = None,
                 error: str | None = None, reason: str = "",
                 blocked_by: str | None = None) -> None:
        self.state = state
        self.status = status
        self.plan = plan if plan is not None else Plan()
        self.error = error
        self.reason = reason
        #: the failed (or itself blocked) requirement that made this state skipped
        self.blocked_by = blocked_by

    def __repr__(self) -> str:
        return f"Outcome({self.state.id!r}, {self.status!r}, error={self.error!r})"


class _Pending(Record):
    outcome: Outcome
    keys: frozenset[Hashable]


class Engine:
    """Converges one program on one host: ``Engine(program, host).converge(phases)``.

    It owns the order of the run and each state's outcome; the resources own what a
    state means, and the host how the machine is reached. ``check``: plan and report,
    write nothing. ``on_outcome`` is called with each outcome as soon as it is settled,
    in run order (the text report prints as the run goes).
    """

    def __init__(self, program: Program, host: Host, *, check: bool = False,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.program = program
        self.host = host
        self.check = check
        self.on_outcome = on_outcome or (lambda _o: None)
        self.outcomes: dict[str, Outcome] = {}
        self.pending: dict[str, _Pending] = {}
        self.unreported: list[str] = []  # states run but not yet reported, in run order

    def preflight(self, phases: Iterable[str] | None = None) -> None:
        """Before anything is applied: what only the machine shows is wrong with the
        input of the selected phases' enabled states (``Resource.preflight``: a jump to
        a chain that no state declares and the live table lacks). Every such error is
        raised at once (StateErrors: exit 3, nothing touched)."""
        from statekit.errors import StateError, StateErrors

        selected = set(phases) if phases else set(self.program.phases)
        found = [StateError(error.message, file=state.file,
                            line=state.lines.get(str(error.field).split(".")[0], state.line),
                            field=f"{state.label}.{error.field}")
                 for state in self.program.states
                 if state.phase in selected and state.enabled and state.spec is not None
                 for error in resources.get(state.type).preflight(state.spec, self.host)]
        if found:
            raise StateErrors(found)

    def converge(self, phases: Iterable[str] | None = None) -> list[Outcome]:
        selected = set(phases) if phases else set(self.program.phases)
        for phase in self.program.phases:
            if phase in selected:
                self._run_phase(phase)
        return list(self.outcomes.values())

    def _run_phase(self, phase: str) -> None:
        self.host.new_phase()
        members = [s for s in self.program.states if s.phase == phase]
        self._start_reads(members)
        for state in graph.order(members):
            self._flush_if_needed(state)
            self.outcomes[state.id] = self._run_state(state)
            self.unreported.append(state.id)
            self._report()
        self._flush()
        self.host.new_phase()

    def _start_reads(self, members: list[State]) -> None:
        """Start the read-only commands the phase's states will run (the table saves)
        together, before the first state: their waits overlap each other and the
        planning of the states before them. Best effort: a state reads as it would
        have, whatever fails here."""
        try:
            reads = [argv for s in members if s.enabled and s.spec is not None
                     for argv in resources.get(s.type).reads(s.spec, self.host)]
        except Exception:  # each state's read runs (and reports) it anyway
            return
        self.host.start(reads)

    def _report(self) -> None:
        """Report settled outcomes in run order: a staged state holds back the ones run
        after it until it is committed (or, in check mode, until the phase ends)."""
        while self.unreported and self.unreported[0] not in self.pending:
            self.on_outcome(self.outcomes[self.unreported.pop(0)])

    def _run_state(self, state: State) -> Outcome:
        if not state.enabled:
            return Outcome(state, SKIPPED, reason="when: condition is false")
        blocked = self._blocked_by(state)
        if blocked:
            return Outcome(state, SKIPPED, reason=f"requirement {blocked!r} failed",
                           blocked_by=blocked)
        if state.onchanges and not self._triggered(state):
            return Outcome(state, OK, reason="no change in onchanges: "
                           + ", ".join(state.onchanges))
        resource = resources.get(state.type)
        try:
            return self._converge_state(state, resource)
        except ApplyError as exc:
            return Outcome(state, FAILED, error=str(exc))
        except Exception as exc:  # any fault of one state fails that state alone
            return Outcome(state, FAILED, error=f"{type(exc).__name__}: {exc}")

    def _converge_state(self, state: State, resource: Resource[Any, Any]) -> Outcome:
        plan = resource.plan(state.spec, resource.read(state.spec, self.host))
        if not plan.changed:
            return _with_errors(Outcome(state, OK, plan, reason="; ".join(plan.notes)))
        if isinstance(resource, Transactional):
            resource.stage(state.spec, plan, self.host)
            outcome = Outcome(state, CHANGED, plan)
            self.pending[state.id] = _Pending(outcome, resource.transaction_keys(state.spec))
            return outcome
        if self.check:
            resource.predict(state.spec, plan, self.host)
            return _with_errors(Outcome(state, CHANGED, plan))
        learnt = resource.apply(state.spec, plan, self.host)
        if learnt:
            plan = plan._replace(facts={**plan.facts, **learnt})
        if not resource.is_action:
            self._verify(state, resource)
        return _with_errors(Outcome(state, CHANGED, plan, reason="; ".join(plan.notes)))

    def _verify(self, state: State, resource: Resource[Any, Any]) -> None:
        again = resource.plan(state.spec, resource.read(state.spec, self.host))
        if again.changed:
            left = "; ".join(f"{c.action} {c.target}: {c.reason}" for c in again.changes)
            raise ApplyError(f"verify failed, still to change after apply: {left}")

    def _blocked_by(self, state: State) -> str | None:
        for target in [*state.requires, *state.onchanges]:
            dep = self.outcomes.get(target)
            if dep is not None and (dep.status == FAILED or dep.blocked_by is not None):
                return target
        return None

    def _triggered(self, state: State) -> bool:
        return any(self.outcomes.get(t) is not None and self.outcomes[t].status == CHANGED
                   for t in state.onchanges)

    def _flush_if_needed(self, state: State) -> None:
        """Commit what ``state``'s requisites staged before it runs, unless they share a
        transaction with it: then it plans against their staged model, and they are
        committed together (a rule of two families and the chain that purges one of
        them, say: the rule is verified once the chain has written its part)."""
        if not self.pending:
            return
        keys: frozenset[Hashable] = frozenset()
        resource = resources.get(state.type)
        if isinstance(resource, Transactional) and state.spec is not None and state.enabled:
            keys = resource.transaction_keys(state.spec)
        for _, target in graph.edges(state):
            pending = self.pending.get(target)
            if pending is not None and not pending.keys & keys:
                self._flush()
                return

    def _flush(self) -> None:
        """Commit staged transactions, then verify (or fail) each staged state; in check
        mode, report what they would do (the staged model stays, so later plans see the
        predicted tables, until the phase ends)."""
        failures: dict[Hashable, str] = {} if self.check else self.host.commit()
        pending, self.pending = self.pending, {}
        for sid, item in pending.items():
            self._settle(sid, item, failures)
        self._report()

    def _settle(self, sid: str, item: _Pending, failures: dict[Hashable, str]) -> None:
        outcome = item.outcome
        failed = [failures[k] for k in item.keys if k in failures]
        if self.check:
            pass
        elif failed:
            outcome.status, outcome.error = FAILED, "transaction failed, nothing changed: " \
                + failed[0]
        else:
            try:
                self._verify(outcome.state, resources.get(outcome.state.type))
            except ApplyError as exc:
                outcome.status, outcome.error = FAILED, str(exc)
            except Exception as exc:  # as in _run_state: this state alone fails
                outcome.status, outcome.error = FAILED, f"{type(exc).__name__}: {exc}"
        self.outcomes[sid] = _with_errors(outcome)


def _with_errors(outcome: Outcome) -> Outcome:
    """A plan's errors (applied all the same) make the state ``failed``."""
    if outcome.plan.errors and outcome.status != FAILED:
        outcome.status = FAILED
        outcome.error = "; ".join(outcome.plan.errors)
    return outcome
