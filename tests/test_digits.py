"""Digits are ASCII digits: ``str.isdigit`` alone let ``"¹"`` through to ``int()``, which
raised an internal error instead of a field error (found by the hostile-input tests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from statekit.digits import digits
from statekit.errors import FieldError
from statekit.netfilter import fields
from statekit.resources.managed_file import parse_owner
from statekit.resources.signal import parse_signal


@pytest.mark.parametrize(("text", "expected"), [
    ("0", True), ("443", True), ("", False), ("¹", False), ("٣", False), ("4 4", False),
    ("-1", False), ("1.0", False),
])
def test_digits(text: str, expected: bool) -> None:
    assert digits(text) is expected


@pytest.mark.parametrize("check", [
    lambda v: fields.port(v, "dport"),
    lambda v: parse_owner(v, "owner"),
    parse_signal,
])
@pytest.mark.parametrize("value", ["¹", "4¹", "²:3"])
def test_unicode_digits_are_field_errors(check: Callable[[str], object], value: str) -> None:
    with pytest.raises(FieldError):
        check(value)
