"""Bulk restore of the clicks table from its changelog, before faust starts.

faust restores a table record by record through its stream machinery: a fresh worker needed
about 3 minutes for 1M clicks before it could join anything. Kafka Streams restores in batches
(its BatchingStateRestoreCallback); this does the same. A plain consumer reads each changelog
partition from the local store's persisted offset to the end offset seen at start, in large
fetches, and writes each fetch into the partition's RocksDB as one WriteBatch that also carries
the new persisted offset — records and offset land together or not at all. faust then finds its
persisted offsets at (or near) the end and replays only what was written since.

Every partition is restored, not only the ones this worker will own (unknown before it joins the
group): each worker keeps a warm copy of the whole table, so a rebalance that moves a partition
here replays only its tail. The store's layout (paths, the offset key, raw keys and values as
they are on the changelog) is faust 0.15's RocksDB store; tests/test_restore.py checks that faust
reads what this writes.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import WriteBatch

__all__ = ["restore_before_start", "restore_table"]

log = logging.getLogger(__name__)

_MAX_RECORDS = 20_000  # per fetch; one WriteBatch per fetch
_STALL_S = 30.0        # no records for this long: give up, faust's recovery takes over


async def restore_table(bootstrap: str, store, topic: str, partitions: int) -> dict[int, int]:
    """Bring every partition of faust's RocksDB `store` up to the end of `topic` (its changelog).
    Returns records applied per partition. Raises on broker errors; what was written stays
    written (with its offset), and faust's own recovery does the rest. Only the store's paths
    and options are used, through handles of our own closed at the end: the store itself is not
    started (it belongs to faust's event loop, which does not exist yet)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20)
    applied, dbs = {p: 0 for p in range(partitions)}, {}
    try:
        # Closed whatever happens: faust cannot open a partition this process still holds.
        for p in range(partitions):
            dbs[p] = store.rocksdb_options.open(store.partition_path(p))
        await consumer.start()
        # Asked up front: for a missing topic aiokafka's offset requests would wait 40 s.
        found = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
        if found is None:
            return applied  # a first start: faust creates the changelog, nothing to restore
        if found != set(dbs):
            raise ValueError(f"{topic} has {len(found)} partitions, the table {partitions}")
        tps = [TopicPartition(topic, p) for p in dbs]
        firsts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        # One partition at a time: aiokafka's position() runs ahead of the records getmany has
        # returned while other partitions' records fill max_records, so it cannot say "done"
        # for one of several; for the only one fetched it can.
        for tp in tps:
            db = dbs[tp.partition]
            persisted = db.get(store.offset_key)
            start = max(firsts[tp], int(persisted) + 1 if persisted is not None else 0)
            if start >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, start)
            applied[tp.partition] = await _restore_partition(consumer, tp, ends[tp], db, store.offset_key)
    finally:
        await consumer.stop()  # a no-op if it never started
        for db in dbs.values():
            db.close()
    return applied


async def _restore_partition(consumer, tp: TopicPartition, end: int, db, offset_key: bytes) -> int:
    applied, idle_since = 0, time.monotonic()
    while True:
        records = (await consumer.getmany(tp, timeout_ms=1000, max_records=_MAX_RECORDS)).get(tp)
        if records:
            _apply(db, offset_key, records)
            applied += len(records)
            if records[-1].offset + 1 >= end:
                return applied
            idle_since = time.monotonic()
        elif await consumer.position(tp) >= end:  # the rest was compacted away or a marker
            return applied
        elif time.monotonic() - idle_since > _STALL_S:
            raise TimeoutError(f"no records from {tp.topic}[{tp.partition}] for {_STALL_S:.0f} s "
                               f"at offset {await consumer.position(tp)} of {end}")


def _apply(db, offset_key: bytes, records: list) -> None:
    """One fetch (never empty) and its last offset, in one atomic write."""
    batch = WriteBatch(raw_mode=True)
    for r in records:
        if r.value is None:
            batch.delete(r.key)
        else:
            batch.put(r.key, r.value)
    batch.put(offset_key, str(records[-1].offset).encode())
    db.write(batch)


def restore_before_start(table, bootstrap: str, partitions: int) -> None:
    """The worker's start-up step, before faust's event loop runs: restore, log what it took; on
    failure log and let faust's own (slower) recovery do it."""
    t = time.monotonic()
    topic = table.changelog_topic.get_topic_name()
    try:
        applied = asyncio.run(restore_table(bootstrap, table.data, topic, partitions))
    except Exception as e:  # noqa: BLE001 - faust recovers the table anyway, only slower
        log.warning("bulk restore of %s failed (%s: %s); faust's recovery takes over",
                    topic, type(e).__name__, e)
        return
    total = sum(applied.values())
    if total:
        log.info("restored %d clicks from %s in %.1f s", total, topic, time.monotonic() - t)
