"""The ConsumerRunner's handler for `execution-requests`: decode, then perform the attempt."""

from __future__ import annotations

from functools import partial

from executor.mapping import order_from_message
from executor.service_layer.attempts import Attempts
from mesh.kafka import Handler, decoding


def execution_requests(attempts: Attempts, default_snippet_bytes: int) -> Handler:
    """Each execution request performed by `attempts`; other payloads ignored.

    An unreadable request (not an envelope, an unknown method) is the runner's to drop: no
    retry can make it readable. No layer between decode and the use case: this is the hot
    path of every attempt.
    """
    return decoding(
        partial(order_from_message, default_snippet_bytes=default_snippet_bytes), attempts.perform
    )
