"""The durable writer: records land where Kafka's own producers would put them, in order, all
acknowledged before it returns; write_durably keeps trying while the broker is away."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.job import durable
from app.job.durable import BatchWriter, write_durably
from tests.support import create_topic

# Kafka's murmur2 of these keys, as Java's Utils.murmur2 returns them (Kafka's UtilsTest).
# The default partitioner puts a key on toPositive(murmur2) % partitions.
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829,
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}


async def read_partitions(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple]]:
    """Every record of `topic`: {partition: [(key, value), ...]} in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[tuple]] = {p: [] for p in range(partitions)}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition] += [(m.key, m.value) for m in msgs]
        return out
    finally:
        await consumer.stop()


async def test_keys_land_on_the_partitions_of_kafkas_default_partitioner(kafka_bootstrap, unique):
    topic = f"durable-keys-{unique}"
    await create_topic(kafka_bootstrap, topic, 6)
    write = BatchWriter(kafka_bootstrap, {"out": topic})
    try:
        await write([("out", key, b"v-" + key) for key in JAVA_MURMUR2])
    finally:
        await write.stop()
    expected: dict[int, list[tuple]] = {p: [] for p in range(6)}
    for key, h in JAVA_MURMUR2.items():
        expected[(h & 0x7FFFFFFF) % 6].append((key, b"v-" + key))
    assert await read_partitions(kafka_bootstrap, topic, 6) == expected


async def test_explicit_partitions_and_roles_are_honoured(kafka_bootstrap, unique):
    a, b = f"durable-a-{unique}", f"durable-b-{unique}"
    await create_topic(kafka_bootstrap, a, 3)
    await create_topic(kafka_bootstrap, b, 1)
    write = BatchWriter(kafka_bootstrap, {"first": a, "second": b})
    try:
        # A partition given wins over the key's; a record with neither may go anywhere.
        await write([("first", b"abc", b"1", 2), ("second", None, b"2"), ("first", None, b"3", 0),
                     ("first", b"21", b"4", 2)])
    finally:
        await write.stop()
    assert await read_partitions(kafka_bootstrap, a, 3) == {0: [(None, b"3")], 1: [],
                                                            2: [(b"abc", b"1"), (b"21", b"4")]}
    assert await read_partitions(kafka_bootstrap, b, 1) == {0: [(None, b"2")]}


async def test_a_write_larger_than_a_record_batch_arrives_whole_and_in_order(kafka_bootstrap, unique):
    topic = f"durable-order-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    write = BatchWriter(kafka_bootstrap, {"out": topic})
    values = [f"{i:05d}".encode() * 2000 for i in range(200)]  # 10 KB each: ~2 MB, many batches
    try:
        await write([("out", None, v, 0) for v in values[:100]])
        await write([("out", None, v, 0) for v in values[100:]])
    finally:
        await write.stop()
    assert await read_partitions(kafka_bootstrap, topic, 1) == {0: [(None, v) for v in values]}


@pytest.fixture
def delays(monkeypatch):
    """The back-off write_durably sleeps, recorded instead of waited out."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)
    monkeypatch.setattr(durable.asyncio, "sleep", sleep)
    return slept


async def test_write_durably_retries_with_backoff_until_the_write_succeeds(delays):
    calls: list[list] = []
    records = [("out", b"k", b"v")]

    async def flaky(batch):
        calls.append(list(batch))
        if len(calls) <= 7:
            raise ConnectionError("broker away")
    await write_durably(flaky, records)
    # Every attempt writes the whole batch again (duplicates, never gaps).
    assert calls == [records] * 8
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_write_durably_does_not_retry_a_cancellation_or_write_nothing(delays):
    calls = []

    async def cancelled(batch):
        calls.append(batch)
        raise asyncio.CancelledError
    with pytest.raises(asyncio.CancelledError):
        await write_durably(cancelled, [("out", None, b"v")])
    assert (len(calls), delays) == (1, [])
    await write_durably(cancelled, [])  # nothing to write: no call at all
    assert len(calls) == 1
