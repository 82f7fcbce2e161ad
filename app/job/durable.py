"""Writing records to Kafka and waiting until the broker has every one of them.

Nothing is acked before its outcome is durable, so the intake, the forwarder, the retry tiers
and the sweeper end each batch here. Records go out with aiokafka's batch API, one record batch
per partition: faust's per-record `Topic.send` was the decode stage's largest cost.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Awaitable, Callable, Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

__all__ = ["BatchWriter", "Write", "write_durably"]

log = logging.getLogger(__name__)

# (topic role, key, value) or (topic role, key, value, partition): a None key without a
# partition spreads over the partitions; app.job.bundles names the partition of each bundle.
Record = tuple
# write(records): returns once the broker has them all, raises if it has not.
Write = Callable[[list[Record]], Awaitable[None]]


class BatchWriter:
    """A `Write` over a producer of its own (acks from all in-sync replicas). Keys go to
    partitions exactly as Kafka's default partitioner puts them (murmur2), as any Java or aiokafka
    producer would. `topics` maps the roles records name to topic names; `security`
    is app.job.kafka_security.client_options."""

    def __init__(self, bootstrap_servers: str, topics: Mapping[str, str],
                 security: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._topics = topics
        self._partition = DefaultPartitioner()
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> AIOKafkaProducer:
        """Started on first use (aiokafka needs the running loop); safe to call again."""
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", **self._security)
                await producer.start()
                self._producer = producer
        return self._producer

    async def stop(self) -> None:
        """After the last write: at shutdown, once every stage that writes has stopped."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __call__(self, records: list[Record]) -> None:
        producer = self._producer or await self.start()
        partitions: dict[str, list[int]] = {}
        by_tp: dict[tuple[str, int], list[tuple]] = defaultdict(list)
        for role, key, value, *where in records:
            topic = self._topics[role]
            partition = where[0] if where else None
            if partition is None:
                all_partitions = partitions.get(topic)
                if all_partitions is None:
                    all_partitions = partitions[topic] = sorted(await producer.partitions_for(topic))
                partition = self._partition(key, all_partitions, all_partitions)
            by_tp[topic, partition].append((key, value))
        acks = []
        for (topic, partition), items in by_tp.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)  # the first always fits
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)


async def write_durably(write: Write, records: list[Record]) -> None:
    """Write the records and keep trying while Kafka is away: acking the source events before
    this returns would lose them. A partial failure writes them all again: duplicates, never
    gaps (stable event_ids make them harmless)."""
    delay = 0.5
    while records:
        try:
            await write(records)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any broker failure: wait and write again
            log.warning("could not write %d records (%s); retrying in %.1f s", len(records),
                        type(e).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
