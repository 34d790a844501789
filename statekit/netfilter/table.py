"""The table model: chains with policies and rule lines, as ``iptables-save`` prints them.

A :class:`Table` is what one save of one (table, family) says, and what staged changes
predict. :class:`Op` is one change; :meth:`Table.apply` plays it on the model exactly as
``iptables-restore`` plays the matching line (``Op.restore``) on the kernel.

Every rule statekit writes carries an owner tag, its comment:
``statekit:<id>[ <comment>][ <name>][ gone=<when>]``: the owning state's id, the state's
``comment``, a ``destination_host`` name (:func:`name_tag`), and for an address that left
that name's answers but is still in its grace period, when it left (:data:`GONE`). This
module is the one reader of tags: :func:`owner` (the id), :func:`comment_of` (the whole
tag) and :func:`split_gone` (the tag without its ``gone=`` mark, and the mark's time).
"""

from __future__ import annotations

from statekit.digits import digits
from statekit.typeshim import Record

BUILTIN: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
TAG_PREFIX = "statekit:"
_MARK = f'-m comment --comment "{TAG_PREFIX}'
_ID_START = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_START + "_-"


#: Marks the rule of an address that left its name's answers, and when (Unix seconds):
#: ``statekit:<id> <name> gone=<when>`` (kept for the rule's ``pin_grace``).
GONE = " gone="
#: iptables' limit on a comment, and the room a ``gone=`` mark takes.
COMMENT_LIMIT = 255
_GONE_ROOM = len(GONE) + 10
_COMMENT = " --comment "


def name_tag(base: str, name: str) -> str:
    """The tag of the rules of one ``destination_host`` name: ``<base> <name>``. A name
    too long to fit with a ``gone=`` mark is cut, and a digest of the whole name keeps
    it unique (``<base> <head>~<digest>``); tags are compared, never parsed back."""
    tag = f"{base} {name}"
    if len(tag) + _GONE_ROOM <= COMMENT_LIMIT:
        return tag
    from _blake2 import blake2b

    digest = blake2b(name.encode(), digest_size=6).hexdigest()
    room = COMMENT_LIMIT - _GONE_ROOM - len(base) - 2 - len(digest)
    return f"{base} {name[:max(room, 0)]}~{digest}"


def comment_of(line: str) -> str | None:
    """The comment of a saved rule line (statekit's tags have no quote or backslash,
    which ``fields.text`` and DNS names exclude), or None."""
    at = line.find(_COMMENT)
    if at < 0:
        return None
    rest = line[at + len(_COMMENT):]
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return rest[1:end] if end > 0 else None
    return rest.split(" ", 1)[0]


def split_gone(comment: str) -> tuple[str, int | None]:
    """A comment's tag and its ``gone=`` mark's time (None: no mark, a current pin)."""
    at = comment.rfind(GONE)
    if at >= 0:
        when = comment[at + len(GONE):]
        if digits(when) and len(when) <= 12:
            return comment[:at], int(when)
    return comment, None


def owner(line: str) -> str | None:
    """The id of the state that owns a rule line (its comment tag), or None.

    The tag is ``-m comment --comment "statekit:ID`` with the id ending at a quote or a
    space. String search, not a regex: this runs on every line of every save, and ``re``
    is not imported on the no-op path."""
    at = line.find(_MARK)
    while at >= 0:
        start = at + len(_MARK)
        end = line.find('"', start)
        space = line.find(" ", start, end if end >= 0 else len(line))
        if space >= 0:
            end = space
        ident = line[start:end] if end >= 0 else ""
        if ident and ident[0] in _ID_START and not ident.strip(_ID_CHARS):
            return ident
        at = line.find(_MARK, start)
    return None


class Chain:
    """One chain: its policy (``-`` for a user chain), rule lines and their owners."""

    __slots__ = ("owners", "policy", "rules")

    def __init__(self, policy: str = "-", rules: list[str] | None = None,
                 owners: list[str | None] | None = None) -> None:
        self.policy = policy
        self.rules: list[str] = rules if rules is not None else []
        self.owners: list[str | None] = owners if owners is not None else [
            owner(line) for line in self.rules]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chain) and (self.policy, self.rules, self.owners) == (
            other.policy, other.rules, other.owners)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Chain({self.policy!r}, {self.rules!r}, {self.owners!r})"

    def copy(self) -> Chain:
        return Chain(self.policy, list(self.rules), list(self.owners))

    def insert(self, index: int, line: str) -> None:
        self.rules.insert(index, line)
        self.owners.insert(index, owner(line))

    def remove(self, line: str) -> None:
        index = self.rules.index(line)
        del self.rules[index]
        del self.owners[index]

    def owned_by(self, state_id: str) -> list[int]:
        return [i for i, o in enumerate(self.owners) if o == state_id]

    def first_of(self, state_id: str) -> int | None:
        found = self.owned_by(state_id)
        return found[0] if found else None


class Op(Record):
    """One change to one chain: ``insert`` (at index ``at``), ``append``, ``delete``,
    ``flush``, ``policy``, ``new_chain`` or ``delete_chain``; ``restore`` is its
    iptables-restore line."""

    kind: str
    chain: str
    restore: str
    line: str = ""
    at: int = 0


class Table:
    """One table of one family: chains in save order. ``missing`` says why this machine
    has no such family at all (then there are no chains, and nothing is written)."""

    __slots__ = ("chains", "family", "missing", "name")

    def __init__(self, name: str, family: str, chains: dict[str, Chain] | None = None,
                 missing: str = "") -> None:
        self.name = name
        self.family = family
        self.chains: dict[str, Chain] = chains if chains is not None else {}
        self.missing = missing

    def apply(self, op: Op) -> None:
        if op.kind == "insert":
            self.chains[op.chain].insert(op.at, op.line)
        elif op.kind == "delete":
            self.chains[op.chain].remove(op.line)
        elif op.kind == "policy":
            self.chains[op.chain].policy = op.line
        elif op.kind == "new_chain":
            self.chains[op.chain] = Chain()
        elif op.kind == "delete_chain":
            del self.chains[op.chain]
        elif op.kind == "flush":
            chain = self.chains[op.chain]
            chain.rules.clear()
            chain.owners.clear()
        elif op.kind == "append":
            self.chains[op.chain].insert(len(self.chains[op.chain].rules), op.line)

    def references(self, chain: str) -> list[str]:
        """Rule lines (in any chain) that jump or go to ``chain``."""
        jumps = (f" -j {chain} ", f" -g {chain} ")
        return [line for c in self.chains.values() for line in c.rules
                if any(jump in f"{line} " for jump in jumps)]


def empty_table(name: str, family: str) -> Table:
    """A table as a fresh namespace has it: the built-in chains, policy ACCEPT, no rules."""
    return Table(name, family, {c: Chain("ACCEPT") for c in BUILTIN[name]})
