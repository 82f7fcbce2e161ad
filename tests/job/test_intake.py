"""The intake and the repartition topics on the real broker with a worker process: records
written before bundles are still forwarded, a malformed record is dead-lettered and the worker
goes on, the intake starts where the faust group left the input topics, and a bundle is
committed only when its last event has its outcome.

And the intake's decoding of one poll, without a broker (it is pure): an event at orjson's depth
limit is bundled with its own bytes among its neighbours, and an event of a batch too deep to be
written again is dead-lettered alone while its batch-mates are bundled."""
import asyncio
import time
from types import SimpleNamespace

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.bundles import events_value, partition_of
from app.job.intake import Intake
from app.job.metrics import Metrics
from app.job.records import dead_letter
from app.job.topics import create_topics
from app.mapping.events import events_of
from app.settings import load, mapping_configs
from tests.mapping.presets.test_mparticle import batch, commerce_event
from tests.support import PIXEL_A, TOKEN_A, read_all, wait_accepted, wait_for

NOW = time.time()


def purchase(message_id: str, click_id: str | None = None) -> dict:
    event = {"type": "track", "event": "Order Completed", "messageId": message_id, "timestamp": NOW - 30,
             "context": {"traits": {"email": f"{message_id}@example.com"}},
             "properties": {"value": 10, "currency": "EUR"}}
    if click_id:
        event["properties"]["click_id"] = click_id
    return event


async def test_malformed_repartition_records_cost_only_themselves(kafka_bootstrap, fake, stack_env, tmp_path):
    # Only ttbridge writes the repartition topics, but a bug or a hand-written record must not
    # stop the stream or cost its neighbours.
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    await create_topics(load(env))
    app_id = env["TTBRIDGE_APP_ID"]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        good = partition_of("bundle-c", 6)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(f"{app_id}-events-by-click-id", b"{not json", partition=0)
            # Not a bundle: an event where a bundle of events belongs.
            await producer.send_and_wait(f"{app_id}-events-by-click-id",
                                         orjson.dumps(purchase("not-a-bundle", "bundle-c")), partition=good)
            # A bundle of clicks with one broken entry: the other click is still stored.
            await producer.send_and_wait(f"{app_id}-clicks-by-click-id", orjson.dumps({"clicks": [
                ["only-one-item"], ["bundle-c", {"ttclid": "E.C.P.bundle", "clicked_at": NOW - 60}]]}),
                partition=good)
            # A bundle of events where one entry lacks its wait start: that one is dead-lettered
            # with its event and origin, the other is sent.
            source = {"topic": "events-x", "partition": 3, "offset": 77}
            await producer.send_and_wait(f"{app_id}-events-by-click-id", events_value([
                ({"click_id": "bundle-c", "at": NOW, "source": source}, orjson.dumps(purchase("bundle-1", "bundle-c"))),
                ({"click_id": "no-such-click", "source": source},
                 orjson.dumps(purchase("bundle-2", "no-such-click")))]),
                partition=good)
        finally:
            await producer.stop()
        # ... and the worker goes on: a new event through the intake joins the stored click.
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [purchase("after-1", "bundle-c")])
        await wait_accepted(fake, 2, "the two good events")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    users = {a["event"]["event_id"]: a["event"]["user"] for a in fake.accepted}
    assert sorted(users) == ["after-1", "bundle-1"]
    assert users["after-1"]["ttclid"] == users["bundle-1"]["ttclid"] == "E.C.P.bundle"
    dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 3)
    by_original = {d["original"]: d for d in dead}
    assert len(dead) == 3 and [(d["reason"], d["stage"]) for d in dead] == [("internal_error", "map")] * 3
    assert by_original["{not json"]["source"] == {"topic": f"{app_id}-events-by-click-id", "partition": 0,
                                                  "offset": 0}
    not_a_bundle = by_original[orjson.dumps(purchase("not-a-bundle", "bundle-c")).decode()]
    assert not_a_bundle["source"] == {"topic": f"{app_id}-events-by-click-id", "partition": good,
                                      "offset": 0 if good != 0 else 1}
    broken = by_original[orjson.dumps(purchase("bundle-2", "no-such-click")).decode()]
    assert broken["source"] == {"topic": "events-x", "partition": 3, "offset": 77}


async def test_a_bundle_is_committed_only_once_its_late_event_is_sent(kafka_bootstrap, fake, stack_env, tmp_path):
    # Two conversions on one partition, so one bundle: the first joins its click at once, the
    # second waits for a click that comes 5 s later. The bundle's offset must not be committed
    # while the second waits (a crash then would lose it), and must be once it is sent.
    config = tmp_path / "late.toml"
    config.write_text("[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 60\npartitions = 6\n")
    env = {**stack_env, "TTBRIDGE_CONFIG": str(config), "TIKTOK_API_URL": fake.base_url,
           "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A}
    await create_topics(load(env))
    app_id = env["TTBRIDGE_APP_ID"]
    first = "click-0"
    second = next(f"click-{i}" for i in range(1, 1000) if partition_of(f"click-{i}", 6) == partition_of(first, 6))
    tp = TopicPartition(f"{app_id}-events-by-click-id", partition_of(first, 6))
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"],
                       [{"click_id": first, "ttclid": "E.C.P.first", "timestamp": NOW - 60}])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"],
                           [purchase("joined-1", first), purchase("late-1", second)])

        async def first_sent():
            return len(fake.accepted) == 1
        await wait_for(first_sent, 30, "the joined conversion")
        await asyncio.sleep(5)  # faust commits acked offsets every 2.8 s
        assert await committed(kafka_bootstrap, app_id, tp) is None
        assert (await worker.stats())["pending"] == 1

        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"],
                           [{"click_id": second, "ttclid": "E.C.P.second", "timestamp": NOW}])

        async def bundle_committed():
            return await committed(kafka_bootstrap, app_id, tp) == 1
        await wait_for(bundle_committed, 30, "the bundle's commit")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    users = {a["event"]["event_id"]: a["event"]["user"]["ttclid"] for a in fake.accepted}
    assert users == {"joined-1": "E.C.P.first", "late-1": "E.C.P.second"}


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None and meta.offset >= 0 else None


# --------------------------------------------------------------------------- one poll, decoded

ENV = {"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": "token-1"}


def intake(**overrides) -> Intake:
    settings = load(ENV, **overrides)
    mappings = mapping_configs(settings)
    return Intake(settings, next(iter(mappings.values())), None, Metrics(), mappings)


def poll(*values: bytes, topic: str = "tracking-events", partition: int = 2) -> dict:
    """One poll of `values` from one partition, as AIOKafkaConsumer.getmany gives it."""
    return {TopicPartition(topic, partition): [SimpleNamespace(topic=topic, partition=partition, offset=i, value=v)
                                               for i, v in enumerate(values)]}


def nested(doc: dict, depth: int, at: bytes = b'"nest":0') -> bytes:
    """`doc`'s JSON with lists nested where `at` is, `depth` levels of them (orjson writes at
    most 254, so put together by hand)."""
    return orjson.dumps(doc).replace(at, at[:-1] + b"[" * depth + b"]" * depth)


def test_an_event_at_orjsons_depth_limit_is_bundled_with_its_own_bytes_among_its_neighbours():
    t = intake()
    values = [orjson.dumps(purchase("m-0", "c")),
              nested({**purchase("m-deep", "c"), "nest": 0}, 1022),  # the document: 1,023 levels
              orjson.dumps(purchase("m-2", "c"))]
    writes = t.decode(poll(*values), 1700000000.0)
    assert writes == [("events-by-click-id", None, events_value([
        ({"click_id": "c", "at": 1700000000.0, "source": {"topic": "tracking-events", "partition": 2, "offset": i}},
         raw) for i, raw in enumerate(values)]), partition_of("c", 6))]
    assert t.metrics.counts == {("events_in", ""): 3}


def test_a_batch_without_events_is_a_counted_skip_and_writes_nothing():
    t = intake(preset="mparticle")
    assert t.decode(poll(orjson.dumps(batch())), 1700000000.0) == []
    assert t.metrics.counts == {("events_in", ""): 1, ("events_skipped", "no_events"): 1}


def test_an_event_of_a_batch_too_deep_to_write_again_is_dead_lettered_alone():
    # mParticle's batches: each event is written again as JSON for its bundle. orjson reads 1,024
    # levels but writes 254: a deeper event is refused alone, its batch-mates go on (before, the
    # write failed the whole message while the events before it were bundled already).
    t = intake(preset="mparticle", partitions=1)  # one bundle (events without click ID take turns)
    mapping = t.mappings["tracking-events"]
    value = nested(batch(commerce_event(transaction="t-0"), commerce_event(nest=0), commerce_event(transaction="t-2")),
                   300)
    writes = t.decode(poll(value), 1700000000.0)
    first, _, last = events_of(orjson.loads(value), mapping)
    source = {"topic": "tracking-events", "partition": 2, "offset": 0}
    assert writes[:1] == [("events-by-click-id", None, events_value([
        ({"click_id": None, "at": 1700000000.0, "source": {**source, "index": 0}}, orjson.dumps(first)),
        ({"click_id": None, "at": 1700000000.0, "source": {**source, "index": 2}}, orjson.dumps(last))]), 0)]
    [(role, key, dead)] = writes[1:]
    assert (role, key) == ("dlq", b"tracking-events")
    # Its original is the whole message: a batch of this one event cannot be written either.
    assert orjson.loads(dead) == dead_letter(
        "invalid_event", "events[1]: cannot be written as JSON again (Recursion limit reached; orjson "
        "writes at most 254 levels of nesting)", "decode", 1700000000.0, source={**source, "index": 1},
        original=value)
    assert t.metrics.counts == {("events_in", ""): 3, ("dead_letters", "invalid_event"): 1}
