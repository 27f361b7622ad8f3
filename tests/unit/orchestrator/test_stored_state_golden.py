"""The stored state's golden files: every format version ever written still reads back, and
the newest one is written exactly as its golden files say.

A failure of `test_today_s_states_are_written_as_the_newest_golden_files` means the stored
form changed: that is a new format version in orchestrator/adapters/codec.py (keep reading
the old one), with golden files of its own. Regenerating the newest version's files is an
explicit act, never part of a normal run:

    UPDATE_GOLDEN=1 PYTHONPATH=.:gen .venv/bin/pytest \
        tests/unit/orchestrator/test_stored_state_golden.py

Version 1's files were written once by tests/golden/orchestrator/make_state_v1.py with the
codec of the day and are frozen: they stand for rows already stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.adapters import codec
from orchestrator.domain.states import ServiceCallState
from tests.stored_state_cases import CASES, GOLDEN

NEWEST = GOLDEN / f"state_v{codec.FORMAT_VERSION}"
VERSIONS = sorted(GOLDEN.glob("state_v*"))


def _text(state: ServiceCallState) -> str:
    return json.dumps(codec.encode(state), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _read(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module", autouse=True)
def update_golden() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        NEWEST.mkdir(exist_ok=True)
        for name, state in CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(state), encoding="utf-8")


def test_every_format_version_has_a_golden_file_per_case() -> None:
    assert [p.name for p in VERSIONS] == [f"state_v{v}" for v in range(1, codec.FORMAT_VERSION + 1)]
    for version in VERSIONS:
        assert sorted(p.stem for p in version.glob("*.json")) == sorted(CASES), version.name


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("version", [p.name for p in VERSIONS])
def test_a_stored_state_of_every_version_decodes_to_its_domain_value(
    version: str, name: str
) -> None:
    assert codec.decode(_read(GOLDEN / version / f"{name}.json")) == CASES[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_today_s_states_are_written_as_the_newest_golden_files(name: str) -> None:
    # Text, not parsed JSON: 2 and 2.0 are equal in Python but not the same stored number.
    assert _text(CASES[name]) == (NEWEST / f"{name}.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(CASES))
def test_version_1_files_have_no_version_field(name: str) -> None:
    data = _read(GOLDEN / "state_v1" / f"{name}.json")
    assert isinstance(data, dict) and "v" not in data


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_newest_files_keep_version_1_s_names(name: str) -> None:
    # SQL reads the state by name (store.py's BASIC projection and backfill, migration 0005)
    # and the previous release must read a new row during a rolling upgrade: every name
    # version 1 wrote is still written, "kind" aside in nested values.
    def names(value: object) -> set[str]:
        if isinstance(value, dict):
            return {k for k in value if k != "kind"} | {
                f"{k}.{n}" for k, v in value.items() for n in names(v)
            }
        if isinstance(value, list):
            return {n for v in value for n in names(v)}
        return set()

    v1 = _read(GOLDEN / "state_v1" / f"{name}.json")
    newest = _read(NEWEST / f"{name}.json")
    assert names(newest) - {"v"} == names(v1)
    assert isinstance(v1, dict) and isinstance(newest, dict) and newest["kind"] == v1["kind"]


def test_an_unknown_format_version_is_refused() -> None:
    data = _read(NEWEST / "running.json")
    assert isinstance(data, dict)
    with pytest.raises(codec.UnreadableStateError):
        codec.decode({**data, "v": codec.FORMAT_VERSION + 1})
    with pytest.raises(codec.UnreadableStateError):
        codec.decode({**data, "kind": "Paused"})
    with pytest.raises(codec.UnreadableStateError):
        codec.decode({k: v for k, v in data.items() if k != "spec"})
