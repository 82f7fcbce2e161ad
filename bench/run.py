"""One benchmark run: a broker of its own, the Events API receivers, ttbridge worker processes, and
the phases in order (`Bench.run` reads top-down):

0. the receivers' own capacity (bench/capacity.py, from a process of its own);
1. preload: a worker starts (startup_s), then the clicks of N conversions are produced and
   indexed (CPU µs per click of the worker's process tree);
2. ttbridge: the N conversions produced in one burst, timed until the receiver has every
   joinable one (their late clicks follow the burst); CPU µs per conversion;
3. together: N more conversions with their clicks produced interleaved, as in production; CPU µs
   per conversion with the clicks' CPU included;
4. quix: the same interleaved records on fresh topics through a Quix Streams app doing the same
   job (bench/peers/quix_app.py), in a process of its own; skipped when not installed;
5. ceiling and naive on the same events topic (bench/baselines.py);
6. scaling (optional): 1, 2, 4 ... fresh workers sharing fresh topics, conversions/s for each;
7. strict: the first worker is restarted against the faithful fake; latency (conversions at a
   steady half of ttbridge's throughput, produce time → received_at), ttbridge at 50 ms, two
   workers (when scaling did not measure them);
8. state: the table topped up to M clicks (peak RSS of the worker), then a FRESH worker (new data
   dir, same app id) restores it from the changelog (recovery_s), checked by a conversion that
   must join the very first click.
Throughput phases (1-4, 6) post to the counting receiver (bench/receiver.py) unless `--receiver
fake`; the naive forwarder and every phase from 7 on post to the faithful fake, which checks
every body as TikTok would.
Everything started is registered in `Stack`, which the caller stops whatever happens.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.devtools.kafka_local import Broker, BrokerError, free_port
from app.devtools.worker_process import WorkerProcess
from app.job.topics import create_topics
from app.settings import load as load_settings
from bench.baselines import ceiling_rate, naive_rate
from bench.fake import Arrival, CountingReceiver, Tally, make_fake
from bench.kafka import TopicCounts, produce_fast
from bench.load import PIXEL, TOKEN, Load, Pacer, click, event, interleaved, kind_of, make_load, sent_at_of
from bench.peers.kstreams_check import JAR as KSTREAMS_JAR
from bench.peers.kstreams_check import build_jar as build_kstreams_jar
from bench.proc import CpuMeter, TreeCpu, memory_mb
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
ROOT = Path(__file__).resolve().parents[1]  # where `python -m bench.*` subprocesses run
# The throughput receiver must accept at least this many times the fastest rate measured, or the
# run says it measured its receiver.
RECEIVER_HEADROOM = 3.0


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
    receiver: str = "counting"   # the throughput phases' receiver: "counting" or the faithful "fake"
    scaling: tuple[int, ...] = ()  # worker counts of the scaling curve; () = no scaling phase
    capacity_s: float = 3.0      # how long each receiver's capacity is measured


QUICK = {"n": 20_000, "clicks": 30_000, "naive_s": 4.0, "latency_s": 6.0, "scaling": (), "capacity_s": 2.0}
FULL = {"n": 200_000, "clicks": 1_000_000, "naive_s": 15.0, "latency_s": 15.0, "scaling": (1, 2, 4),
        "capacity_s": 4.0}


@dataclass
class Stack:
    """What the run started, so that the caller can stop all of it whatever happens."""

    broker: Broker | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    fakes: list = field(default_factory=list)
    profilers: list[Profiler] = field(default_factory=list)
    peers: list[subprocess.Popen] = field(default_factory=list)

    def close(self) -> None:
        for p in self.profilers:
            p.stop()
        for w in self.workers:
            w.kill()
        for proc in self.peers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in self.fakes:
            proc = getattr(f, "proc", None)  # the receivers in their own process
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
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
            "receiver": opts.receiver,
        }
        self.next_index = opts.n  # conversion indices of the later phases continue from here
        self.producer: AIOKafkaProducer | None = None
        self.counts: TopicCounts | None = None
        # pid -> clicks its table held when it started on an existing data dir (`clicks_stored`
        # counts only what the process itself wrote).
        self.stored_before: dict[int, int] = {}

    async def _indexed(self, workers: list[WorkerProcess] | None = None) -> int:
        """Clicks in the table: the fewest any running worker has stored (each keeps all of it,
        app/job/clicks.py; `clicks_stored` counts its catch-up too)."""
        running = [w for w in (workers or self.stack.workers) if w.proc is not None and w.proc.poll() is None]
        return min([(await w.stats()).get("clicks_stored", 0) + self.stored_before.get(w.proc.pid, 0)
                    for w in running], default=0)

    async def run(self) -> tuple[dict, list[float]]:
        """Every phase in order; (result, latency samples in ms)."""
        load = self._generate()
        try:
            await self._start_stack()
            await self._capacities()
            worker = await self._preload(load)
            await self._ttbridge(load, worker)
            del load
            together = await self._together(worker)
            await self._quix(together)
            await self._kstreams(together)
            del together
            await self._baselines()
            if self.opts.scaling:
                await self._scaling(self.opts.scaling)
            self.result["receiver_stats"] = await self.sink.stats()
            self._check_headroom()
            worker = await self._strict_worker(worker)
            latencies = await self._latency()
            await self._ttbridge_at_rtt()
            await self._strict_checked()
            if "two_workers" not in self.result:
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
        if self.opts.receiver == "counting":
            self.sink = CountingReceiver(self.workdir)
            self.stack.fakes.append(self.sink)
            sink_url = await self.sink.start()
        else:
            self.sink, sink_url = self.fake, fake_url
        # The throughput phases' workers post to the sink; the strict phases' to the faithful fake.
        self.sink_env = {**self.env, "TIKTOK_API_URL": sink_url}
        self.say(f"broker {self.bootstrap} (up in {self.result['phase_s']['broker_start']} s), "
                 f"fake Events API {fake_url} ({self.fake.mode}), throughput receiver {sink_url} "
                 f"({self.sink.mode})")
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20,
                                         max_batch_size=1 << 20, max_request_size=8 << 20)
        self.counts = TopicCounts(self.bootstrap)
        await self.producer.start()
        await self.counts.start()

    def _pids(self, worker: WorkerProcess) -> dict[str, int | None]:
        pids = {"worker": worker.proc.pid, "broker": self.stack.broker.pid(), "bench": os.getpid()}
        if self.fake.pid != os.getpid():
            pids["fake"] = self.fake.pid
        if self.sink is not self.fake:
            pids["receiver"] = self.sink.pid
        return pids

    async def _capacities(self) -> None:
        """How many events/s each receiver accepts when driven directly, from a process of its own
        (bench/capacity.py: concurrent POSTs of 1,000 mapped conversions)."""
        r = self.result
        receivers = {"fake": self.fake} if self.sink is self.fake else {"fake": self.fake, "receiver": self.sink}
        r["capacity"] = {}
        for name, receiver in receivers.items():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.capacity", "--url", receiver.url,
                "--seconds", str(self.opts.capacity_s), cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise BenchError(f"bench.capacity against the {name} failed: {err.decode(errors='replace')[-1500:]}")
            r["capacity"][name] = {"mode": receiver.mode, **orjson.loads(out.splitlines()[-1])}
            if hasattr(receiver, "drain"):
                receiver.drain()  # the in-process fake keeps what it accepted until drained
            self.say(f"capacity of the {receiver.mode} receiver: {r['capacity'][name]['eps']:,.0f} events/s "
                     f"({r['capacity'][name]['events_per_request']:,} events per request)")
        r["fake_capacity_eps"] = r["capacity"]["fake"]["eps"]
        r["receiver_capacity_eps"] = r["capacity"].get("receiver", r["capacity"]["fake"])["eps"]

    def _check_headroom(self) -> None:
        """Every throughput phase must have run well under its receiver's capacity."""
        r = self.result
        rates = [r.get("ttbridge_eps"), r.get("together_eps"), (r.get("quix") or {}).get("eps"),
                 *[p["eps"] for p in r.get("scaling") or []]]
        fastest = max((v for v in rates if v), default=None)
        if not fastest:
            return
        r["receiver_headroom"] = round(r["receiver_capacity_eps"] / fastest, 1)
        if (r.get("receiver_stats") or {}).get("rejected"):
            self.say(f"WARNING: the throughput receiver refused {r['receiver_stats']['rejected']} requests")
        if r["receiver_headroom"] < RECEIVER_HEADROOM:
            self.say(f"WARNING: the throughput receiver accepts only {r['receiver_headroom']}x the fastest rate "
                     f"measured ({fastest:,.0f} events/s): the throughput phases may measure the receiver")

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

    async def _delivered_tally(self, receiver, base: Tally, expected: int, what: str,
                               on_poll: Callable[[], None] | None = None) -> Tally:
        """Wait until `receiver` has accepted `expected` events more than `base`; its tally then."""
        async def accepted() -> int:
            return (await receiver.tally()).accepted - base.accepted
        await wait_count(accepted, expected, what, on_poll=on_poll)
        return await receiver.tally()

    @staticmethod
    def _per_event(cpu_s: float | None, count: int) -> float | None:
        """CPU µs per event."""
        return round(cpu_s / count * 1e6, 1) if cpu_s is not None and count else None

    async def _preload(self, load: Load) -> WorkerProcess:
        """A worker starts with an empty table; then the clicks of the N conversions are produced
        and indexed: clicks/s and CPU µs per click of the worker's process tree (clicks only)."""
        r = self.result
        worker = WorkerProcess(self.sink_env, self.workdir / "worker-first.log")
        self.stack.workers.append(worker)
        t_start = time.time()
        worker.start()
        await worker.wait_ready(timeout=180)
        r["startup_s"] = round(time.time() - t_start, 2)
        self.say(f"worker ready in {r['startup_s']} s; producing {len(load.clicks):,} clicks ...")
        cpu = TreeCpu(worker.proc.pid).start()
        t0 = time.time()
        await produce_fast(self.producer, self.settings.topic_clicks, load.clicks)
        r["phase_s"]["produce_clicks"] = round(time.time() - t0, 2)
        t_indexed = await wait_count(self._indexed, len(load.clicks), "clicks indexed")
        cpu_s = cpu.stop()
        r["clicks_in_table"] = len(load.clicks)
        r["preload_index_cps"] = round(len(load.clicks) / (t_indexed - t0), 1)
        r["cpu_us_per_click"] = self._per_event(cpu_s, len(load.clicks))
        r["preload"] = {"clicks": len(load.clicks), "seconds": round(t_indexed - t0, 2),
                        "produce_s": r["phase_s"]["produce_clicks"], "cpu_s": cpu_s and round(cpu_s, 2)}
        self.say(f"preload: {len(load.clicks):,} clicks indexed in {t_indexed - t0:.1f} s = "
                 f"{r['preload_index_cps']:,.0f} clicks/s, {r['cpu_us_per_click']} µs CPU per click (worker tree)")
        return worker

    async def _ttbridge(self, load: Load, worker: WorkerProcess) -> None:
        """The N conversions in one burst into the idle worker, their clicks in the table."""
        r = self.result
        self.say(f"ttbridge: producing {len(load.events):,} conversions in one burst ...")
        prof = self._profile(worker.proc.pid, "ttbridge")
        base = await self.sink.tally()
        cpu = TreeCpu(worker.proc.pid).start()
        t0 = time.time()  # the worker is idle and ready: it consumes the first event within ms
        await produce_fast(self.producer, self.settings.topic_events, load.events)
        t_produced = time.time()
        await produce_fast(self.producer, self.settings.topic_clicks, load.late_clicks)
        meter = CpuMeter(self._pids(worker)).start()  # after the burst: the producer is ours
        end = await self._delivered_tally(self.sink, base, load.joinable, "ttbridge to deliver every joinable event")
        cpu_s = cpu.stop()
        r["cpu_share"]["ttbridge"] = meter.stop()
        self._profiled(prof, "ttbridge")
        events, seconds = end.accepted - base.accepted, end.last_at - t0
        r["clicks_in_table"] += len(load.late_clicks)
        r["ttbridge_eps"] = round(events / seconds, 1)
        r["joined_share"] = round((end.joined - base.joined) / events, 4)
        r["cpu_us_per_conversion"] = self._per_event(cpu_s, len(load.events))
        r["ttbridge"] = {"events": events, "conversions": len(load.events), "seconds": round(seconds, 2),
                         "produce_s": round(t_produced - t0, 2), "cpu_s": cpu_s and round(cpu_s, 2)}
        r["phase_s"]["ttbridge"] = round(seconds, 2)
        await asyncio.sleep(1.5)  # the last batch's dead letters are counted after its POST
        r["worker_stats"] = await worker.stats()
        r["receiver_stats"] = await self.sink.stats()
        self.say(f"ttbridge: {events:,} events accepted in {seconds:.1f} s = {r['ttbridge_eps']:,.0f} events/s, "
                 f"{r['cpu_us_per_conversion']} µs CPU per conversion (cpu: {r['cpu_share']['ttbridge']})")

    async def _produce_together(self, chunks: list[tuple[list, list]], topic_clicks: str, topic_events: str) -> None:
        """Clicks and conversions interleaved: each chunk's clicks are acknowledged before its
        conversions are sent, and sent with the previous chunk's conversions (one round trip per
        chunk), so a joinable conversion's click is produced shortly before it and a late one's
        (two chunks on, bench.load.interleaved) shortly after."""
        async def produce(topic: str, records: list) -> None:
            if records:
                await produce_fast(self.producer, topic, records)
        await produce(topic_clicks, chunks[0][0])
        for k, (_, events) in enumerate(chunks):
            following = chunks[k + 1][0] if k + 1 < len(chunks) else []
            await asyncio.gather(produce(topic_events, events), produce(topic_clicks, following))

    def _together_load(self, count: int) -> tuple[Load, list[tuple[list, list]]]:
        load = make_load(count, self.run_id, time.time(), start=self.next_index)
        self.next_index += count
        return load, interleaved(load, chunk=max(500, count // 20))

    async def _together(self, worker: WorkerProcess) -> tuple[Load, list]:
        """N more conversions with their clicks, produced together as in production; CPU µs per
        conversion of the worker tree with the clicks' CPU included. Returns the load for the peers."""
        r = self.result
        load, chunks = self._together_load(self.opts.n)
        clicks = len(load.clicks) + len(load.late_clicks)
        self.say(f"together: {len(load.events):,} conversions and {clicks:,} clicks interleaved ...")
        prof = self._profile(worker.proc.pid, "together")
        base = await self.sink.tally()
        cpu = TreeCpu(worker.proc.pid).start()
        t0 = time.time()
        await self._produce_together(chunks, self.settings.topic_clicks, self.settings.topic_events)
        t_produced = time.time()
        end = await self._delivered_tally(self.sink, base, load.joinable, "together: every joinable event")
        cpu_s = cpu.stop()
        self._profiled(prof, "together")
        events, seconds = end.accepted - base.accepted, end.last_at - t0
        r["clicks_in_table"] += clicks
        r["together_eps"] = round(events / seconds, 1)
        r["cpu_us_per_conversion_together"] = self._per_event(cpu_s, len(load.events))
        r["together"] = {"events": events, "conversions": len(load.events), "clicks": clicks,
                         "seconds": round(seconds, 2), "produce_s": round(t_produced - t0, 2),
                         "cpu_s": cpu_s and round(cpu_s, 2),
                         "joined_share": round((end.joined - base.joined) / events, 4)}
        r["phase_s"]["together"] = round(seconds, 2)
        self.say(f"together: {events:,} events accepted in {seconds:.1f} s = {r['together_eps']:,.0f} events/s, "
                 f"{r['cpu_us_per_conversion_together']} µs CPU per conversion, clicks included (worker tree)")
        return load, chunks

    async def _quix(self, together: tuple[Load, list]) -> None:
        """The together phase's records, on fresh topics, through the Quix Streams peer."""
        if importlib.util.find_spec("quixstreams") is None:
            self._peer_skipped("quix", "quixstreams is not installed (.venv/bin/pip install -e '.[peers]')")
            return
        await self._peer("quix", "Quix Streams", together, importlib.metadata.version("quixstreams"),
                         [sys.executable, "-m", "bench.peers.quix_app"])

    async def _kstreams(self, together: tuple[Load, list]) -> None:
        """The together phase's records, on fresh topics, through the Kafka Streams peer
        (bench/peers/kstreams, a jar built with Maven when missing); skipped without java."""
        # Building the jar needs a JDK (javac) and Maven; running it only java.
        tools = ("java",) if KSTREAMS_JAR.exists() else ("java", "javac", "mvn")
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing:
            self._peer_skipped("kstreams", f"{', '.join(missing)} not found (the peer is a Java 17 Maven project)")
            return
        try:
            if not KSTREAMS_JAR.exists():
                self.say("kstreams: building the peer's jar (mvn package) ...")
            jar = await asyncio.to_thread(build_kstreams_jar)
            version = (await asyncio.to_thread(subprocess.run, ["java", "-jar", str(jar), "--version"],
                                               capture_output=True, text=True, stdin=subprocess.DEVNULL)).stdout.strip()
        except (OSError, RuntimeError) as e:
            self.result["kstreams"] = {"failed": str(e)[:2000]}
            self.say(f"kstreams: the peer failed: {e}")
            return
        # SIGTERM runs the JVM's shutdown hook, which closes the streams with a last commit: give it longer.
        await self._peer("kstreams", "Kafka Streams", together, version, ["java", "-jar", str(jar)], stop_s=40)

    def _peer_skipped(self, name: str, why: str) -> None:
        self.result[name] = {"skipped": why}
        self.say(f"{name}: skipped: {why}")

    async def _peer(self, name: str, system: str, together: tuple[Load, list], version: str,
                    command: list[str], stop_s: float = 20) -> None:
        """`command` (a peer: bench/peers) given the together phase's records on fresh topics:
        r[name] with its events/s, CPU per conversion (its process tree), joined share and RSS,
        and r[f"ttbridge_vs_{name}"]. A broken peer is reported, not fatal."""
        r = self.result
        load, chunks = together
        proc = None
        log_path = self.workdir / f"{name}-peer.log"
        receiver = self.sink
        try:
            if receiver is self.fake:  # the faithful fake would drop the together phase's event_ids as repeats
                receiver = make_fake(self.opts.fake, self.workdir)
                self.stack.fakes.append(receiver)
                await receiver.start()
            # The bench's clicks are keyed by click ID (murmur2), as the peers' joins need; fresh
            # topics with the same partition count, so the peer reads exactly the together phase's records.
            topic_clicks, topic_events = f"{name}-{self.run_id}-clicks", f"{name}-{self.run_id}-events"
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(t, self.settings.partitions, 1) for t in (topic_clicks, topic_events)])
            finally:
                await admin.close()
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [*command, "--bootstrap", self.bootstrap, "--clicks", topic_clicks, "--events", topic_events,
                     "--url", receiver.url, "--state-dir", str(self.workdir / f"{name}-state"),
                     "--group", f"{name}-{self.run_id}"],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.stack.peers.append(proc)

            def alive() -> None:
                if proc.poll() is not None:
                    raise BenchError(f"the {system} peer exited with {proc.returncode}: "
                                     f"{log_path.read_text(errors='replace')[-1500:]}")
            # A warm-up load: the peer has started, joined its group and created its topics once it is through.
            warm, warm_chunks = self._together_load(500)
            self.say(f"{name}: starting the {system} {version} peer (warm-up of 500 conversions) ...")
            base = await receiver.tally()
            await self._produce_together(warm_chunks, topic_clicks, topic_events)
            await self._delivered_tally(receiver, base, warm.joinable, f"{name}: warm-up", on_poll=alive)
            self.say(f"{name}: {len(load.events):,} conversions and their clicks interleaved, as in the together phase ...")
            base = await receiver.tally()
            cpu = TreeCpu(proc.pid).start()
            t0 = time.time()
            await self._produce_together(chunks, topic_clicks, topic_events)
            end = await self._delivered_tally(receiver, base, load.joinable, f"{name}: every joinable event",
                                              on_poll=alive)
            cpu_s = cpu.stop()
            events, seconds = end.accepted - base.accepted, end.last_at - t0
            eps = r[f"{name}_eps"] = round(events / seconds, 1)
            peer = r[name] = {"eps": eps, "events": events, "conversions": len(load.events),
                              "seconds": round(seconds, 2), "cpu_s": cpu_s and round(cpu_s, 2),
                              "cpu_us_per_conversion": self._per_event(cpu_s, len(load.events)),
                              "joined_share": round((end.joined - base.joined) / events, 4),
                              "rss_mb": round(memory_mb(proc.pid).get("hwm", math.nan), 1),
                              "version": version}
            r["phase_s"][name] = round(seconds, 2)
            vs = r[f"ttbridge_vs_{name}"] = {
                "eps_ratio": round(r["together_eps"] / eps, 2),
                "cpu_ratio": (round(r["cpu_us_per_conversion_together"] / peer["cpu_us_per_conversion"], 2)
                              if r["cpu_us_per_conversion_together"] and peer["cpu_us_per_conversion"] else None)}
            self.say(f"{name}: {events:,} events accepted in {seconds:.1f} s = {eps:,.0f} events/s, "
                     f"{peer['cpu_us_per_conversion']} µs CPU per conversion; ttbridge/{name}: "
                     f"{vs['eps_ratio']}x events/s, {vs['cpu_ratio']}x CPU")
        except (BenchError, OSError, RuntimeError) as e:  # a broken peer is reported, not fatal
            r[name] = {"failed": str(e)[:2000], "log": str(log_path)}
            self.say(f"{name}: the peer failed: {e}")
        finally:
            if proc is not None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.to_thread(proc.wait, stop_s)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                self.stack.peers.remove(proc)
            if receiver is not self.sink:
                await receiver.stop()
                self.stack.fakes.remove(receiver)

    async def _scaling(self, counts: tuple[int, ...]) -> None:
        """For each count, that many fresh workers (each its own data dir and port, one app id)
        share fresh topics: their clicks are indexed, a warm-up goes through (every group has
        settled), then N/2 conversions in one burst; conversions/s and CPU µs per conversion of
        all the workers' trees."""
        r = self.result
        points = []
        for n_workers in counts:
            prefix = f"s{n_workers}-{self.run_id}"
            env = {**self.sink_env, "TTBRIDGE_APP_ID": f"{APP_ID}-{prefix}",
                   "TTBRIDGE_TOPIC_CLICKS": f"{prefix}-clicks", "TTBRIDGE_TOPIC_EVENTS": f"{prefix}-events",
                   "TTBRIDGE_TOPIC_RETRY": f"{prefix}-retry", "TTBRIDGE_TOPIC_DLQ": f"{prefix}-dlq"}
            settings = load_settings(env)
            await create_topics(settings)
            workers = [WorkerProcess({**env, "TTBRIDGE_DATA_DIR": str(self.workdir / f"state-{prefix}-{k}"),
                                      "TTBRIDGE_WEB_PORT": str(free_port())},
                                     self.workdir / f"worker-{prefix}-{k}.log") for k in range(n_workers)]
            self.stack.workers.extend(workers)
            try:
                for w in workers:
                    w.start()
                for w in workers:
                    await w.wait_ready(timeout=300)
                in_table = 0
                for count, name in ((1000, "warm-up"), (max(2000, self.opts.n // 2), "burst")):
                    load = make_load(count, self.run_id, time.time(), start=self.next_index)
                    self.next_index += count
                    await produce_fast(self.producer, settings.topic_clicks, load.clicks)
                    in_table += len(load.clicks)
                    await wait_count(lambda: self._indexed(workers), in_table,
                                     f"scaling, {n_workers} workers: {name} clicks indexed")
                    in_table += len(load.late_clicks)
                    if name == "burst":
                        self.say(f"scaling: {n_workers} worker(s), {count:,} conversions in one burst ...")
                        for w in workers:
                            await w.wait_ready(timeout=180)
                    base = await self.sink.tally()
                    cpus = [TreeCpu(w.proc.pid).start() for w in workers]
                    t0 = time.time()
                    await produce_fast(self.producer, settings.topic_events, load.events)
                    await produce_fast(self.producer, settings.topic_clicks, load.late_clicks)
                    end = await self._delivered_tally(self.sink, base, load.joinable,
                                                      f"scaling, {n_workers} workers: {name}")
                    used = [c.stop() for c in cpus]
                events, seconds = end.accepted - base.accepted, end.last_at - t0
                cpu_s = sum(u for u in used if u is not None)
                point = {"workers": n_workers, "eps": round(events / seconds, 1), "events": events,
                         "conversions": count, "seconds": round(seconds, 2), "cpu_s": round(cpu_s, 2),
                         "cpu_us_per_conversion": self._per_event(cpu_s, count)}
                points.append(point)
                self.say(f"scaling: {n_workers} worker(s): {events:,} events in {seconds:.1f} s = "
                         f"{point['eps']:,.0f} conversions/s, {point['cpu_us_per_conversion']} µs CPU per conversion")
            finally:
                await asyncio.gather(*(asyncio.to_thread(w.stop, 60.0) for w in workers))
                for w in workers:
                    self.stack.workers.remove(w)
        r["scaling"] = points
        r["scaling_eps"] = [p["eps"] for p in points]
        two = next((p for p in points if p["workers"] == 2), None)
        if two is not None:  # the two-workers phase would measure the same again
            r["two_workers"] = {"eps": two["eps"], "events": two["events"], "seconds": two["seconds"],
                                "from": "scaling"}

    async def _strict_checked(self) -> None:
        """The faithful fake's counters after the strict phases: every body it got must have passed."""
        stats = self.result["fake_stats"] = await self.fake.stats()
        refused = sum(stats.get("rejections", {}).values()) + stats.get("http_errors", 0)
        self.say(f"strict: the faithful fake accepted {stats['events_accepted']:,} events in {stats['requests']:,} "
                 f"requests, {refused} refused")

    async def _strict_worker(self, worker: WorkerProcess) -> WorkerProcess:
        """From here on the first worker posts to the faithful fake: it is restarted with the same
        data dir (its table stays) and the fake's URL, unless it posted to the fake already."""
        if self.sink is self.fake:
            return worker
        self.result["rss_throughput_mb"] = round(memory_mb(worker.proc.pid).get("hwm", math.nan), 1)
        self.say("strict: restarting the worker against the faithful fake ...")
        await asyncio.to_thread(worker.stop, 60.0)
        self.stack.workers.remove(worker)
        strict = WorkerProcess(self.env, self.workdir / "worker-first-strict.log")
        self.stack.workers.append(strict)
        strict.start()
        self.stored_before[strict.proc.pid] = self.result["clicks_in_table"]
        await strict.wait_ready(timeout=180)
        return strict

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
        await wait_count(self._indexed, in_table, "rtt clicks indexed")
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
            await wait_count(self._indexed, in_table, f"two workers: {name} clicks indexed")
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
        in_table = r["clicks_in_table"] + len(lat_load.clicks)
        await wait_count(self._indexed, in_table, "latency clicks indexed")
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
            t_done = await wait_count(self._indexed, have + extra,
                                      "clicks indexed", interval=0.5)
            r["cpu_share"]["clicks"] = meter.stop()
            self._profiled(prof, "clicks")
            r["click_index_cps"] = round(extra / (t_done - t0), 1)
            r["clicks_in_table"] = have + extra
            self.say(f"state: {extra:,} clicks produced in {produced_s:.1f} s, indexed in {t_done - t0:.1f} s "
                     f"= {r['click_index_cps']:,.0f} clicks/s")
        mem = memory_mb(worker.proc.pid)
        # The peak of this worker's process and, before the strict phases restarted it, of its predecessor.
        r["rss_mb"] = round(max(mem.get("hwm", math.nan), r.get("rss_throughput_mb", 0.0)), 1)
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
