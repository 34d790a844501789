"""What statekit takes from :mod:`typing`, without importing it at run time.

``typing`` is what makes this worth a module: importing it brings ``re``, ``enum``,
``functools`` and ``contextlib`` along, 42 M instructions on a 38 M-instruction
interpreter start, paid on every converge (measured with callgrind; ``make bench``).
For the type checker every name here *is* the ``typing`` one; at run time:

- :class:`Record`: specs, plans and small results are records::

      class Change(Record):
          action: str
          reason: str = ""

  is a :class:`typing.NamedTuple` to the type checker. At run time the class statement
  makes a tuple subclass with what ``collections.namedtuple`` gives (field properties,
  defaults, keyword arguments, ``_replace``, ``_asdict``, ``_make``, ``_fields``, the
  repr, pickling), without ``namedtuple``'s cost: it compiles a ``__new__`` for every
  class with ``eval`` (0.1 ms each, 2 ms for statekit's records) and imports
  ``collections``.
- :class:`Generic` and :func:`TypeVar`: subscripting a generic class gives the class
  itself, and a type variable is just its name.

The other ways the no-op path stays lean (imports inside functions, ``TYPE_CHECKING =
False``): ARCHITECTURE.md, "Lean imports".
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic, TypeVar
    from typing import NamedTuple as Record
else:
    try:
        from _collections import _tuplegetter  # what collections.namedtuple uses
    except ImportError:  # pragma: no cover -- another Python implementation
        from operator import itemgetter

        def _tuplegetter(index: int, doc: str) -> property:
            return property(itemgetter(index), doc=doc)

    class _Tuple(tuple):  # type: ignore[type-arg]
        """What every record class has: a tuple with named fields, as namedtuple gives."""

        __slots__ = ()
        _fields: tuple[str, ...] = ()
        _field_defaults: dict[str, object] = {}  # noqa: RUF012 -- replaced per class

        def __new__(cls, *args: object, **kwargs: object) -> _Tuple:
            if kwargs or len(args) != len(cls._fields):
                args = cls._bind(args, kwargs)
            return tuple.__new__(cls, args)

        @classmethod
        def _bind(cls, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[object, ...]:
            fields, defaults = cls._fields, cls._field_defaults
            if len(args) > len(fields):
                raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, "
                                f"{len(args)} given")
            values = list(args)
            for name in fields[len(args):]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in defaults:
                    values.append(defaults[name])
                else:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            if kwargs:
                raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments "
                                f"{sorted(kwargs)}")
            return tuple(values)

        @classmethod
        def _make(cls, iterable: object) -> _Tuple:
            values = tuple(iterable)  # type: ignore[call-overload]
            if len(values) != len(cls._fields):
                raise TypeError(f"{cls.__name__} takes {len(cls._fields)} values")
            return tuple.__new__(cls, values)

        def _replace(self, **changes: object) -> _Tuple:
            values = [changes.pop(f, v) for f, v in zip(self._fields, self, strict=True)]
            if changes:
                raise ValueError(f"unexpected field names: {sorted(changes)}")
            return tuple.__new__(type(self), values)

        def _asdict(self) -> dict[str, object]:
            return dict(zip(self._fields, self, strict=True))

        def __repr__(self) -> str:
            shown = ", ".join(f"{f}={v!r}" for f, v in zip(self._fields, self, strict=True))
            return f"{type(self).__name__}({shown})"

        def __getnewargs__(self) -> tuple[object, ...]:
            return tuple(self)

    class _RecordType(type):
        def __new__(
            mcls, name: str, bases: tuple[type, ...], namespace: dict[str, object]
        ) -> type:
            if not bases:  # Record itself
                return super().__new__(mcls, name, bases, namespace)
            if bases != (Record,):
                raise TypeError(f"{name}: a record derives from Record only")
            annotations = namespace.get("__annotations__", {})
            fields = tuple(annotations)  # type: ignore[arg-type]
            defaults = {f: namespace[f] for f in fields if f in namespace}
            if any(f in defaults for f in fields[: len(fields) - len(defaults)]):
                raise TypeError(f"{name}: fields without a default come first")
            body = {k: v for k, v in namespace.items() if k not in defaults}
            body.update({f: _tuplegetter(i, f"field {f}") for i, f in enumerate(fields)})
            body.update(__slots__=(), _fields=fields, _field_defaults=defaults,
                        __match_args__=fields)
            return type(name, (_Tuple,), body)

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
