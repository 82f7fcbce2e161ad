"""`python bench/ab_cpu.py N`: worker CPU µs per click (N clicks alone), per conversion with its
click in the table (those N clicks' conversions) and per conversion with its click arriving
alongside (N more, clicks interleaved in chunks of 2,000), for A/B runs between two trees.
A broker, one worker and the in-process fake; the worker runs the code of the current directory
(`cd <tree> && /work/main/.venv/bin/python /work/main/bench/ab_cpu.py 100000`), so a worktree of the
commit to compare with (`git worktree add /tmp/A <commit>`) gives the A side. PROFILE=<file>
(RATE=<Hz>) samples the worker with py-spy in the together phase (PROFILE_PHASE=preloaded: in
the preloaded one). Prints one RESULT line."""
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the tree under test, for the worker and for us
from aiokafka import AIOKafkaProducer  # noqa: E402 - after the path

from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
from app.devtools.kafka_local import Broker, free_port
from app.devtools.worker_process import WorkerProcess
from app.job.topics import create_topics
from app.settings import load as load_settings
from bench.kafka import produce_fast
from bench.load import PIXEL, TOKEN, make_load
from bench.proc import cpu_seconds

TOML = '[ttbridge]\nbatch_window_s = 1.0\njoin_wait_s = 2\ndefault_region = "GB"\npartitions = 6\n'

async def idle(pid, quiet=0.03, span=1.5):
    """Wait until the worker uses < quiet cores over span seconds; return the time it went quiet."""
    last = cpu_seconds(pid); time.monotonic()
    while True:
        await asyncio.sleep(span)
        now = cpu_seconds(pid)
        if now - last < quiet * span:
            return
        last = now

def _profile(pid):
    """py-spy on the worker when PROFILE=<file> is set (RATE=<Hz>), for the phase PROFILE_PHASE
    names (together, the default, or preloaded)."""
    if not os.environ.get("PROFILE"):
        return None
    import subprocess
    return subprocess.Popen(["/work/main/.venv/bin/py-spy", "record", "-p", str(pid), "-r", os.environ.get("RATE", "250"),
                             "-f", "raw", "-o", os.environ["PROFILE"], "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(prof) -> None:
    if prof is not None:
        import signal
        prof.send_signal(signal.SIGINT); prof.wait()


async def main(n):
    work = Path(tempfile.mkdtemp(prefix="abcpu-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    boot = await asyncio.to_thread(broker.start)
    fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}))
    url = await fake.start("127.0.0.1", 0)
    (work / "t.toml").write_text(TOML)
    env = {"KAFKA_BOOTSTRAP_SERVERS": boot, "TIKTOK_API_URL": url, "TIKTOK_ACCESS_TOKEN": TOKEN,
           "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(work / "t.toml"), "TTBRIDGE_APP_ID": "ab",
           "TTBRIDGE_DATA_DIR": str(work / "state"), "TTBRIDGE_WEB_PORT": str(free_port())}
    s = load_settings(env)
    await create_topics(s)
    w = WorkerProcess(env, work / "w.log")
    prod = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=20, max_batch_size=1 << 20, max_request_size=8 << 20)
    await prod.start()
    try:
        w.start(); await w.wait_ready(); await idle(w.proc.pid)
        pid = w.proc.pid
        # phase 1: clicks only
        a = make_load(n, "a", time.time())
        clicks = a.clicks + a.late_clicks
        c0 = cpu_seconds(pid); t0 = time.monotonic()
        await produce_fast(prod, s.topic_clicks, clicks)
        await idle(pid)
        c1 = cpu_seconds(pid)
        per_click = (c1 - c0 - 0.03 * (time.monotonic() - t0)) / len(clicks) * 1e6
        # phase 1b: the conversions of those clicks, their clicks in the table
        acc0 = fake.stats()["events_accepted"]
        prof = _profile(pid) if os.environ.get("PROFILE_PHASE") == "preloaded" else None
        c0 = cpu_seconds(pid); t0 = time.monotonic()
        await produce_fast(prod, s.topic_events, a.events)
        while fake.stats()["events_accepted"] - acc0 < a.joinable:
            await asyncio.sleep(0.1)
            if time.monotonic() - t0 > 300: raise SystemExit("stalled")
        await idle(pid)
        _stop(prof)
        preloaded = (cpu_seconds(pid) - c0 - 0.03 * (time.monotonic() - t0)) / len(a.events) * 1e6
        # phase 2: together, interleaved chunks of clicks then their conversions
        b = make_load(n, "b", time.time(), start=n)
        joinable = b.joinable
        acc0 = fake.stats()["events_accepted"]
        prof = _profile(pid) if os.environ.get("PROFILE_PHASE", "together") == "together" else None
        if prof:
            await asyncio.sleep(1.0)
        c0 = cpu_seconds(pid); t0 = time.monotonic()
        step = 2000
        ev = b.events
        cl = b.clicks
        ci = 0
        for i in range(0, len(ev), step):
            # the clicks of these conversions first (those produced before), then the conversions
            k = int(len(cl) * min(1.0, (i + step) / len(ev)))
            await produce_fast(prod, s.topic_clicks, cl[ci:k]); ci = k
            await produce_fast(prod, s.topic_events, ev[i:i + step])
        await produce_fast(prod, s.topic_clicks, b.late_clicks)
        t_prod = time.monotonic() - t0
        while fake.stats()["events_accepted"] - acc0 < joinable:
            await asyncio.sleep(0.1)
            if time.monotonic() - t0 > 300: raise SystemExit("stalled")
        t_done = time.monotonic()
        await idle(pid)
        _stop(prof)
        c1 = cpu_seconds(pid)
        wall = t_done - t0
        per_conv = (c1 - c0) / len(ev) * 1e6
        clicks_b = len(cl) + len(b.late_clicks)
        print(f"RESULT per_click_us={per_click:.1f} preloaded_us_per_conversion={preloaded:.1f} "
              f"together_us_per_conversion={per_conv:.1f} "
              f"(incl {clicks_b} clicks) eps={len(ev)/wall:.0f} wall={wall:.1f}s produced_in={t_prod:.1f}s n={n}")
    finally:
        await prod.stop(); w.stop(30); await fake.stop(); broker.stop()

asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
