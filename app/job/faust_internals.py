"""Every private name of faust, mode and aiokafka that ttbridge relies on, and nothing else.

Each use says what it relies on and what an upgrade could break; tests/job/test_faust_internals.py
fails when an upgrade moves one of them. The versions they were written against are pinned in
pyproject.toml (faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0): change a pin only
together with that test. Everything else in app/ uses public API only.
"""
from __future__ import annotations

import weakref
from typing import Any

# A contextvar holding (a weak reference to) the event a faust stream is processing. faust's
# RocksDB table reads the partition of a key from it; inside a noack_take batch there is no
# current event, and faust falls back to searching every local partition's store, which would
# hide a co-partitioning bug (and costs one read per partition). Breaks if faust renames it or
# stops reading the partition from it.
from faust.streams import _current_event

__all__ = ["read_in_partition_of", "recovery_completed", "allow_changelog_bundles",
           "drain_changelog_writes", "rocksdb_partition", "rocksdb_offset_key"]


def read_in_partition_of(event, table, key: Any) -> Any:
    """`table[key]` as seen from `event`'s partition, or None: one store read. faust's
    `table.get` reads twice (`in`, then `[]`) through layers that cost more than the read.
    Relies on the store's `_get(raw key) -> raw value | None`, `_encode_key` and `_decode_value`
    (faust.stores.base.SerializedStore / rocksdb.Store)."""
    token = _current_event.set(weakref.ref(event))
    try:
        store = table.data
        raw = store._get(store._encode_key(key))
        return None if raw is None else store._decode_value(raw)
    finally:
        _current_event.reset(token)


def recovery_completed(app) -> bool:
    """Whether faust has restored every table partition assigned to this worker. Relies on the
    `completed` event of the tables' Recovery service (faust.tables.recovery.Recovery), which
    has no public accessor."""
    return app.tables.recovery.completed.is_set()


def allow_changelog_bundles(app, records_per_message: int) -> None:
    """Let one stream message queue `records_per_message` changelog records without faust
    warning "producer buffer full": each table write queues one, and a bundle of clicks is one
    message of up to batch_max writes (the agent drains them after each bundle:
    drain_changelog_writes). Relies on ProducerBuffer.max_messages (100)."""
    app.producer.buffer.max_messages = records_per_message + 100


async def drain_changelog_writes(app) -> None:
    """Hand every changelog record queued by table writes to the Kafka producer, without
    waiting for the broker's acks: the public `app.producer.flush()` also waits for those, a
    round trip per bundle of clicks, for no durability: faust flushes its producer (acks
    included) before it commits source offsets anyway (Consumer._commit_offsets). Relies on
    ProducerBuffer.flush()."""
    await app.producer.buffer.flush()


def rocksdb_partition(store, partition: int):
    """A RocksDB handle of our own on one partition of faust's store (the bulk restore writes
    through it before faust opens the store). Relies on rocksdb.Store's `rocksdb_options.open`
    and `partition_path` (the on-disk layout: one database per partition)."""
    return store.rocksdb_options.open(store.partition_path(partition))


def rocksdb_offset_key(store) -> bytes:
    """The key under which faust's RocksDB store keeps a partition's persisted changelog offset
    (rocksdb.Store.offset_key); faust resumes its own recovery after it."""
    return store.offset_key
