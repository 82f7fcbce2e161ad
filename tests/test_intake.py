"""The intake and the repartition topics across an upgrade, on the real broker with a worker
process: records written before bundles are still forwarded, a malformed record is dead-lettered
and the worker goes on, and the intake starts where the faust group left the input topics."""
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.settings import load
from app.stack import WorkerProcess, produce_json
from app.topics import create_topics
from tests.test_pipeline_e2e import PIXEL_A, fake, read_all, stack_env, wait_for  # noqa: F401 - fixtures

NOW = time.time()


def purchase(message_id: str, click_id: str | None = None) -> dict:
    event = {"type": "track", "event": "Order Completed", "messageId": message_id, "timestamp": NOW - 30,
             "context": {"traits": {"email": f"{message_id}@example.com"}},
             "properties": {"value": 10, "currency": "EUR"}}
    if click_id:
        event["properties"]["click_id"] = click_id
    return event


async def test_records_from_before_bundles_and_a_malformed_one(kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    await create_topics(load(env))
    app_id = env["TTBRIDGE_APP_ID"]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        # What the previous version left: one click and one event per record, keyed by click ID.
        await produce_json(kafka_bootstrap, f"{app_id}-clicks-by-click-id",
                           [{"ttclid": "E.C.P.legacy", "clicked_at": NOW - 60}], key="legacy-c")
        await produce_json(kafka_bootstrap, f"{app_id}-events-by-click-id",
                           [purchase("legacy-1", "legacy-c")], key="legacy-c")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(f"{app_id}-events-by-click-id", b"{not json",
                                         headers=[("ttbridge-bundle", b"1")], partition=0)
        finally:
            await producer.stop()
        # ... and the worker goes on: a new event through the intake joins the legacy click.
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [purchase("after-1", "legacy-c")])

        async def both_sent():
            return len(fake.accepted) >= 2
        await wait_for(both_sent, 30, "both events")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    users = {a["event"]["event_id"]: a["event"]["user"] for a in fake.accepted}
    assert sorted(users) == ["after-1", "legacy-1"]
    assert all(u["ttclid"] == "E.C.P.legacy" for u in users.values())
    [dead] = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 1)
    assert (dead["reason"], dead["stage"], dead["original"]) == ("internal_error", "map", "{not json")
    assert dead["source"] == {"topic": f"{app_id}-events-by-click-id", "partition": 0, "offset": 0}


async def test_the_intake_starts_where_the_faust_group_left_off(kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    await create_topics(load(env))
    topic = env["TTBRIDGE_TOPIC_EVENTS"]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, orjson.dumps(purchase(f"e{i}")), partition=0)
    finally:
        await producer.stop()
    # The version before the intake read this topic in the faust group and got past e0 and e1.
    tp = TopicPartition(topic, 0)
    old = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=env["TTBRIDGE_APP_ID"],
                           enable_auto_commit=False)
    await old.start()
    try:
        old.assign([tp])
        await old.commit({tp: 2})
    finally:
        await old.stop()

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()

        async def two_sent():
            return len(fake.accepted) >= 2
        await wait_for(two_sent, 30, "e2 and e3")
        await produce_json(kafka_bootstrap, topic, [purchase("e4")])  # later events flow as usual

        async def three_sent():
            return len(fake.accepted) >= 3
        await wait_for(three_sent, 30, "e4")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert sorted(a["event"]["event_id"] for a in fake.accepted) == ["e2", "e3", "e4"]
    assert (fake.stats()["events_accepted"], fake.stats()["duplicates"]) == (3, 0)
