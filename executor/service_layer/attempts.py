"""The perform-an-attempt use case: wait for not-before, announce, send, report."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from executor.domain.execution import ExecutionOrder, HttpRequest, Stage
from executor.domain.outcome import (
    AttemptError,
    Failed,
    Outcome,
    Succeeded,
    classify_error,
    classify_response,
)
from executor.domain.signing import signature_headers
from executor.ports import (
    AttemptPorts,
    HttpFailure,
    HttpResponse,
    PreparedRequest,
)
from executor.service_layer.registry import Executions, HeldExecution
from executor.service_layer.slots import SendingSlots
from executor.service_layer.timing import DelayedCalls, LatenessReport, SharedWakeups, wait_until
from mesh import tracing
from mesh.backoff import Backoff
from mesh.logs import get_logger
from mesh.ports import OutgoingMessage
from mesh.redaction import snippet
from mesh.secrets import SecretError, header_binding

log = get_logger(__name__)

# How long before not_before an attempt takes its slot and builds its request (opening sealed
# headers, signing): a few milliseconds of work done early instead of after the due instant.
PREPARE_AHEAD = timedelta(milliseconds=5)

# Held reports released per turn of the event loop once sends are quiet: 20k reports let go at
# once kept the loop busy for ~0.8 s, and another tenant's attempt due meanwhile was woken only
# after all of them (docs/executor.md, Fair sharing); a few hundred are ~10 ms of work.
REPORTS_PER_TURN = 256


@lru_cache(maxsize=4096)
def _host_of(url: str) -> str:
    """The per-host cap's key: host and port as written (before resolution). Cached: calls to
    one endpoint repeat the same URL."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or ''}"
    except ValueError:
        return ""


@dataclass(frozen=True, slots=True)
class AttemptSettings:
    """How attempts report; the defaults report everything at once (tests, tools)."""

    # None: Started goes out before every request; else only for an attempt still in flight
    # this long after its request went out (ExecutorConfig.started_after).
    started_after: timedelta | None = None
    # How long a finished attempt's report may wait while others are about to send
    # (Attempts._reports_may_go); None: reports never wait.
    report_defer: timedelta | None = None
    # Retrying a publish that failed: the first delay and the ceiling (mesh.backoff.Backoff).
    publish_backoff: tuple[float, float] = (0.05, 5.0)


class Attempts:
    """Performs the attempts the executor is handed (entrypoints/execution_requests.py).

    `perform` returns only after the attempt's result (and its Started, if one was sent) were
    acknowledged by the queue, so the Kafka offset is committed only then; a crash before that
    redelivers the request and the target may see the attempt twice (with the same
    Idempotency-Key). A redelivery to this process is not sent again: it joins the attempt
    if still held, or gets its remembered result published again if finished (registry.py).
    Publishing is retried here rather than by raising, because the consumer runner
    would retry the whole message and send the HTTP request again.
    """

    def __init__(
        self,
        ports: AttemptPorts,
        executions: Executions,
        slots: SendingSlots,
        settings: AttemptSettings = AttemptSettings(),
    ) -> None:
        # Each port in an attribute of its own: the hot path reads them once per attempt.
        self._bus = ports.queue
        self._reports = ports.reports
        self._http = ports.http
        self._clock = ports.clock
        self._ids = ports.ids
        self._sleeper = ports.sleeper
        self._secrets = ports.secrets
        self._signing = ports.signing
        # Metrics (adapters/metrics.py): told of each attempt after its reply.
        self._observer = ports.observer
        self._slots = slots
        self._executions = executions
        self._backoff = settings.publish_backoff
        started_after = settings.started_after
        # None: Started goes out before every request; else only for one still in flight then.
        self._started_later = (
            None if started_after is None else DelayedCalls(started_after.total_seconds())
        )
        self._active: set[asyncio.Task[object]] = set()
        self._lateness = LatenessReport()
        # The prepare moment needs no precision, and must not block the loop (LoopSleeper).
        self._prepare_moments = SharedWakeups(ports.clock, ports.coarse_sleeper or ports.sleeper)
        # Sends before reports: attempts between their prepare time and their reply, and
        # whether none is (reports may go). None: reports never wait.
        report_defer = settings.report_defer
        self._report_defer = None if report_defer is None else report_defer.total_seconds()
        self._sending = 0
        # Reports waiting for the sends to be quiet, oldest first; let go REPORTS_PER_TURN per
        # turn of the loop (`_release_some`), all of them once the oldest waited report_defer.
        self._held_reports: deque[asyncio.Future[None]] = deque()
        self._release_all = False
        self._releasing: asyncio.Handle | None = None
        self._release: asyncio.TimerHandle | None = None

    async def perform(self, order: ExecutionOrder) -> None:
        """Performs `order` once in this process, however often it is handed over."""
        # The call's ids go on each log line explicitly rather than through bound context
        # variables: binding and unbinding them cost ~3% of an attempt's CPU, for lines that a
        # successful attempt does not write.
        with self._tracked():
            while True:
                done = self._executions.result_of(order)
                if done is not None:
                    await self._report_again(order, self._reports.again(order, done))
                    return
                entry, mine = self._executions.hold(order)
                if mine:
                    break
                # The same attempt is already here (a redelivery): let that one finish.
                log.info("duplicate execution request joins the held attempt", **_ids(order))
                if await asyncio.shield(entry.finished):
                    return
            result: OutgoingMessage | None = None
            try:
                result = await self._perform(order, entry)
            finally:
                self._executions.release(entry, result)

    async def _report_again(self, order: ExecutionOrder, result: OutgoingMessage) -> None:
        """A redelivered request for an attempt that finished here: the target is not asked
        again; its result goes out once more, the same message with the same event id.

        Redeliveries come after a relay crash between publishing and marking a row, a
        rebalance, or a restart of the consumer before the offset was committed. The first
        result was acknowledged, but the orchestrator may not have applied it yet (or ever,
        if this copy is why); a copy it had applied is dropped by its inbox.
        """
        log.info(
            "redelivered request for a finished attempt; result published again", **_ids(order)
        )
        await self._settle(order, [(result, self._enqueue([result]))])

    @contextmanager
    def _tracked(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._active.add(task)
        try:
            yield
        finally:
            self._active.discard(task)

    def abandon_all(self) -> int:
        """Cancels every attempt still held (shutdown past its grace); their offsets stay
        uncommitted, so Kafka redelivers them to another executor. Returns how many."""
        tasks = list(self._active)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def __len__(self) -> int:
        """Attempts held: handed over and not finished."""
        return len(self._executions)

    async def _perform(self, order: ExecutionOrder, entry: HeldExecution) -> OutgoingMessage:
        """Returns the attempt's result once it (and Started, if sent) were acknowledged."""
        # Debug only: at thousands of calls per second each info line is CPU taken from sending.
        # The outcome line below carries the attempt's facts (late_ms, status, duration).
        log.debug(
            "attempt held until not-before", not_before=order.not_before.isoformat(), **_ids(order)
        )
        # Everything a send needs is made ready ahead, so that at not_before only the write is
        # left (docs/timing.md): now, the request as far as it is known (URL checked, head
        # encoded) - when crowds are due at once this work is spread over their hand-offs
        # instead of piling up at the due instant; a moment before not_before, the slot and
        # what must be fresh (sealed headers opened, the signature).
        host = _host_of(order.request.url)
        # The consumer span's context (mesh/kafka.py): the target's traceparent unless a span
        # of our own records below; the attempt's events continue the same trace.
        carrier = tracing.current_carrier()
        trace = tuple(carrier.items()) if carrier else ()
        # A request with secret headers is prepared only once they are opened: plaintext
        # never waits in a held attempt.
        ahead = (
            None
            if order.sealed_headers
            else self._prepare(order, order.outgoing_request(trace=trace))
        )
        await self._prepare_moments.until(order.not_before - PREPARE_AHEAD)
        # From here until its reply the attempt counts as sending: reports of other attempts
        # wait for it (see _reports_may_go).
        self._begin_send()
        try:
            async with self._slots.slot(order.call.tenant_id, host):
                request = self._request_for(order, ahead, trace)
                await wait_until(order.not_before, self._clock, self._sleeper)
                # Read after the slot is ours: with every slot busy this is later than not_before,
                # and Started must say when the request really went out.
                start_time = self._clock.now()
                # The last moment to refuse a send the call's max_lateness forbids: after the
                # hand-off, the wait for not_before and the wait for a slot.
                if order.send_deadline is not None and start_time > order.send_deadline:
                    request = _too_late(order.send_deadline, start_time)
                if order.lease_expires_at is not None and start_time > order.lease_expires_at:
                    log.warning(
                        "dispatch lease expired before start; the attempt may run twice",
                        **_ids(order),
                    )
                entry.stage = Stage.IN_FLIGHT
                entry.start_time = start_time
                announced: list[tuple[OutgoingMessage, asyncio.Future[None]]] = []

                def announce() -> None:
                    started = tracing.with_trace(
                        self._reports.started(
                            order, self._ids.new_id(), at=self._clock.now(), start_time=start_time
                        ),
                        carrier,
                    )
                    announced.append((started, self._enqueue([started])))

                # Precision: the request never waits for Started's ack (a broker round trip);
                # both acks are awaited below, before the offset can be committed. Started and the
                # result share a key, so the idempotent producer keeps them in this order on their
                # partition. With a `started_after`, Started is only sent for an attempt still in
                # flight by then: a quick attempt's result says when it started, and one message
                # (and one orchestrator transaction) per call is saved; see docs/executor.md.
                if self._started_later is None:
                    announce()
                    pending_started = None
                else:
                    pending_started = self._started_later.add(announce)
                span = (
                    tracing.start_http_client_span(order.request.method, order.request.url)
                    if carrier and not isinstance(request, HttpFailure)
                    else None
                )
                if span is not None:
                    # Only when spans record: the target's parent is this span, whose id
                    # exists only now, so the request prepared ahead is made again (the cost
                    # of tracing on, docs/tracing.md).
                    request = self._request_for(order, None, tracing.carrier_items(span))
                sent_at = self._clock.now()
                reply = (
                    request
                    if isinstance(request, HttpFailure)
                    else await self._send(order, request)
                )
                ended_at = self._clock.now()
                if span is not None:
                    tracing.end_http_client_span(
                        span,
                        reply.status if isinstance(reply, HttpResponse) else None,
                        reply.error.value if isinstance(reply, HttpFailure) else None,
                    )
                if pending_started is not None:
                    pending_started.cancel()
        finally:
            self._end_send()
        await self._reports_may_go()
        outcome, body_snippet = self._judge(reply, order, ended_at)
        result = tracing.with_trace(
            self._reports.result(
                order,
                self._ids.new_id(),
                outcome,
                body_snippet,
                started_at=sent_at,
                ended_at=ended_at,
            ),
            carrier,
        )
        result_ack = self._enqueue([result])
        self._log_outcome(order, outcome, reply, sent_at, ended_at)
        if self._observer is not None:
            self._observer.attempt(order.not_before, sent_at, ended_at, reply)
        await self._settle(order, [*announced, (result, result_ack)])
        return result

    def _begin_send(self) -> None:
        self._sending += 1

    def _end_send(self) -> None:
        self._sending -= 1
        if self._sending == 0:
            self._let_reports_go(everything=False)

    async def _reports_may_go(self) -> None:
        """Holds a finished attempt's report (result, log line, ack) while other attempts are
        about to send, for at most `report_defer`.

        A report costs the executor about as much CPU as the send itself (the result event,
        its produce, delivery report and offset), and when thousands of calls fall due together
        every report made before the last send delays that send: 10k due at once drained in
        2.5 s, and in 1.3 s with the reports held until the sends were out (docs/timing.md).
        Nothing is lost by waiting: the offset is committed only after the report's ack, and
        the dispatch lease runs for tens of seconds. The bound keeps a never-quiet executor
        (a steady stream of sends) reporting: every waiting report goes when the oldest one
        has waited `report_defer`.
        """
        if self._report_defer is None or self._sending == 0:
            return
        loop = asyncio.get_running_loop()
        if self._release is None:
            self._release = loop.call_later(self._report_defer, self._release_reports)
        waiter = loop.create_future()
        self._held_reports.append(waiter)
        await waiter  # cancelled: `_release_some` skips it

    def _release_reports(self) -> None:
        """The oldest held report waited `report_defer`: every held one goes, sends or not."""
        self._release = None
        self._let_reports_go(everything=True)

    def _let_reports_go(self, everything: bool) -> None:
        self._release_all = self._release_all or everything
        if self._releasing is None and self._held_reports:
            self._release_some()  # the first portion at once, the rest on later turns

    def _release_some(self) -> None:
        """Lets REPORTS_PER_TURN held reports go, and comes back on the loop's next turn for
        more: timers due meanwhile (another attempt's prepare moment or send) run between two
        portions instead of after the whole flood. Stops if sends began again, unless the
        oldest report already waited `report_defer`."""
        self._releasing = None
        held = self._held_reports
        if self._sending and not self._release_all:
            return  # the bound's timer is still armed for the oldest held report
        for _ in range(min(REPORTS_PER_TURN, len(held))):
            waiter = held.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if held:
            self._releasing = asyncio.get_running_loop().call_soon(self._release_some)
            return
        self._release_all = False
        if self._release is not None:
            self._release.cancel()
            self._release = None

    def _enqueue(self, messages: list[OutgoingMessage]) -> asyncio.Future[None]:
        try:
            return self._bus.enqueue(messages)
        except Exception as e:
            # A producer that refuses at once is handled like one that fails later.
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(e)
            return failed

    async def _settle(
        self, order: ExecutionOrder, pending: list[tuple[OutgoingMessage, asyncio.Future[None]]]
    ) -> None:
        """Returns once every message was acknowledged; the HTTP request is never sent again.

        If one was not, it and everything queued after it go out again, in order, so the
        partition still holds Started before the result. Event ids stay the same, so a copy
        that did land as well is a duplicate the orchestrator's inbox drops.
        """
        acks = await asyncio.gather(*(ack for _, ack in pending), return_exceptions=True)
        failed = next((i for i, a in enumerate(acks) if isinstance(a, BaseException)), None)
        if failed is None:
            return
        error = acks[failed]
        log.warning(
            "publish failed; retrying",
            error=type(error).__name__,
            detail=str(error),
            **_ids(order),
        )
        messages = [message for message, _ in pending[failed:]]
        backoff = Backoff(*self._backoff)
        while True:
            await self._sleeper.sleep(backoff.next())
            try:
                await self._enqueue(messages)
                return
            except Exception as e:
                log.warning(
                    "publish failed; retrying",
                    error=type(e).__name__,
                    detail=str(e),
                    **_ids(order),
                )

    def _request_for(
        self,
        order: ExecutionOrder,
        ahead: PreparedRequest | HttpFailure | None,
        trace: tuple[tuple[str, str], ...] = (),
    ) -> PreparedRequest | HttpFailure:
        """What goes on the wire, with the sealed headers opened and signed; a failure if a
        header does not open. `ahead`: the request prepared at hand-off, if it had no sealed
        headers; used as it is unless the tenant signs."""
        call = order.call
        # Signed just before the send (never before not_before's second), so webhook-timestamp
        # is when the request left, and with the idempotency key as webhook-id: the spec wants
        # the same id on every retry.
        signature = signature_headers(
            self._signing.secrets_for(call.tenant_id),
            order.idempotency_key,
            max(self._clock.now(), order.not_before),
            order.request.body,
        )
        if ahead is not None and not signature:
            return ahead
        opened: list[tuple[str, str]] = []
        for name, sealed in order.sealed_headers:
            binding = header_binding(call.tenant_id, call.service_call_id, name)
            try:
                opened.append((name, self._secrets.open(sealed, binding).decode()))
            except (SecretError, UnicodeDecodeError) as e:
                # The name is safe to log; the value (sealed or not) never is.
                log.error(
                    "sealed header does not open",
                    header=name,
                    reason=type(e).__name__,
                    **_ids(order),
                )
                return HttpFailure(
                    AttemptError.SECRET_UNREADABLE, f"sealed header {name!r} does not open"
                )
        return self._prepare(
            order, order.outgoing_request(opened=tuple(opened), signature=signature, trace=trace)
        )

    def _prepare(
        self, order: ExecutionOrder, request: HttpRequest
    ) -> PreparedRequest | HttpFailure:
        try:
            return self._http.prepare(request)
        except Exception as e:
            # As in _send: an adapter that breaks its promise still gives one result.
            log.error("http client raised", error=type(e).__name__, **_ids(order))
            return HttpFailure(AttemptError.CONNECTION_ERROR, f"unexpected {type(e).__name__}")

    async def _send(
        self, order: ExecutionOrder, request: PreparedRequest
    ) -> HttpResponse | HttpFailure:
        try:
            return await self._http.send(request)
        except Exception as e:
            # The port promises not to raise; if an adapter does, the attempt still gets
            # exactly one result instead of the runner re-sending it.
            log.error("http client raised", error=type(e).__name__, **_ids(order))
            return HttpFailure(AttemptError.CONNECTION_ERROR, f"unexpected {type(e).__name__}")

    def _judge(
        self, reply: HttpResponse | HttpFailure, order: ExecutionOrder, now: datetime
    ) -> tuple[Outcome, str]:
        match reply:
            case HttpResponse():
                outcome = classify_response(
                    reply.status, reply.header("Retry-After"), now, order.success_statuses
                )
                return outcome, snippet(reply.body, order.snippet_bytes)
            case HttpFailure(error=AttemptError.MAX_LATENESS_EXCEEDED):
                # Nothing was sent, so no body to show: the attempt's record says why instead.
                return classify_error(reply.error), reply.detail
            case HttpFailure():
                return classify_error(reply.error), ""

    def _log_outcome(
        self,
        order: ExecutionOrder,
        outcome: Outcome,
        reply: HttpResponse | HttpFailure,
        sent_at: datetime,
        ended_at: datetime,
    ) -> None:
        # Logged after the response, not before the request: nothing may delay the send.
        # A success is logged at debug: at thousands a second the line cost ~5% of the
        # executor's CPU, and the attempt is recorded anyway (its result event, the call's
        # attempts ledger). Failures are what an operator reads logs for.
        duration_ms = round((ended_at - sent_at).total_seconds() * 1000, 3)
        late_ms = round((sent_at - order.not_before).total_seconds() * 1000, 3)
        if (summary := self._lateness.add(late_ms, ended_at.timestamp())) is not None:
            log.info("requests sent", **summary)
        match outcome:
            case Succeeded(status=status):
                log.debug(
                    "attempt succeeded",
                    **_ids(order),
                    status=status,
                    duration_ms=duration_ms,
                    late_ms=late_ms,
                )
            case Failed():
                log.info(
                    "attempt failed",
                    **_ids(order),
                    status=outcome.status,
                    error=outcome.error.value,
                    detail=reply.detail if isinstance(reply, HttpFailure) else None,
                    retryable=outcome.retryable,
                    retry_after_s=(
                        outcome.retry_after.total_seconds() if outcome.retry_after else None
                    ),
                    duration_ms=duration_ms,
                    late_ms=late_ms,
                )


def _too_late(deadline: datetime, now: datetime) -> HttpFailure:
    late = (now - deadline).total_seconds()
    return HttpFailure(
        AttemptError.MAX_LATENESS_EXCEEDED,
        f"not sent: {late:.3f} s past the call's send deadline"
        f" {deadline.isoformat(timespec='milliseconds')} (its max_lateness)",
    )


def _ids(order: ExecutionOrder) -> dict[str, object]:
    call = order.call
    return {
        "tenant_id": call.tenant_id,
        "service_call_id": call.service_call_id,
        "correlation_id": call.correlation_id,
        "attempt": order.attempt,
    }
