"""The stored form of a replay (a call made by ReplayServiceCall): its spec's "replay_of",
written from format version 3 on and only for a replay (orchestrator/adapters/codec.py).

Its golden files are with every other case's, from state_v3/ on
(test_stored_state_golden.py decodes and rewrites them); here, what the link adds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.adapters import codec
from tests.stored_state_cases import CASES, REPLAY_CASES, REPLAY_OF, read_stored


@pytest.mark.parametrize("version", [3, codec.FORMAT_VERSION])
@pytest.mark.parametrize("name", sorted(REPLAY_CASES))
def test_a_stored_replay_decodes_with_its_link(version: int, name: str) -> None:
    assert codec.decode(read_stored(version, name)).spec.replay_of == REPLAY_OF


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
    assert codec.decode(read_stored(version, name)).spec.replay_of is None
