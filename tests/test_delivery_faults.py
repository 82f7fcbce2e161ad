"""Nothing lost under faults: each scenario runs a real worker against the real broker and the
fake Events API with faults injected, and accounts for every event_id at the end (accepted by
the fake at least once, or in the DLQ with the right reason)."""
import asyncio
import base64
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
from app.devtools.kafka_local import free_port
from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.records import MAX_ORIGINAL_BYTES, MAX_RECORD_BYTES
from app.job.topics import create_topics
from app.settings import load
from tests.support import read_all, wait_for

TOKEN, PIXEL = "fault-token-0123456789", "FAULTPIXEL000000001"


@pytest.fixture
async def fake():
    fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, seed=7))
    fake.base_url = await fake.start("127.0.0.1", 0)
    fake.started = time.monotonic()
    yield fake
    await fake.stop()


def make_env(bootstrap, unique, tmp_path, fake, tiers="[0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]", extra="",
             batch_max=100):
    config = tmp_path / "ttbridge.toml"
    config.write_text(f"[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 1\nbatch_max = {batch_max}\n"
                      f"retry_tiers_s = {tiers}\n{extra}")
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TIKTOK_API_URL": fake.base_url,
            "TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(config),
            "TTBRIDGE_APP_ID": f"f{unique}", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
            "TTBRIDGE_WEB_PORT": str(free_port()),
            "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}",
            "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}"}


def conversions(n: int, now: float, prefix: str = "e") -> list[dict]:
    return [{"type": "track", "event": "Order Completed", "messageId": f"{prefix}-{i}", "timestamp": now - 10,
             "userId": f"user-{i}", "properties": {"order_id": str(i), "value": 10 + i, "currency": "USD"}}
            for i in range(n)]


def report(name: str, produced: int, fake, dead: int) -> None:
    """One line per scenario for the record (pytest -s shows it)."""
    print(f"\nSCENARIO {name}: produced={produced} delivered={len(delivered_ids(fake))} "
          f"duplicates={fake.stats()['duplicates']} dead_lettered={dead} "
          f"took={time.monotonic() - fake.started:.1f}s")


def delivered_ids(fake) -> set[str]:
    return {a["event"]["event_id"] for a in fake.accepted}


async def start_worker(env, tmp_path, name="worker"):
    await create_topics(load(env))
    worker = WorkerProcess(env, tmp_path / f"{name}.log")
    worker.start()
    await worker.wait_ready()
    return worker


async def test_server_errors_502_bursts_and_latency_lose_nothing(kafka_bootstrap, unique, tmp_path, fake):
    env = make_env(kafka_bootstrap, unique, tmp_path, fake)
    worker = await start_worker(env, tmp_path)
    try:
        fake.config.fail_share = 0.3
        fake.config.latency_ms = 50
        n = 600
        ids = {f"e-{i}" for i in range(n)}
        poison = [b"\xff\xfe not utf-8", b'{"event": 42, "timestamp": 1}']
        events = conversions(n, time.time())
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], events[:300] + poison)
        fake.config.http_502_share = 1.0  # a burst of gateway errors with HTML bodies

        async def burst():
            return fake.stats()["http_errors"] >= 3
        await wait_for(burst, 30, "three 502 answers")
        fake.config.http_502_share = 0.0
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], events[300:])

        async def done():
            return delivered_ids(fake) >= ids
        await wait_for(done, 90, "every event to be delivered")
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert delivered_ids(fake) == ids
    assert fake.stats()["rejections"].get("50000", 0) > 0 and fake.stats()["http_errors"] > 0
    assert stats["events_retrying"] > 0  # the retry tiers did the work
    dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 2)
    assert sorted(d["reason"] for d in dead) == ["invalid_event_name", "invalid_json"]
    report("50000s+502 bursts+latency", n + len(poison), fake, len(dead))


async def test_huge_inputs_and_oversized_failed_batches_never_stall_a_partition(kafka_bootstrap, unique,
                                                                               tmp_path, fake):
    # Kafka refuses records over 1 MiB; one refused write would be retried forever and stall its
    # partition. A huge input is dead-lettered with what fits of it; a failed body of ~8 MB
    # (1,000 events of 8 KB: just under the fake's 8 MiB limit, so no 413) is split over
    # several retry records.
    env = make_env(kafka_bootstrap, unique, tmp_path, fake, tiers="[3, 3, 3, 3, 3, 3, 3, 3]", batch_max=1000)
    worker = await start_worker(env, tmp_path)
    try:
        fake.config.fail_share = 1.0
        n = 1000
        events = conversions(n, time.time())
        for e in events:
            e["properties"]["description"] = "d" * 8000  # ~8 KB per TikTok event
        too_large = b'{"event": "Order Completed", "pad": "' + b"x" * 900_000 + b'"}'
        control = b"\x01" * 200_000  # invalid JSON that orjson would escape to 1.2 MB
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [too_large, control, *events])

        async def all_failed_once():
            retried = await read_raw(kafka_bootstrap, env["TTBRIDGE_TOPIC_RETRY"])
            return sum(len(orjson.loads(raw)["request"]["data"]) for raw in retried) >= n
        await wait_for(all_failed_once, 60, "every event to be on the first retry tier")
        fake.config.fail_share = 0.0

        async def done():
            return len(delivered_ids(fake)) == n
        await wait_for(done, 90, "every event to be delivered")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert delivered_ids(fake) == {f"e-{i}" for i in range(n)}
    retried = await read_raw(kafka_bootstrap, env["TTBRIDGE_TOPIC_RETRY"])
    assert all(len(raw) <= MAX_RECORD_BYTES for raw in retried)
    assert sum(len(orjson.loads(raw)["request"]["data"]) for raw in retried) == n
    assert len(retried) >= 9  # 8 MB of events cannot travel in fewer 900 KB records
    dead = {d["reason"]: d for d in await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 2)}
    assert set(dead) == {"too_large", "invalid_json"}
    assert base64.b64decode(dead["too_large"]["original"]) == too_large[:MAX_ORIGINAL_BYTES]
    assert (dead["too_large"]["original_truncated"], dead["too_large"]["original_bytes"]) == (True, len(too_large))
    assert base64.b64decode(dead["invalid_json"]["original"]) == control
    assert dead["invalid_json"]["original_truncated"] is False
    report("huge inputs+8 MB failed batches", n + 2, fake, len(dead))


async def records_written(bootstrap: str, topic: str) -> int:
    """How many records `topic` has ever been given (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()  # fetches the subscribed topic's metadata
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} does not exist"
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def read_raw(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        out, empty_polls = [], 0
        while empty_polls < 3:
            batch = await consumer.getmany(timeout_ms=500)
            got = [m.value for msgs in batch.values() for m in msgs]
            out += got
            empty_polls = 0 if got else empty_polls + 1
    finally:
        await consumer.stop()
    return out


async def test_expired_tokens_keep_the_data_until_fixed(kafka_bootstrap, unique, tmp_path, fake):
    env = make_env(kafka_bootstrap, unique, tmp_path, fake, tiers="[0.5, 1, 2]")
    fake.config.tokens_expired = True
    worker = await start_worker(env, tmp_path)
    try:
        n = 50
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(n, time.time()))

        async def held():
            return fake.stats()["rejections"].get("40102", 0) >= 4  # first send and several retries
        await wait_for(held, 60, "the expired token to be retried")
        assert delivered_ids(fake) == set()
        fake.config.tokens_expired = False  # the operator fixed the token

        async def done():
            return len(delivered_ids(fake)) == n
        await wait_for(done, 60, "delivery after the token was fixed")
    finally:
        assert worker.stop() == 0
    assert "fault-token" not in worker.log_tail(10**6)
    assert "refuses the access token" in worker.log_tail(10**6)
    assert await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 0, timeout=1) == []
    report("tokens expired then fixed", n, fake, 0)


async def test_retries_exhausted_go_to_the_dlq_with_the_request(kafka_bootstrap, unique, tmp_path, fake):
    env = make_env(kafka_bootstrap, unique, tmp_path, fake, tiers="[0.2, 0.2]")
    fake.config.fail_share = 1.0
    worker = await start_worker(env, tmp_path)
    try:
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(3, time.time()))
        dead: list[dict] = []

        async def all_dead():
            nonlocal dead
            dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 1, timeout=10)
            return sum(len(d["request"]["data"]) for d in dead) >= 3
        await wait_for(all_dead, 60, "the three events to be dead-lettered")
    finally:
        assert worker.stop() == 0
    # Usually one request; two when the intake's polls split the three.
    for d in dead:
        assert (d["reason"], d["stage"], d["attempts"], d["code"]) == ("retries_exhausted", "retry", 3, 50000)
    assert sorted(e["event_id"] for d in dead for e in d["request"]["data"]) == ["e-0", "e-1", "e-2"]
    assert fake.stats()["requests"] == 3 * len(dead)  # first send and two tiers, then it stops trying
    report("retries exhausted", 3, fake, 3)


async def test_dlq_replay_after_the_fix_delivers_and_twice_sends_nothing_new(kafka_bootstrap, unique, tmp_path, fake):
    import io

    from app.job.replay import Filter, replay
    env = make_env(kafka_bootstrap, unique, tmp_path, fake)
    fake.config.tokens[TOKEN] = frozenset({"SOMEOTHERPIXEL"})  # our pixel not permitted: 40001
    worker = await start_worker(env, tmp_path)
    settings = load(env)
    try:
        n = 20
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"],
                           conversions(n, time.time()) + [b"not json at all"])
        # The 20 arrive in one request or, when the intake's polls split them, in a few: one
        # dead letter per request, together holding every event.
        dead: list[dict] = []

        async def all_refused():
            nonlocal dead
            dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 2, timeout=10)
            return sum(len(d["request"]["data"]) for d in dead if d["reason"] == "no_permission") >= n
        await wait_for(all_refused, 40, "every event to be dead-lettered")
        refused = [d for d in dead if d["reason"] == "no_permission"]
        k = len(refused)
        assert sorted(d["reason"] for d in dead) == ["invalid_json"] + ["no_permission"] * k
        assert sorted(e["event_id"] for d in refused for e in d["request"]["data"]) == sorted(
            f"e-{i}" for i in range(n))
        assert delivered_ids(fake) == set()

        dry = io.StringIO()
        retry_written = await records_written(kafka_bootstrap, env["TTBRIDGE_TOPIC_RETRY"])
        summary = await replay(settings, Filter(frozenset({"no_permission"})), dry_run=True, out=dry)
        assert (summary.matched, summary.to_retry, summary.to_source) == (k, k, 0)
        assert f"reason=no_permission pixel={PIXEL} -> {env['TTBRIDGE_TOPIC_RETRY']}" in dry.getvalue()
        # A dry run moves nothing: not one record more on the retry topic it would write to.
        assert await records_written(kafka_bootstrap, env["TTBRIDGE_TOPIC_RETRY"]) == retry_written

        fake.config.tokens[TOKEN] = frozenset({PIXEL})  # the cause is fixed
        out = io.StringIO()
        summary = await replay(settings, Filter(frozenset({"no_permission"})), out=out)
        assert (summary.scanned, summary.matched, summary.to_retry) == (k + 1, k, k)

        async def done():
            return len(delivered_ids(fake)) == n
        await wait_for(done, 30, "the replayed events to be delivered")
        accepted_before = fake.stats()["events_accepted"]

        await replay(settings, Filter(frozenset({"no_permission"})), out=io.StringIO())

        async def resent():
            return fake.stats()["duplicates"] == n
        await wait_for(resent, 30, "the second replay to reach the fake")
        assert fake.stats()["events_accepted"] == accepted_before  # no new event_ids
    finally:
        assert worker.stop() == 0
    # The DLQ itself is untouched: replay never deletes.
    assert len(await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], k + 1, timeout=5)) == k + 1
    report("DLQ replay, twice", n + 1, fake, 1)


async def test_rate_limit_slows_the_sender_down(kafka_bootstrap, unique, tmp_path, fake):
    # Small batches so that many requests are needed: 400 events / 10 per request.
    env = make_env(kafka_bootstrap, unique, tmp_path, fake, batch_max=10)
    fake.config.rate_limit_qps = 5
    worker = await start_worker(env, tmp_path)
    try:
        n = 400
        started = time.monotonic()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(n, time.time()))

        async def done():
            return len(delivered_ids(fake)) == n
        await wait_for(done, 120, "delivery under a 5 qps rate limit")
        elapsed = time.monotonic() - started
    finally:
        assert worker.stop() == 0
    s = fake.stats()
    accepted_requests = s["requests"] - s["rate_limited"] - sum(
        v for k, v in s["rejections"].items() if k != "40100")
    # Adaptive: the sender backs off instead of hammering. Blind retrying at full speed would see
    # most requests refused; here refusals stay below the accepted requests.
    assert s["rate_limited"] < accepted_requests, s
    assert s["requests"] / elapsed < 3 * 5, (s, elapsed)  # settles near the limit, not far above
    assert await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 0, timeout=1) == []
    report(f"rate limit 5 qps ({s['requests'] / elapsed:.1f} requests/s sent, {s['rate_limited']} x 40100)",
           n, fake, 0)


async def test_sigkill_mid_batch_then_restart_delivers_everything(kafka_bootstrap, unique, tmp_path, fake):
    env = make_env(kafka_bootstrap, unique, tmp_path, fake, extra="session_timeout_s = 6\n")
    fake.config.latency_ms = 400  # requests in flight when the worker dies
    worker = await start_worker(env, tmp_path)
    n = 1000
    ids = {f"e-{i}" for i in range(n)}
    try:
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(n, time.time()))

        async def some_sent():
            return fake.stats()["requests"] >= 2
        await wait_for(some_sent, 30, "the first requests")
        worker.kill()
        assert len(delivered_ids(fake)) < n  # it died mid-stream
    finally:
        worker.kill()
    fake.config.latency_ms = 0
    restarted = await start_worker(env, tmp_path, "restarted")
    try:
        async def done():
            return delivered_ids(fake) >= ids
        await wait_for(done, 90, "delivery after the restart")
    finally:
        assert restarted.stop() == 0
    assert delivered_ids(fake) == ids
    # Re-sent events are duplicates TikTok drops by event_id; the count is reported, not hidden.
    assert await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 0, timeout=1) == []
    report("SIGKILL mid-batch + restart", n, fake, 0)


async def test_sigterm_cancels_a_hung_request_exits_0_and_loses_nothing(kafka_bootstrap, unique, tmp_path, fake):
    env = make_env(kafka_bootstrap, unique, tmp_path, fake, extra="shutdown_timeout_s = 5\nsession_timeout_s = 6\n")
    fake.config.latency_ms = 20000  # a request that would hang far past the bound
    worker = await start_worker(env, tmp_path)
    n = 50
    try:
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(n, time.time()))

        async def in_flight():
            return fake.stats()["requests"] >= 1
        await wait_for(in_flight, 30, "a request in flight")
        started = time.monotonic()
        code = worker.stop(timeout=30)
        took = time.monotonic() - started
    finally:
        worker.kill()
    # The in-flight request is cancelled and its events left unacked: a clean exit, well inside
    # the bound, so the watchdog (exit 75) did not have to fire.
    assert code == 0 and took < 5, (code, took, worker.log_tail())
    assert delivered_ids(fake) == set()
    fake.config.latency_ms = 0
    restarted = await start_worker(env, tmp_path, "restarted")
    try:
        async def done():
            return len(delivered_ids(fake)) == n
        await wait_for(done, 60, "delivery after the restart")
    finally:
        assert restarted.stop() == 0
    report(f"SIGTERM with a hung request (exit {code} after {took:.1f}s) + restart", n, fake, 0)


async def test_broker_stopped_and_restarted_mid_stream(broker_handle, unique, tmp_path, fake):
    broker = broker_handle
    env = make_env(broker.bootstrap, unique, tmp_path, fake, extra="session_timeout_s = 10\n")
    worker = await start_worker(env, tmp_path)
    n = 600
    ids = {f"e-{i}" for i in range(n)}
    events = conversions(n, time.time())
    try:
        await produce_json(broker.bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], events[:300])

        async def some_sent():
            return len(delivered_ids(fake)) >= 100
        await wait_for(some_sent, 30, "the first deliveries")
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(3)  # the outage: its length is this scenario's input, not a wait
        await asyncio.to_thread(broker.start)
        await produce_json(broker.bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], events[300:])

        async def done():
            return delivered_ids(fake) >= ids
        await wait_for(done, 120, "delivery after the broker came back")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert delivered_ids(fake) == ids
    assert await read_all(broker.bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 0, timeout=1) == []
    report("broker stopped 3 s and restarted", n, fake, 0)


async def test_sigterm_with_the_broker_gone_exits_75_at_the_bound_and_loses_nothing(broker_handle, unique,
                                                                                     tmp_path, fake):
    # With the broker unreachable, faust's shutdown waits on commits and flushes that cannot
    # finish: the watchdog ends the process at shutdown_timeout_s with code 75 (EX_TEMPFAIL).
    broker = broker_handle
    env = make_env(broker.bootstrap, unique, tmp_path, fake, extra="shutdown_timeout_s = 4\nsession_timeout_s = 6\n")
    worker = await start_worker(env, tmp_path)
    n = 200
    ids = {f"e-{i}" for i in range(n)}
    try:
        await produce_json(broker.bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(n, time.time()))

        async def all_sent():
            return delivered_ids(fake) >= ids
        await wait_for(all_sent, 60, "every event to be delivered")
        await asyncio.to_thread(broker.stop)
        started = time.monotonic()
        code = worker.stop(timeout=30)
        took = time.monotonic() - started
    finally:
        worker.kill()
        await asyncio.to_thread(broker.start)
    assert code == 75 and 4 <= took < 4 + 3, (code, took, worker.log_tail())
    assert "did not stop within shutdown_timeout_s = 4 s; exiting with 75" in worker.log_tail()
    # The restart shows nothing was lost and that it stops cleanly; the 4 s bound was the point
    # above. The restarted worker is stopped while its retry tiers still join their groups: the
    # broker holds a JoinGroup answer until the dead worker's members time out (session_timeout_s,
    # 6 s), and a consumer's stop waits for it. It gets the default bound (30 s).
    config = tmp_path / "restarted.toml"
    config.write_text(Path(env["TTBRIDGE_CONFIG"]).read_text().replace("shutdown_timeout_s = 4\n", ""))
    restarted = await start_worker({**env, "TTBRIDGE_CONFIG": str(config)}, tmp_path, "restarted")
    try:
        await produce_json(broker.bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], conversions(1, time.time(), "after"))

        async def after():
            return "after-0" in delivered_ids(fake)
        await wait_for(after, 60, "delivery after the restart")
    finally:
        assert restarted.stop() == 0
    # Offsets not committed before the kill are re-read: their events are re-sent, never lost.
    assert delivered_ids(fake) == ids | {"after-0"}
    report(f"SIGTERM with the broker gone (exit {code} after {took:.1f}s) + restart", n + 1, fake, 0)
