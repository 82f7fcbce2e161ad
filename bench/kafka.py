"""Kafka I/O for the benchmark: producing pre-serialised records fast, and counting what a topic
holds (e.g. the clicks table's changelog: one record per table write)."""
from __future__ import annotations

import asyncio
import random
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

__all__ = ["produce_fast", "TopicCounts"]


async def produce_fast(producer, topic: str, records: list[tuple[bytes | None, bytes]],
                       partition_of: Callable[[bytes], int] | None = None) -> None:
    """Produce pre-serialised (key, value) records in full batches, one send per batch (not one
    await per message), and wait for every ack. Keys pick partitions as Kafka's default
    partitioner does (murmur2), so keyed data lands where any Java or aiokafka client puts it;
    `partition_of(key)` overrides that (e.g. a table changelog, partitioned by the source's key)."""
    partitions = sorted(await producer.partitions_for(topic))
    choose = DefaultPartitioner()
    by_partition: dict[int, list] = {p: [] for p in partitions}
    unkeyed = random.Random(0)
    for key, value in records:
        if partition_of is not None:
            p = partition_of(key)
        else:
            p = choose(key, partitions, None) if key is not None else unkeyed.choice(partitions)
        by_partition[p].append((key, value))
    futures = []
    for p, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=p))
    await asyncio.gather(*futures)


class TopicCounts:
    """How many records a topic holds: end minus beginning offsets, summed over partitions."""

    def __init__(self, bootstrap: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        parts = self._partitions.get(topic)
        if not parts:
            # The local broker never auto-creates topics, so naming one here is safe.
            [meta] = await self.admin.describe_topics([topic])
            if meta["error_code"] != 0:
                return []  # not created yet (faust creates the changelog at start-up)
            parts = self._partitions[topic] = [TopicPartition(topic, p["partition"])
                                               for p in meta["partitions"]]
        return parts

    async def count(self, topic: str) -> int:
        parts = await self.partitions(topic)
        if not parts:
            return 0
        ends = await self.consumer.end_offsets(parts)
        begins = await self.consumer.beginning_offsets(parts)
        return sum(ends[tp] - begins[tp] for tp in parts)
