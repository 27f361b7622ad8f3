"""The stored form of #18's queue fields of a call (the spec's queue_id and ordering_key, a
Scheduled state's held_reason): written from format version 5 on, each only when set
(orchestrator/adapters/codec.py).

Golden files in tests/golden/orchestrator/queue_fields_v<N>/. Regenerating the newest
version's files is an explicit act:

    UPDATE_GOLDEN=1 PYTHONPATH=.:gen .venv/bin/pytest \
        tests/unit/orchestrator/test_stored_queue_fields_golden.py
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.adapters import codec
from orchestrator.domain.states import Scheduled, ServiceCallState
from tests.stored_state_cases import CALL_FEATURE_CASES, CASES, GOLDEN, QUEUE_FIELD_CASES

NEWEST = GOLDEN / f"queue_fields_v{codec.FORMAT_VERSION}"


def _text(state: ServiceCallState) -> str:
    return json.dumps(codec.encode(state), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _read(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module", autouse=True)
def update_golden() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        NEWEST.mkdir(exist_ok=True)
        for name, state in QUEUE_FIELD_CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(state), encoding="utf-8")


def test_every_case_has_a_golden_file() -> None:
    assert sorted(p.stem for p in NEWEST.glob("*.json")) == sorted(QUEUE_FIELD_CASES)


@pytest.mark.parametrize("name", sorted(QUEUE_FIELD_CASES))
def test_a_stored_call_decodes_with_its_queue_fields(name: str) -> None:
    assert codec.decode(_read(NEWEST / f"{name}.json")) == QUEUE_FIELD_CASES[name]


@pytest.mark.parametrize("name", sorted(QUEUE_FIELD_CASES))
def test_today_s_calls_are_written_as_the_golden_files(name: str) -> None:
    assert _text(QUEUE_FIELD_CASES[name]) == (NEWEST / f"{name}.json").read_text(encoding="utf-8")


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
    v4 = _read(GOLDEN / "state_v4" / f"{name}.json")
    newest = codec.encode(CASES[name])
    assert newest.pop("v") == codec.FORMAT_VERSION
    assert v4.pop("v") == 4
    assert json.loads(json.dumps(newest)) == v4


@pytest.mark.parametrize("name", sorted(CALL_FEATURE_CASES))
def test_version_4_calls_with_17_s_fields_still_read(name: str) -> None:
    state = codec.decode(_read(GOLDEN / "call_features_v4" / f"{name}.json"))
    assert state == CALL_FEATURE_CASES[name]
    assert state.spec.queue_id is None and state.spec.ordering_key is None
