"""The orchestrator's use cases wired for tests: the real core and mapping over a given store."""

from __future__ import annotations

from functools import partial

from mesh.clock import Uuid7Gen
from mesh.ports import Clock
from mesh.secrets import SecretBox
from mesh.topics import Topics
from orchestrator.domain.model import DEFAULT_TIMING
from orchestrator.domain.validation import Limits
from orchestrator.mapping import outbox_messages
from orchestrator.ports import QueueConfigs, ServiceCallStore
from orchestrator.service_layer.services import Orchestrator
from tests.builders import FINGERPRINT_KEY


def orchestrator_over(
    store: ServiceCallStore, clock: Clock, queues: QueueConfigs | None = None
) -> Orchestrator:
    return Orchestrator(
        store=store,
        clock=clock,
        ids=Uuid7Gen(),
        timing=DEFAULT_TIMING,
        limits=Limits(),
        to_messages=partial(
            outbox_messages, topics=Topics.with_prefix("t."), max_snippet_bytes=256
        ),
        secrets=SecretBox({1: bytes(32)}, current=1),
        fingerprint_key=FINGERPRINT_KEY,
        queues=queues,
    )
