"""Kafka topic names and the message key that keeps one call's messages in order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; a prefix lets tests and several meshes share one broker."""

    call_events: str
    timer_requests: str
    timer_events: str
    execution_requests: str
    execution_events: str

    @classmethod
    def with_prefix(cls, prefix: str = "servicecall.") -> Topics:
        return cls(
            call_events=f"{prefix}call-events",
            timer_requests=f"{prefix}timer-requests",
            timer_events=f"{prefix}timer-events",
            execution_requests=f"{prefix}execution-requests",
            execution_events=f"{prefix}execution-events",
        )

    def all(self) -> tuple[str, ...]:
        return (
            self.call_events,
            self.timer_requests,
            self.timer_events,
            self.execution_requests,
            self.execution_events,
        )


def call_key(tenant_id: str, service_call_id: str) -> str:
    """Same key → same partition → per-call order is kept end to end."""
    return f"{tenant_id}/{service_call_id}"
