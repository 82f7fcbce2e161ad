"""`ttbridge worker`: the faust app that runs the job.

Reads top-down, as faust's own examples do: the app, the job's topics and table and stages
(`Job`), its agents, tasks and timers, the web pages, and the command. Data travels: clicks →
every worker's clicks table (app.job.clicks: each follows all of the clicks topic, and of
clicks-by-click-id, into its own RocksDB); tracking events → the intake (app.job.intake, a
plain batched consumer) → the forwarder in the same process (join, map, batch, deliver:
app.job.forwarder) → TikTok, the retry tiers (app.job.retrier) or the DLQ; landing pages among
them → clicks-by-click-id.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading

import faust
from faust.worker import Worker

from app.job import faust_internals, logs
from app.job.clicks import Clicks, catch_up_before_start
from app.job.durable import BatchWriter
from app.job.forwarder import Forwarder
from app.job.intake import Intake
from app.job.kafka_security import client_options, faust_credentials
from app.job.metrics import Metrics
from app.job.retrier import Retrier
from app.job.topics import create_topics, load_specs
from app.settings import Settings, SettingsError, load, mapping_configs
from app.tiktok.sender import Sender

__all__ = ["build_app", "Job", "BoundedWorker", "register"]

log = logging.getLogger(__name__)

# Pending conversions are re-joined as soon as their click is stored, and at least this often
# (for those whose join_wait is over).
RECHECK_S = 0.5


def build_app(settings: Settings, run_retrier: bool = True) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls,
        broker_credentials=faust_credentials(settings),
        datadir=settings.data_dir,  # faust keeps nothing there: the clicks table is ttbridge's own
        topic_partitions=settings.partitions,
        # For any topic faust creates itself; app.job.topics creates its leader
        # topic first, with min.insync.replicas too (faust has no setting for that).
        topic_replication_factor=settings.replication_factor,
        # faust reads no environment variable: by default its settings read ~80 names (WEB_PORT,
        # WEB_HOST, BROKER_URL, APP_WEB_TABLES_ENABLED, ...) that override the code, and a
        # Kubernetes Service named `web` injects WEB_PORT=tcp://10.0.0.1:6066, which crashes
        # it. Everything faust needs is passed here, from ttbridge's own settings.
        env={},
        # The web server serves ttbridge's PAGES (health, readiness, metrics, stats) and faust's
        # `/` ({"status": "OK"}) only: faust's /table views would hand out any click (IP, user
        # agent, ttclid, URL) to whoever asks, /router the cluster's topology, the rest its
        # internals. None of them is authenticated.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        web_transport="tcp://",
        web_port=settings.web_port,
        web_bind=settings.web_host,
        consumer_auto_offset_reset="earliest",  # a new group must not skip what is already there
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.ttbridge = Job(app, settings, run_retrier)
    for path, page in PAGES.items():
        app.page(path)(page)
    return app


class Job:
    """ttbridge's stages inside one faust app, and what they share: the mapping, the writer of
    durable outcomes, the clicks table, the sender and the counters."""

    def __init__(self, app: faust.App, settings: Settings, run_retrier: bool) -> None:
        self.app = app
        self.settings = settings
        self.metrics = Metrics()
        # Input topic -> its shape's mapping; the first is also used where no topic is known.
        self.mappings = mapping_configs(settings)
        self.mapping = next(iter(self.mappings.values()))
        specs = load_specs(settings)
        self.write = BatchWriter(settings.bootstrap_servers, {
            "retry": specs["tiktok-retry"].name, "dlq": specs["tiktok-dlq"].name,
            "clicks-by-click-id": specs["clicks-by-click-id"].name}, client_options(settings))
        self.clicks = Clicks(settings)
        self.sender = Sender(settings)
        self.forwarder = Forwarder(settings, self.mapping, self.clicks.read, self.sender, self.write,
                                   self.metrics, assigned=lambda: self.intake.assignment(),
                                   mappings=self.mappings)
        self.intake = Intake(settings, self.mapping, self.write, self.metrics, self.forwarder, self.mappings)

        app.task(self.follow_clicks)
        app.task(self.read_inputs)
        if run_retrier:
            app.task(self.retry_tiers)
        app.task(self.rejoin_late_clicks)
        app.timer(settings.sweep_interval_s, name="sweep_expired_clicks")(self.sweep_expired_clicks)

    async def follow_clicks(self) -> None:
        # A plain consumer of all partitions, not a faust agent: every worker keeps the whole
        # table (app.job.clicks), and faust's per-message path would cost more than the writes.
        self.clicks.open()
        self.metrics.add("clicks_stored", self.clicks.applied)  # the catch-up's, before faust ran
        await self.clicks.follow(self.forwarder.clicks_stored, self.metrics)

    async def read_inputs(self) -> None:
        # A plain batched consumer, not a faust agent: faust's per-message path cost more than
        # the job's own work on an event (app.job.intake), and its events need no repartition.
        try:
            await self.intake.run()
        finally:
            await self.sender.close()  # after the intake drained the rounds on the wire

    async def retry_tiers(self) -> None:
        # Their own consumer groups, outside faust: waiting for due records never blocks the
        # main job's rebalances.
        await Retrier(self.settings, self.sender, self.metrics).run()

    async def rejoin_late_clicks(self) -> None:
        while True:
            await self.forwarder.next_recheck(RECHECK_S)
            try:
                await self.forwarder.recheck(RECHECK_S)
            except Exception:  # noqa: BLE001 - keep re-joining the others
                # The events taken stay unacked: their partitions' commits stop there and the
                # next owner (or this worker after a restart) re-reads them. Loud, not lost.
                log.exception("re-joining late conversions failed")

    async def sweep_expired_clicks(self) -> None:
        n = self.clicks.sweep()
        if n:
            self.metrics.add("clicks_expired", n)
        self.metrics.add("click_sweeps")

    async def stop(self) -> None:
        """After faust has stopped every agent and task: nothing writes any more."""
        await self.write.stop()
        self.clicks.close()


# --------------------------------------------------------------------------- web pages
# faust calls each as a view handler: (view, request); view.app is the faust app.

async def healthz(view, request):
    return view.json({"status": "ok"})


# /readyz turns false once the intake's consumer has had no fetch answer for this long: a worker
# that cannot reach the broker delivers nothing, and its probe should say so (faust's own state
# stays "recovered, not rebalancing" through an outage). Shorter than the gauge's BROKER_SILENT_S:
# readiness is what an operator's probe and alert see first.
READY_BROKER_SILENT_S = 15.0


async def readyz(view, request):
    app = view.app
    recovered = faust_internals.recovery_completed(app)
    metrics = app.ttbridge.metrics
    # Until the intake's consumer exists there is no fetch to judge by (faust's recovery is).
    broker = not metrics.watching() or bool(metrics.broker_connected(READY_BROKER_SILENT_S))
    clicks = app.ttbridge.clicks.ready
    ready = recovered and clicks and not app.rebalancing and broker
    page = {"ready": ready, "recovered": recovered, "clicks_caught_up": clicks, "rebalancing": app.rebalancing}
    if not broker:
        page["reason"] = f"no fetch answer from the broker for {READY_BROKER_SILENT_S:g} s"
    return view.json(page, status=200 if ready else 503)


async def metrics(view, request):
    return view.text(view.app.ttbridge.metrics.render(), content_type="text/plain; version=0.0.4")


async def stats(view, request):
    job = view.app.ttbridge
    return view.json({**job.metrics.snapshot(), "pending": job.forwarder.pending_count})


PAGES = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics, "/stats": stats}


# --------------------------------------------------------------------------- the command

class BoundedWorker(Worker):
    """A faust worker whose graceful shutdown has a bound (shutdown_timeout_s).

    On SIGTERM/SIGINT faust stops the agents and commits what was acked. If that takes longer
    than the bound (a hung request, an unreachable broker) the process exits anyway (code 75):
    nothing is lost, since only durable outcomes were acked; the next owner re-reads the rest.
    """

    def __init__(self, app: faust.App, *, shutdown_bound_s: float, log_format: str = "text", **kwargs) -> None:
        # With JSON logs nothing but log lines may reach stdout: no banner, no "OK ^".
        super().__init__(app, quiet=kwargs.pop("quiet", log_format == "json"), **kwargs)
        self.shutdown_bound_s = shutdown_bound_s
        self.log_format = log_format
        # faust's start-up spinner sets the root logger to DEBUG at log levels >= WARN, so
        # every debug call in faust and aiokafka would build a log record on the hot path.
        self.spinner = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # mode's hook, after faust replaced the root logger's handlers with its own.
        super().on_setup_root_logger(logger, level)
        logs.install(self.log_format, logger=logger)

    async def on_stop(self) -> None:
        # mode's Service hook, called first thing when the worker stops (a signal or a crash).
        watchdog = threading.Timer(self.shutdown_bound_s, _overstayed, args=(self.shutdown_bound_s,))
        watchdog.daemon = True
        watchdog.start()
        await super().on_stop()

    async def on_shutdown(self) -> None:
        # mode's Service hook, called after the app (a child service) has stopped.
        await self.app.ttbridge.stop()
        await super().on_shutdown()


def _overstayed(bound_s: float) -> None:
    # From the watchdog's thread: one line saying why the exit code is 75, then out.
    log.warning("the worker did not stop within shutdown_timeout_s = %g s; exiting with 75 (what was "
                "not committed is re-read by the next owner)", bound_s)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(75)


def register(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run the ttbridge stream job (a faust worker)",
                              description="Join conversions with clicks and forward them to TikTok.")
    p.add_argument("--loglevel", default="warning", help="faust log level (default: warning)")
    p.add_argument("--no-retry", action="store_true",
                   help="do not run the retry tiers in this process (run `ttbridge retry-worker`)")
    p.add_argument("--log-format", choices=logs.FORMATS, default="text",
                   help="text (default) or json: one JSON object per line (time, level, logger, message, "
                        "exception)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    # faust configures logging when its worker starts; until then (topics, restore) log alike.
    logging.basicConfig(level=args.loglevel.upper(), format=logs.TEXT_FORMAT)
    logs.install(args.log_format)
    settings = load()
    if not settings.pixels:
        raise SettingsError("TIKTOK_PIXEL_CODE: set it (with TIKTOK_ACCESS_TOKEN), or configure "
                            "[[pixels]] in the TTBRIDGE_CONFIG file")
    try:
        for line in asyncio.run(create_topics(settings)):
            log.info(line)
    except RuntimeError as e:
        # A partition mismatch would break the join: refuse to start rather than lose events.
        logs.fatal(f"ttbridge worker: {e}", args.log_format)
        return 1
    app = build_app(settings, run_retrier=not args.no_retry)
    catch_up_before_start(app.ttbridge.clicks)
    # A round of bundles allocates hundreds of thousands of short-lived objects (JSON in and
    # out), freed by reference counting; the cyclic collector would run every 700 allocations and
    # regularly walk every long-lived object (faust, aiokafka, phone metadata). Those are frozen
    # out of its reach and it runs 50× less often: unbundling 16–37 → 7–14 µs of CPU per event
    # (bench/README.md, step 10).
    gc.freeze()
    gc.set_threshold(35_000, 10, 10)
    BoundedWorker(app, loglevel=args.loglevel, log_format=args.log_format,
                  shutdown_bound_s=settings.shutdown_timeout_s).execute_from_commandline()
    return 0
