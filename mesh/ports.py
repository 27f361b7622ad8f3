"""Ports shared by the services: time, ids and the event bus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...


class IdGen(Protocol):
    def new_id(self) -> str:
        """A fresh, time-ordered unique id (UUIDv7 text)."""
        ...


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message for the bus; `key` decides the partition, and so the order."""

    topic: str
    key: str
    value: bytes
    # Kafka headers; the mesh sends only W3C trace context in them (mesh/tracing.py).
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Undelivered:
    """One message of a publish that the bus did not deliver, and why."""

    index: int  # its position in the sequence given to `publish`
    error: BaseException  # for Kafka, a KafkaException carrying the KafkaError
    # True when the broker refuses this message itself (too large, malformed): sending it
    # again cannot succeed. False when the bus was away or slow: the same message may go later.
    refused: bool


class PublishError(Exception):
    """Raised by `EventBus.publish` when some messages were not delivered; every message not
    listed in `undelivered` was acknowledged by the broker before it was raised."""

    def __init__(self, undelivered: Sequence[Undelivered]) -> None:
        self.undelivered = tuple(sorted(undelivered, key=lambda u: u.index))
        first = self.undelivered[0] if self.undelivered else None
        super().__init__(
            f"{len(self.undelivered)} message(s) not delivered"
            + (f"; first at index {first.index}: {first.error}" if first else "")
        )


class EventBus(Protocol):
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publishes all messages, in order per key; returns once the broker acknowledged all.

        When some are not delivered, raises PublishError naming each of them (by index) with
        its error, and only once every other message is settled, i.e. acknowledged: a caller
        can treat each message not named as delivered. Any other exception means the bus knows
        nothing of what was delivered (treat all as not delivered; sending again duplicates).
        """
        ...
