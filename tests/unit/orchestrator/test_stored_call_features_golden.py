"""The stored form of #17's fields of a call (callback_url, failure_callback_url,
max_lateness, callback_of, schedule_id): written from format version 4 on, each only when set
(orchestrator/adapters/codec.py).

Their golden files are with every other case's, from state_v4/ on
(test_stored_state_golden.py decodes and rewrites them); here, what the fields add.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from orchestrator.adapters import codec
from tests.stored_state_cases import CALL_FEATURE_CASES, CASES, read_stored

FIELDS = ("callback_url", "failure_callback_url", "max_lateness", "callback_of", "schedule_id")


@pytest.mark.parametrize("name", sorted(CALL_FEATURE_CASES))
def test_the_stored_form_is_an_ordinary_call_s_plus_the_fields_that_are_set(name: str) -> None:
    state = CALL_FEATURE_CASES[name]
    stored = codec.encode(state)
    unset = replace(
        state.spec,
        callback_url=None,
        failure_callback_url=None,
        max_lateness=None,
        callback_of=None,
        schedule_id=None,
    )
    plain = codec.encode(replace(state, spec=unset))
    for field in FIELDS:
        assert field not in plain["spec"]
        value = getattr(state.spec, field)
        assert (field in stored["spec"]) == (value is not None)
        stored["spec"].pop(field, None)
    assert stored == plain


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_call_without_them_is_written_as_version_3_but_for_v(name: str) -> None:
    v3 = read_stored(3, name)
    newest = codec.encode(CASES[name])
    assert newest.pop("v") == codec.FORMAT_VERSION
    assert v3.pop("v") == 3
    assert json.loads(json.dumps(newest)) == v3


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_of_the_formats_before_version_4_read_with_none_of_them(
    version: int, name: str
) -> None:
    state = codec.decode(read_stored(version, name))
    assert all(getattr(state.spec, field) is None for field in FIELDS)
