"""One benchmark run: a broker of its own, the fake Events API, ttbridge worker processes, and the
phases in order (`Bench.run` reads top-down):

1. preload: the clicks of N conversions; a worker starts (startup_s) and indexes them;
2. ttbridge: the N conversions produced in one burst, timed until the fake has every joinable one
   (their late clicks follow the burst);
3. ceiling and naive on the same events topic (bench/baselines.py);
4. latency: conversions at a steady half of ttbridge's throughput, produce time → received_at;
5. state: the table topped up to M clicks (peak RSS of the worker), then a FRESH worker (new data
   dir, same app id) restores it from the changelog (recovery_s), checked by a conversion that
   must join the very first click.
Everything started is registered in `Stack`, which the caller stops whatever happens.
"""
from __future__ import annotations

import asyncio
import math
import os
import platform
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaProducer

from app.devtools.kafka_local import Broker, BrokerError, free_port
from app.devtools.worker_process import WorkerProcess
from app.job.topics import create_topics
from app.settings import load as load_settings
from bench.baselines import ceiling_rate, naive_rate
from bench.fake import Arrival, SubprocessFake, make_fake
from bench.kafka import TopicCounts, produce_fast
from bench.load import PIXEL, TOKEN, Load, Pacer, click, event, kind_of, make_load, sent_at_of
from bench.proc import CpuMeter, memory_mb
from bench.profile import Profiler, format_hot_spots, hot_spots
from bench.report import latency_summary

__all__ = ["Options", "Stack", "BenchError", "Bench", "QUICK", "FULL"]

APP_ID = "bench"
# The default batch window; a short join wait so that conversions waiting for a click that never
# comes don't dominate the run.
WORKER_TOML = """[ttbridge]
batch_window_s = 1.0
join_wait_s = 2
default_region = "GB"
partitions = 6
"""
LATE_CLICK_DELAY_S = 1.0   # in the latency phase a late conversion's click follows it by this
# The naive forwarder runs once more with the fake answering like a distant API: TikTok's real
# round trip is tens of milliseconds, the local fake's well under one.
NAIVE_RTT_MS = 50
NAIVE_RTT_S = 3.0
STALL_S = 90.0             # no progress for this long fails the run instead of hanging it


class BenchError(RuntimeError):
    """The run cannot go on (something stalled); the message says what."""


@dataclass
class Options:
    n: int              # conversions for the throughput phases
    clicks: int         # clicks in the table for the state phase (M)
    naive_s: float      # how long the naive forwarder runs
    latency_s: float    # how long the steady load of the latency phase lasts
    fake: str = "in-process"
    profile_dir: Path | None = None
    quick: bool = False


QUICK = {"n": 20_000, "clicks": 30_000, "naive_s": 4.0, "latency_s": 6.0}
FULL = {"n": 200_000, "clicks": 1_000_000, "naive_s": 15.0, "latency_s": 15.0}


@dataclass
class Stack:
    """What the run started, so that the caller can stop all of it whatever happens."""

    broker: Broker | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    fakes: list = field(default_factory=list)
    profilers: list[Profiler] = field(default_factory=list)

    def close(self) -> None:
        for p in self.profilers:
            p.stop()
        for w in self.workers:
            w.kill()
        for f in self.fakes:
            if isinstance(f, SubprocessFake) and f.proc is not None and f.proc.poll() is None:
                f.proc.kill()
                f.proc.wait()
        if self.broker is not None:
            self.broker.stop()


async def wait_count(get: Callable[[], Awaitable[int]], target: int, what: str,
                     on_poll: Callable[[], None] | None = None, interval: float = 0.1) -> float:
    """Poll until get() >= target; returns the time.time() it got there. Fails after STALL_S
    without progress."""
    last, last_change = -1, time.monotonic()
    while True:
        if on_poll:
            on_poll()
        got = await get()
        if got >= target:
            return time.time()
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            raise BenchError(f"stalled waiting for {what}: {got:,} of {target:,} after {STALL_S:.0f} s "
                             "without progress")
        await asyncio.sleep(interval)


class Bench:
    def __init__(self, opts: Options, workdir: Path, stack: Stack, say=print) -> None:
        self.opts, self.workdir, self.stack, self.say = opts, workdir, stack, say
        self.run_id = f"r{int(time.time()) % 100000:05d}"  # in every ID, so runs never collide
        self.result: dict = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "n": opts.n, "quick": opts.quick, "fake": opts.fake,
            "python": platform.python_version(), "phase_s": {}, "cpu_share": {}, "profiles": {},
        }
        self.changelog = f"{APP_ID}-clicks-changelog"
        self.next_index = opts.n  # conversion indices of the later phases continue from here
        self.producer: AIOKafkaProducer | None = None
        self.counts: TopicCounts | None = None

    async def run(self) -> tuple[dict, list[float]]:
        """Every phase in order; (result, latency samples in ms)."""
        load = self._generate()
        try:
            await self._start_stack()
            worker = await self._preload(load)
            await self._ttbridge(load, worker)
            await self._baselines()
            latencies = await self._latency()
            await self._ttbridge_at_rtt()
            await self._two_workers(worker)
            await self._state(worker)
            await self._recovery()
        finally:
            for client in (self.producer, self.counts):
                if client is not None:
                    await client.stop()
            for w in self.stack.workers:
                await asyncio.to_thread(w.stop, 30.0)
            for f in list(self.stack.fakes):
                await f.stop()
        return self.result, latencies

    # ---- set-up

    def _generate(self) -> Load:
        t = time.monotonic()
        load = make_load(self.opts.n, self.run_id, time.time())
        info = self.result["load"] = {
            "events": len(load.events), "clicks_before": len(load.clicks), "clicks_late": len(load.late_clicks),
            "kinds": dict(load.kinds), "joinable": load.joinable,
            "event_bytes_mean": round(statistics.mean(len(v) for _, v in load.events)),
            "click_bytes_mean": round(statistics.mean(len(v) for _, v in load.clicks)) if load.clicks else 0,
        }
        self.result["phase_s"]["generate"] = round(time.monotonic() - t, 2)
        self.say(f"generated {info['events']:,} conversions (~{info['event_bytes_mean']} B) and "
                 f"{info['clicks_before'] + info['clicks_late']:,} clicks (~{info['click_bytes_mean']} B) "
                 f"in {self.result['phase_s']['generate']} s")
        return load

    async def _start_stack(self) -> None:
        self.say("starting Apache Kafka 3.9.1 on free ports ...")
        t = time.monotonic()
        for attempt in (1, 2):
            self.stack.broker = Broker(self.workdir / f"kafka-{attempt}", free_port(), free_port())
            try:
                self.bootstrap = await asyncio.to_thread(self.stack.broker.start)
                break
            except BrokerError as e:
                # app.devtools.kafka_local draws a random cluster ID; one in 64 starts with "-", which the
                # storage tool takes for an option. A fresh draw fixes it.
                if attempt == 2 or "formatting the KRaft log dir failed" not in str(e):
                    raise
                self.say("  formatting the broker's log dir failed (cluster ID began with '-'?); retrying")
        self.result["phase_s"]["broker_start"] = round(time.monotonic() - t, 2)
        self.fake = make_fake(self.opts.fake, self.workdir)
        self.stack.fakes.append(self.fake)
        fake_url = await self.fake.start()
        config = self.workdir / "ttbridge.toml"
        config.write_text(WORKER_TOML)
        self.env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "TIKTOK_API_URL": fake_url,
                    "TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(config),
                    "TTBRIDGE_APP_ID": APP_ID, "TTBRIDGE_DATA_DIR": str(self.workdir / "state-first"),
                    "TTBRIDGE_WEB_PORT": str(free_port())}
        self.settings = load_settings(self.env)
        await create_topics(self.settings)
        self.say(f"broker {self.bootstrap} (up in {self.result['phase_s']['broker_start']} s), "
                 f"fake Events API {fake_url} ({self.fake.mode})")
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20,
                                         max_batch_size=1 << 20, max_request_size=8 << 20)
        self.counts = TopicCounts(self.bootstrap)
        await self.producer.start()
        await self.counts.start()

    def _pids(self, worker: WorkerProcess) -> dict[str, int | None]:
        pids = {"worker": worker.proc.pid, "broker": self.stack.broker.pid(), "bench": os.getpid()}
        if isinstance(self.fake, SubprocessFake):
            pids["fake"] = self.fake.pid
        return pids

    def _profile(self, pid: int, name: str) -> Profiler | None:
        if self.opts.profile_dir is None:
            return None
        p = Profiler(pid, self.opts.profile_dir / f"profile-{name}.txt").start()
        self.stack.profilers.append(p)
        return p

    def _profiled(self, p: Profiler | None, name: str) -> None:
        if p is None:
            return
        self.stack.profilers.remove(p)
        path = p.stop()
        if path is None:
            self.say(f"  (py-spy wrote no profile for {name}: see {p.out.with_suffix('.log')})")
            return
        spots = hot_spots(path.read_text(), top=15)
        self.say(format_hot_spots(spots, f"  worker profile, {name} ({path})"))
        self.result["profiles"][name] = {"path": str(path), **spots}

    async def _burst(self, load: Load) -> tuple[int, float, float]:
        """Produce the load's conversions in one burst, then its late clicks: (the fake's accepted
        count before, when the burst started, when its conversions were all produced)."""
        self.fake.drain()
        base = await self.fake.accepted()
        t0 = time.time()  # the worker is idle and ready: it consumes the first event within ms
        await produce_fast(self.producer, self.settings.topic_events, load.events)
        t_produced = time.time()
        await produce_fast(self.producer, self.settings.topic_clicks, load.late_clicks)
        return base, t0, t_produced

    async def _delivered(self, base: int, expected: int, what: str, arrivals: list[Arrival]) -> None:
        """Wait until the fake has accepted `expected` events more than `base`, collecting them."""
        async def accepted() -> int:
            return await self.fake.accepted() - base
        await wait_count(accepted, expected, what, on_poll=lambda: arrivals.extend(self.fake.drain()))
        arrivals.extend(self.fake.drain())

    # ---- the phases

    async def _preload(self, load: Load) -> WorkerProcess:
        t = time.monotonic()
        await produce_fast(self.producer, self.settings.topic_clicks, load.clicks)
        self.result["phase_s"]["produce_clicks"] = round(time.monotonic() - t, 2)
        self.say(f"preloaded {len(load.clicks):,} clicks in {self.result['phase_s']['produce_clicks']} s")
        worker = WorkerProcess(self.env, self.workdir / "worker-first.log")
        self.stack.workers.append(worker)
        t_start = time.time()
        worker.start()
        await worker.wait_ready(timeout=180)
        t_ready = time.time()
        self.result["startup_s"] = round(t_ready - t_start, 2)
        t_indexed = await wait_count(lambda: self.counts.count(self.changelog), len(load.clicks), "clicks indexed")
        self.result["preload_index_cps"] = round(len(load.clicks) / (t_indexed - t_ready), 1)
        self.say(f"worker ready in {self.result['startup_s']} s; {len(load.clicks):,} clicks indexed "
                 f"{t_indexed - t_ready:.1f} s after ready")
        return worker

    async def _ttbridge(self, load: Load, worker: WorkerProcess) -> None:
        r = self.result
        self.say(f"ttbridge: producing {len(load.events):,} conversions in one burst ...")
        prof = self._profile(worker.proc.pid, "ttbridge")
        base, t0, t_produced = await self._burst(load)
        meter = CpuMeter(self._pids(worker)).start()  # after the burst: the producer is ours
        arrivals: list[Arrival] = []
        await self._delivered(base, load.joinable, "ttbridge to deliver every joinable event", arrivals)
        r["cpu_share"]["ttbridge"] = meter.stop()
        self._profiled(prof, "ttbridge")
        t_first = min(a.received_at for a in arrivals)
        t_last = max(a.received_at for a in arrivals)
        r["ttbridge_eps"] = round(len(arrivals) / (t_last - t0), 1)
        r["joined_share"] = round(sum(a.joined for a in arrivals) / len(arrivals), 4)
        r["ttbridge"] = {"events": len(arrivals), "seconds": round(t_last - t0, 2),
                         "produce_s": round(t_produced - t0, 2), "first_accepted_after_s": round(t_first - t0, 2)}
        r["phase_s"]["ttbridge"] = round(t_last - t0, 2)
        await asyncio.sleep(1.5)  # the last batch's dead letters are counted after its POST
        r["worker_stats"] = await worker.stats()
        r["fake_stats"] = await self.fake.stats()
        self.say(f"ttbridge: {len(arrivals):,} events accepted in {t_last - t0:.1f} s = "
                 f"{r['ttbridge_eps']:,.0f} events/s (cpu: {r['cpu_share']['ttbridge']})")

    async def _baselines(self) -> None:
        r = self.result
        ceiling = await ceiling_rate(self.bootstrap, self.settings.topic_events)
        r["ceiling_eps"], r["ceiling"] = round(ceiling["eps"], 1), ceiling
        self.say(f"ceiling: {ceiling['events']:,} events read and decoded in {ceiling['seconds']:.2f} s = "
                 f"{ceiling['eps']:,.0f} events/s")
        for rtt_ms, seconds in ((0, self.opts.naive_s), (NAIVE_RTT_MS, NAIVE_RTT_S)):
            # A fake of its own: the events carry the event_ids the first fake has already seen.
            fake = make_fake(self.opts.fake, self.workdir)
            self.stack.fakes.append(fake)
            url = await fake.start()
            try:
                await fake.set_latency(rtt_ms)
                naive = await naive_rate(self.bootstrap, self.settings.topic_events, url, seconds)
            finally:
                await fake.stop()
                self.stack.fakes.remove(fake)
            if rtt_ms:
                r["naive_at_rtt"] = {"rtt_ms": rtt_ms, **naive}
            else:
                r["naive_eps"], r["naive"] = round(naive["eps"], 1), naive
            self.say(f"naive{f' (API answering in {rtt_ms} ms)' if rtt_ms else ''}: {naive['events']:,} "
                     f"events in {naive['seconds']:.1f} s = {naive['eps']:,.0f} events/s")

    async def _ttbridge_at_rtt(self) -> None:
        """ttbridge again with the fake answering in NAIVE_RTT_MS, like the naive forwarder's
        second run: the comparison that matters against a distant API."""
        r = self.result
        count = max(1000, self.opts.n // 4)
        load = make_load(count, self.run_id, time.time(), start=self.next_index)
        self.next_index += count
        await produce_fast(self.producer, self.settings.topic_clicks, load.clicks)
        in_table = r["clicks_in_table"] + len(load.clicks)
        await wait_count(lambda: self.counts.count(self.changelog), in_table, "rtt clicks indexed")
        r["clicks_in_table"] = in_table + len(load.late_clicks)
        self.say(f"ttbridge (API answering in {NAIVE_RTT_MS} ms): {count:,} conversions in one burst ...")
        await self.fake.set_latency(NAIVE_RTT_MS)
        try:
            base, t0, _ = await self._burst(load)
            arrivals: list[Arrival] = []
            await self._delivered(base, load.joinable, "ttbridge to deliver at the API's latency", arrivals)
        finally:
            await self.fake.set_latency(0)
        seconds = max(a.received_at for a in arrivals) - t0
        r["ttbridge_at_rtt"] = {"rtt_ms": NAIVE_RTT_MS, "events": len(arrivals), "seconds": round(seconds, 2),
                                "eps": round(len(arrivals) / seconds, 1)}
        r["phase_s"]["ttbridge_at_rtt"] = round(seconds, 2)
        self.say(f"ttbridge (API answering in {NAIVE_RTT_MS} ms): {len(arrivals):,} events accepted in "
                 f"{seconds:.1f} s = {r['ttbridge_at_rtt']['eps']:,.0f} events/s")

    async def _two_workers(self, first: WorkerProcess) -> None:
        """A second worker joins the same group (its own data dir and port): one burst, both
        sharing the partitions — how far adding a worker goes on the same two cores. Then it
        stops and the first worker owns every partition again."""
        r = self.result
        env = {**self.env, "TTBRIDGE_DATA_DIR": str(self.workdir / "state-second"),
               "TTBRIDGE_WEB_PORT": str(free_port())}
        second = WorkerProcess(env, self.workdir / "worker-second.log")
        self.stack.workers.append(second)
        second.start()
        await second.wait_ready(timeout=180)
        await first.wait_ready(timeout=180)
        # A small load first: both groups (faust's and the intake's) have settled once it is through.
        for count, name in ((1000, "warm-up"), (max(2000, self.opts.n // 2), "burst")):
            load = make_load(count, self.run_id, time.time(), start=self.next_index)
            self.next_index += count
            await produce_fast(self.producer, self.settings.topic_clicks, load.clicks)
            in_table = r["clicks_in_table"] + len(load.clicks)
            await wait_count(lambda: self.counts.count(self.changelog), in_table, f"two workers: {name} clicks indexed")
            r["clicks_in_table"] = in_table + len(load.late_clicks)
            if name == "burst":
                self.say(f"two workers: {count:,} conversions in one burst ...")
                meter = CpuMeter({"worker": first.proc.pid, "second": second.proc.pid,
                                  "broker": self.stack.broker.pid()}).start()
            base, t0, _ = await self._burst(load)
            arrivals: list[Arrival] = []
            await self._delivered(base, load.joinable, f"two workers: {name}", arrivals)
        seconds = max(a.received_at for a in arrivals) - t0
        r["two_workers"] = {"events": len(arrivals), "seconds": round(seconds, 2),
                            "eps": round(len(arrivals) / seconds, 1), "cpu": meter.stop()}
        r["phase_s"]["two_workers"] = round(seconds, 2)
        self.say(f"two workers: {len(arrivals):,} events accepted in {seconds:.1f} s = "
                 f"{r['two_workers']['eps']:,.0f} events/s (cpu: {r['two_workers']['cpu']})")
        await asyncio.to_thread(second.stop, 60.0)
        self.stack.workers.remove(second)
        await first.wait_ready(timeout=180)

    async def _latency(self) -> list[float]:
        r, opts = self.result, self.opts
        rate = max(20.0, 0.5 * r["ttbridge_eps"])
        count = max(1, int(rate * opts.latency_s))
        start = self.next_index
        self.next_index += count
        lat_load = make_load(count, self.run_id, time.time(), start=start)
        late_clicks = dict(lat_load.late_clicks)
        await produce_fast(self.producer, self.settings.topic_clicks, lat_load.clicks)
        in_table = sum(1 for i in range(opts.n) if kind_of(i) != "no_click") + len(lat_load.clicks)
        await wait_count(lambda: self.counts.count(self.changelog), in_table, "latency clicks indexed")
        self.say(f"latency: {count:,} conversions at {rate:,.0f} events/s for {opts.latency_s:.0f} s ...")

        self.fake.drain()
        base = await self.fake.accepted()
        arrivals: list[Arrival] = []
        due: deque = deque()  # (when, click key): late clicks follow their conversion
        futures = []
        topic_events, topic_clicks = self.settings.topic_events, self.settings.topic_clicks
        pacer = Pacer(rate, time.monotonic())
        i, last_sent = 0, pacer.start
        while i < count or due:
            now = time.monotonic()
            for _ in range(min(pacer.due(now), count - i)):
                idx, kind = start + i, kind_of(start + i)
                # The produce time travels in messageId, which TikTok gets as event_id.
                message_id = f"{self.run_id}-l{idx}-{time.time_ns() // 1000}"
                doc = event(idx, self.run_id, time.time(), kind, message_id=message_id)
                raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
                futures.append(await self.producer.send(topic_events, raw, key=f"u{idx}".encode()))
                if kind == "late":
                    due.append((now + LATE_CLICK_DELAY_S, f"{self.run_id}-c{idx}".encode()))
                i += 1
                pacer.sent += 1
                last_sent = time.monotonic()
            while due and due[0][0] <= now:
                key = due.popleft()[1]
                futures.append(await self.producer.send(topic_clicks, late_clicks[key], key=key))
            arrivals.extend(self.fake.drain())
            await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
        r["latency_offered_eps"] = round(count / max(last_sent - pacer.start, 1e-3), 1)
        r["clicks_in_table"] = in_table + len(lat_load.late_clicks)
        await self._delivered(base, lat_load.joinable, "latency events delivered", arrivals)

        latencies: list[float] = []
        by_kind: dict[str, list[float]] = {}
        for a in arrivals:
            sent = sent_at_of(a.event_id)
            if sent is None or not a.event_id.startswith(f"{self.run_id}-l"):
                continue
            ms = (a.received_at - sent) * 1000
            latencies.append(ms)
            by_kind.setdefault(kind_of(int(a.event_id.split("-")[1][1:])), []).append(ms)
        r["latency_ms"] = latency_summary(latencies)
        r["latency_ms_by_kind"] = {k: latency_summary(v) for k, v in by_kind.items()}
        lat = r["latency_ms"]
        self.say(f"latency: p50 {lat['p50']:,.0f} ms, p95 {lat['p95']:,.0f} ms, p99 {lat['p99']:,.0f} ms "
                 f"over {lat['count']:,} events")
        return latencies

    async def _state(self, worker: WorkerProcess) -> None:
        """Top the table up to M clicks; the worker's peak RSS; stop it."""
        r = self.result
        have = r["clicks_in_table"]
        extra = max(0, self.opts.clicks - have)
        if extra:
            first = self.opts.n + 10_000_000  # indices clear of every conversion's click
            now, dumps = time.time(), orjson.dumps
            filler = [(f"{self.run_id}-c{i}".encode(), dumps(click(i, self.run_id, now)))
                      for i in range(first, first + extra)]
            self.say(f"state: topping the table up with {extra:,} clicks ...")
            prof = self._profile(worker.proc.pid, "clicks")
            meter = CpuMeter(self._pids(worker)).start()
            t0 = time.time()
            await produce_fast(self.producer, self.settings.topic_clicks, filler)
            produced_s = time.time() - t0
            del filler
            t_done = await wait_count(lambda: self.counts.count(self.changelog), have + extra,
                                      "clicks indexed", interval=0.5)
            r["cpu_share"]["clicks"] = meter.stop()
            self._profiled(prof, "clicks")
            r["click_index_cps"] = round(extra / (t_done - t0), 1)
            r["clicks_in_table"] = have + extra
            self.say(f"state: {extra:,} clicks produced in {produced_s:.1f} s, indexed in {t_done - t0:.1f} s "
                     f"= {r['click_index_cps']:,.0f} clicks/s")
        mem = memory_mb(worker.proc.pid)
        r["rss_mb"] = round(mem.get("hwm", math.nan), 1)
        r["rss_now_mb"] = round(mem.get("rss", math.nan), 1)
        t = time.monotonic()
        code = await asyncio.to_thread(worker.stop, 60.0)
        r["stop_s"] = round(time.monotonic() - t, 2)
        self.stack.workers.remove(worker)
        self.say(f"state: worker peak RSS {r['rss_mb']:,.0f} MB with {r['clicks_in_table']:,} clicks; "
                 f"stopped in {r['stop_s']} s (exit {code})")

    async def _recovery(self) -> None:
        """A fresh worker (new data dir, same app id) restores the table from the changelog."""
        r = self.result
        env = {**self.env, "TTBRIDGE_DATA_DIR": str(self.workdir / "state-fresh"),
               "TTBRIDGE_WEB_PORT": str(free_port())}
        fresh = WorkerProcess(env, self.workdir / "worker-fresh.log")
        self.stack.workers.append(fresh)
        t_start = time.time()
        fresh.start()
        meter = CpuMeter(self._pids(fresh)).start()
        prof = None
        if self.opts.profile_dir is not None:
            await asyncio.sleep(0.5)  # let the interpreter come up before py-spy attaches
            prof = self._profile(fresh.proc.pid, "recovery")
        await fresh.wait_ready(timeout=900)
        r["recovery_s"] = round(time.time() - t_start, 2)
        r["cpu_share"]["recovery"] = meter.stop()
        self._profiled(prof, "recovery")
        r["rss_recovered_mb"] = round(memory_mb(fresh.proc.pid).get("hwm", math.nan), 1)
        self.say(f"state: a fresh worker restored the table and was ready in {r['recovery_s']} s "
                 f"(peak RSS {r['rss_recovered_mb']:,.0f} MB, cpu: {r['cpu_share']['recovery']})")

        # Proof that the table really came back: a conversion for the very first click joins it.
        probe_id = f"{self.run_id}-probe"
        self.fake.drain()
        doc = event(0, self.run_id, time.time(), "joined", message_id=probe_id)
        await (await self.producer.send(self.settings.topic_events, orjson.dumps(doc), key=b"probe"))
        probe: list[Arrival] = []

        async def probe_arrived() -> int:
            probe.extend(a for a in self.fake.drain() if a.event_id == probe_id)
            return len(probe)
        await wait_count(probe_arrived, 1, "the recovery probe")
        r["recovery_probe_joined"] = probe[0].joined
        self.say(f"state: the probe conversion joined its click after recovery: {probe[0].joined}")
        await asyncio.to_thread(fresh.stop, 60.0)
        self.stack.workers.remove(fresh)
