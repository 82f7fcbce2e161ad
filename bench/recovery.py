"""How long a fresh worker needs to restore M clicks, without indexing them first.

`python -m bench` fills the table through a worker (~4 min for 1M clicks) before it times the
recovery; this writes the clicks straight to the clicks topic (the table's source,
app/job/clicks.py) without a worker, then starts a fresh worker and times it from start until
/readyz says it is recovered. A conversion for the first and one for the last click must then
arrive joined: the table really came back.

    .venv/bin/python -m bench.recovery [--clicks 1000000] [--profile DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from app.devtools.kafka_local import Broker, free_port
from app.devtools.worker_process import WorkerProcess
from app.job.topics import create_topics
from app.settings import load as load_settings
from bench.fake import make_fake
from bench.load import PIXEL, TOKEN, click, event
from bench.proc import CpuMeter, memory_mb
from bench.run import APP_ID, WORKER_TOML, Stack, wait_count


async def run(clicks: int, workdir: Path, stack: Stack, profile_dir: Path | None) -> dict:
    stack.broker = Broker(workdir / "kafka", free_port(), free_port())
    bootstrap = await asyncio.to_thread(stack.broker.start)
    fake = make_fake("in-process", workdir)
    stack.fakes.append(fake)
    fake_url = await fake.start()
    config = workdir / "ttbridge.toml"
    config.write_text(WORKER_TOML)
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TIKTOK_API_URL": fake_url,
           "TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(config),
           "TTBRIDGE_APP_ID": APP_ID, "TTBRIDGE_DATA_DIR": str(workdir / "state"),
           "TTBRIDGE_WEB_PORT": str(free_port())}
    settings = load_settings(env)
    await create_topics(settings)
    # The clicks topic, keyed by click ID as a tracker writes it.
    topic = settings.topic_clicks
    run_id, now = "rec", time.time()
    t = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=1 << 20, max_request_size=8 << 20)
    await producer.start()
    try:
        size = 0
        for i in range(clicks):
            doc = click(i, run_id, now)
            value = orjson.dumps(doc)
            size += len(value)
            await producer.send(topic, value, key=doc["click_id"].encode())
        await producer.flush()
        print(f"{clicks:,} clicks ({size / 1e6:,.0f} MB) written to {topic} in "
              f"{time.monotonic() - t:.1f} s")

        worker = WorkerProcess(env, workdir / "worker.log", loglevel="info")
        stack.workers.append(worker)
        t_start = time.time()
        worker.start()
        meter = CpuMeter({"worker": worker.proc.pid, "broker": stack.broker.pid()}).start()
        prof = None
        if profile_dir is not None:
            from bench.profile import Profiler
            await asyncio.sleep(0.5)
            prof = Profiler(worker.proc.pid, profile_dir / "recovery.txt")
            prof.start()
            stack.profilers.append(prof)
        await worker.wait_ready(timeout=900)
        recovery_s = time.time() - t_start
        cpu = meter.stop()
        if prof is not None:
            prof.stop()
        rss = memory_mb(worker.proc.pid).get("hwm")
        print(f"recovered and ready in {recovery_s:.1f} s (peak RSS {rss:,.0f} MB, cpu {cpu})")
        for line in (workdir / "worker.log").read_text().splitlines():
            if "app.job.clicks" in line or "Recovery" in line and "Done reading" in line:
                print("  worker:", line[:200])

        probes = {f"{run_id}-probe-{i}": i for i in (0, clicks - 1)}
        for message_id, i in probes.items():
            doc = event(i, run_id, time.time(), "joined", message_id=message_id)
            await (await producer.send(settings.topic_events, orjson.dumps(doc), key=message_id.encode()))
        arrived = []

        async def probes_arrived() -> int:
            arrived.extend(a for a in fake.drain() if a.event_id in probes)
            return len(arrived)
        await wait_count(probes_arrived, len(probes), "the probes")
        joined = all(a.joined for a in arrived)
        print(f"probes for the first and last click arrived joined: {joined}")
        return {"clicks": clicks, "recovery_s": round(recovery_s, 2), "rss_mb": rss, "cpu": cpu,
                "joined": joined}
    finally:
        await producer.stop()
        for w in stack.workers:
            await asyncio.to_thread(w.stop, 30.0)
        stack.workers.clear()
        await fake.stop()
        stack.fakes.clear()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    p.add_argument("--clicks", type=int, default=1_000_000)
    p.add_argument("--profile", type=Path, default=None, help="py-spy the worker; stacks into this dir")
    args = p.parse_args(argv)
    stack = Stack()
    with tempfile.TemporaryDirectory(prefix="ttbridge-recovery-") as tmp:
        try:
            result = asyncio.run(run(args.clicks, Path(tmp), stack, args.profile))
        finally:
            stack.close()
    print(orjson.dumps(result).decode())
    return 0 if result["joined"] else 1


if __name__ == "__main__":
    sys.exit(main())
