"""A fenced static member against real Kafka (issue #12 defect 0): after a broker restart the
orchestrator's consumer was fenced ("Static consumer fenced by other consumer with same
group.instance.id"), logged a warning, and never applied a message again while its health
said SERVING. Two runners with one group.instance.id reproduce the fence on demand."""

from __future__ import annotations

import asyncio
import uuid

from mesh.kafka import ConsumerRunner, ReceivedMessage
from mesh.ports import OutgoingMessage
from meshctl.layout import Layout
from tests.integration.mesh.test_consumer_runner import publish
from tests.kafka_helpers import private_topic


async def test_a_fenced_consumer_is_unhealthy_then_rebuilt_and_handles_later_messages(
    infra: Layout,
) -> None:
    bootstrap = infra.kafka_bootstrap
    topic = private_topic(bootstrap, partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    instance = f"replica-{uuid.uuid4().hex[:8]}"
    handled: dict[bytes, asyncio.Event] = {b"before": asyncio.Event(), b"after": asyncio.Event()}
    health: list[bool] = []
    unhealthy = asyncio.Event()
    healthy_again = asyncio.Event()

    async def handler(message: ReceivedMessage) -> None:
        if message.value in handled:
            handled[message.value].set()

    def on_health(healthy: bool) -> None:
        health.append(healthy)
        (healthy_again if healthy else unhealthy).set()

    fenced = ConsumerRunner(
        bootstrap,
        group,
        [topic],
        handler,
        client_id="fenced",
        group_instance_id=instance,
        on_health=on_health,
    )
    fenced_task = asyncio.create_task(fenced.run())
    await asyncio.wait_for(fenced.assigned.wait(), 60)
    await publish(bootstrap, [OutgoingMessage(topic, "t/c1", b"before")])
    await asyncio.wait_for(handled[b"before"].wait(), 60)
    assert fenced.healthy

    # A second member with the same group.instance.id takes the membership over: the broker
    # fences the first one with a fatal error.
    async def ignore(_message: ReceivedMessage) -> None:
        return None

    intruder = ConsumerRunner(
        bootstrap, group, [topic], ignore, client_id="intruder", group_instance_id=instance
    )
    intruder_task = asyncio.create_task(intruder.run())
    await asyncio.wait_for(unhealthy.wait(), 60)
    intruder.stop()
    await asyncio.wait_for(intruder_task, 60)

    # The fenced runner builds a new consumer, rejoins, and goes on with later messages.
    await asyncio.wait_for(healthy_again.wait(), 60)
    await publish(bootstrap, [OutgoingMessage(topic, "t/c2", b"after")])
    try:
        await asyncio.wait_for(handled[b"after"].wait(), 60)
    finally:
        fenced.stop()
        await asyncio.wait_for(fenced_task, 60)
    assert health[0] is False
    assert fenced.rebuilds >= 1
