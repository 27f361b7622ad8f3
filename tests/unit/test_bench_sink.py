"""The timing bench's sink answers over keep-alive and notes each arrival (loopback only)."""

from __future__ import annotations

import time

import aiohttp

from bench._sink import FastSink
from meshctl.sink import Arrival


async def test_notes_each_request_and_answers_on_one_connection() -> None:
    sink = FastSink()
    await sink.start()
    seen: list[Arrival] = []
    sink.on_arrival = seen.append
    before = time.time()
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as client:
            for i in range(3):
                async with client.post(sink.url(f"/b/run/{i}?x=1"), data=b"body") as reply:
                    assert (reply.status, await reply.text()) == (200, "{}")
    finally:
        await sink.stop()
    assert [(a.method, a.path, a.query) for a in seen] == [
        ("POST", f"/b/run/{i}", "x=1") for i in range(3)
    ]
    assert all(before <= a.arrived_at <= time.time() for a in seen)
    assert sink.arrivals == seen
