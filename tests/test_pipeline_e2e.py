"""End to end on the real broker and the fake Events API: a worker process, RocksDB tables, six
partitions, two pixels. Every produced event is accounted for: sent + skipped + dead-lettered."""
import time

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.topics import create_topics
from app.settings import load
from tests.support import PIXEL_A, PIXEL_B, TOKEN_A, read_all, sha, wait_for


def order(i: int, now: float, **extra) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": f"m-{i}", "timestamp": now - 30,
            "context": {"traits": {"email": f" User{i}@Example.com "}},
            "properties": {"click_id": f"c-{i}", "order_id": i, "value": "19.90", "currency": "eur",
                           "products": [{"product_id": 1000 + i, "price": 19.9, "quantity": 1}], **extra}}


async def test_produced_events_are_all_accounted_for(kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    settings = load(env)
    await create_topics(settings)
    now = time.time()
    n = 300
    clicks = [{"click_id": f"c-{i}", "ttclid": f"E.C.P.click{i}", "ttp": f"ttp{i}", "timestamp": now - 60,
               "ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (e2e)"} for i in range(n)]
    # The first n orders join clicks; every third one goes to shop B's pixel.
    events = [order(i, now, **({"site": "shop-b"} if i % 3 == 0 else {})) for i in range(n)]
    late = [order(n + i, now) for i in range(3)]            # their clicks arrive 1 s later
    late_clicks = [{"click_id": f"c-{n + i}", "ttclid": f"E.C.P.late{i}", "timestamp": now - 5} for i in range(3)]
    landing = {"type": "page", "name": "Landing", "messageId": "landing-1", "timestamp": now - 20,
               "context": {"page": {"url": "https://shop.example/?ttclid=E.C.P.fromurl"}, "ip": "198.51.100.1",
                           "userAgent": "UA-landing"}, "properties": {"click_id": "c-landing"}}
    after_landing = {"type": "track", "event": "Signed Up", "messageId": "signup-1", "timestamp": now - 10,
                     "properties": {"click_id": "c-landing"}}
    no_click_id = {"type": "track", "event": "Lead Generated", "messageId": "lead-1", "timestamp": now - 10,
                   "context": {"traits": {"phone": "+44 7700 900123"}}}
    never_clicked = {"type": "track", "event": "Order Completed", "messageId": "orphan-1", "timestamp": now - 10,
                     "properties": {"click_id": "c-never", "value": 5, "currency": "USD"}}
    unmapped = [{"type": "track", "event": "Video Paused", "messageId": f"u-{i}", "timestamp": now} for i in range(4)]
    bad = [b"{not json", b"[1, 2]", orjson.dumps({"type": "track", "timestamp": now}),
           orjson.dumps({**order(9999, now), "properties": {"click_id": "c-1", "value": 5, "currency": "XBT"}})]

    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], clicks, key=lambda c: c["click_id"])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"],
                           [landing, *events, *late, after_landing, no_click_id, never_clicked, *unmapped, *bad])

        async def late_ones_waiting():  # the three late orders and the never-clicked one
            return (await worker.stats()).get("pending", 0) >= 4
        await wait_for(late_ones_waiting, 30, "the late orders to wait for their clicks")
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], late_clicks)
        expected_sent = n + 3 + 2  # joined orders, late ones, after-landing sign-up, lead without click id

        async def all_accounted():
            s = await worker.stats()
            return (fake.stats()["events_accepted"] >= expected_sent and s.get("pending") == 0
                    and sum(s.get("dead_letters", {}).values()) >= 5)
        await wait_for(all_accounted, 60, "every event to be sent or dead-lettered")
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    accepted = {(a["event"]["event_id"], a["event"]["event"]): a for a in fake.accepted}
    assert len(fake.accepted) == expected_sent and len(accepted) == expected_sent
    assert fake.stats()["duplicates"] == 0
    assert fake.stats()["rejections"] == {}  # never a 40002, never more than 1000 per request

    # Joined: ttclid and ttp come from the click, PII hashed, contents typed, routed per pixel.
    for i in range(n):
        a = accepted[(f"m-{i}", "Purchase")]
        assert a["pixel_code"] == (PIXEL_B if i % 3 == 0 else PIXEL_A)
        assert a["test_event_code"] == ("TEST777" if i % 3 == 0 else None)
        assert a["event"]["user"] == {"ttclid": f"E.C.P.click{i}", "ttp": f"ttp{i}",
                                      "email": sha(f"user{i}@example.com"), "ip": "203.0.113.9",
                                      "user_agent": "Mozilla/5.0 (e2e)"}
        assert a["event"]["properties"] == {"contents": [{"content_id": str(1000 + i), "price": 19.9, "quantity": 1}],
                                            "value": 19.9, "currency": "EUR", "num_items": 1, "order_id": str(i)}
        assert a["event"]["event_time"] == int(now - 30)
    for i in range(3):  # waited for their click, then joined
        assert accepted[(f"m-{n + i}", "Purchase")]["event"]["user"]["ttclid"] == f"E.C.P.late{i}"
    signup = accepted[("signup-1", "CompleteRegistration")]["event"]["user"]
    assert signup == {"ttclid": "E.C.P.fromurl", "ip": "198.51.100.1", "user_agent": "UA-landing"}
    lead = accepted[("lead-1", "Lead")]["event"]["user"]
    assert lead == {"phone": sha("+447700900123")}

    dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 5)
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == ["invalid_currency", "invalid_json", "missing_event_name", "no_identifier", "not_an_object"]
    by_reason = {d["reason"]: d for d in dead}
    assert by_reason["invalid_json"]["original"] == "{not json"
    assert by_reason["invalid_json"]["source"]["topic"] == env["TTBRIDGE_TOPIC_EVENTS"]
    assert "c-never" in by_reason["no_identifier"]["message"]

    produced = 1 + n + 3 + 1 + 1 + 1 + len(unmapped) + len(bad)
    # The landing page view is recorded as a click, and skipped as a page call, not a conversion.
    assert stats["events_skipped"] == {"unmapped": len(unmapped), "not_a_conversion": 1}
    skipped = len(unmapped) + 1
    assert stats["events_in"] == produced
    assert len(fake.accepted) + skipped + len(dead) == produced
    assert await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_RETRY"], 0, timeout=1) == []

    # The clicks table's log (clicks-by-click-id) keeps clicks for the attribution window (7 days).
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{env['TTBRIDGE_APP_ID']}-clicks-by-click-id")])
        entries = {e[0]: e[1] for e in response.resources[0][4]}
    finally:
        await admin.close()
    assert entries["cleanup.policy"] == "delete"
    assert entries["retention.ms"] == str(7 * 86400 * 1000)


async def test_expired_clicks_are_swept_from_the_table(kafka_bootstrap, fake, stack_env, tmp_path):
    config = tmp_path / "sweep.toml"
    # A 60 s attribution window, swept every second.
    config.write_text("[ttbridge]\nattribution_window_days = 0.000694\nsweep_interval_s = 1\n"
                      "batch_window_s = 0.2\njoin_wait_s = 1\n")
    env = {**stack_env, "TTBRIDGE_CONFIG": str(config), "TIKTOK_API_URL": fake.base_url,
           "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A}
    await create_topics(load(env))
    now = time.time()
    clicks = [{"click_id": "old-1", "ttclid": "E.C.P.old1", "timestamp": now - 3600},
              {"click_id": "old-2", "ttclid": "E.C.P.old2", "timestamp": now - 600},
              {"click_id": "fresh", "ttclid": "E.C.P.fresh", "timestamp": now}]
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], clicks, key=lambda c: c["click_id"])
    worker = WorkerProcess(env, tmp_path / "sweep.log")
    worker.start()
    try:
        await worker.wait_ready()

        async def swept():
            return (await worker.stats()).get("clicks_expired", 0) >= 2
        await wait_for(swept, 30, "the sweep")
        sweeps = (await worker.stats())["click_sweeps"]

        async def swept_twice_more():
            return (await worker.stats())["click_sweeps"] >= sweeps + 2
        await wait_for(swept_twice_more, 30, "two more sweeps")
        # Deleted clicks are not swept again; the fresh one stays.
        assert (await worker.stats())["clicks_expired"] == 2
        # The fresh click still joins.
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [
            {"type": "track", "event": "Signed Up", "messageId": "s-fresh", "timestamp": now,
             "properties": {"click_id": "fresh"}}])

        async def sent():
            return len(fake.accepted) == 1
        await wait_for(sent, 30, "the fresh click's conversion")
    finally:
        assert worker.stop() == 0
    assert fake.accepted[0]["event"]["user"] == {"ttclid": "E.C.P.fresh"}
