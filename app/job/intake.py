"""The intake: tracking events in, validated, handed to the forwarder in this process (bad input
to the DLQ with its reason); the clicks some of them carry (a landing page with ttclid in its
URL) bundled by click ID out to the clicks table's log. The clicks topic itself is not read
here: every worker's clicks table reads it directly (app.job.clicks).

A plain aiokafka consumer in its own group ("<app id>-intake", the job's one consumer group of
input) reading a batch at a time: faust's per-message stream path cost more than the whole of
ttbridge's work on an event (bench/README.md). The events are not repartitioned: every worker
holds the whole clicks table (app.job.clicks), so the join needs no co-partitioning and each
event is parsed once, here, and joined where it was read (like a Kafka Streams join against a
global table).

Offsets are committed once every message before them has a durable outcome (app.job.offsets):
a crash or a rebalance re-reads what was not (duplicates at worst, never gaps; event_ids are
stable, so TikTok drops the second copy).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Mapping

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from app.job.bundles import Bundler
from app.job.durable import Write, write_durably
from app.job.forwarder import Forwarder
from app.job.kafka_security import client_options
from app.job.metrics import Metrics
from app.job.offsets import Offsets, Ticket
from app.job.records import dead_letter, encode, hash_original
from app.mapping.decode import click_from_landing, decode_object
from app.mapping.events import MappingConfig, Refusal, click_id_of, events_of, skip_reason, tiktok_names
from app.settings import Settings

__all__ = ["Intake"]

log = logging.getLogger(__name__)

# How long a poll waits for a batch to fill: the intake's share of an event's latency.
POLL_MS = 50
# What is settled is committed at most this often (and always when partitions go, and at the
# end): a commit per poll cost ~1.5% of the worker's CPU (the request, the coordinator's answer,
# the committable scan) to shorten what a crash re-reads by less than a second of events, which
# TikTok drops as duplicates anyway (same event_ids).
COMMIT_EVERY_S = 1.0


class Intake:
    def __init__(self, settings: Settings, mapping: MappingConfig, write: Write, metrics: Metrics,
                 forwarder: Forwarder, mappings: Mapping[str, MappingConfig] | None = None) -> None:
        self.settings = settings
        # Each input topic's shape reads its events (`mappings`); `mapping` those of the others.
        self.mapping = mapping
        self.mappings = dict(mappings or {})
        self.write = write
        self.metrics = metrics
        self.forwarder = forwarder
        self.group = f"{settings.app_id}-intake"
        self.topics = tuple(self.mappings or (settings.topic_events,))
        self.offsets = Offsets()
        self._consumer: AIOKafkaConsumer | None = None
        # The events read since the last round was handed to the forwarder, and since when.
        self._round: list[tuple[Ticket, dict]] = []
        self._round_since = 0.0
        metrics.gauge("intake_messages_held", "input messages read and not yet committable", (),
                      lambda: {(): self.offsets.holding()})

    def assignment(self) -> set:
        return self._consumer.assignment() if self._consumer is not None else set()

    async def run(self) -> None:
        """Until cancelled; a failure (the broker gone for long, a bug) restarts the consumer
        from its committed offsets after 5 s instead of leaving the topics unread."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("the intake failed; restarting it in 5 s")
                await asyncio.sleep(5)

    async def _consume(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=s.batch_max,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout_s / 3) * 1000),
            max_partition_fetch_bytes=2 * s.max_message_bytes, **client_options(s))
        # A restart re-reads from the committed offsets: what the last consumer held is read again.
        self.offsets, self._round = Offsets(), []
        self.forwarder.abandon_pending()
        try:
            await consumer.start()  # inside: a start that fails is stopped too (no leaked client)
            self._consumer = consumer
            self.metrics.watch_consumer(self.group, consumer)  # broker connectivity and lag, when scraped
            consumer.subscribe(self.topics, listener=_Rebalance(self, consumer))
            committed_at = 0.0
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=s.batch_max)
                await self.metrics.refresh_lag(self.group, consumer)  # at most once a second
                now = time.time()
                if batches:
                    writes, tickets = self.decode(batches, now)
                    await write_durably(self.write, writes)
                    for ticket in tickets:
                        ticket.settle()  # its clicks and dead letters are durable
                if self._round and (len(self._round) >= s.batch_max or now - self._round_since >= s.batch_window_s):
                    round_, self._round = self._round, []
                    await self.forwarder.handle(round_)  # maps now; waits only for a free slot
                if now - committed_at >= COMMIT_EVERY_S:
                    committed_at = now
                    await self._commit(consumer)
        finally:
            self._consumer = None
            try:
                # Rounds on the wire get a quarter of the shutdown bound, then are cancelled: a hung
                # request must not run the worker into its watchdog (exit 75). Then what is settled
                # is committed (within another quarter: a coordinator still moving must not hold
                # the stop up either), so that a restart re-reads as little as possible.
                await self.forwarder.drain(within=s.shutdown_timeout_s / 4)
                try:
                    await asyncio.wait_for(self._commit(consumer), s.shutdown_timeout_s / 4)
                except asyncio.TimeoutError:
                    log.warning("the last intake commit did not finish in %.0f s; a restart re-reads "
                                "from the one before", s.shutdown_timeout_s / 4)
            finally:
                await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        mine = consumer.assignment()
        due = {tp: o for tp, o in self.offsets.committable().items() if tp in mine}
        if not due:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in due.items()})
        except (CommitFailedError, IllegalStateError, KafkaError) as e:
            # A rebalance took the partitions (their new owner re-reads from the last commit:
            # duplicates, never gaps), or the broker is away (the next commit carries these).
            log.warning("intake commit refused (%s); the next commit or owner covers it", type(e).__name__)
            return
        self.offsets.committed(due)

    async def revoked(self, consumer: AIOKafkaConsumer, tps) -> None:
        """Partitions about to go: commit what is settled of them (less for their next owner to
        re-read), then forget them and drop their events not yet handed over."""
        await self._commit(consumer)
        self.offsets.forget(tps)
        gone = set(tps)
        self._round = [e for e in self._round if e[0].tp not in gone]

    def decode(self, batches: dict, now: float) -> tuple[list[tuple], list[Ticket]]:
        """Every message of a poll: the writes (bundles of landing clicks, dead letters) and one
        ticket per message, to settle once the writes are durable. Its events join the round. A
        bug in decoding dead-letters that message instead of stopping the intake."""
        bundler, dead, tickets = Bundler(self.settings.partitions), [], []
        for tp, messages in batches.items():
            # Every message counts, whatever becomes of it (a batch adds its other events).
            self.metrics.add("events_in", len(messages))
            for msg in messages:
                ticket = self.offsets.ticket(tp, msg.offset)
                tickets.append(ticket)
                try:
                    dead += self._event(msg, ticket, bundler, now)
                except Refusal as r:
                    dead += self._refused(msg, r.reason, r.message, now)
                except Exception as e:  # noqa: BLE001
                    log.exception("unexpected error decoding a message")
                    dead += self._refused(msg, "internal_error", f"{type(e).__name__}: {e}", now)
        return bundler.records() + dead, tickets

    def _event(self, msg, ticket: Ticket, bundler: Bundler, now: float) -> list[tuple]:
        mapping = self.mappings.get(msg.topic, self.mapping)
        doc = decode_object(msg.value, self.settings.max_message_bytes)
        if mapping.plan.batch_path is None:
            # The original bytes stay with the event, for its dead letter if it gets one.
            self._one(doc, msg.value, _source(msg), mapping, ticket, bundler, now)
            return []
        # A batch (mParticle's): each event goes on, or is dead-lettered, alone.
        dead = []
        events = events_of(doc, mapping)
        if not events:
            self.metrics.add("events_skipped", reason="no_events")
        self.metrics.add("events_in", max(len(events) - 1, 0))
        for i, event in enumerate(events):
            source = {**_source(msg), "index": i}
            try:
                if isinstance(event, Refusal):
                    raise event
                self._one(event, None, source, mapping, ticket, bundler, now)
            except Refusal as r:
                dead += self._refused(msg, r.reason, r.message, now, source=source,
                                      original=_batch_of_one(doc, mapping, i, event, msg.value))
            except Exception as e:  # noqa: BLE001 - a bug costs this event, not its batch-mates
                log.exception("unexpected error decoding an event of a batch")
                dead += self._refused(msg, "internal_error", f"{type(e).__name__}: {e}", now, source=source,
                                      original=_batch_of_one(doc, mapping, i, event, msg.value))
        return dead

    def _one(self, event: dict, raw: bytes | None, source: dict, mapping: MappingConfig, ticket: Ticket,
             bundler: Bundler, now: float) -> None:
        names = tiktok_names(event, mapping)
        landing = click_from_landing(event, mapping)
        if landing is not None:
            self.metrics.add("landing_clicks")
            bundler.add_click(*landing)
        if not names:
            self.metrics.add("events_skipped", reason=skip_reason(event, mapping))
            return
        if raw is None:  # an event of a batch: its dead letter would carry its own JSON
            raw = _written(event, f"{mapping.plan.batch_path[0]}[{source['index']}]")
        if not self._round:
            self._round_since = now
        # `at` starts the late-click wait: it counts from now, not from the record's timestamp,
        # so that a worker catching up after downtime (or a producer stamping event time) still
        # gives a late click its join_wait.
        self._round.append((ticket.hold(), {"click_id": click_id_of(event, mapping), "at": now,
                                            "source": source, "event": event, "raw": raw}))

    def _refused(self, msg, reason: str, message: str, now: float, source: dict | None = None,
                 original: bytes | None = None) -> list[tuple]:
        self.metrics.add("dead_letters", reason=reason)
        record = dead_letter(reason, message, "decode", now, source=source or _source(msg),
                             original=msg.value or b"" if original is None else original)
        if self.settings.dlq_original == "hashed":
            record = hash_original(record, self.mappings.get(msg.topic, self.mapping).plan)
        return [("dlq", msg.topic.encode(), value) for value in encode(record)]


class _Rebalance(ConsumerRebalanceListener):
    """Partitions that go are committed and forgotten (Intake.revoked); partitions that come
    (back) start afresh from their committed offsets."""

    def __init__(self, intake: Intake, consumer: AIOKafkaConsumer) -> None:
        self.intake, self.consumer = intake, consumer

    async def on_partitions_revoked(self, revoked) -> None:
        await self.intake.revoked(self.consumer, revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.intake.offsets.forget(assigned)


def _source(msg) -> dict:
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}


def _written(event: dict, where: str) -> bytes:
    """A batch's event as the JSON its bundle carries. orjson reads 1,024 levels of nesting but
    writes at most 254: a deeper event is refused alone, here, rather than failing its message
    (whose other events are bundled already)."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError as e:
        raise Refusal("invalid_event", f"{where}: cannot be written as JSON again ({e}; orjson writes "
                      "at most 254 levels of nesting)") from None


def _batch_of_one(doc: dict, mapping: MappingConfig, i: int, event, value: bytes) -> bytes:
    """What a replay can send back to the topic for the batch's event i: a batch of this one
    event; the whole message when that cannot be written (an event too deep to write again)."""
    key = mapping.plan.batch_path[0]
    if not isinstance(doc.get(key), list):
        return value
    element = {k: v for k, v in event.items() if k != "batch"} if isinstance(event, dict) else doc[key][i]
    try:
        return orjson.dumps({**{k: v for k, v in doc.items() if k != key}, key: [element]})
    except orjson.JSONEncodeError:
        return value
