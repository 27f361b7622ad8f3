"""Structured JSON logs; call context (tenant, call, correlation ids) rides on contextvars."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


def configure_logging(service_name: str, level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service_name)
    # Libraries (grpc, alembic, aiohttp) log through stdlib logging; keep them on stderr too.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


@contextmanager
def call_context(tenant_id: str, service_call_id: str, correlation_id: str) -> Iterator[None]:
    """Every log line inside carries the call's ids."""
    with structlog.contextvars.bound_contextvars(
        tenant_id=tenant_id, service_call_id=service_call_id, correlation_id=correlation_id
    ):
        yield


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
