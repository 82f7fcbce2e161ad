"""The retry tiers: re-send failed requests after a fixed delay per tier, then give up to the DLQ.

Each tier is its own topic with one delay, so records sit in order of due time. The consumer is
plain aiokafka in its own group ("<app id>-retry"): a record that is not due pauses its partition
until it is (instead of sleeping in the poll loop), so waiting never stalls the main job's
rebalances, this group's heartbeats, or shutdown. Offsets are committed only after a record's
outcome is durable: delivered, or written to the next tier or the DLQ.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.job import logs
from app.job.durable import BatchWriter, write_durably
from app.job.kafka_security import client_options
from app.job.metrics import Metrics
from app.job.records import dead_letter, dead_letter_from_retry, encode, retry_record
from app.settings import Settings
from app.tiktok.outcomes import Action, Verdict
from app.tiktok.sender import Sender

__all__ = ["Retrier", "next_step", "parse_retry_record", "register", "READY_BROKER_SILENT_S"]

log = logging.getLogger(__name__)

# The retry worker's /readyz turns false once its tiers' consumers have had no fetch answer for
# this long (the worker's own bound, app.job.worker.READY_BROKER_SILENT_S).
READY_BROKER_SILENT_S = 15.0

# Token errors keep their data on the slowest tier while the operator fixes the token — but not
# forever: past this age they are dead-lettered ("hold_expired") and can be replayed.
MAX_HOLD_S = 7 * 86400


def next_step(record: dict, verdict: Verdict, now: float, tiers: tuple[float, ...]) -> tuple[str, int]:
    """Where a failed retry goes: ("retry", tier index) or ("dlq", -1).

    `attempt` counts sends so far; tier i (0-based) waits tiers[i] and holds attempt i + 1.
    """
    attempt = record["attempt"]
    if verdict.action is Action.HOLD:
        if now - record["first_failed_at"] > MAX_HOLD_S:
            return "dlq", -1
        return "retry", len(tiers) - 1
    if verdict.slows_down:
        # A rate limit says "not now", not "this request fails": it stays on the tier it was on
        # (the sender backs off meanwhile), bounded by the same age as a token hold. Counting it
        # as an attempt would dead-letter good events whenever a burst outlasts the tiers.
        if now - record["first_failed_at"] > MAX_HOLD_S:
            return "dlq", -1
        return "retry", min(max(attempt - 1, 0), len(tiers) - 1)
    if verdict.action is Action.RETRY and attempt < len(tiers):
        return "retry", attempt
    return "dlq", -1


def parse_retry_record(raw: bytes | None) -> dict | None:
    """The record, or None when it is not one we can send (written by hand, or by a bug)."""
    try:
        record = orjson.loads(raw)
        request = record["request"]
        ok = (isinstance(request, dict) and isinstance(request.get("data"), list) and request["data"]
              and isinstance(record["pixel_code"], str) and type(record["attempt"]) is int
              and all(isinstance(record[k], (int, float)) for k in ("not_before", "first_failed_at")))
        # A request that cannot be written again (nested deeper than orjson writes) would fail
        # at every send, and with it the whole poll, forever: it is not one we can send.
        ok = ok and bool(orjson.dumps(request))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError, KeyError):
        return None
    return record if ok else None


class Retrier:
    def __init__(self, settings: Settings, sender: Sender, metrics: Metrics) -> None:
        from app.job.topics import retry_tier_topic

        self.settings = settings
        self.sender = sender
        self.metrics = metrics
        self.tiers = settings.retry_tiers_s
        self.topics = [retry_tier_topic(settings, i + 1) for i in range(len(self.tiers))]
        self._write = BatchWriter(settings.bootstrap_servers,
                                  {t: t for t in [*self.topics, settings.topic_dlq]}, client_options(settings))
        self._started: set[str] = set()  # tiers whose consumer is running

    def readiness(self, silent_s: float = READY_BROKER_SILENT_S) -> tuple[bool, str]:
        """(ready, why not): every tier's consumer started, and a fetch answer within `silent_s`.
        The answers are judged over all the tiers' consumers together (metrics.broker_connected),
        not tier by tier: a tier waiting for a due record pauses its partitions and fetches
        nothing, which says nothing about the broker."""
        waiting = [t for t in self.topics if t not in self._started]
        if waiting:
            return False, f"retry tier consumers not started: {', '.join(waiting)}"
        if not self.metrics.broker_connected(silent_s):
            return False, f"no fetch answer from the broker for {silent_s:g} s"
        return True, ""

    async def run(self) -> None:
        """Run every tier until cancelled."""
        try:
            await asyncio.gather(*(self._supervise(t) for t in self.topics))
        finally:
            await self._write.stop()

    async def _supervise(self, topic: str) -> None:
        """A tier that fails (a failed commit in a rebalance, the broker gone for long) starts
        again from its committed offsets instead of leaving its records unsent."""
        while True:
            try:
                await self._run_tier(topic)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("retry tier %s failed; restarting it in 5 s", topic)
                await asyncio.sleep(5)

    async def _run_tier(self, topic: str) -> None:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=self.settings.bootstrap_servers,
            # A group per tier: a tier's rebalance never disturbs another tier or the main job.
            group_id=f"{self.settings.app_id}-{topic}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.settings.batch_max,
            # As the intake's: a dead worker's tier partitions move on after the same bound.
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.session_timeout_s / 3) * 1000),
            **client_options(self.settings))
        group = f"{self.settings.app_id}-{topic}"
        resume_at: dict[TopicPartition, float] = {}
        try:
            await consumer.start()  # inside: a start that fails is stopped too (no leaked client)
            # Its fetches count towards broker_connected (the gauge and /readyz), its lag is served.
            self.metrics.watch_consumer(group, consumer)
            self._started.add(topic)
            while True:
                now = time.time()
                for tp, at in list(resume_at.items()):
                    if at <= now:
                        del resume_at[tp]
                        if tp in consumer.assignment():
                            consumer.resume(tp)
                batches = await consumer.getmany(timeout_ms=500)
                await self.metrics.refresh_lag(group, consumer, end_offsets=True)  # the tier's depth, every 5 s
                due = []
                for tp, messages in batches.items():
                    for msg in messages:
                        record = parse_retry_record(msg.value)
                        if record is not None and record["not_before"] > now:
                            # Not due: rewind to it and pause this partition until it is.
                            consumer.seek(tp, msg.offset)
                            consumer.pause(tp)
                            resume_at[tp] = record["not_before"]
                            break
                        due.append((tp, msg, record))
                if due:
                    await self._handle(due)
                    offsets = {}
                    for tp, msg, _ in due:
                        offsets[tp] = OffsetAndMetadata(msg.offset + 1, "")
                    await consumer.commit(offsets)
        finally:
            self._started.discard(topic)  # not ready while _supervise restarts it
            await consumer.stop()

    async def _handle(self, due: list) -> None:
        records = [(tp, msg, record) for tp, msg, record in due if record]
        outcomes = await asyncio.gather(*(self._resend(record) for _, _, record in records),
                                        return_exceptions=True)
        writes = []
        for (tp, msg, record), outcome in zip(records, outcomes):
            if not isinstance(outcome, BaseException):
                writes += outcome
                continue
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            # A bug with this record must not hold back the poll's others (nor loop forever).
            log.error("dead-lettering a retry record that failed to resend", exc_info=outcome)
            self.metrics.add("dead_letters", reason="internal_error")
            writes += [(self.settings.topic_dlq, tp.topic.encode(), value) for value in encode(dead_letter(
                "internal_error", f"{type(outcome).__name__}: {outcome}", "retry", time.time(),
                source={"topic": tp.topic, "partition": tp.partition, "offset": msg.offset},
                original=msg.value or b""))]
        for tp, msg, record in due:
            if record is None:
                self.metrics.add("dead_letters", reason="invalid_retry_record")
                writes += [(self.settings.topic_dlq, tp.topic.encode(), value) for value in encode(dead_letter(
                    "invalid_retry_record", "not a retry record (see app/topics/tiktok-retry.json)", "retry",
                    time.time(), source={"topic": tp.topic, "partition": tp.partition, "offset": msg.offset},
                    original=msg.value or b""))]
        # Wait for every write before the caller commits: the records live on in Kafka.
        await write_durably(self._write, writes)

    async def _resend(self, record: dict) -> list[tuple[str, bytes, bytes]]:
        """Send one retry record; return the writes its outcome needs (next tier or DLQ)."""
        now = time.time()
        pixel_code = record["pixel_code"]
        key = pixel_code.encode()
        dlq = self.settings.topic_dlq
        m = self.metrics
        pixel = self.settings.pixels.get(pixel_code)
        if pixel is None:
            m.add("dead_letters", reason="unknown_pixel")
            return [(dlq, key, value) for value in encode(dead_letter_from_retry(
                record, "unknown_pixel", f"pixel {pixel_code} is no longer configured", now))]
        delivery = await self.sender.deliver(pixel, record["request"])
        m.delivered(pixel_code, record["request"], delivery)
        writes = []
        for body, answer in delivery.retry:
            verdict = answer.verdict
            step, tier = next_step(record, verdict, now, self.tiers)
            if step == "retry":
                m.add("events_retrying", len(body["data"]), pixel=pixel_code)
                # A token hold or a rate limit does not use up attempts: the events did nothing wrong.
                attempt = record["attempt"] + (verdict.action is not Action.HOLD and not verdict.slows_down)
                writes += [(self.topics[tier], key, value) for value in encode(retry_record(
                    body, pixel_code, attempt, now + self.tiers[tier],
                    record["first_failed_at"], answer.error()))]
            else:
                reason = "retries_exhausted" if verdict.action is Action.RETRY and not verdict.slows_down \
                    else "hold_expired"
                m.add("dead_letters", reason=reason, pixel=pixel_code)
                dead = dead_letter_from_retry({**record, "request": body, "attempt": record["attempt"] + 1},
                                              reason, f"{answer.verdict.reason}: {answer.message}", now,
                                              code=answer.code)
                writes += [(dlq, key, value) for value in encode(dead)]
        for body, answer in delivery.dead:
            m.add("dead_letters", reason=answer.verdict.reason, pixel=pixel_code)
            dead = dead_letter_from_retry({**record, "request": body, "attempt": record["attempt"] + 1},
                                          answer.verdict.reason, answer.message, now, code=answer.code)
            writes += [(dlq, key, value) for value in encode(dead)]
        return writes


def register(subparsers) -> None:
    p = subparsers.add_parser("retry-worker", help="run only the retry tiers (the worker runs them too)",
                              description="Consume the retry tier topics and re-send when due.")
    p.add_argument("--web-port", type=int, default=None,
                   help="port of /metrics, /healthz and /readyz (default: TTBRIDGE_WEB_PORT, 6066)")
    p.add_argument("--log-format", choices=logs.FORMATS, default="text",
                   help="text (default) or json: one JSON object per line (time, level, logger, message, "
                        "exception)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from app.settings import SettingsError, load

    settings = load()
    if not settings.pixels:
        raise SettingsError("TIKTOK_PIXEL_CODE: set it (with TIKTOK_ACCESS_TOKEN), or configure [[pixels]]")
    logging.basicConfig(level=logging.WARNING, format=logs.TEXT_FORMAT)
    logs.install(args.log_format)  # the same rate limit on reconnect errors as the worker's
    port = settings.web_port if args.web_port is None else args.web_port

    async def main() -> None:
        metrics = Metrics()
        sender = Sender(settings, observe=metrics.request_observed)
        metrics.gauge("requests_in_flight", "requests to the Events API on the wire", ("pixel",),
                      sender.in_flight)
        retrier = Retrier(settings, sender, metrics)
        try:
            web = await _serve(metrics, settings.web_host, port, retrier.readiness)
        except OSError as e:
            # Resending matters more than being scraped: say so (the probes will too) and go on.
            log.error("retry worker: cannot serve /metrics, /healthz and /readyz on %s:%s (%s)",
                      settings.web_host, port, e)
            web = None
        run = asyncio.ensure_future(retrier.run())
        # SIGTERM (Kubernetes, compose) and SIGINT stop the tiers: what was committed is durable,
        # the rest is re-read by the next retry worker. A clean stop exits 0.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, run.cancel)
        try:
            await run
        except asyncio.CancelledError:
            pass
        finally:
            if web is not None:
                await web.cleanup()
            await sender.close()

    asyncio.run(main())
    return 0


async def _serve(metrics: Metrics, host: str, port: int, readiness: Callable[[], tuple[bool, str]]):
    """/metrics, /healthz and /readyz, as the worker serves them (no other page). `readiness`:
    Retrier.readiness."""
    from aiohttp import web

    async def healthz(request):
        return web.json_response({"status": "ok"})

    async def readyz(request):
        ready, reason = readiness()
        return web.json_response({"ready": True} if ready else {"ready": False, "reason": reason},
                                 status=200 if ready else 503)

    async def serve_metrics(request):
        return web.Response(body=metrics.render().encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", serve_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
