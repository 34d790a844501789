"""typeshim.Record behaves as the typing.NamedTuple it is to mypy, without importing typing
or collections at run time."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import NamedTuple

import pytest

from statekit.typeshim import Generic, Record, TypeVar


class Point(Record):
    """A point."""

    x: int
    y: int = 0
    label: str = ""

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> Point:
        return self._replace(x=self.x + dx)


class Twin(NamedTuple):
    x: int
    y: int = 0
    label: str = ""


CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    ((1,), {}), ((1, 2), {}), ((1, 2, "a"), {}), ((), {"x": 1}), ((1,), {"label": "b"}),
    ((), {"y": 2, "x": 1}),
]
BAD_CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    ((), {}), ((1, 2, "a", 4), {}), ((1,), {"x": 2}), ((1,), {"z": 3}), ((), {"y": 1}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_fields_and_defaults_as_namedtuple(args: tuple[object, ...],
                                          kwargs: dict[str, object]) -> None:
    point, twin = Point(*args, **kwargs), Twin(*args, **kwargs)  # type: ignore[arg-type]
    assert tuple(point) == tuple(twin)
    assert tuple.__eq__(point, twin) and hash(point) == hash(twin)
    assert (point.x, point.y, point.label) == (twin.x, twin.y, twin.label)
    assert point._asdict() == twin._asdict()
    assert repr(point) == repr(twin).replace("Twin", "Point")


@pytest.mark.parametrize(("args", "kwargs"), BAD_CALLS)
def test_bad_calls_raise_type_error(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Twin(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Point(*args, **kwargs)  # type: ignore[arg-type]


def test_class_attributes_methods_and_helpers() -> None:
    p = Point(3, -4, "p")
    assert Point._fields == ("x", "y", "label") == Twin._fields
    assert Point._field_defaults == {"y": 0, "label": ""} == Twin._field_defaults
    assert Point.__doc__ == "A point."
    assert p.norm1 == 7 and p.moved(1) == Point(4, -4, "p")
    assert Point._make([1, 2, "m"]) == Point(1, 2, "m")
    with pytest.raises(ValueError, match="unexpected field names"):
        p._replace(z=1)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.extra = 1  # type: ignore[attr-defined]
    x, y, label = p
    assert (x, y, label) == (3, -4, "p") and p[1] == -4
    match p:
        case Point(a, b):
            assert (a, b) == (3, -4)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol: int) -> None:
    p = Point(1, 2, "x")
    back = pickle.loads(pickle.dumps(p, protocol=protocol))
    assert back == p and type(back) is Point


def test_defaults_must_come_last() -> None:
    with pytest.raises(TypeError, match="without a default come first"):
        class Bad(Record):
            a: int = 0
            b: int  # type: ignore[misc]


def test_generic_and_typevar_stand_ins() -> None:
    T = TypeVar("T")

    class Box(Generic[T]):
        pass

    assert Box[int] is Box


def test_no_typing_or_collections_at_run_time() -> None:
    code = ("import sys; import statekit.typeshim as t\n"
            "class R(t.Record):\n    a: int\n    b: str = ''\n"
            "print(sorted(m for m in ('typing', 'collections') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": "."})
    assert out.stdout.strip() == "[]"
