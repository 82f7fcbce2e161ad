"""Two input topics, two shapes, one deployment: Segment web events on one topic and RedTrack
conversions on another, joined to the same clicks table and sent through the real broker to the
fake Events API, which accepts every event."""
import time
from datetime import datetime, timezone

from app.devtools.kafka_local import free_port
from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.topics import create_topics
from app.settings import load
from tests.support import PIXEL_A, TOKEN_A, read_all, sha, wait_for


async def test_segment_and_redtrack_inputs_both_reach_tiktok(kafka_bootstrap, fake, unique, tmp_path):
    web, redtrack = f"web-{unique}", f"redtrack-{unique}"
    own = tmp_path / "redtrack.toml"
    own.write_text('extends = "redtrack"\n[events]\n"conversion" = "Purchase"\n')
    config = tmp_path / "ttbridge.toml"
    config.write_text(f'[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 2\n\n'
                      f'[[inputs]]\ntopic = "{web}"\npreset = "segment"\n\n'
                      f'[[inputs]]\ntopic = "{redtrack}"\nmapping_file = "{own}"\n')
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_CONFIG": str(config),
           "TIKTOK_API_URL": fake.base_url, "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A,
           "TTBRIDGE_APP_ID": f"in{unique}", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
           "TTBRIDGE_WEB_PORT": str(free_port()), "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}",
           "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}"}
    settings = load(env)
    created = await create_topics(settings)
    assert any(line.startswith(web) for line in created) and any(line.startswith(redtrack) for line in created)
    now = time.time()
    n = 20
    clicks = [{"click_id": f"rt-{i}", "ttclid": f"E.C.P.rt{i}", "timestamp": now - 120, "ip": "203.0.113.7",
               "user_agent": "UA-click"} for i in range(n)]
    stamp = datetime.fromtimestamp(int(now) - 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    conversions = [{"id": f"conv-{i}", "clickid": f"rt-{i}", "created_at": stamp, "revenue_default": 10 + i,
                    "p_sub2": f"buyer{i}@example.com", **({"type": "Sale"} if i % 2 else {})} for i in range(n)]
    unknown_type = {"id": "conv-x", "clickid": "rt-0", "type": "Chargeback", "created_at": stamp}
    web_events = [{"type": "track", "event": "Signed Up", "messageId": f"web-{i}", "timestamp": now - 30,
                   "context": {"traits": {"email": f"visitor{i}@example.com"}}} for i in range(n)]
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], clicks, key=lambda c: c["click_id"])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, redtrack, [*conversions, unknown_type])
        await produce_json(kafka_bootstrap, web, web_events)

        async def all_sent():
            return fake.stats()["events_accepted"] >= 2 * n
        await wait_for(all_sent, 60, "both inputs' events to be accepted")
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    assert fake.stats()["rejections"] == {} and fake.stats()["duplicates"] == 0
    accepted = {a["event"]["event_id"]: a["event"] for a in fake.accepted}
    assert len(fake.accepted) == 2 * n
    for i in range(n):
        assert accepted[f"conv-{i}"] == {
            "event": "Purchase", "event_time": int(now) - 60, "event_id": f"conv-{i}",
            "user": {"email": sha(f"buyer{i}@example.com"), "ttclid": f"E.C.P.rt{i}", "ip": "203.0.113.7",
                     "user_agent": "UA-click"},
            "properties": {"value": 10 + i, "currency": "USD"}}
        assert accepted[f"web-{i}"] == {
            "event": "CompleteRegistration", "event_time": int(now) - 30, "event_id": f"web-{i}",
            "user": {"email": sha(f"visitor{i}@example.com")}}
    assert stats["events_in"] == 2 * n + 1 and stats["events_joined"] == n
    dead = await read_all(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], 1)
    assert [(d["reason"], d["source"]["topic"]) for d in dead] == [("unmapped_event", redtrack)]
