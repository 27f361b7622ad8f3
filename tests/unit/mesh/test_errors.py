"""mesh.errors.is_transient: outages are retried, poison inputs are not."""

from __future__ import annotations

import binascii

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
