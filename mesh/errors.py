"""Which failures are a dependency being away (wait and retry) and which are the input's own."""

from __future__ import annotations

import sys

from confluent_kafka import KafkaError, KafkaException

# What a client is told when a request failed on an outage (UNAVAILABLE / HTTP 503).
UNAVAILABLE_MESSAGE = "the service is temporarily unavailable (a dependency is down); retry"


def is_transient(error: BaseException) -> bool:
    """True when `error` says Postgres or Kafka is unreachable or restarting, so the same work
    may succeed later unchanged; False for errors that retrying the same input cannot cure
    (a bug, a message that does not decode, a row the broker refuses for its size).

    Why it matters: a consumer retries a transient failure for as long as the outage lasts,
    but parks a message that fails for any other reason after a few tries (mesh/kafka.py), and
    the API answers UNAVAILABLE (retryable) for an outage, never UNKNOWN.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_database_outage(current):
            return True
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        if isinstance(current, OSError) and not isinstance(current, FileNotFoundError):
            return True
        if isinstance(current, KafkaException):
            kafka_error = current.args[0] if current.args else None
            if isinstance(kafka_error, KafkaError):
                return bool(kafka_error.retriable()) or kafka_error.code() in _KAFKA_OUTAGES
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_database_outage(error: BaseException) -> bool:
    # The drivers' modules are looked up, not imported: a process that never loaded them (the
    # executor, which has no database) cannot have raised their errors, and importing them only
    # to ask would cost it ~25 MB of memory for its whole life.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(
        error, sa_exc.InterfaceError | sa_exc.OperationalError | sa_exc.DisconnectionError
    )


_KAFKA_OUTAGES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)
