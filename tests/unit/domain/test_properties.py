"""Properties of the core under random timers, executor reports, duplicates and reorderings."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label_run
from hypothesis import strategies as st

from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    CancelServiceCall,
    Command,
    FireTimer,
    RecordExecutionFailed,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    RescheduleServiceCall,
    RunServiceCallNow,
    SubmitServiceCall,
)
from orchestrator.domain.decide import decide, evolve, replay
from orchestrator.domain.errors import AlreadySubmitted, ErrorKind, IdempotencyConflict
from orchestrator.domain.model import ServiceCallSpec
from orchestrator.domain.states import (
    TERMINAL,
    Dispatched,
    Running,
    Scheduled,
    ServiceCallState,
    status_of,
)

from .builders import T0, TIMING, execution_result, retry_policy, service_call_spec

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Repeats weight the draw towards the executor's traffic, where retries happen.
ACTIONS = (
    *("advance", "fire_timer", "fire_timer", "executor_start"),
    *("executor_finish",) * 3,
    *("deliver",) * 5,
    *("cancel", "reschedule", "reschedule", "run_now", "resubmit", "resubmit_other"),
)


def millis(low: int, high: int) -> st.SearchStrategy[timedelta]:
    return st.integers(low, high).map(lambda ms: timedelta(milliseconds=ms))


specs = st.builds(
    lambda max_attempts, min_backoff, multiplier, jitter, duration: service_call_spec(
        policy=retry_policy(
            max_attempts=max_attempts,
            min_backoff=min_backoff,
            max_backoff=min_backoff * 8,
            multiplier=multiplier,
            jitter=jitter,
            max_retry_duration=duration,
        )
    ),
    st.integers(1, 4),
    millis(100, 10_000),
    st.floats(1, 3),
    st.floats(0, 1),
    st.none() | millis(1_000, 120_000),
)


def is_client_intent(command: Command) -> bool:
    # Client intents are not idempotent by nature (rescheduling twice re-arms twice); every
    # other command must be a no-op the second time.
    return isinstance(command, CancelServiceCall | RescheduleServiceCall | RunServiceCallNow)


def is_rearm(command: Command, events: tuple[ev.Event, ...]) -> bool:
    return isinstance(command, FireTimer) and events == (
        ev.TimerRequested(
            at=events[0].at,
            purpose=command.purpose,
            attempt=command.attempt,
            fire_at=command.fire_at,
        ),
    )


@dataclass
class World:
    spec: ServiceCallSpec
    now: datetime
    state: ServiceCallState | None = None
    log: list[ev.Event] = field(default_factory=list)
    timers: list[FireTimer] = field(default_factory=list)
    requests: list[ev.ExecutionRequested] = field(default_factory=list)
    # What the executor published, in any order the broker may hand it over (with duplicates).
    reports: list[tuple[datetime, Command]] = field(default_factory=list)
    # Commands that changed the state, when they were decided, and whether a redelivery must
    # be a no-op.
    accepted: list[tuple[datetime, Command, bool]] = field(default_factory=list)
    due_by_attempt: dict[int, datetime] = field(default_factory=dict)
    terminal_events: int = 0

    def handle(self, command: Command) -> None:
        before = self.state
        decision = decide(before, command, self.now, TIMING)
        if not isinstance(decision, tuple):
            assert decision.kind in ErrorKind
            assert decision.message
            if isinstance(command, SubmitServiceCall) and before is not None:
                same = command.spec.fingerprint == before.spec.fingerprint
                assert type(decision) is (AlreadySubmitted if same else IdempotencyConflict)
            return
        assert before is None or not isinstance(before, TERMINAL), "terminal state moved"
        assert decision, "an accepted command must produce events"
        for event in decision:
            self.apply(event)
        self.probe_timers()
        idempotent = not is_client_intent(command) and not is_rearm(command, decision)
        self.accepted.append((self.now, command, idempotent))
        if idempotent:
            again = decide(self.state, command, self.now, TIMING)
            assert not isinstance(again, tuple), f"duplicate {command!r} changed {again!r}"

    def apply(self, event: ev.Event) -> None:
        before = self.state
        after = evolve(before, event)
        self.log.append(event)
        self.state = after
        assert after.version == len(self.log)
        match event:
            case ev.TimerRequested():
                self.timers.append(
                    FireTimer(purpose=event.purpose, attempt=event.attempt, fire_at=event.fire_at)
                )
            case ev.ExecutionRequested():
                assert isinstance(before, Scheduled | Dispatched)
                assert event.not_before == before.due_at
                assert event.lease_expires_at > event.not_before
                # Never handed off before its time (a crowded hand-off may come early, by at
                # most the allowance): a stale hand-off timer must not act.
                earliest = event.not_before - TIMING.handoff_lead - TIMING.handoff_early_max
                assert event.at >= earliest
                self.requests.append(event)
            case _:
                pass
        if isinstance(after, TERMINAL) and not isinstance(before, TERMINAL):
            self.terminal_events += 1
        self.check(after)

    def probe_timers(self) -> None:
        # Whatever timer the scheduler fires now, stale or not, nothing is handed off early.
        for timer in self.timers:
            now = max(self.now, timer.fire_at)
            decision = decide(self.state, timer, now, TIMING)
            if isinstance(decision, tuple):
                for event in decision:
                    if isinstance(event, ev.ExecutionRequested):
                        assert event.at >= event.not_before - TIMING.handoff_lead

    def check(self, state: ServiceCallState) -> None:
        policy = state.spec.retry_policy
        assert self.terminal_events <= 1
        assert len(state.attempts) <= policy.max_attempts
        assert [attempt.number for attempt in state.attempts] == list(
            range(1, len(state.attempts) + 1)
        )
        if isinstance(state, Scheduled | Dispatched | Running):
            assert state.attempt == len(state.attempts) + 1 <= policy.max_attempts
        if isinstance(state, Dispatched | Running):
            self.due_by_attempt.setdefault(state.attempt, state.due_at)
            assert self.due_by_attempt[state.attempt] == state.due_at
        if isinstance(state, Running):
            assert state.started_at >= state.due_at
        for attempt in state.attempts:
            assert attempt.started_at >= self.due_by_attempt[attempt.number]


def simulate(data: st.DataObject, spec: ServiceCallSpec) -> World:
    world = World(spec=spec, now=T0)
    due_at = T0 + data.draw(millis(-60_000, 600_000), label="due in")
    world.handle(SubmitServiceCall(spec=spec, due_at=due_at))
    for _ in range(data.draw(st.integers(0, 60), label="steps")):
        action = data.draw(st.sampled_from(ACTIONS))
        match action:
            case "advance":
                world.now += data.draw(millis(0, 120_000))
            case "fire_timer" if world.timers:
                timer = data.draw(st.sampled_from(world.timers))
                if data.draw(st.booleans(), label="on time"):
                    world.now = max(world.now, timer.fire_at)
                world.handle(timer)
            case "executor_start" | "executor_finish" if world.requests:
                request = data.draw(st.sampled_from(world.requests))
                # A correct executor honours not_before on its own clock; a rogue one (or a
                # skewed clock) must still never show up as a start before due_at.
                started_at = max(request.at, request.not_before) + data.draw(millis(0, 5_000))
                if data.draw(st.integers(0, 9), label="rogue") == 0:
                    started_at = request.not_before - data.draw(millis(1, 5_000))
                if action == "executor_start" or data.draw(st.booleans(), label="started seen"):
                    world.reports.append(
                        (
                            started_at,
                            RecordExecutionStarted(attempt=request.attempt, started_at=started_at),
                        )
                    )
                if action == "executor_finish":
                    ended_at = started_at + data.draw(millis(0, 60_000))
                    world.reports.append((ended_at, report_result(data, request.attempt, ended_at)))
            case "deliver" if world.reports:
                produced_at, report = data.draw(st.sampled_from(world.reports))
                world.now = max(world.now, produced_at)
                world.handle(report)
            case "cancel":
                world.handle(CancelServiceCall(reason="client"))
            case "reschedule":
                version = world.state.version if world.state else 0
                expected = data.draw(st.sampled_from([None, version, version - 1]))
                due_at = world.now + data.draw(millis(-60_000, 3_600_000))
                world.handle(RescheduleServiceCall(due_at=due_at, expected_version=expected))
            case "run_now":
                world.handle(RunServiceCallNow())
            case "resubmit":
                world.handle(SubmitServiceCall(spec=spec, due_at=due_at))
            case "resubmit_other":
                other = replace(spec, fingerprint=spec.fingerprint[::-1], created_at=world.now)
                world.handle(SubmitServiceCall(spec=other, due_at=due_at))
            case _:
                pass
    return world


def report_result(data: st.DataObject, attempt: int, ended_at: datetime) -> Command:
    status = data.draw(st.sampled_from([200, None, 404, 429, 500, 503, 503]), label="status")
    if status is not None and status < 300:
        return RecordExecutionSucceeded(
            attempt=attempt, result=execution_result(ended_at=ended_at, status=status)
        )
    result = execution_result(
        ended_at=ended_at,
        status=status,
        error="" if status else "connection_error",
        retryable=data.draw(st.booleans(), label="retryable"),
        retry_after=data.draw(st.none() | millis(0, 120_000), label="retry after"),
    )
    return RecordExecutionFailed(attempt=attempt, result=result)


@SETTINGS
@given(st.data(), specs)
def test_invariants_hold_under_any_interleaving(data: st.DataObject, spec: ServiceCallSpec) -> None:
    world = simulate(data, spec)

    assert world.state is not None
    assert replay(world.log) == world.state
    label_run(f"ends {status_of(world.state).value} after {len(world.state.attempts)} attempts")


@SETTINGS
@given(st.data(), specs)
def test_duplicates_delivered_later_change_nothing(
    data: st.DataObject, spec: ServiceCallSpec
) -> None:
    world = simulate(data, spec)
    stream = [(now, command) for now, command, _ in world.accepted]
    redeliverable = [index for index, (*_, idempotent) in enumerate(world.accepted) if idempotent]
    copies = (
        data.draw(st.lists(st.sampled_from(redeliverable), max_size=10)) if redeliverable else []
    )
    # Each copy lands anywhere after its original, as an at-least-once broker may deliver it.
    # Inserting from the last original backwards keeps the earlier indices valid.
    for index in sorted(copies, reverse=True):
        position = data.draw(st.integers(index + 1, len(stream)), label="position")
        stream.insert(position, (stream[position - 1][0], stream[index][1]))

    state: ServiceCallState | None = None
    for now, command in stream:
        decision = decide(state, command, now, TIMING)
        if isinstance(decision, tuple):
            for event in decision:
                state = evolve(state, event)

    assert state == world.state
