"""The stored form of #18's response rules of a call (ServiceCallSpec.response_rules): written
from format version 5 on, only when the call has them (orchestrator/adapters/codec.py).

Their golden files are apart from test_stored_state_golden.py's (tests/golden/orchestrator/
response_rules_v<N>/), since the formats before 5 cannot hold them. Regenerating the newest
version's files is an explicit act, as there:

    UPDATE_GOLDEN=1 PYTHONPATH=.:gen .venv/bin/pytest \
        tests/unit/orchestrator/test_stored_response_rules_golden.py
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.adapters import codec
from orchestrator.domain.states import ServiceCallState
from tests.stored_state_cases import CASES, GOLDEN, RESPONSE_RULES_CASES

NEWEST = GOLDEN / f"response_rules_v{codec.FORMAT_VERSION}"


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
        for name, state in RESPONSE_RULES_CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(state), encoding="utf-8")


def test_every_case_has_a_golden_file() -> None:
    assert sorted(p.stem for p in NEWEST.glob("*.json")) == sorted(RESPONSE_RULES_CASES)


@pytest.mark.parametrize("name", sorted(RESPONSE_RULES_CASES))
def test_a_stored_call_decodes_with_its_rules(name: str) -> None:
    state = codec.decode(_read(NEWEST / f"{name}.json"))
    assert state == RESPONSE_RULES_CASES[name]
    assert state.spec.response_rules is not None


@pytest.mark.parametrize("name", sorted(RESPONSE_RULES_CASES))
def test_today_s_calls_are_written_as_the_golden_files(name: str) -> None:
    assert _text(RESPONSE_RULES_CASES[name]) == (NEWEST / f"{name}.json").read_text(
        encoding="utf-8"
    )


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
    v4 = _read(GOLDEN / "state_v4" / f"{name}.json")
    newest = codec.encode(CASES[name])
    assert newest.pop("v") == codec.FORMAT_VERSION
    assert v4.pop("v") == 4
    assert json.loads(json.dumps(newest)) == v4


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_of_the_formats_before_version_5_read_with_no_rules(version: int, name: str) -> None:
    state = codec.decode(_read(GOLDEN / f"state_v{version}" / f"{name}.json"))
    assert state.spec.response_rules is None


@pytest.mark.parametrize("name", ["callbacks_and_max_lateness_scheduled", "callback_succeeded"])
def test_version_4_calls_with_17_s_fields_read_with_no_rules(name: str) -> None:
    state = codec.decode(_read(GOLDEN / "call_features_v4" / f"{name}.json"))
    assert state.spec.response_rules is None
    assert state.spec.callback_url is not None or state.spec.callback_of is not None
