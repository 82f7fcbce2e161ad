"""The intake on the real broker with a worker process: a malformed record of the clicks table's
log costs only itself, and an input message is committed only once every event before it on
its partition has its outcome (a conversion waiting for its late click holds the commit back).

And the intake's decoding of one poll, without a broker (it is pure): an event at orjson's depth
limit joins the round with its own bytes among its neighbours, and an event of a batch too deep
to be written again is dead-lettered alone while its batch-mates go on."""
import asyncio
import time
from types import SimpleNamespace

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.bundles import partition_of
from app.job.intake import Intake
from app.job.metrics import Metrics
from app.job.records import dead_letter
from app.job.topics import create_topics
from app.mapping.events import events_of
from app.settings import load, mapping_configs
from tests.mapping.presets.test_mparticle import batch, commerce_event
from tests.support import PIXEL_A, TOKEN_A, wait_accepted, wait_for

NOW = time.time()


def purchase(message_id: str, click_id: str | None = None) -> dict:
    event = {"type": "track", "event": "Order Completed", "messageId": message_id, "timestamp": NOW - 30,
             "context": {"traits": {"email": f"{message_id}@example.com"}},
             "properties": {"value": 10, "currency": "EUR"}}
    if click_id:
        event["properties"]["click_id"] = click_id
    return event


async def test_a_malformed_clicks_record_costs_only_itself(kafka_bootstrap, fake, stack_env, tmp_path):
    # Only ttbridge writes the clicks table's log, but a bug or a hand-written record must not
    # stop the follower or cost its neighbours.
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    await create_topics(load(env))
    app_id = env["TTBRIDGE_APP_ID"]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            log_topic, p = f"{app_id}-clicks-by-click-id", partition_of("bundle-c", 6)
            await producer.send_and_wait(log_topic, b"{not json", partition=p)
            await producer.send_and_wait(log_topic, b'{"events": []}', partition=p)  # not a clicks bundle
            # A bundle of clicks with one broken entry: the other click is still stored.
            await producer.send_and_wait(log_topic, orjson.dumps({"clicks": [
                ["only-one-item"], ["bundle-c", {"ttclid": "E.C.P.bundle", "clicked_at": NOW - 60}]]}),
                partition=p)
        finally:
            await producer.stop()
        # ... and the worker goes on: an event through the intake joins the stored click.
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [purchase("after-1", "bundle-c")])
        await wait_accepted(fake, 1, "the event")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    [accepted] = fake.accepted
    assert accepted["event"]["event_id"] == "after-1"
    assert accepted["event"]["user"]["ttclid"] == "E.C.P.bundle"
    assert "ignoring a malformed record" in worker.log_tail() and "ignoring a malformed click" in worker.log_tail()


async def test_a_message_is_committed_only_once_the_late_event_before_it_is_sent(kafka_bootstrap, fake, stack_env,
                                                                                   tmp_path):
    # Two conversions on one partition of the input: the first waits for a click that comes
    # 5 s later, the second joins its click at once and is sent. Neither offset may be committed
    # while the first waits (a crash then would lose it); both must be once it is sent.
    config = tmp_path / "late.toml"
    config.write_text("[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 60\npartitions = 6\n")
    env = {**stack_env, "TTBRIDGE_CONFIG": str(config), "TIKTOK_API_URL": fake.base_url,
           "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A}
    await create_topics(load(env))
    app_id = env["TTBRIDGE_APP_ID"]
    tp = TopicPartition(env["TTBRIDGE_TOPIC_EVENTS"], 3)
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"],
                       [{"click_id": "click-0", "ttclid": "E.C.P.first", "timestamp": NOW - 60}])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for event in (purchase("late-1", "click-1"), purchase("joined-1", "click-0")):
                await producer.send_and_wait(tp.topic, orjson.dumps(event), partition=tp.partition)
        finally:
            await producer.stop()

        async def second_sent():
            return len(fake.accepted) == 1
        await wait_for(second_sent, 30, "the joined conversion")
        # Not committed is an absence: give the intake 2 s (it commits what is settled every second).
        await asyncio.sleep(2)
        assert await committed(kafka_bootstrap, f"{app_id}-intake", tp) is None
        assert (await worker.stats())["pending"] == 1

        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"],
                           [{"click_id": "click-1", "ttclid": "E.C.P.second", "timestamp": NOW}])

        async def both_committed():
            return await committed(kafka_bootstrap, f"{app_id}-intake", tp) == 2
        await wait_for(both_committed, 30, "the commit of both messages")
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
    return Intake(settings, next(iter(mappings.values())), None, Metrics(), None, mappings)


def poll(*values: bytes, topic: str = "tracking-events", partition: int = 2) -> dict:
    """One poll of `values` from one partition, as AIOKafkaConsumer.getmany gives it."""
    return {TopicPartition(topic, partition): [SimpleNamespace(topic=topic, partition=partition, offset=i, value=v)
                                               for i, v in enumerate(values)]}


def nested(doc: dict, depth: int, at: bytes = b'"nest":0') -> bytes:
    """`doc`'s JSON with lists nested where `at` is, `depth` levels of them (orjson writes at
    most 254, so put together by hand)."""
    return orjson.dumps(doc).replace(at, at[:-1] + b"[" * depth + b"]" * depth)


def test_an_event_at_orjsons_depth_limit_joins_the_round_with_its_own_bytes_among_its_neighbours():
    t = intake()
    values = [orjson.dumps(purchase("m-0", "c")),
              nested({**purchase("m-deep", "c"), "nest": 0}, 1022),  # the document: 1,023 levels
              orjson.dumps(purchase("m-2", "c"))]
    writes, tickets = t.decode(poll(*values), 1700000000.0)
    assert writes == []
    tp = TopicPartition("tracking-events", 2)
    assert [(k.tp, k.offset, k.open) for k in tickets] == [(tp, i, 2) for i in range(3)]  # the write, the event
    assert [ticket for ticket, _ in t._round] == tickets
    assert [{k: v for k, v in e.items() if k != "event"} for _, e in t._round] == [
        {"click_id": "c", "at": 1700000000.0, "source": {"topic": "tracking-events", "partition": 2, "offset": i},
         "raw": raw} for i, raw in enumerate(values)]
    assert [e["event"]["messageId"] for _, e in t._round] == ["m-0", "m-deep", "m-2"]
    assert t.metrics.counts == {("events_in", ""): 3}


def test_a_batch_without_events_is_a_counted_skip_and_holds_only_its_write():
    t = intake(preset="mparticle")
    writes, [ticket] = t.decode(poll(orjson.dumps(batch())), 1700000000.0)
    assert writes == [] and t._round == [] and ticket.open == 1
    assert t.metrics.counts == {("events_in", ""): 1, ("events_skipped", "no_events"): 1}


def test_landing_pages_are_bundled_per_partition_and_their_messages_hold_the_write_and_the_event():
    # The clicks topic is not the intake's (every worker's clicks table reads it): the clicks it
    # writes are those its tracking events carry, a landing page with ttclid in its URL.
    t = intake()
    events = [purchase(f"m-{i}", f"c-{i}") for i in range(3)]
    for i, e in enumerate(events):
        e["context"]["page"] = {"url": f"https://shop.example/?ttclid=E.C.P.{i}"}
    assert "clicks" not in t.topics
    writes, tickets = t.decode(poll(*map(orjson.dumps, events)), 1700000010.0)
    by_partition: dict = {}
    for i, e in enumerate(events):
        by_partition.setdefault(partition_of(f"c-{i}", 6), []).append(
            [f"c-{i}", {"ttclid": f"E.C.P.{i}", "url": e["context"]["page"]["url"], "clicked_at": NOW - 30}])
    assert sorted(writes, key=lambda w: w[3]) == [
        ("clicks-by-click-id", None, orjson.dumps({"clicks": items}), p) for p, items in sorted(by_partition.items())]
    assert [k.open for k in tickets] == [2, 2, 2] and [ticket for ticket, _ in t._round] == tickets
    assert t.metrics.counts == {("events_in", ""): 3, ("landing_clicks", ""): 3}
    for k in tickets:
        k.settle()  # the bundles are durable; the events are not sent yet
    assert t.offsets.committable() == {}


def test_an_event_of_a_batch_too_deep_to_write_again_is_dead_lettered_alone():
    # mParticle's batches: each event is written again as JSON (for its dead letter, should it
    # get one). orjson reads 1,024 levels but writes 254: a deeper event is refused alone, its
    # batch-mates go on (before, the write failed the whole message).
    t = intake(preset="mparticle")
    mapping = t.mappings["tracking-events"]
    value = nested(batch(commerce_event(transaction="t-0"), commerce_event(nest=0), commerce_event(transaction="t-2")),
                   300)
    writes, [ticket] = t.decode(poll(value), 1700000000.0)
    first, _, last = events_of(orjson.loads(value), mapping)
    source = {"topic": "tracking-events", "partition": 2, "offset": 0}
    assert t._round == [
        (ticket, {"click_id": None, "at": 1700000000.0, "source": {**source, "index": 0}, "event": first,
                  "raw": orjson.dumps(first)}),
        (ticket, {"click_id": None, "at": 1700000000.0, "source": {**source, "index": 2}, "event": last,
                  "raw": orjson.dumps(last)})]
    assert ticket.open == 3  # the write and the two events
    [(role, key, dead)] = writes
    assert (role, key) == ("dlq", b"tracking-events")
    # Its original is the whole message: a batch of this one event cannot be written either.
    assert orjson.loads(dead) == dead_letter(
        "invalid_event", "events[1]: cannot be written as JSON again (Recursion limit reached; orjson "
        "writes at most 254 levels of nesting)", "decode", 1700000000.0, source={**source, "index": 1},
        original=value)
    assert t.metrics.counts == {("events_in", ""): 3, ("dead_letters", "invalid_event"): 1}


async def test_a_revoked_partition_is_committed_then_forgotten_and_its_waiting_events_dropped():
    # Its next owner re-reads what was not committed; events of it not yet handed over must not
    # be sent from here too. The partitions that stay keep theirs.
    t = intake()
    kept, gone = TopicPartition("tracking-events", 1), TopicPartition("tracking-events", 2)
    polled = {**poll(orjson.dumps(purchase("m-1", "c")), partition=1),
              **poll(orjson.dumps(purchase("m-2", "c")), orjson.dumps(purchase("m-3", "c")), partition=2)}
    _, tickets = t.decode(polled, 1700000000.0)
    for k in tickets:
        k.settle()  # the poll's writes are durable; the events are still in the round
    tickets[1].settle()  # m-2 (offset 0 of partition 2) has its outcome

    class Consumer:
        commits: list = []

        def assignment(self):
            return {kept, gone}

        async def commit(self, offsets):
            self.commits.append({tp: o.offset for tp, o in offsets.items()})

    consumer = Consumer()
    await t.revoked(consumer, [gone])
    assert consumer.commits == [{gone: 1}]  # m-2 settled: its partition is committed up to it
    assert [e["event"]["messageId"] for _, e in t._round] == ["m-1"]
    assert t.offsets.committable() == {}  # the gone partition forgotten, the kept one still open
