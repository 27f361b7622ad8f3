"""The executor's ports: the bus it reports on and the reports it writes, the HTTP client that
reaches targets, sleeping, secrets and signing keys, the attempt observer; and the bundle of
them the attempt use case is built with (AttemptPorts)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from executor.domain.execution import ExecutionOrder, HttpRequest
from executor.domain.outcome import AttemptError, Outcome
from executor.domain.signing import SigningSecret
from mesh.ports import Clock, IdGen, OutgoingMessage

__all__ = [
    "AttemptObserver",
    "AttemptPorts",
    "EventQueue",
    "HoldersByKey",
    "HttpClient",
    "HttpFailure",
    "HttpRequest",
    "HttpResponse",
    "PreparedRequest",
    "Reports",
    "SecretOpener",
    "SendingLoad",
    "SigningKeys",
    "Sleeper",
]


class EventQueue(Protocol):
    def enqueue(self, messages: Sequence[OutgoingMessage]) -> asyncio.Future[None]:
        """Hands the messages to the producer before returning (behind everything enqueued
        earlier, in order per key) and returns a future that resolves once the broker
        acknowledged all of them, or fails if any was not.

        Unlike EventBus.publish, handing over and waiting are separate, so the executor can
        announce an attempt and send its request without waiting for the announcement's ack.
        """
        ...


class Reports(Protocol):
    """Writes the messages an attempt reports on (executor/mapping.py, ReportEnvelopes): the
    use case decides what to say and when; this knows the topic, the key and the wire format.
    The event id is the caller's, so a message published again keeps it."""

    def started(
        self, order: ExecutionOrder, event_id: str, at: datetime, start_time: datetime
    ) -> OutgoingMessage:
        """ExecutionStarted: the attempt's request went out at `start_time`."""
        ...

    def result(
        self,
        order: ExecutionOrder,
        event_id: str,
        outcome: Outcome,
        snippet: str,
        started_at: datetime,
        ended_at: datetime,
    ) -> OutgoingMessage:
        """ExecutionSucceeded or ExecutionFailed, as `outcome` says."""
        ...

    def again(self, order: ExecutionOrder, value: bytes) -> OutgoingMessage:
        """A result published before (its message's value), to publish once more."""
        ...


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes  # at most the client's max_response_bytes; the rest was never read

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """No usable response: `detail` is safe to log (no header values, no bodies)."""

    error: AttemptError
    detail: str


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request a client checked and encoded ahead of its send (HttpClient.prepare)."""

    request: HttpRequest
    # The preparing client's own form of it (H1Client: the parsed target and the request
    # head's bytes); a client that finds something else here prepares `request` itself.
    encoded: object = None


class HttpClient(Protocol):
    def prepare(self, request: HttpRequest) -> PreparedRequest | HttpFailure:
        """Everything about sending `request` that needs no I/O, done now: the URL parsed and
        checked by the egress policy (its scheme, and an address written in it), the request
        encoded. A failure here is what `send` would have returned, with nothing sent.

        The executor prepares a request when the attempt is handed to it, seconds before it
        is due, so that at the due instant only the write is left (docs/timing.md).
        """
        ...

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        """Sends the request once, without following redirects, within `request.timeout`.

        Never raises for target or network trouble: it returns an HttpFailure. A target the
        egress policy refuses yields `egress_denied` with nothing sent.
        """
        ...


class Sleeper(Protocol):
    async def sleep(self, seconds: float) -> None: ...


class SecretOpener(Protocol):
    """mesh.secrets.SecretBox, as far as the executor uses it."""

    def open(self, sealed: bytes, bound_to: bytes) -> bytes:
        """The plaintext; raises mesh.secrets.SecretError when the value does not open here."""
        ...


class SigningKeys(Protocol):
    def secrets_for(self, tenant_id: str) -> Sequence[SigningSecret]:
        """The tenant's webhook signing secrets, newest first; empty when it does not sign."""
        ...


class AttemptObserver(Protocol):
    """Told of each attempt once its reply is in (executor/adapters/metrics.py); must be cheap."""

    def attempt(
        self,
        not_before: datetime,
        sent_at: datetime,
        ended_at: datetime,
        reply: HttpResponse | HttpFailure,
    ) -> None: ...


class HoldersByKey(Protocol):
    def holding(self) -> dict[str, int]:
        """Holders per key, for keys someone holds."""
        ...


class SendingLoad(Protocol):
    """What the metrics read of the sending slots at scrape time
    (executor/service_layer/slots.py, SendingSlots)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def hosts(self) -> HoldersByKey: ...


@dataclass(frozen=True, slots=True)
class AttemptPorts:
    """Everything outside the process an attempt talks to, bundled for the use case
    (executor/service_layer/attempts.py)."""

    queue: EventQueue  # where Started and the result go
    reports: Reports  # how they are written
    http: HttpClient
    clock: Clock
    ids: IdGen  # event ids
    sleeper: Sleeper  # the wait until not-before: precise
    secrets: SecretOpener  # opens sealed headers
    signing: SigningKeys
    # The wait until an attempt prepares, which needs no precision and must not block the
    # event loop (adapters/sleeper.py, LoopSleeper); None: `sleeper`.
    coarse_sleeper: Sleeper | None = None
    observer: AttemptObserver | None = None  # metrics (adapters/metrics.py)
