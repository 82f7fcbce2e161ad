"""The clicks table: click ID -> the click as recorded (app.mapping.decode.click_record).

Everything about it lives here: its RocksDB options and changelog, storing a click (merged with
an earlier record of it), reading one for a join, expiry past the attribution window, and the
bulk restore from the changelog before faust starts.

The table is co-partitioned with the events it joins: both repartition topics put a click ID on
the partition Kafka's default partitioner gives it (app.job.bundles), and a lookup reads only the
partition of the event being joined — as a worker that owns some of the partitions sees it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import WriteBatch

from app.job import faust_internals
from app.job.bundles import Bundler, read_clicks
from app.job.durable import Write, write_durably
from app.job.kafka_security import client_options
from app.job.topics import partition_count
from app.settings import Settings

__all__ = ["Clicks", "ROCKSDB_OPTIONS", "restore_before_start", "restore_table"]

log = logging.getLogger(__name__)

# One RocksDB per table partition. faust's defaults (3 × 64 MB memtables and a 2 GB block cache,
# each per partition) let a worker's RSS grow with the table; a click is ~0.5 KB and is read
# once or twice, so small memtables and caches cost little in speed. Per partition at most
# 2 × 4 MB of memtables and 8 MB of cache: 96 MB for the default 6 partitions.
ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20}


class Clicks:
    def __init__(self, app, settings: Settings) -> None:
        self.window_s = settings.attribution_window_days * 86400
        self.partitions = settings.partitions
        self.table = app.Table(
            "clicks", default=None, partitions=settings.partitions,  # JSON: str click_id -> dict
            # Clicks past the attribution window are useless: the changelog forgets them, so a
            # recovering worker restores only live clicks (lookups check the age as well).
            extra_topic_configs={"cleanup.policy": "compact,delete",
                                 "retention.ms": str(int(self.window_s * 1000))},
            options=dict(ROCKSDB_OPTIONS),  # faust pops keys from the dict it is given
        )
        # A bundle of clicks is one stream message of up to batch_max table writes.
        faust_internals.allow_changelog_bundles(app, settings.batch_max)

    def read(self, event, click_id: str) -> dict | None:
        """The click in the partition of `event` (a faust event of a co-partitioned topic)."""
        return faust_internals.read_in_partition_of(event, self.table, click_id)

    def store_bundle(self, event) -> list[str]:
        """Apply one clicks-by-click-id record (`event`, inside the agent's per-event loop: faust
        refuses table writes inside a batch). Returns the click IDs stored. Only ttbridge writes
        these records; a malformed one, or one bad entry, is logged and skipped — never a reason
        to stop the stream or to lose the entry's neighbours."""
        try:
            bundle = read_clicks(event.value)
        except (AttributeError, TypeError, ValueError, KeyError):
            log.error("ignoring a malformed record on %s at offset %s", event.message.topic,
                      event.message.offset)
            return []
        stored = []
        for entry in bundle.clicks:
            try:
                click_id, record = entry
                self._store(event, click_id, record)
            except (AttributeError, TypeError, ValueError):
                log.error("ignoring a malformed click in the record on %s at offset %s",
                          event.message.topic, event.message.offset)
                continue
            stored.append(click_id)
        cutoff = time.time() - self.window_s
        for click_id in bundle.expired:
            old = self.read(event, click_id)
            # Deleted only if still expired: the click may have come again since the sweep.
            if old is not None and old.get("clicked_at", 0) < cutoff:
                del self.table[click_id]
        return stored

    def _store(self, event, click_id: str, record: dict) -> None:
        old = self.read(event, click_id)
        if old is not None:
            # A second record of the same click (e.g. its landing page) adds, never erases.
            record = {**old, **{k: v for k, v in record.items() if v}}
        self.table[click_id] = record

    async def sweep(self, write: Write, batch_max: int) -> int:
        """Send an expiry for every click past the attribution window in the local store (the
        changelog's retention only helps a worker that restores from scratch; a persistent
        volume keeps everything). The deletes happen in store_bundle, where table writes are
        allowed. Returns the number of expiries sent."""
        cutoff, n, bundler = time.time() - self.window_s, 0, Bundler(self.partitions)
        for i, (click_id, record) in enumerate(self.table.items(), 1):
            if record.get("clicked_at", 0) < cutoff:
                bundler.add_expiry(click_id)
                n += 1
            if i % batch_max == 0:  # bundles the click store applies at once; let the agents breathe
                await write_durably(write, bundler.records())
        await write_durably(write, bundler.records())
        return n


# --------------------------------------------------------------------------- bulk restore
# faust restores a table record by record through its stream machinery: a fresh worker needed
# about 3 minutes for 1M clicks before it could join anything. Kafka Streams restores in batches
# (its BatchingStateRestoreCallback); this does the same. A plain consumer reads each changelog
# partition from the local store's persisted offset to the end offset seen at start, in large
# fetches, and writes each fetch into the partition's RocksDB as one WriteBatch that also carries
# the new persisted offset — records and offset land together or not at all. faust then finds
# its persisted offsets at (or near) the end and replays only what was written since.
#
# Every partition is restored, not only the ones this worker will own (unknown before it joins
# the group): each worker keeps a warm copy of the whole table, so a rebalance that moves a
# partition here replays only its tail. tests/job/test_clicks.py checks that faust reads
# what this writes.

_MAX_RECORDS = 20_000  # per fetch; one WriteBatch per fetch
_STALL_S = 30.0        # no records for this long: give up, faust's recovery takes over


def restore_before_start(clicks: Clicks, settings: Settings) -> None:
    """The worker's start-up step, before faust's event loop runs: restore, log what it took; on
    failure log and let faust's own (slower) recovery do it."""
    t = time.monotonic()
    table = clicks.table
    topic = table.changelog_topic.get_topic_name()
    try:
        applied = asyncio.run(restore_table(settings.bootstrap_servers, table.data, topic,
                                            clicks.partitions, client_options(settings)))
    except Exception as e:  # noqa: BLE001 - faust recovers the table anyway, only slower
        log.warning("bulk restore of %s failed (%s: %s); faust's recovery takes over",
                    topic, type(e).__name__, e)
        return
    total = sum(applied.values())
    if total:
        log.info("restored %d clicks from %s in %.1f s", total, topic, time.monotonic() - t)


async def restore_table(bootstrap: str, store, topic: str, partitions: int,
                        security: Mapping[str, Any] | None = None) -> dict[int, int]:
    """Bring every partition of faust's RocksDB `store` up to the end of `topic` (its changelog).
    Returns records applied per partition. Raises on broker errors; what was written stays
    written (with its offset), and faust's own recovery does the rest. Only the store's paths
    and options are used, through handles of our own closed at the end: the store itself is not
    started (it belongs to faust's event loop, which does not exist yet)."""
    # Asked up front: for a missing topic aiokafka's offset requests would wait 40 s.
    found = await partition_count(bootstrap, topic, security)
    applied = {p: 0 for p in range(partitions)}
    if found is None:
        return applied  # a first start: faust creates the changelog, nothing to restore
    if found != partitions:
        raise ValueError(f"{topic} has {found} partitions, the table {partitions}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20, **(security or {}))
    dbs = {}
    offset_key = faust_internals.rocksdb_offset_key(store)
    try:
        # Closed whatever happens: faust cannot open a partition this process still holds.
        for p in range(partitions):
            dbs[p] = faust_internals.rocksdb_partition(store, p)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in dbs]
        firsts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        # One partition at a time: aiokafka's position() runs ahead of the records getmany has
        # returned while other partitions' records fill max_records, so it cannot say "done"
        # for one of several; for the only one fetched it can.
        for tp in tps:
            db = dbs[tp.partition]
            persisted = db.get(offset_key)
            start = max(firsts[tp], int(persisted) + 1 if persisted is not None else 0)
            if start >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, start)
            applied[tp.partition] = await _restore_partition(consumer, tp, ends[tp], db, offset_key)
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
