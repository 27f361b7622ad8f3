"""Every (state × command) pair of the transition table, checked against decide."""

from __future__ import annotations

import pytest

from orchestrator.domain.commands import CommandKind
from orchestrator.domain.decide import TRANSITIONS, Moves, Refused, decide
from orchestrator.domain.states import Status, status_of

from .builders import TIMING, apply, held, state_in, well_formed

STATUSES: list[Status | None] = [None, *Status]
PAIRS = [(status, kind) for status in STATUSES for kind in CommandKind]


def _id(pair: tuple[Status | None, CommandKind]) -> str:
    status, kind = pair
    return f"{status.value if status else 'NEW'}-{kind.value}"


def test_table_covers_every_state_and_command() -> None:
    assert set(TRANSITIONS) == set(STATUSES)
    for status in STATUSES:
        assert set(TRANSITIONS[status]) == set(CommandKind), status


def test_terminal_states_refuse_everything() -> None:
    for status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED):
        assert all(isinstance(rule, Refused) for rule in TRANSITIONS[status].values())


@pytest.mark.parametrize("pair", PAIRS, ids=[_id(pair) for pair in PAIRS])
def test_decide_follows_the_table(pair: tuple[Status | None, CommandKind]) -> None:
    status, kind = pair
    state = state_in(status)
    if status is Status.SCHEDULED and kind in (CommandKind.RELEASE, CommandKind.HOLD):
        state = held()  # the Scheduled call these commands are for
    command, now = well_formed(kind, state)

    decision = decide(state, command, now, TIMING)

    match TRANSITIONS[status][kind]:
        case Moves(to=targets):
            assert isinstance(decision, tuple), decision
            assert status_of(apply(state, decision)) in targets
        case Refused(error=error):
            assert type(decision) is error
