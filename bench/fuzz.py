"""The fuzz suite at Kafka level: `python -m bench.fuzz --n 100000 [--seed 15]`.

A broker of its own, the fake Events API (in this process) answering with faults part of the
time (HTML 502/503, JSON 50000), one worker process; a seeded mix of valid Segment events
(joined to a click produced before them, late-joined to a click produced after them, without a
click) and mutated ones (tests/fuzz/strategies.py: wrong types at every path the preset reads,
missing fields, huge strings, deep nesting, invalid UTF-8, truncated JSON, duplicate keys, odd
values, products that are not lists, oversize, not objects), and junk clicks. Each event is
produced with its marker as the Kafka key; the offsets it landed at are read back, so that every
dead letter (its source topic/partition/offset) and every accepted event (its event_id, as the
pure pipeline in tests/fuzz/pipeline.py predicts it) names its marker.

At the end, for every marker: sent (accepted by the fake) + dead-lettered + skipped = produced,
no marker lost, none counted twice (sent and dead-lettered, or dead-lettered twice), no valid
event dead-lettered, each outcome the one the pure pipeline predicts for that message alone
(a neighbour changed nothing), the worker alive and /healthz 200. Exit code 1 if any fails.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
from app.devtools.kafka_local import Broker, free_port
from app.devtools.worker_process import WorkerProcess
from app.job.topics import create_topics
from app.mapping.decode import decode_click
from app.mapping.events import Refusal
from app.settings import load as load_settings
from app.settings import mapping_config
from bench.kafka import TopicCounts, produce_fast
from bench.load import PIXEL, TOKEN
from tests.fuzz import strategies as fz
from tests.fuzz.pipeline import one_message

APP_ID = "fuzz"
WORKER_TOML = """[ttbridge]
batch_window_s = 0.5
join_wait_s = 5
retry_tiers_s = [1, 2, 4, 8]
partitions = 6
"""
# Of the events: valid ones by kind, then the mutation families. The heavy families (hundreds of
# KB each) are rare so that 100,000 inputs fit a 2-core machine; each still occurs hundreds of
# times in such a run.
SHARES = {"valid_joined": 0.25, "valid_late": 0.10, "valid_no_click": 0.20,
          "wrong_type": 0.10, "missing": 0.07, "odd_value": 0.10, "item_field": 0.04, "deep": 0.01,
          "invalid_utf8": 0.03, "truncated": 0.04, "duplicate_keys": 0.03, "not_an_object": 0.02,
          "huge_string": 0.003, "oversize": 0.002}
JUNK_CLICK_SHARE = 0.02   # of n, junk clicks on the clicks topic
STALL_S = 60.0


def generate(n: int, seed: int, run: str, now: float):
    """(events [(kind, marker, bytes, click_id)], clicks before, late clicks, junk clicks)."""
    rng = random.Random(seed)
    kinds, weights = list(SHARES), list(SHARES.values())
    events, before, late = [], [], []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        marker = f"{run}-{i}"
        click_id = f"c-{marker}" if kind in ("valid_joined", "valid_late") or (
            not kind.startswith("valid") and rng.random() < 0.3) else None
        ev = fz.valid_event(rng, marker, click_id)
        raw = fz.dumps(ev) if kind.startswith("valid") else fz.MUTATIONS[kind](rng, ev)
        events.append((kind, marker, raw, click_id))
        if click_id is not None:
            (late if kind == "valid_late" else before).append(
                (click_id.encode(), fz.valid_click(click_id, now - rng.uniform(60, 86400))))
    junk = [(None, fz.junk_click(rng, f"c-junk-{run}-{i}")) for i in range(int(n * JUNK_CLICK_SHARE))]
    return events, before, late, junk


def predict(events, clicks: dict[str, dict], mapping, now: float) -> list[tuple]:
    """Each event's outcome when it is alone, by the pure pipeline: ("sent", event_id) |
    ("dead", reason) | ("skipped", reason)."""
    out = []
    for kind, _, raw, click_id in events:
        got = one_message(raw, clicks.get(click_id) if click_id else None, mapping, now)
        item = got[1]["data"][0] if got[0] == "sent" else None
        out.append(("sent", (item["event_id"], item["event"])) if item else got)
    return out


async def offsets_of(bootstrap: str, topic: str, n: int) -> dict[tuple[int, int], str]:
    """(partition, offset) -> marker (the record's key), for the n records of `topic`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    out: dict[tuple[int, int], str] = {}
    try:
        while len(out) < n:
            for tp, msgs in (await consumer.getmany(timeout_ms=1000, max_records=50_000)).items():
                for m in msgs:
                    out[(tp.partition, m.offset)] = m.key.decode()
    finally:
        await consumer.stop()
    return out


async def read_topic(bootstrap: str, topic: str) -> list[dict]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])
        while await behind():
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                out += [orjson.loads(m.value) for m in msgs]
        return out
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    counts = TopicCounts(bootstrap)
    await counts.start()
    try:
        return [tp.partition for tp in await counts.partitions(topic)]
    finally:
        await counts.stop()


def _total(value) -> int:
    """A counter of /stats: a number, or a dict of numbers by label."""
    if isinstance(value, dict):
        return sum(_total(v) for v in value.values())
    return value or 0


def _settled(stats: dict) -> int:
    return _total(stats.get("events_sent")) + _total(stats.get("dead_letters")) + _total(stats.get("events_skipped"))


async def run(opts, workdir: Path, say) -> dict:
    run_id = f"f{int(time.time()) % 100000:05d}"
    now = time.time()
    t0 = time.monotonic()
    events, before, late, junk = generate(opts.n, opts.seed, run_id, now)
    mapping = mapping_config(load_settings({}))
    stored = {c.decode(): decode_click(v, fz.MAX_BYTES)[1] for c, v in before + late}
    predicted = predict(events, {c: r for c, r in stored.items()}, mapping, now)
    junk_refused: Counter = Counter()  # by reason: what every worker's clicks table refuses and counts
    for _, raw in junk:
        try:
            decode_click(raw, fz.MAX_BYTES)
        except Refusal as r:
            junk_refused[r.reason] += 1
    say(f"generated {len(events):,} events ({dict(Counter(k for k, *_ in events))}), "
        f"{len(before) + len(late):,} clicks, {len(junk):,} junk clicks in {time.monotonic() - t0:.1f} s")

    broker = Broker(workdir / "kafka", free_port(), free_port())
    fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, fail_share=opts.fail_share,
                                 http_502_share=opts.http_502_share, http_503_share=opts.http_503_share,
                                 seed=opts.seed))
    worker = None
    try:
        bootstrap = await asyncio.to_thread(broker.start)
        url = await fake.start("127.0.0.1", 0)
        config = workdir / "ttbridge.toml"
        config.write_text(WORKER_TOML)
        port = free_port()
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TIKTOK_API_URL": url, "TIKTOK_ACCESS_TOKEN": TOKEN,
               "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(config), "TTBRIDGE_APP_ID": APP_ID,
               "TTBRIDGE_DATA_DIR": str(workdir / "state"), "TTBRIDGE_WEB_PORT": str(port)}
        settings = load_settings(env)
        await create_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                    max_request_size=8 << 20)
        await producer.start()
        try:
            worker = WorkerProcess(env, workdir / "worker.log")
            worker.start()
            await worker.wait_ready(timeout=180)
            await produce_fast(producer, settings.topic_clicks, before + junk)
            t_produce = time.monotonic()
            await produce_fast(producer, settings.topic_events, [(m.encode(), raw) for _, m, raw, _ in events])
            await produce_fast(producer, settings.topic_clicks, late)
            say(f"produced in {time.monotonic() - t_produce:.1f} s; worker pid {worker.proc.pid}")
        finally:
            await producer.stop()
        where = await offsets_of(bootstrap, settings.topic_events, len(events))
        target = len(events)
        last, last_change, t_wait = -1, time.monotonic(), time.monotonic()
        while True:
            if worker.proc.poll() is not None:
                say(f"worker died with {worker.proc.returncode}")
                break
            stats = await worker.stats()
            got = _settled(stats)
            if got >= target:
                break
            if got != last:
                last, last_change = got, time.monotonic()
                say(f"  settled {got:,}/{target:,} after {time.monotonic() - t_wait:.0f} s "
                    f"(fake accepted {fake.stats()['events_accepted']:,})")
            elif time.monotonic() - last_change > STALL_S:
                say(f"stalled at {got:,}/{target:,}")
                break
            await asyncio.sleep(2)
        elapsed = time.monotonic() - t_wait
        # Retries in flight settle last: wait until the fake's count stops moving too.
        quiet = 0
        prev = -1
        while quiet < 3:
            cur = fake.stats()["events_accepted"]
            quiet = quiet + 1 if cur == prev else 0
            prev = cur
            await asyncio.sleep(2)
        alive = worker.proc.poll() is None
        health = (await worker.get("/healthz"))[0] if alive else None
        stats = await worker.stats() if alive else {}
        dlq = await read_topic(bootstrap, settings.topic_dlq)
        return account(events, predicted, where, fake, dlq, stats, junk, junk_refused, settings,
                       alive=alive, health=health, seconds=elapsed, opts=opts)
    finally:
        if worker is not None:
            await asyncio.to_thread(worker.stop, 30.0)
        await fake.stop()
        broker.stop()


def account(events, predicted, where, fake, dlq, stats, junk, junk_refused, settings, **extra) -> dict:
    marker_at = {m: i for i, (_, m, _, _) in enumerate(events)}
    # An accepted event names its marker by (event_id, event), as predicted: the key TikTok (and
    # the fake) deduplicate on. A mutation can give two markers one key (a messageId of the same
    # wrong value, a huge string): the fake keeps the first and answers the rest as duplicates,
    # as TikTok would; they were sent, and count as sent once each ("deduplicated").
    by_key: dict[tuple, list[str]] = {}
    for i, p in enumerate(predicted):
        if p[0] == "sent":
            by_key.setdefault(p[1], []).append(events[i][1])
    by_event_id = {key[0]: markers[0] for key, markers in by_key.items()}
    sent: Counter = Counter()
    unknown_sent = deduplicated = 0
    for entry in fake.accepted:
        event = entry["event"]
        markers = by_key.get((event.get("event_id"), event["event"]))
        if markers is None:
            unknown_sent += 1
            continue
        for marker in markers:
            sent[marker] += 1
        deduplicated += len(markers) - 1
    dead: Counter = Counter()
    dead_reason: dict[str, str] = {}
    click_dead = unknown_dead = 0
    for record in dlq:
        source = record.get("source") or {}
        if source.get("topic") == settings.topic_clicks:
            click_dead += 1
            continue
        markers = []
        if source.get("topic") == settings.topic_events:
            markers = [where.get((source["partition"], source["offset"]))]
        elif record.get("request"):
            markers = [by_event_id.get(item.get("event_id")) for item in record["request"]["data"]]
        for marker in markers or [None]:
            if marker is None:
                unknown_dead += 1
                continue
            dead[marker] += 1
            dead_reason[marker] = record["reason"]
    skipped_metric = _total(stats.get("events_skipped"))
    refused = stats.get("clicks_refused") or {}
    refused_metric = {k: v for k, v in (refused.items() if isinstance(refused, dict) else ()) if v}
    lost, double, valid_dead, mismatched, skipped = [], [], [], [], 0
    mismatch_kinds: Counter = Counter()
    for i, (kind, marker, _, _) in enumerate(events):
        n = sent[marker] + dead[marker]
        if n > 1:
            double.append(marker)
        if n == 0:
            if predicted[i][0] == "skipped":
                skipped += 1
            else:
                lost.append(marker)
        if kind.startswith("valid") and dead[marker]:
            valid_dead.append((marker, dead_reason[marker]))
        actual = ("sent",) if sent[marker] else ("dead", dead_reason[marker]) if dead[marker] else ("skipped",)
        expect = predicted[i][:1] if predicted[i][0] != "dead" else predicted[i]
        if actual != expect and n <= 1:
            mismatched.append((marker, kind, expect, actual))
            mismatch_kinds[kind] += 1
    produced = len(events)
    result = {
        "produced": produced, "kinds": dict(Counter(k for k, *_ in events)),
        "sent": sum(1 for m in marker_at if sent[m]), "dead_lettered": sum(1 for m in marker_at if dead[m]),
        "skipped": skipped, "skipped_metric": skipped_metric,
        "lost": len(lost), "double": len(double), "valid_dead_lettered": len(valid_dead),
        "not_as_predicted": len(mismatched), "not_as_predicted_by_kind": dict(mismatch_kinds),
        "dead_by_reason": dict(Counter(dead_reason.values())),
        "junk_clicks": len(junk), "junk_clicks_refusable": dict(junk_refused),
        "junk_clicks_refused": refused_metric, "clicks_dead_lettered": click_dead,
        "unknown_sent": unknown_sent, "unknown_dead": unknown_dead, "deduplicated": deduplicated,
        "fake": fake.stats(), "examples": {"lost": lost[:5], "double": double[:5], "valid_dead": valid_dead[:5],
                                           "not_as_predicted": mismatched[:5]},
        **{k: v for k, v in extra.items() if k != "opts"},
    }
    result["ok"] = (result["sent"] + result["dead_lettered"] + skipped == produced and not lost
                    and not double and not valid_dead and not mismatched and skipped == skipped_metric
                    and refused_metric == dict(junk_refused) and not click_dead and deduplicated == fake.stats()["duplicates"]
                    and not unknown_sent and not unknown_dead and extra["alive"] and extra["health"] == 200)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[1])
    p.add_argument("--n", type=int, default=100_000, help="tracking events to produce")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--fail-share", type=float, default=0.05, help="requests answered 50000")
    p.add_argument("--http-502-share", type=float, default=0.03)
    p.add_argument("--http-503-share", type=float, default=0.02)
    p.add_argument("--keep", action="store_true", help="keep the work dir (broker, worker log)")
    opts = p.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="ttbridge-fuzz-"))
    t = time.monotonic()
    try:
        result = asyncio.run(run(opts, workdir, say))
    finally:
        if opts.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - t, 1)
    say(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    say(f"{'OK' if result['ok'] else 'FAILED'}: produced {result['produced']:,} = sent {result['sent']:,} + "
        f"dead-lettered {result['dead_lettered']:,} + skipped {result['skipped']:,}; lost {result['lost']}, "
        f"double {result['double']}, valid dead-lettered {result['valid_dead_lettered']}, "
        f"worker alive {result['alive']} (/healthz {result['health']})")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
