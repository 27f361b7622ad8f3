"""The stored form of #18's response rules of a call (ServiceCallSpec.response_rules): written
from format version 5 on, only when the call has them (orchestrator/adapters/codec.py).

Their golden files are with every other case's, from state_v5/ on
(test_stored_state_golden.py decodes and rewrites them); here, what the rules add.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from orchestrator.adapters import codec
from tests.stored_state_cases import CASES, RESPONSE_RULES_CASES, read_stored


@pytest.mark.parametrize("name", sorted(RESPONSE_RULES_CASES))
def test_the_stored_form_is_a_call_s_without_them_plus_the_rules(name: str) -> None:
    state = RESPONSE_RULES_CASES[name]
    plain = codec.encode(replace(state, spec=replace(state.spec, response_rules=None)))
    stored = codec.encode(state)
    assert "response_rules" not in plain["spec"]
    assert stored["spec"].pop("response_rules") == codec.encode_response_rules(
        state.spec.response_rules  # type: ignore[arg-type]
    )
    assert stored == plain


def test_unset_retryable_statuses_are_stored_as_null_not_as_an_empty_list() -> None:
    # None (the default list) and an empty list would mean different things to a reader.
    stored = codec.encode(RESPONSE_RULES_CASES["success_statuses_scheduled"])
    assert stored["spec"]["response_rules"] == {
        "success_statuses": [[200, 299], [404, 404]],
        "retryable_statuses": None,
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_call_without_them_is_written_as_version_4_but_for_v(name: str) -> None:
    v4 = read_stored(4, name)
    newest = codec.encode(CASES[name])
    assert newest.pop("v") == codec.FORMAT_VERSION
    assert v4.pop("v") == 4
    assert json.loads(json.dumps(newest)) == v4


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_of_the_formats_before_version_5_read_with_no_rules(version: int, name: str) -> None:
    state = codec.decode(read_stored(version, name))
    assert state.spec.response_rules is None


@pytest.mark.parametrize("name", ["callbacks_and_max_lateness_scheduled", "callback_succeeded"])
def test_version_4_calls_with_17_s_fields_read_with_no_rules(name: str) -> None:
    state = codec.decode(read_stored(4, name))
    assert state.spec.response_rules is None
    assert state.spec.callback_url is not None or state.spec.callback_of is not None
