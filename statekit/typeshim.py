"""What statekit takes from :mod:`typing`, without importing it at run time.

``typing`` is what makes this worth a module: importing it brings ``re``, ``enum``,
``functools`` and ``contextlib`` along, 42 M instructions on a 38 M-instruction
interpreter start, paid on every converge (measured with callgrind; ``make bench``).
For the type checker every name here *is* the ``typing`` one; at run time:

- :class:`Record`: specs, plans and small results are records::

      class Change(Record):
          action: str
          reason: str = ""

  is a :class:`typing.NamedTuple` to the type checker; at run time the class statement
  builds the same class with :func:`collections.namedtuple` (fields from the
  annotations, defaults from the class body, methods and properties copied over).
- :class:`Generic` and :func:`TypeVar`: subscripting a generic class gives the class
  itself, and a type variable is just its name.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic, TypeVar
    from typing import NamedTuple as Record
else:
    from collections import namedtuple as _namedtuple

    _NOT_COPIED = frozenset({"__module__", "__qualname__", "__dict__", "__weakref__"})

    class _RecordType(type):
        def __new__(
            mcls, name: str, bases: tuple[type, ...], namespace: dict[str, object]
        ) -> type:
            if not bases:  # Record itself
                return super().__new__(mcls, name, bases, namespace)
            if bases != (Record,):
                raise TypeError(f"{name}: a record derives from Record only")
            fields = tuple(namespace.get("__annotations__", {}))
            defaults = [namespace[f] for f in fields if f in namespace]
            if any(f in namespace for f in fields[: len(fields) - len(defaults)]):
                raise TypeError(f"{name}: fields without a default come first")
            cls = _namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
            cls.__qualname__ = namespace["__qualname__"]
            for attr, value in namespace.items():
                if attr not in fields and attr not in _NOT_COPIED:
                    setattr(cls, attr, value)
            return cls

    class Record(metaclass=_RecordType):
        """Base of records: see the module docstring."""

        __slots__ = ()


    class Generic:
        """Subscripting gives the class itself: ``Resource[Spec, Current]`` is ``Resource``."""

        __slots__ = ()

        def __class_getitem__(cls, params: object) -> type:
            return cls

    def TypeVar(name: str, *constraints: object, bound: object = None) -> str:
        return name


__all__ = ["Generic", "Record", "TypeVar"]
