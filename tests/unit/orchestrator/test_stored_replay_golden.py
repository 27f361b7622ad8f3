"""The stored form of a replay (a call made by ReplayServiceCall): its spec's "replay_of",
written from format version 3 on and only for a replay (orchestrator/adapters/codec.py).

Its golden files are apart from test_stored_state_golden.py's (tests/golden/orchestrator/
replays_v<N>/), since the formats before 3 cannot hold the link. Regenerating the newest
version's files is an explicit act, as there:

    UPDATE_GOLDEN=1 PYTHONPATH=.:gen .venv/bin/pytest \
        tests/unit/orchestrator/test_stored_replay_golden.py
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from orchestrator.adapters import codec
from orchestrator.domain.states import ServiceCallState
from tests.stored_state_cases import CASES, GOLDEN, REPLAY_CASES, REPLAY_OF

NEWEST = GOLDEN / f"replays_v{codec.FORMAT_VERSION}"


def _text(state: ServiceCallState) -> str:
    return json.dumps(codec.encode(state), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.fixture(scope="module", autouse=True)
def update_golden() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        NEWEST.mkdir(exist_ok=True)
        for name, state in REPLAY_CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(state), encoding="utf-8")


def test_every_replay_case_has_a_golden_file() -> None:
    assert sorted(p.stem for p in NEWEST.glob("*.json")) == sorted(REPLAY_CASES)


@pytest.mark.parametrize("name", sorted(REPLAY_CASES))
def test_a_stored_replay_decodes_with_its_link(name: str) -> None:
    data = json.loads((NEWEST / f"{name}.json").read_text(encoding="utf-8"))
    state = codec.decode(data)
    assert state == REPLAY_CASES[name]
    assert state.spec.replay_of == REPLAY_OF


@pytest.mark.parametrize("name", sorted(REPLAY_CASES))
def test_today_s_replays_are_written_as_the_golden_files(name: str) -> None:
    assert _text(REPLAY_CASES[name]) == (NEWEST / f"{name}.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(REPLAY_CASES))
def test_a_replay_s_stored_form_is_an_ordinary_call_s_plus_the_link(name: str) -> None:
    state = REPLAY_CASES[name]
    plain = codec.encode(replace(state, spec=replace(state.spec, replay_of=None)))
    linked = codec.encode(state)
    assert "replay_of" not in plain["spec"]
    assert linked["spec"].pop("replay_of") == REPLAY_OF
    assert linked == plain


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_of_the_formats_before_the_link_read_as_no_replay(version: int, name: str) -> None:
    data = json.loads((GOLDEN / f"state_v{version}" / f"{name}.json").read_text(encoding="utf-8"))
    assert codec.decode(data).spec.replay_of is None
