"""The stored form of #18's queue fields of a call (the spec's queue_id and ordering_key, a
Scheduled state's held_reason): written from format version 5 on, each only when set
(orchestrator/adapters/codec.py).

Their golden files are with every other case's, from state_v5/ on
(test_stored_state_golden.py decodes and rewrites them); here, what the fields add.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from orchestrator.adapters import codec
from orchestrator.domain.states import Scheduled
from tests.stored_state_cases import CALL_FEATURE_CASES, CASES, QUEUE_FIELD_CASES, read_stored


@pytest.mark.parametrize("name", sorted(QUEUE_FIELD_CASES))
def test_the_stored_form_is_an_ordinary_call_s_plus_the_fields_that_are_set(name: str) -> None:
    state = QUEUE_FIELD_CASES[name]
    stored = codec.encode(state)
    plain_state = replace(state, spec=replace(state.spec, queue_id=None, ordering_key=None))
    if isinstance(plain_state, Scheduled):
        plain_state = replace(plain_state, held_reason=None)
    plain = codec.encode(plain_state)
    for field in ("queue_id", "ordering_key"):
        assert field not in plain["spec"]
        assert (field in stored["spec"]) == (getattr(state.spec, field) is not None)
        stored["spec"].pop(field, None)
    held = isinstance(state, Scheduled) and state.held_reason is not None
    assert ("held_reason" in stored) == held
    stored.pop("held_reason", None)
    assert stored == plain


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_call_without_them_is_written_as_version_4_but_for_v(name: str) -> None:
    v4 = read_stored(4, name)
    newest = codec.encode(CASES[name])
    assert newest.pop("v") == codec.FORMAT_VERSION
    assert v4.pop("v") == 4
    assert json.loads(json.dumps(newest)) == v4


@pytest.mark.parametrize("name", sorted(CALL_FEATURE_CASES))
def test_version_4_calls_with_17_s_fields_still_read(name: str) -> None:
    state = codec.decode(read_stored(4, name))
    assert state == CALL_FEATURE_CASES[name]
    assert state.spec.queue_id is None and state.spec.ordering_key is None
