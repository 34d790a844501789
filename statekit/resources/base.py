"""The resource contract every state type implements.

A resource type is four small steps, the split pyinfra calls fact and operation:

1. ``parse(fields, meta) -> Spec``: the rendered, schema-valid fields, every default filled
   in from the type's JSON schema (the one source of defaults), become an immutable
   spec (a :class:`~statekit.typeshim.Record`, a ``NamedTuple`` to the type checker);
   semantic checks raise :class:`~statekit.errors.FieldError` (exit 3).
   With ``ensure: absent`` only the ``identity_fields`` are given: removal never needs
   the old values.
2. ``read(spec, host) -> Current``: what the machine has now, through ``host`` only
   (``host.run`` for processes, ``host.fs`` for files, ``host.cache`` to share one read
   between states, such as one ``iptables-save`` per table).
3. ``plan(spec, current) -> Plan``: pure. The changes (each with a reason) and the text
   diff, secrets already masked. An empty plan means ``ok``.
4. ``apply(spec, plan, host)``: make the changes; raise :class:`~statekit.errors.ApplyError`.
   An action (``command``) may return facts it learnt (its output) for the report.

The engine then reads again and plans again: a state whose second plan is not empty is
``failed`` (verify). Check mode stops after step 3, so it cannot write.

A type that applies many states in one transaction (iptables-restore) subclasses
:class:`Transactional`: the engine calls ``stage`` instead of ``apply`` (in check mode
too, so that later plans see the predicted state), and commits the staged transactions
before any state that depends on a staged one runs and at the end of the phase.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import MappingProxyType

from statekit.errors import ApplyError
from statekit.typeshim import Generic, Record, TypeVar

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Mapping, Sequence
    from typing import Any, ClassVar

    from statekit.errors import FieldError
    from statekit.host.host import Host

#: An empty, read-only mapping: the default of mapping fields (never shared mutably).
EMPTY: Mapping[str, Any] = MappingProxyType({})


class Meta(Record):
    """What a resource may know about the state it parses: its id and ``ensure``, and
    which fields the state gave (the others hold their schema defaults).

    ``hints``: with ``ensure: absent``, the other fields the state gave, rendered but
    neither validated nor needed (a removal may use them to say more, never to decide).
    """

    id: str
    ensure: str = "present"
    phase: str = ""
    where: str = ""  # file:line of the state, for messages
    given: frozenset[str] = frozenset()
    hints: Mapping[str, Any] = EMPTY

    @property
    def present(self) -> bool:
        return self.ensure == "present"


class Change(Record):
    """One change a plan makes: a verb, what it changes, and why."""

    action: str
    target: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"action": self.action, "target": self.target, "reason": self.reason}


class Plan(Record):
    """What converging one state would do. Data, read alike by the diff, JSON and apply.

    ``diff`` is text for people (unified diff for files, ``-``/``+`` lines for rules), with
    sensitive values already masked. ``facts`` are things read that the report shows
    (resolved addresses, say). ``notes`` explain an ok or a skipped step. ``payload`` is
    private to the resource (the new file's bytes): it is never printed. ``errors`` are
    faults that did not stop the plan (a name that did not resolve keeps its last-known
    addresses): the changes are still applied, and the state is reported ``failed``.
    """

    changes: tuple[Change, ...] = ()
    diff: str = ""
    notes: tuple[str, ...] = ()
    facts: Mapping[str, Any] = EMPTY
    payload: Any = None
    errors: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)


SpecT = TypeVar("SpecT")
CurrentT = TypeVar("CurrentT")


class Resource(ABC, Generic[SpecT, CurrentT]):
    """Base class of every resource type (see the module docstring for the contract)."""

    type_name: ClassVar[str]
    #: Fields ``ensure: absent`` still needs (a path, a table and chain): the others are
    #: rendered (template errors still count) but neither validated nor used.
    identity_fields: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def parse(self, fields: Mapping[str, Any], meta: Meta) -> SpecT:
        """Build the spec from rendered, schema-valid fields; raise FieldError."""

    def secret_values(self, spec: SpecT) -> Iterable[str]:
        """Values of fields the type marks sensitive: masked in every output."""
        return ()

    def ordering(self, spec: SpecT) -> Iterable[str]:
        """Ids of states this one must run after, beyond ``requires`` (e.g. ``before: id``)."""
        return ()

    def link(self, specs: Sequence[SpecT],
             program: Mapping[str, Sequence[Any]] = EMPTY) -> list[SpecT]:
        """All parsed specs of this type, once loaded, and ``program``: every type's
        parsed specs, by type name, in declaration order. A type may tell each spec about
        the others (a purged chain learns its member rules, and the rules that they are
        members). Pure."""
        return list(specs)

    def check(self, spec: SpecT,
              program: Mapping[str, Sequence[Any]] = EMPTY) -> Iterable[FieldError]:
        """After ``link``: what is wrong with ``spec`` that only the other states show (a
        jump to a chain no state declares, spelt like one that does; a zone another
        state serves too). Pure; each error is this state's (exit 3)."""
        return ()

    def preflight(self, spec: SpecT, host: Host) -> Iterable[FieldError]:
        """Before anything is applied (converge and ``--check``; never ``validate``,
        which touches no machine): what is wrong with ``spec`` that only the machine
        shows (a jump to a chain no state declares and the live table lacks). Reads
        only; each error is this state's (exit 3, nothing touched)."""
        return ()

    def reads(self, spec: SpecT, host: Host) -> Iterable[Sequence[str]]:
        """The read-only commands :meth:`read` will run for ``spec`` (argv lists): the
        engine starts a phase's together, ahead of its states (``Host.start``), so their
        waits overlap. None by default."""
        return ()

    @abstractmethod
    def read(self, spec: SpecT, host: Host) -> CurrentT:
        """Read the current state of what ``spec`` describes."""

    @abstractmethod
    def plan(self, spec: SpecT, current: CurrentT) -> Plan:
        """Pure: the changes that take ``current`` to ``spec``."""

    @abstractmethod
    def apply(self, spec: SpecT, plan: Plan, host: Host) -> Mapping[str, Any] | None:
        """Carry out ``plan``; raise ApplyError on failure.

        May return facts learnt while applying (a command's output) for the report.
        """

    def cuts_traffic(self, spec: SpecT) -> bool:
        """Whether applying ``spec`` cuts this machine's own outbound traffic (a DROP policy
        or a DROP/REJECT rule in the filter table's OUTPUT chain): at a terminal,
        ``converge`` asks before it does. No, by default."""
        return False

    def predict(self, spec: SpecT, plan: Plan, host: Host) -> None:
        """Check mode, after a plan that would change something: record what ``apply``
        would leave (in ``host.cache``), so the states after this one plan against it,
        as they would in a real converge. By default nothing is recorded."""

    #: An action (``signal``, ``command``) changes nothing that can be read back, so it is
    #: not verified, and it only runs when its plan says so.
    is_action: ClassVar[bool] = False


class Transactional(Resource[SpecT, CurrentT]):
    """A resource type whose changes are batched into one transaction per key."""

    def apply(self, spec: SpecT, plan: Plan, host: Host) -> Mapping[str, Any] | None:
        self.stage(spec, plan, host)
        for failure in host.commit().values():
            raise ApplyError(failure)
        return None

    @abstractmethod
    def transaction_keys(self, spec: SpecT) -> frozenset[Hashable]:
        """The transactions this spec's changes go to (e.g. ``("filter", "ipv4")``)."""

    @abstractmethod
    def stage(self, spec: SpecT, plan: Plan, host: Host) -> None:
        """Add ``plan`` to ``host.transaction(key)`` and to the cached model it reads."""
