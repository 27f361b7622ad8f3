"""The stored state's golden files: every format version ever written still reads back, and
the newest one is written exactly as its golden files say. Each case is in the files of every
version since the first that could store it (tests/stored_state_cases.py, STORED_SINCE): a
replay's from version 3, #17's fields from 4, #18's from 5.

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

import os

import pytest

from orchestrator.adapters import codec
from tests.stored_state_cases import (
    CALL_FEATURE_CASES,
    CASES,
    GOLDEN,
    QUEUE_FIELD_CASES,
    REPLAY_CASES,
    RESPONSE_RULES_CASES,
    STORED_SINCE,
    read_stored,
    stored_text,
)

NEWEST = GOLDEN / f"state_v{codec.FORMAT_VERSION}"
VERSIONS = range(1, codec.FORMAT_VERSION + 1)


def _stored_in(version: int) -> list[str]:
    return sorted(name for name, (since, _) in STORED_SINCE.items() if since <= version)


@pytest.fixture(scope="module", autouse=True)
def update_golden() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        NEWEST.mkdir(exist_ok=True)
        for name, (_, state) in STORED_SINCE.items():
            (NEWEST / f"{name}.json").write_text(stored_text(state), encoding="utf-8")


def test_no_case_hides_another_of_the_same_name() -> None:
    # STORED_SINCE merges the case sets by name: a repeated name would drop a case unseen.
    sets = (CASES, REPLAY_CASES, CALL_FEATURE_CASES, RESPONSE_RULES_CASES, QUEUE_FIELD_CASES)
    assert len(STORED_SINCE) == sum(len(cases) for cases in sets)


def test_every_format_version_has_a_golden_file_per_case_it_can_store() -> None:
    assert sorted(p.name for p in GOLDEN.glob("state_v*")) == sorted(
        f"state_v{v}" for v in VERSIONS
    )
    for version in VERSIONS:
        folder = GOLDEN / f"state_v{version}"
        assert sorted(p.stem for p in folder.glob("*.json")) == _stored_in(version), folder.name


@pytest.mark.parametrize(
    ("version", "name"), [(v, name) for v in VERSIONS for name in _stored_in(v)]
)
def test_a_stored_state_of_every_version_decodes_to_its_domain_value(
    version: int, name: str
) -> None:
    assert codec.decode(read_stored(version, name)) == STORED_SINCE[name][1]


@pytest.mark.parametrize("name", sorted(STORED_SINCE))
def test_today_s_states_are_written_as_the_newest_golden_files(name: str) -> None:
    # Text, not parsed JSON: 2 and 2.0 are equal in Python but not the same stored number.
    expected = (NEWEST / f"{name}.json").read_text(encoding="utf-8")
    assert stored_text(STORED_SINCE[name][1]) == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_version_1_files_have_no_version_field(name: str) -> None:
    assert "v" not in read_stored(1, name)


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

    v1 = read_stored(1, name)
    newest = read_stored(codec.FORMAT_VERSION, name)
    assert names(newest) - {"v"} == names(v1)
    assert newest["kind"] == v1["kind"]


def test_an_unknown_format_version_is_refused() -> None:
    data = read_stored(codec.FORMAT_VERSION, "running")
    with pytest.raises(codec.UnreadableStateError):
        codec.decode({**data, "v": codec.FORMAT_VERSION + 1})
    with pytest.raises(codec.UnreadableStateError):
        codec.decode({**data, "kind": "Paused"})
    with pytest.raises(codec.UnreadableStateError):
        codec.decode({k: v for k, v in data.items() if k != "spec"})
