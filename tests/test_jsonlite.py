"""statekit.jsonlite against the json package: the same documents, both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekit import jsonlite

SCALARS = (st.none() | st.booleans() | st.integers() | st.text()
           | st.floats(allow_nan=False, allow_infinity=False))
DOCS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30)


@settings(max_examples=500, deadline=None)
@given(DOCS)
def test_round_trips_as_json_does(doc: Any) -> None:
    text = jsonlite.dumps(doc)
    assert json.loads(text) == doc
    assert jsonlite.loads(text) == doc
    assert jsonlite.loads(json.dumps(doc, indent=2)) == doc


@pytest.mark.parametrize("bad", ["", "{", "[1,]", "nul", "NaN", "{} {}", "'a'", "[1] x"])
def test_refuses_what_is_not_one_json_document(bad: str) -> None:
    with pytest.raises(ValueError):
        jsonlite.loads(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: 2}, {"a": object()}])
def test_refuses_what_json_cannot_hold(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        jsonlite.dumps(bad)
