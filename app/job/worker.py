"""The faust app: topics, the clicks table, the agents, the web endpoints, and `ttbridge worker`.

Reads top-down: topics → table → the intake (clicks and events in, app/intake.py) → agents
(clicks stored, events forwarded) → timers → web pages → command.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time

import faust
from faust.worker import Worker

from app.job.bundles import Bundler, unbundle_clicks
from app.job.durable import BatchWriter, write_durably
from app.job.forwarder import Forwarder, read_click
from app.job.intake import Intake
from app.job.metrics import Metrics
from app.job.retrier import Retrier
from app.settings import Settings, SettingsError, mapping_config
from app.tiktok.sender import Sender

__all__ = ["build_app", "register"]

log = logging.getLogger(__name__)

_RAW = {"key_serializer": "raw", "value_serializer": "raw"}
# The forwarder takes up to this many bundles (each at most batch_max events, one intake poll's
# worth for one partition) per round: it bounds the events held in memory and in flight at once.
_BUNDLES_PER_ROUND = 32
# Pending conversions are re-joined as soon as their click is stored, and at least this often
# (for those whose join_wait is over).
_RECHECK_S = 0.5
# One RocksDB per table partition. faust's defaults (3 × 64 MB memtables and a 2 GB block cache,
# each per partition) let a worker's RSS grow with the table; a click is ~0.5 KB and is read
# once or twice, so small memtables and caches cost little in speed. Per partition at most
# 2 × 4 MB of memtables and 8 MB of cache: 96 MB for the default 6 partitions.
_ROCKSDB = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20}


def build_app(settings: Settings, run_retrier: bool = True) -> faust.App:
    from app.job.topics import load_specs

    specs = load_specs(settings)
    mapping = mapping_config(settings)
    metrics = Metrics()
    n_partitions = settings.partitions
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls,
        store="rocksdb://",
        datadir=settings.data_dir,
        topic_partitions=n_partitions,
        web_port=settings.web_port,
        web_bind="0.0.0.0",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        # Don't wait at shutdown/rebalance for events the agents will never ack (cancelled
        # mid-batch, or pending a late click): unacked means not durable, and the next owner of
        # the partition re-reads them. Waiting would only run into the shutdown bound.
        stream_wait_empty=False,
        # Messages each stream buffers ahead. A message here is a bundle of up to
        # batch_max events or clicks (app/bundles.py): faust's default of 4096 would let a
        # catching-up worker hold gigabytes.
        stream_buffer_maxsize=_BUNDLES_PER_ROUND * 2,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),  # a new group must not skip what is already there
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.ttbridge_metrics = metrics
    # faust warns ("producer buffer full") above 100 queued changelog records; one bundle of
    # clicks queues up to batch_max of them, and store_clicks drains them after each bundle.
    app.producer.buffer.max_messages = settings.batch_max + 100

    def topic(role: str, partitions: int | None = None):
        spec = specs[role]
        return app.topic(spec.name, partitions=partitions or spec.partitions, **_RAW)

    retry = topic("tiktok-retry")
    dlq = topic("tiktok-dlq")
    # Co-partitioned by click_id: same partition count, same (default) partitioner.
    clicks_by_id = topic("clicks-by-click-id", n_partitions)
    events_by_id = topic("events-by-click-id", n_partitions)
    write = BatchWriter(lambda: app.producer._ensure_producer(),
                        {"retry": retry.get_topic_name(), "dlq": dlq.get_topic_name(),
                         "clicks-by-click-id": clicks_by_id.get_topic_name(),
                         "events-by-click-id": events_by_id.get_topic_name()})

    window_s = settings.attribution_window_days * 86400
    window_ms = int(window_s * 1000)
    table = app.Table(
        "clicks", default=None, partitions=n_partitions,  # JSON: str click_id -> dict record
        # Clicks past the attribution window are useless: the changelog forgets them, so a
        # recovering worker restores only live clicks (lookups check the age as well).
        extra_topic_configs={"cleanup.policy": "compact,delete", "retention.ms": str(window_ms)},
        options=dict(_ROCKSDB),  # faust pops keys from the dict it is given
    )

    sender = Sender(settings)
    forwarder = Forwarder(settings, mapping, table, sender, write, metrics,
                          assigned=lambda: app.consumer.assignment())
    app.ttbridge_forwarder = forwarder

    @app.agent(clicks_by_id, concurrency=1)
    async def store_clicks(stream):
        # Per event: faust refuses table writes inside a batch loop.
        async for fe in stream.events():
            try:
                pairs = unbundle_clicks(fe.key, fe.value, fe.headers)
            except (AttributeError, TypeError, ValueError, KeyError):
                pairs = []
                log.error("ignoring a malformed record on %s at offset %s", fe.message.topic, fe.message.offset)
            stored = []
            for pair in pairs:
                try:
                    click_id, record = pair
                    store_click(click_id, record)
                    stored.append(click_id)
                except (AttributeError, TypeError, ValueError):
                    # Only we write here; one bad entry must not cost the rest of its bundle.
                    log.error("ignoring a malformed click in the record on %s at offset %s",
                              fe.message.topic, fe.message.offset)
            forwarder.clicks_stored(stored)
            # Each table write queues a changelog record in faust's producer buffer, which faust
            # drains by at most 100 per message it delivers: with a bundle of hundreds of clicks
            # per message the buffer (and the worker's memory) would grow without bound.
            await app.producer.buffer.flush()

    def store_click(click_id: str, record: dict) -> None:
        old = read_click(table, click_id)
        if record.get("expire"):
            # From the sweeper: delete only if still expired (the click may have come again).
            if old is not None and old.get("clicked_at", 0) < time.time() - window_s:
                del table[click_id]
            return
        if old is not None:
            # A second record of the same click (e.g. its landing page) adds, never erases.
            record = {**old, **{k: v for k, v in record.items() if v}}
        table[click_id] = record

    @app.agent(events_by_id, concurrency=1)
    async def forward(stream):
        try:
            async for batch in stream.noack_take(_BUNDLES_PER_ROUND, within=settings.batch_window_s):
                await forwarder.handle(batch)
        finally:
            await forwarder.drain()
            await sender.close()

    @app.task
    async def intake():
        # Stateless, so a plain batched consumer of its own (app/intake.py), not a faust agent.
        await Intake(settings, mapping, write, metrics).run()

    if run_retrier:
        @app.task
        async def retry_tiers():
            # Its own consumer groups, outside faust: waiting for due records never blocks the
            # main job's rebalances.
            await Retrier(settings, sender, metrics).run()

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep_expired_clicks():
        """Delete clicks past the attribution window from the local store (the changelog's
        retention only helps a worker that restores from scratch; a persistent volume keeps
        everything). Deletes go through store_clicks, where table writes are allowed."""
        cutoff, n, bundler = time.time() - window_s, 0, Bundler(n_partitions)
        for i, (click_id, record) in enumerate(table.items(), 1):
            if record.get("clicked_at", 0) < cutoff:
                bundler.add_click(click_id, {"expire": True})
                n += 1
            if i % settings.batch_max == 0:  # bundles the click store drains at once; let the agents breathe
                await write_durably(write, bundler.records())
        await write_durably(write, bundler.records())
        if n:
            metrics.add("clicks_expired", n)

    @app.task
    async def rejoin_late_clicks():
        while True:
            await forwarder.next_recheck(_RECHECK_S)
            try:
                await forwarder.recheck(_RECHECK_S)
            except Exception:  # noqa: BLE001 - keep re-joining the others
                # The events taken stay unacked: their partitions' commits stop there and the
                # next owner (or this worker after a restart) re-reads them. Loud, not lost.
                log.exception("re-joining late conversions failed")

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        recovered = app.tables.recovery.completed.is_set()
        ready = recovered and not app.rebalancing
        return web.json({"ready": ready, "recovered": recovered, "rebalancing": app.rebalancing},
                        status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(web, request):
        return web.text(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/stats")
    async def stats(web, request):
        return web.json({**metrics.snapshot(), "pending": forwarder.pending_count})

    return app


class _BoundedWorker(Worker):
    """A faust worker whose graceful shutdown has a bound (shutdown_timeout_s).

    On SIGTERM/SIGINT faust stops the agents and commits what was acked. If that takes longer
    than the bound (a hung request, an unreachable broker) the process exits anyway: nothing is
    lost, since only durable outcomes were acked; the next owner re-reads the rest.
    """

    def __init__(self, *args, shutdown_bound_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_bound_s = shutdown_bound_s

    def _setup_spinner_handler(self, logger, level) -> None:
        # faust's start-up spinner sets the root logger to DEBUG at log levels >= WARN, so every
        # debug call in faust and aiokafka builds a log record on the hot path. No spinner.
        pass

    def _schedule_shutdown(self, signal) -> None:
        if not self._signal_stop_time:
            import os
            import threading
            watchdog = threading.Timer(self.shutdown_bound_s, os._exit, args=(75,))
            watchdog.daemon = True
            watchdog.start()
        super()._schedule_shutdown(signal)


def register(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run the ttbridge stream job (a faust worker)",
                              description="Join conversions with clicks and forward them to TikTok.")
    p.add_argument("--loglevel", default="warning", help="faust log level (default: warning)")
    p.add_argument("--no-retry", action="store_true",
                   help="do not run the retry tiers in this process (run `ttbridge retry-worker`)")
    p.add_argument("--no-bulk-restore", action="store_true",
                   help="leave restoring the clicks table to faust, record by record (by default every "
                        "partition is restored in bulk before the worker joins: with many workers and "
                        "a large table, each restoring all of it may cost more than it saves)")
    p.set_defaults(func=_main)


def _main(args) -> int:

    from app.job.restore import restore_before_start
    from app.job.topics import create_topics
    from app.settings import load

    # faust configures logging when its worker starts; until then (topics, restore) log alike.
    logging.basicConfig(level=args.loglevel.upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    settings = load()
    if not settings.pixels:
        raise SettingsError("TIKTOK_PIXEL_CODE: set it (with TIKTOK_ACCESS_TOKEN), or configure "
                            "[[pixels]] in the TTBRIDGE_CONFIG file")
    try:
        for line in asyncio.run(create_topics(settings)):
            log.info(line)
    except RuntimeError as e:
        # A partition mismatch would break the join: refuse to start rather than lose events.
        print(f"ttbridge worker: {e}", file=sys.stderr)
        return 1
    app = build_app(settings, run_retrier=not args.no_retry)
    if not args.no_bulk_restore:
        restore_before_start(app.tables["clicks"], settings.bootstrap_servers, settings.partitions)
    # A round of bundles allocates hundreds of thousands of short-lived objects (JSON in and
    # out), freed by reference counting; the cyclic collector would run every 700 allocations and
    # regularly walk every long-lived object (faust, aiokafka, phone metadata). Those are frozen
    # out of its reach and it runs 50× less often: unbundling 16–37 → 7–14 µs of CPU per event
    # (bench/README.md, step 10).
    gc.freeze()
    gc.set_threshold(35_000, 10, 10)
    _BoundedWorker(app, loglevel=args.loglevel,
                   shutdown_bound_s=settings.shutdown_timeout_s).execute_from_commandline()
    return 0
