"""The executor's Prometheus metrics: lateness, attempts by response class, what it holds.

The attempt use case reports each attempt once, after its reply (never before the send); the
held and in-flight gauges are read from the registry and the sending slots at scrape time, on
the event loop (mesh/metrics.py), so the hot path pays only for the two histogram observations.

Labels are closed sets: the response class (1xx..5xx or the attempt's error class) and the
target's host class (loopback, private, public, or name: a host given by name, whose
addresses only the resolver knows). Never the host itself, a tenant or a call id.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sized
from datetime import datetime
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpResponse, SendingLoad
from mesh.metrics import LATENCY_BUCKETS, LATENESS_BUCKETS, NAMESPACE, gauge, histogram

RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", *(e.value for e in AttemptError))
HOST_CLASSES = ("loopback", "private", "public", "name")


def response_class(reply: HttpResponse | HttpFailure) -> str:
    if isinstance(reply, HttpResponse):
        return f"{min(max(reply.status // 100, 1), 5)}xx"
    return reply.error.value


@lru_cache(maxsize=1024)
def host_class(host: str) -> str:
    """The class of a per-host key ("host:port" as the URL gave it,
    executor/service_layer/attempts.py)."""
    name = host.rpartition(":")[0] if ":" in host else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return "name"
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_link_local:
        return "private"
    return "public"


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry, executions: Sized, slots: SendingLoad) -> None:
        self.registry = registry
        self.lateness = histogram(
            registry,
            "executor_lateness_seconds",
            "How long after its due time (not-before) each request went out.",
            LATENESS_BUCKETS,
        )
        duration = histogram(
            registry,
            "executor_attempt_duration_seconds",
            "From the request's send to its reply (or failure), by response class "
            "(_count: attempts by class).",
            LATENCY_BUCKETS,
            ["response_class"],
        )
        # Children made on a class's first attempt, not all up front: a scrape costs ~9 us per
        # series (prometheus_client's text rendering), and most classes never occur.
        self._duration = duration
        self._durations: dict[str, Any] = {}
        gauge(
            registry,
            "executor_held_attempts",
            "Hand-offs held: attempts taken from Kafka and not finished (waiting for their "
            "due time, in flight or reporting).",
        ).set_function(lambda: len(executions))
        gauge(
            registry, "executor_in_flight", "Requests holding a send slot (all targets)."
        ).set_function(lambda: slots.in_flight)
        _InFlightByHostClass(slots, registry)

    def attempt(
        self,
        not_before: datetime,
        sent_at: datetime,
        ended_at: datetime,
        reply: HttpResponse | HttpFailure,
    ) -> None:
        """One attempt's report (executor.ports.AttemptObserver)."""
        self.lateness.observe((sent_at - not_before).total_seconds())
        name = response_class(reply)
        child = self._durations.get(name)
        if child is None:
            child = self._durations[name] = self._duration.labels(name)
        child.observe((ended_at - sent_at).total_seconds())


class _InFlightByHostClass:
    def __init__(self, slots: SendingLoad, registry: CollectorRegistry) -> None:
        self._slots = slots
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        counts = dict.fromkeys(HOST_CLASSES, 0)
        for host, holders in self._slots.hosts.holding().items():
            counts[host_class(host)] += holders
        family = self._family()
        for name, count in counts.items():
            family.add_metric([name], count)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            f"{NAMESPACE}_executor_in_flight_by_host_class",
            "Attempts holding their target host's slot (sending, or about to), by host class.",
            labels=["host_class"],
        )
