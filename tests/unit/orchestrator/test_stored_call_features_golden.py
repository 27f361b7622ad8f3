"""The stored form of #17's fields of a call (callback_url, failure_callback_url,
max_lateness, callback_of, schedule_id): written from format version 4 on, each only when set
(orchestrator/adapters/codec.py).

Their golden files are apart from test_stored_state_golden.py's (tests/golden/orchestrator/
call_features_v<N>/), since the formats before 4 cannot hold them. Regenerating the newest
version's files is an explicit act, as there:

    UPDATE_GOLDEN=1 PYTHONPATH=.:gen .venv/bin/pytest \
        tests/unit/orchestrator/test_stored_call_features_golden.py
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.adapters import codec
from orchestrator.domain.states import ServiceCallState
from tests.stored_state_cases import CALL_FEATURE_CASES, CASES, GOLDEN, REPLAY_CASES

NEWEST = GOLDEN / f"call_features_v{codec.FORMAT_VERSION}"
FIELDS = ("callback_url", "failure_callback_url", "max_lateness", "callback_of", "schedule_id")


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
        for name, state in CALL_FEATURE_CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(state), encoding="utf-8")


def test_every_case_has_a_golden_file() -> None:
    assert sorted(p.stem for p in NEWEST.glob("*.json")) == sorted(CALL_FEATURE_CASES)


@pytest.mark.parametrize("name", sorted(CALL_FEATURE_CASES))
def test_a_stored_call_decodes_with_its_fields(name: str) -> None:
    assert codec.decode(_read(NEWEST / f"{name}.json")) == CALL_FEATURE_CASES[name]


@pytest.mark.parametrize("name", sorted(CALL_FEATURE_CASES))
def test_today_s_calls_are_written_as_the_golden_files(name: str) -> None:
    assert _text(CALL_FEATURE_CASES[name]) == (NEWEST / f"{name}.json").read_text(encoding="utf-8")


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
    v3 = _read(GOLDEN / "state_v3" / f"{name}.json")
    newest = codec.encode(CASES[name])
    assert newest.pop("v") == codec.FORMAT_VERSION
    assert v3.pop("v") == 3
    assert json.loads(json.dumps(newest)) == v3


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_of_the_formats_before_version_4_read_with_none_of_them(
    version: int, name: str
) -> None:
    state = codec.decode(_read(GOLDEN / f"state_v{version}" / f"{name}.json"))
    assert all(getattr(state.spec, field) is None for field in FIELDS)


@pytest.mark.parametrize("name", sorted(REPLAY_CASES))
def test_version_3_replays_still_read(name: str) -> None:
    assert codec.decode(_read(GOLDEN / "replays_v3" / f"{name}.json")) == REPLAY_CASES[name]
