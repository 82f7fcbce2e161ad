"""The retry tiers' decisions, and `ttbridge retry-worker` running alone."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition

from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
from app.devtools.worker_process import produce_json
from app.job.metrics import Metrics
from app.job.records import retry_record
from app.job.retrier import MAX_HOLD_S, Retrier, next_step, parse_retry_record
from app.job.topics import create_topics, retry_tier_topic
from app.settings import load
from app.tiktok.outcomes import error_info, verdict_for_code
from app.tiktok.sender import Delivery
from tests.support import read_all, wait_for

TIERS = (30.0, 300.0, 1800.0, 7200.0)


def rec(attempt: int, first_failed_at: float = 1000.0) -> dict:
    return {"attempt": attempt, "first_failed_at": first_failed_at}


RETRY, HOLD, DEAD = (verdict_for_code(c) for c in (50000, 40105, 40001))
RATE_LIMITED = verdict_for_code(40100)


@pytest.mark.parametrize("attempt, verdict, expected", [
    (1, RETRY, ("retry", 1)),          # tier 1 failed again: tier 2
    (3, RETRY, ("retry", 3)),          # tier 3 failed: the last tier
    (4, RETRY, ("dlq", -1)),           # the last tier failed: dead-lettered
    (1, HOLD, ("retry", 3)),           # token trouble: straight to the slowest tier
    (9, HOLD, ("retry", 3)),           # ...however often, while the hold is young
    (1, RATE_LIMITED, ("retry", 0)),   # a rate limit: the same tier again, no attempt used
    (3, RATE_LIMITED, ("retry", 2)),
    (4, RATE_LIMITED, ("retry", 3)),   # even on the last tier: it is not dead-lettered
    (1, DEAD, ("dlq", -1)),
])
def test_next_step(attempt, verdict, expected):
    assert next_step(rec(attempt), verdict, 2000.0, TIERS) == expected


@pytest.mark.parametrize("verdict", [HOLD, RATE_LIMITED])
def test_a_hold_or_rate_limit_older_than_the_limit_is_dead_lettered(verdict):
    assert next_step(rec(1, first_failed_at=0.0), verdict, MAX_HOLD_S + 1, TIERS) == ("dlq", -1)
    assert next_step(rec(1, first_failed_at=0.0), verdict, MAX_HOLD_S - 1, TIERS)[0] == "retry"


def test_tier_topics_are_named_after_the_retry_topic():
    s = load({"TTBRIDGE_TOPIC_RETRY": "r"})
    assert [retry_tier_topic(s, t) for t in (1, 2, 3, 4)] == ["r", "r-2", "r-3", "r-4"]


async def test_retry_worker_alone_resends_a_due_record(kafka_bootstrap, unique, tmp_path):
    token, pixel = "retry-token-0123456789", "RETRYPIXEL000000001"
    fake = FakeTikTok(FakeConfig(tokens={token: frozenset({pixel})}))
    base = await fake.start("127.0.0.1", 0)
    config = tmp_path / "t.toml"
    config.write_text("[ttbridge]\nretry_tiers_s = [0.2, 0.2]\n")
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIKTOK_API_URL": base, "TIKTOK_ACCESS_TOKEN": token,
           "TIKTOK_PIXEL_CODE": pixel, "TTBRIDGE_CONFIG": str(config), "TTBRIDGE_APP_ID": f"r{unique}",
           "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}",
           "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}"}
    await create_topics(load(env))
    now = time.time()
    body = {"event_source": "web", "event_source_id": pixel,
            "data": [{"event": "Purchase", "event_time": int(now), "event_id": "retried-1"}]}
    # Junk on the retry topic (written by hand, or by a bug) is dead-lettered, never a crash.
    junk = [b"not json", b'{"request": null, "pixel_code": "P", "attempt": 1, "not_before": 0, "first_failed_at": 0}']
    await produce_json(kafka_bootstrap, f"retry-{unique}", [*junk, retry_record(
        body, pixel, 1, now + 0.5, now, error_info("server_error", "Internal error", 50000, 200))], key=pixel)
    proc = subprocess.Popen([sys.executable, "-m", "app", "retry-worker"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async def resent():
            return bool(fake.accepted)
        await wait_for(resent, 60, "the retry worker to resend")  # a start-up and a group join
        received = time.time()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
        await fake.stop()
    assert [a["event"]["event_id"] for a in fake.accepted] == ["retried-1"]
    dead = await read_all(kafka_bootstrap, f"dlq-{unique}", 2)
    assert [(d["reason"], d["stage"], d["original"], d["source"]["offset"]) for d in dead] == [
        ("invalid_retry_record", "retry", junk[0].decode(), 0), ("invalid_retry_record", "retry", junk[1].decode(), 1)]
    assert fake.accepted[0]["received_at"] >= now + 0.5  # not before it was due
    assert received - now < 45  # sent from the first tier (0.2 s), not held back
    assert token not in out


def test_a_retry_record_whose_request_cannot_be_written_again_is_not_one_we_can_send():
    record = {"request": {"event_source": "web", "event_source_id": "P", "data": [{"event": "Purchase"}]},
              "pixel_code": "P", "attempt": 1, "not_before": 0, "first_failed_at": 0}
    assert parse_retry_record(orjson.dumps(record)) == record
    # orjson reads 1,024 levels but writes only 254: such a request would fail at every send.
    nested = b'{"x":' * 300 + b"{}" + b"}" * 300
    raw = orjson.dumps(record).replace(b'{"event":"Purchase"}', b'{"event":"Purchase","properties":' + nested + b"}")
    assert orjson.loads(raw)["request"]["data"][0]["event"] == "Purchase"  # it reads
    assert parse_retry_record(raw) is None


async def test_one_record_failing_to_resend_is_dead_lettered_alone_and_the_others_go_on():
    class Sender:
        async def deliver(self, pixel, body):
            if body["data"][0]["event_id"] == "poison":
                raise RuntimeError("a bug")
            return Delivery(accepted=len(body["data"]), requests=1, retry=[], dead=[])

    settings = load({"TIKTOK_PIXEL_CODE": "P", "TIKTOK_ACCESS_TOKEN": "t", "TTBRIDGE_TOPIC_DLQ": "dlq"})
    metrics = Metrics()
    retrier = Retrier(settings, Sender(), metrics)
    written = []

    async def write(records):
        written.extend(records)
    retrier._write = write
    body = {"event_source": "web", "event_source_id": "P"}
    good, poison = (retry_record({**body, "data": [{"event": "Purchase", "event_id": i}]}, "P", 1, 0, 0,
                                 error_info("server_error", "x", 50000, 200)) for i in ("good", "poison"))
    tp = TopicPartition("tiktok-retry", 0)
    messages = [SimpleNamespace(offset=o, value=orjson.dumps(r)) for o, r in enumerate((poison, good))]
    await retrier._handle([(tp, m, parse_retry_record(m.value)) for m in messages])
    [(topic, key, value)] = written
    dead = orjson.loads(value)
    assert (topic, key, dead["reason"], dead["message"], dead["source"]) == (
        "dlq", b"tiktok-retry", "internal_error", "RuntimeError: a bug",
        {"topic": "tiktok-retry", "partition": 0, "offset": 0})
    assert metrics.snapshot() == {"events_sent": 1, "requests": 1, "dead_letters": {"internal_error": 1}}
