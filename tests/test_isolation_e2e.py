"""One poison message costs only itself, end to end on the real broker with a worker process: an
event nested 1,023 levels deep shares a poll with valid conversions (which reach the fake
Events API), and undecodable messages among valid ones are dead-lettered alone, each with its
own reason, source and original bytes."""
import time

import orjson
from aiokafka import AIOKafkaProducer

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.bundles import partition_of
from app.job.topics import create_topics
from app.settings import load
from tests.support import read_all, sha, wait_for

NOW = time.time()
PARTITIONS = 6  # the input topic's and the clicks table's log (stack_env, app/topics/*.json)


def purchase(message_id: str, click_id: str | None, **props) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": message_id, "timestamp": NOW - 30,
            "context": {"traits": {"email": f"{message_id}@example.com"}},
            "properties": {**({"click_id": click_id} if click_id else {}), "value": 10, "currency": "EUR", **props}}


def nested(event: dict, depth: int) -> bytes:
    """`event`'s JSON with a list nested in its properties so that the document is exactly
    `depth` levels deep (the event is level 1, its properties level 2). orjson writes at most 254
    levels, so the bytes are put together by hand."""
    lists = depth - 2
    raw = orjson.dumps({**event, "properties": {**event["properties"], "nest": 0}})
    return raw.replace(b'"nest":0', b'"nest":' + b"[" * lists + b"]" * lists)


def click_ids_on_one_partition(n: int) -> list[str]:
    """n click IDs the default partitioner puts on one partition (their clicks share a bundle)."""
    first = partition_of("iso-0", PARTITIONS)
    return [c for c in (f"iso-{i}" for i in range(1000)) if partition_of(c, PARTITIONS) == first][:n]


def orjson_says(raw: bytes) -> str:
    """orjson's words for bytes that are not JSON: the message the intake gives invalid_json."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return str(e)
    raise AssertionError(raw)


async def test_an_event_nested_1023_deep_costs_its_neighbours_nothing(kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    await create_topics(load(env))
    events_topic = env["TTBRIDGE_TOPIC_EVENTS"]
    ids = click_ids_on_one_partition(6)
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"],
                       [{"click_id": c, "ttclid": f"E.C.P.{c}", "timestamp": NOW - 60} for c in ids],
                       key=lambda c: c["click_id"])
    # Valid conversions around two events 1,023 levels deep: one valid, one whose currency the
    # mapping refuses. Both pass the intake's decode (orjson reads up to 1,024 levels); wrapped in
    # anything (a JSON bundle: 3 levels) neither would parse again, nor would its neighbours.
    deep_sent = nested(purchase("deep-sent", ids[2]), 1023)
    deep_refused = nested(purchase("deep-refused", ids[4], currency="XBT"), 1023)
    for raw in (deep_sent, deep_refused):
        orjson.loads(raw)
        try:
            orjson.loads(b"[[" + raw + b"]]")
            raise AssertionError("two levels more should be over orjson's depth limit")
        except orjson.JSONDecodeError as e:
            assert str(e).startswith("depth limit exceeded")
    values = [purchase("valid-0", ids[0]), purchase("valid-1", ids[1]), deep_sent, purchase("valid-3", ids[3]),
              deep_refused, purchase("valid-5", ids[5])]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        # One key: one input partition, one producer batch, so one intake poll.
        await produce_json(kafka_bootstrap, events_topic, values, key="iso")

        async def all_accounted():
            s = await worker.stats()
            return len(fake.accepted) >= 5 and sum(s.get("dead_letters", {}).values()) >= 1
        await wait_for(all_accounted, 60, "five conversions sent and one dead-lettered")
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    sent = {a["event"]["event_id"]: a["event"]["user"] for a in fake.accepted}
    assert sorted(sent) == ["deep-sent", "valid-0", "valid-1", "valid-3", "valid-5"]
    assert sent["deep-sent"] == {"ttclid": f"E.C.P.{ids[2]}", "email": sha("deep-sent@example.com")}
    assert fake.stats()["rejections"] == {}
    dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 1)
    assert len(dead) == 1
    [refused] = dead
    assert {k: refused[k] for k in ("reason", "message", "stage", "attempts", "source", "pixel_code",
                                    "original", "original_base64")} == {
        "reason": "invalid_currency", "message": "properties.currency: 'XBT' is not an ISO-4217 code TikTok accepts",
        "stage": "map", "attempts": 0, "pixel_code": None,
        "source": {"topic": events_topic, "partition": partition_of("iso", PARTITIONS), "offset": 4},
        # Its own bytes, exactly: orjson could not have written this event again (254 levels at most).
        "original": deep_refused.decode(), "original_base64": False}
    assert stats["events_in"] == 6
    assert stats["dead_letters"] == {"invalid_currency": 1}


async def test_undecodable_messages_among_valid_ones_are_dead_lettered_alone(kafka_bootstrap, fake, stack_env,
                                                                            tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    await create_topics(load(env))
    events_topic = env["TTBRIDGE_TOPIC_EVENTS"]
    cut = b'{"type": "track", "event": "Order Completed", '  # a message cut short
    values = [orjson.dumps(purchase("hand-0", None)), cut, b'["Order Completed"]', orjson.dumps(purchase("hand-3", None)),
              b"\xff\xfe{}", orjson.dumps(purchase("hand-5", None))]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
        await producer.start()
        try:  # one partition, one producer batch: one intake poll
            for f in [await producer.send(events_topic, v, partition=3) for v in values]:
                await f
        finally:
            await producer.stop()

        async def all_accounted():
            s = await worker.stats()
            return len(fake.accepted) >= 3 and sum(s.get("dead_letters", {}).values()) >= 3
        await wait_for(all_accounted, 60, "three events sent and three dead-lettered")
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    sent = {a["event"]["event_id"]: a["event"]["user"] for a in fake.accepted}
    assert sent == {m: {"email": sha(f"{m}@example.com")} for m in ("hand-0", "hand-3", "hand-5")}
    dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 3)
    kept = sorted(({k: d[k] for k in ("reason", "message", "stage", "source", "original", "original_base64")}
                   for d in dead), key=lambda d: d["source"]["offset"])

    def source(offset: int) -> dict:
        return {"topic": events_topic, "partition": 3, "offset": offset}
    assert kept == [
        {"reason": "invalid_json", "message": orjson_says(cut), "stage": "decode",
         "source": source(1), "original": '{"type": "track", "event": "Order Completed", ', "original_base64": False},
        {"reason": "not_an_object", "message": "expected a JSON object, got list", "stage": "decode",
         "source": source(2), "original": '["Order Completed"]', "original_base64": False},
        {"reason": "invalid_json", "message": orjson_says(b"\xff\xfe{}"), "stage": "decode",
         "source": source(4), "original": "//57fQ==", "original_base64": True}]
    assert stats["dead_letters"] == {"invalid_json": 2, "not_an_object": 1}
