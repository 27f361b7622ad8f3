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


class EventBus(Protocol):
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publishes all messages, in order per key; returns once the broker acknowledged all."""
        ...
