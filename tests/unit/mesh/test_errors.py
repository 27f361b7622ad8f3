"""mesh.errors.is_transient: outages are retried, poison inputs are not."""

from __future__ import annotations

import binascii
import subprocess
import sys

import psycopg
import pytest
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException

from mesh.errors import is_transient


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("gone")),
        ConnectionResetError(),
        TimeoutError(),
        KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
        KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)),
    ],
)
def test_outages_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        binascii.Error("Incorrect padding"),
        KeyError(0),
        ValueError("bad"),
        KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
    ],
)
def test_poison_is_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_the_executor_loads_no_database_driver() -> None:
    """The executor has no database; SQLAlchemy, Alembic and psycopg loaded only to classify
    errors or for the migrate command cost it ~40 MB of memory for its whole life (its RSS
    goal is 150 MB)."""
    probe = (
        "import sys, executor.main\n"
        "print(sorted(m for m in ('sqlalchemy', 'psycopg', 'alembic') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
