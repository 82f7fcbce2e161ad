"""The clicks table: click ID -> the click as recorded (app.mapping.decode.click_record).

Everything about it lives here: where it is kept, how it is fed, reading one click for a join,
expiry past the attribution window, and the catch-up before a worker starts.

The table is a RocksDB of ttbridge's own, sourced from two topics, each followed partition by
partition (a consumer without a group) with its offsets kept in the table itself:
- the `clicks` topic, as the click tracker writes it: each record decoded here (a bad click is
  refused, counted by reason, and skipped: see below), as Kafka Streams sources a global table
  from its input topic instead of writing a changelog;
- clicks-by-click-id, the table's own log, for the clicks ttbridge derives from tracking events
  (a landing page with ttclid in its URL: app.job.intake writes them there, in bundles,
  app.job.bundles). Both topics keep their records for the attribution window (app.job.topics
  warns when one does not), the table's whole lifetime.

Why sourced from `clicks` itself: the intake used to decode every click and write it again to
the log for every worker to read back, ~6 µs of a click's ~14 µs of worker CPU (bench: per click
14.4 -> 8.0 µs, bench/README.md). Why not a faust Table (what came before): a changelog record
per click and faust's serialiser layers on each read, ~130 µs per click. Here a fetch is one
RocksDB write batch (its clicks and the offsets it reached, atomically).

Every worker follows every partition of both topics, so each keeps the whole table: a lookup
never depends on which worker owns which events partition, a rebalance moves no state, and a
restart or a new worker only reads what its table lacks. The price: each worker decodes every
click and stores it (7–8 µs each). A bad click is therefore a counted skip (clicks_refused{reason}, and one
warning per fetch naming the first one's topic, partition and offset), not a dead letter: every
worker meets it, and none of them owns it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from app.job.bundles import read_clicks
from app.job.kafka_security import client_options
from app.job.topics import load_specs, partition_counts
from app.mapping.decode import decode_click
from app.mapping.values import Refusal
from app.settings import Settings

__all__ = ["Clicks", "catch_up_before_start", "rocksdb_options"]

log = logging.getLogger(__name__)

# Keys: b"c" + click ID -> the click's JSON; b"o" + "<topic>:<partition>" -> the last applied
# offset of that partition (as text). One keyspace, so a fetch's clicks and offsets are one write.
_CLICK, _OFFSET = b"c", b"o"
# Records per fetch: bounds a write batch's memory (a bundle holds up to batch_max clicks, a
# record of the clicks topic one).
_MAX_RECORDS = 5000
_SWEEP_CHUNK = 10_000      # deletes per write batch when sweeping
_STALL_S = 30.0            # catch-up: no records for this long is an error


def rocksdb_options() -> Options:
    """Small memtables and cache: a click is ~0.3 KB and read once or twice, so RocksDB's own
    defaults (64 MB memtables, an 8 MB cache) buy nothing; with these the worker's RSS stays
    flat as the table grows (bench/README.md: 1,000,000 clicks)."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(8 << 20)
    opts.set_max_write_buffer_number(2)
    # Every click applied first looks itself up (to merge with an earlier record of it), and
    # almost always misses: a bloom filter answers a miss without reading the files' index
    # blocks (bench: 4.4 -> 0.6 µs per miss in a table of 400,000 clicks).
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def _write_options() -> WriteOptions:
    """No write-ahead log, as Kafka Streams runs its RocksDB stores: the topic is the table's
    log. A crash loses the writes not yet flushed, and with them the offsets written in the same
    batches (one column family flushes in write order), so the table restarts at an older
    consistent point and reads the rest again; a clean close flushes everything."""
    opts = WriteOptions()
    opts.disable_wal = True
    return opts


class Clicks:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = load_specs(settings)["clicks-by-click-id"].name  # the table's log
        self.source = settings.topic_clicks
        self.window_s = settings.attribution_window_days * 86400
        self.path = Path(settings.data_dir) / "clicks"
        self.db: Rdict | None = None
        self.applied = 0  # clicks written to the table by this process
        # (counter, reason) -> n since the last report(): clicks_in, clicks_refused.
        self.tally: Counter[tuple[str, str]] = Counter()
        # Up to the end offsets seen at start (catch_up, or follow after a failed catch-up):
        # until then joins would miss clicks the topic has, and /readyz says not ready.
        self.caught_up = False
        self.following = True  # false from a failure of the follower until it runs again

    def open(self) -> None:
        if self.db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = Rdict(str(self.path), rocksdb_options())
            self.db.set_write_options(_write_options())

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def read(self, click_id: str) -> dict | None:
        """The click, or None. Age is the mapping's business (app.mapping.events: the window)."""
        raw = self.db.get(_CLICK + click_id.encode())
        return None if raw is None else orjson.loads(raw)

    def offsets(self, topic: str, partitions: int) -> dict[int, int]:
        """The next offset to read per partition of `topic` (0 for a new table)."""
        out = {}
        for p in range(partitions):
            done = self.db.get(_offset_key(topic, p))
            out[p] = 0 if done is None else int(done) + 1
        return out

    def apply(self, fetched: Mapping[TopicPartition, list]) -> list[str]:
        """One fetch of the two topics, in one atomic RocksDB write: every click (a click seen
        before merges with the new record, never losing a field: _merged) and each
        partition's last offset. Returns the click IDs stored. A bad click of the clicks topic
        is refused and counted (self.tally); a malformed record of the log (only ttbridge writes
        it) is logged and skipped. Neither is ever a reason to stop."""
        batch, merged, stored, db = WriteBatch(raw_mode=True), {}, [], self.db
        refused, first = Counter(), None
        max_bytes = self.settings.max_message_bytes
        for tp, records in fetched.items():
            from_source = tp.topic == self.source
            if from_source:
                self.tally[("clicks_in", "")] += len(records)
            for r in records:
                if from_source:
                    try:
                        clicks = (decode_click(r.value, max_bytes),)
                    except Refusal as e:
                        refused[e.reason] += 1
                        first = first or (tp.partition, r.offset, e.reason, e.message)
                        continue
                else:
                    try:
                        clicks = read_clicks(r.value)
                    except (AttributeError, TypeError, ValueError, KeyError):
                        log.error("ignoring a malformed record on %s at offset %s", tp.topic, r.offset)
                        continue
                for entry in clicks:
                    try:
                        click_id, record = entry
                        if not isinstance(record, dict):
                            raise TypeError(type(record).__name__)
                        key = _CLICK + click_id.encode()
                        old = merged.get(key)
                        if old is None:
                            raw = db.get(key)
                            old = None if raw is None else orjson.loads(raw)
                        if old is not None:
                            record = _merged(old, record)
                    except (AttributeError, TypeError, ValueError, KeyError):  # KeyError: no clicked_at
                        log.error("ignoring a malformed click in the record on %s at offset %s",
                                  tp.topic, r.offset)
                        continue
                    merged[key] = record
                    stored.append(click_id)
            if records:
                batch.put(_offset_key(tp.topic, tp.partition), str(records[-1].offset).encode())
        for key, record in merged.items():
            batch.put(key, orjson.dumps(record))
        db.write(batch)
        self.applied += len(stored)
        if refused:
            for reason, n in refused.items():
                self.tally[("clicks_refused", reason)] += n
            p, offset, reason, message = first
            log.warning("refused %d click(s) of %s (%s); the first at partition %d offset %d: %s: %s",
                        sum(refused.values()), self.source, ", ".join(f"{r} {n}" for r, n in refused.items()),
                        p, offset, reason, message)
        return stored

    def report(self, metrics: Any) -> None:
        """Add what was counted since the last report to `metrics` (clicks_in, clicks_refused)."""
        for (name, reason), n in self.tally.items():
            metrics.add(name, n, reason=reason)
        self.tally.clear()

    # ---- feeding the table

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
                                fetch_max_wait_ms=100, **client_options(s))

    async def _partitions(self) -> dict[str, int]:
        """The partition count of each of the two topics that exists. The log must have the
        settings' count (ttbridge creates it so); the clicks topic may have any."""
        # One that is missing is a first start: `ttbridge topics create` (or the worker) creates it.
        counts = await partition_counts(self.settings.bootstrap_servers, [self.source, self.topic],
                                        client_options(self.settings))
        found = counts.get(self.topic)
        if found is not None and found != self.settings.partitions:
            raise ValueError(f"{self.topic} has {found} partitions, the settings say {self.settings.partitions}")
        return counts

    async def _assign(self, consumer: AIOKafkaConsumer, counts: dict[str, int]) -> list[TopicPartition]:
        tps = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n)]
        consumer.assign(tps)
        firsts = await consumer.beginning_offsets(tps)
        for topic, n in counts.items():
            for p, offset in self.offsets(topic, n).items():
                # Past the retention, what the table lacks is gone from the topic: only clicks
                # older than the attribution window, which no join would use.
                tp = TopicPartition(topic, p)
                consumer.seek(tp, max(offset, firsts[tp]))
        return tps

    async def catch_up(self) -> int:
        """Read both topics up to their end offsets as of now; returns the clicks applied. The
        worker's start-up step, before faust runs: a worker is ready only with its table."""
        counts = await self._partitions()
        if not counts:
            self.caught_up = True
            return 0
        consumer, applied = self._consumer(), 0
        try:
            await consumer.start()
            tps = await self._assign(consumer, counts)
            ends = await consumer.end_offsets(tps)
            left = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            idle_since = time.monotonic()
            while left:
                fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=_MAX_RECORDS)
                if any(fetched.values()):
                    before = self.applied
                    self.apply(fetched)
                    applied += self.applied - before
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > _STALL_S:
                    raise TimeoutError(f"no records from {self.topic} for {_STALL_S:.0f} s while catching up")
                for tp in list(left):
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
        self.caught_up = True
        return applied

    async def follow(self, stored: Callable[[list[str]], None], metrics: Any = None) -> None:
        """Apply the topic as it grows, until cancelled; `stored(click IDs)` after each write.
        A failure (the broker gone for long) restarts from the table's own offsets in 5 s.
        With `metrics`: its lag per partition (group "<app id>-clicks-table", though it has no
        consumer group), its fetches counted towards broker_connected, and clicks_table_ready."""
        watch = f"{self.settings.app_id}-clicks-table"
        if metrics is not None:
            metrics.gauge("clicks_table_ready", "1 while the clicks table has caught up with its topics "
                          "and its follower runs (joins would miss clicks otherwise)", (),
                          lambda: {(): int(self.ready)})
            self.report(metrics)  # the catch-up's, before faust ran
        while True:
            consumer = self._consumer()
            try:
                counts = await self._partitions()
                if len(counts) < 2:  # a first start: the worker is creating them
                    log.info("the clicks table waits for %s to exist",
                             " and ".join(t for t in (self.source, self.topic) if t not in counts))
                while len(counts) < 2:
                    await asyncio.sleep(1)
                    counts = await self._partitions()
                await consumer.start()
                tps = await self._assign(consumer, counts)
                if metrics is not None:
                    metrics.watch_consumer(watch, consumer)
                self.following = True
                ends = None if self.caught_up else await consumer.end_offsets(tps)
                while True:
                    fetched = await consumer.getmany(timeout_ms=1000, max_records=_MAX_RECORDS)
                    if fetched:
                        ids = self.apply(fetched)
                        if metrics is not None:
                            metrics.add("clicks_stored", len(ids))
                            self.report(metrics)
                        stored(ids)
                    if metrics is not None:
                        await metrics.refresh_lag(watch, consumer)
                    if ends is not None and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                        self.caught_up, ends = True, None
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                self.following = False  # /readyz says not ready until it runs again
                log.exception("following %s failed; restarting in 5 s", self.topic)
                await asyncio.sleep(5)
            finally:
                await consumer.stop()

    @property
    def ready(self) -> bool:
        """Caught up with the log as of start-up, and following it (not failed since)."""
        return self.caught_up and self.following

    def sweep(self) -> int:
        """Delete the clicks past the attribution window. Every worker applies the same rule to
        its own copy, so nothing goes through Kafka; the topic's retention forgets them too."""
        cutoff, n, batch = time.time() - self.window_s, 0, WriteBatch(raw_mode=True)
        for key, raw in self.db.items(from_key=_CLICK):
            if not key.startswith(_CLICK):
                break
            if orjson.loads(raw).get("clicked_at", 0) < cutoff:
                batch.delete(key)
                n += 1
                if n % _SWEEP_CHUNK == 0:
                    self.db.write(batch)
                    batch = WriteBatch(raw_mode=True)
        self.db.write(batch)
        return n


def _merged(old: dict, new: dict) -> dict:
    """Two records of one click (its tracker's and a landing page's, or the tracker's twice):
    the later click's non-empty fields win, the earlier one fills the gaps. Decided by
    clicked_at, not by arrival: the two topics are read in no fixed order, and every worker
    must come to the same table."""
    if new["clicked_at"] < old["clicked_at"]:
        old, new = new, old
    return {**old, **{k: v for k, v in new.items() if v}}


def _offset_key(topic: str, partition: int) -> bytes:
    return _OFFSET + f"{topic}:{partition}".encode()


def catch_up_before_start(clicks: Clicks) -> None:
    """The worker's start-up step: open the table and bring it up to the topic's end. On
    failure (the broker unreachable) the follower catches up once it can; /readyz waits."""
    t = time.monotonic()
    clicks.open()
    try:
        applied = asyncio.run(clicks.catch_up())
    except Exception as e:  # noqa: BLE001
        log.warning("catching up the clicks table from %s and %s failed (%s: %s); the worker follows "
                    "them and is ready once it has caught up", clicks.source, clicks.topic, type(e).__name__, e)
        return
    if applied:
        log.info("caught up %d clicks from %s and %s in %.1f s", applied, clicks.source, clicks.topic,
                 time.monotonic() - t)
