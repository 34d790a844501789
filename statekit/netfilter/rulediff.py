"""The ``-``/``+``/``~`` lines that show a change to a chain's rules (the dry run's diff).

``- <rule>``: the rule goes; ``+ <rule>``: it comes; ``~ <rule> (moved)``: it stays, and
moves. The rules there now come first, in their order (each one that goes or moves), then
the rules that come, in the desired order.

Three places show such a change, all with :func:`marks` and :func:`text`: one state's
block of rules in a chain (:mod:`statekit.netfilter.block`), a purged chain's member (its
own rules: :func:`statekit.resources.iptables_rule.member_diff`) and the purged chain
whole (:mod:`statekit.resources.iptables_chain`). They differ only in which rules they
call moved.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

#: A mark, as the verb of its :class:`~statekit.resources.base.Change` in the report.
ACTIONS = {"-": "remove", "+": "add", "~": "move"}
MOVED = " (moved)"


def marks(current: Sequence[str], desired: Sequence[str],
          moved: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(mark, rule)`` pairs taking ``current`` to ``desired``: each current rule that is
    not desired (``-``) or is in ``moved`` (``~``), in current order; then each desired
    rule that is not current (``+``), in desired order."""
    want, have = set(desired), set(current)
    out = [("-" if rule not in want else "~", rule) for rule in current
           if rule not in want or rule in moved]
    return out + [("+", rule) for rule in desired if rule not in have]


def out_of_order(current: Sequence[str], desired: Sequence[str]) -> set[str]:
    """The rules in both lists that must move: those outside the longest run of them
    that is already in the desired order (the fewest ``~`` lines that explain it)."""
    from difflib import SequenceMatcher  # not on the no-op path: only for a change

    want, have = set(desired), set(current)
    kept_now = [rule for rule in current if rule in want]
    kept = [rule for rule in desired if rule in have]
    in_order: set[int] = set()
    for block in SequenceMatcher(None, kept_now, kept, autojunk=False).get_matching_blocks():
        in_order.update(range(block.b, block.b + block.size))
    return {rule for index, rule in enumerate(kept) if index not in in_order}


def text(mark: str, rule: str) -> str:
    """One diff line as a person reads it: ``- <rule>``, ``+ <rule>``, ``~ <rule> (moved)``."""
    return f"{mark} {rule}{MOVED if mark == '~' else ''}"
