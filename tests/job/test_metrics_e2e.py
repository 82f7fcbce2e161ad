"""/metrics of real processes on the real broker and the fake Events API, parsed by prometheus_client:
a worker that sent events to two pixels, and `ttbridge retry-worker` serving and stopping alone."""
import asyncio
import os
import signal
import subprocess
import sys
import time
from importlib import metadata

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from app.devtools.kafka_local import free_port
from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.metrics import Metrics
from app.job.records import retry_record
from app.job.retrier import Retrier
from app.job.topics import create_topics
from app.settings import load
from app.tiktok.sender import Sender
from tests.support import PIXEL_A, PIXEL_B, TOKEN_A, TOKEN_B, wait_for


async def scrape(base: str) -> tuple[str, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    return text, {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples}


def by(samples: dict, name: str, label: str, **fixed) -> dict:
    """{value of `label`: sample value} of the samples of `name` whose other labels are `fixed`."""
    out = {}
    for (n, labels), v in samples.items():
        labels = dict(labels)
        if n == name and all(labels.get(k) == x for k, x in fixed.items()):
            out[labels.get(label)] = v
    return out


def order(i: int, now: float, **extra) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": f"m-{i}", "timestamp": now - 30,
            "context": {"traits": {"email": f"user{i}@example.com"}},
            "properties": {"click_id": f"c-{i}", "order_id": i, "value": 10, "currency": "EUR", **extra}}


async def test_a_workers_metrics_show_per_pixel_counts_match_quality_and_latency(
        kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    settings = load(env)
    await create_topics(settings)
    now = time.time()
    n = 12
    clicks = [{"click_id": f"c-{i}", "ttclid": f"E.C.P.{i}", "ttp": f"ttp{i}", "timestamp": now - 60,
               "ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (metrics)"} for i in range(n)]
    # Every third order goes to pixel B: A gets 8 joined orders, B 4.
    events = [order(i, now, **({"site": "shop-b"} if i % 3 == 0 else {})) for i in range(n)]
    # To A: a lead with a phone and no click ID, and an order whose click never comes (sent
    # without it after join_wait, with its email only).
    lead = {"type": "track", "event": "Lead Generated", "messageId": "lead-1", "timestamp": now - 10,
            "context": {"traits": {"phone": "+44 7700 900123"}}}
    clickless = order(99, now)
    unmapped = {"type": "track", "event": "Video Paused", "messageId": "u-1", "timestamp": now}
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], clicks, key=lambda c: c["click_id"])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [*events, lead, clickless, unmapped])
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], [b"{not json"])

        async def all_sent_and_caught_up():
            _, s = await scrape(worker.web)
            lag = by(s, "ttbridge_consumer_lag_records", "partition", group=f"{env['TTBRIDGE_APP_ID']}-intake",
                     topic=env["TTBRIDGE_TOPIC_EVENTS"])
            return (by(s, "ttbridge_events_sent_total", "pixel") == {PIXEL_A: 10, PIXEL_B: 4}
                    and s.get(("ttbridge_pending_late_events", ())) == 0
                    and len(lag) == 6 and sum(lag.values()) == 0)
        await wait_for(all_sent_and_caught_up, 60, "every event sent and the intake caught up")
        text, s = await scrape(worker.web)
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    assert len(fake.accepted) == 14
    assert TOKEN_A not in text and TOKEN_B not in text and "user1@example.com" not in text

    # Per pixel: sent, requests, nothing retried or refused; the junk is dead-lettered without one.
    assert by(s, "ttbridge_events_sent_total", "pixel") == {PIXEL_A: 10, PIXEL_B: 4}
    assert by(s, "ttbridge_events_retrying_total", "pixel") == {"": 0}
    assert by(s, "ttbridge_dead_letters_total", "reason") == {"invalid_json": 1}
    assert by(s, "ttbridge_dead_letters_total", "pixel") == {"": 1}
    assert by(s, "ttbridge_events_refused_total", "pixel") == {}
    assert by(s, "ttbridge_events_skipped_total", "reason") == {"unmapped": 1}
    assert s[("ttbridge_events_in_total", ())] == n + 4
    assert s[("ttbridge_events_joined_total", ())] == n and s[("ttbridge_events_waited_total", ())] == 1

    # Match quality: the identifiers of the accepted events, per pixel.
    assert by(s, "ttbridge_events_sent_with_identifier_total", "identifier", pixel=PIXEL_A) == {
        "ttclid": 8, "ttp": 8, "email": 9, "phone": 1, "ip_user_agent": 8}
    assert by(s, "ttbridge_events_sent_with_identifier_total", "identifier", pixel=PIXEL_B) == {
        "ttclid": 4, "ttp": 4, "email": 4, "ip_user_agent": 4}
    # The join rate: of the events with a click ID, per pixel, those that found it.
    assert by(s, "ttbridge_join_candidates_total", "pixel") == {PIXEL_A: 9, PIXEL_B: 4}
    assert by(s, "ttbridge_join_matched_total", "pixel") == {PIXEL_A: 8, PIXEL_B: 4}

    # Every request was answered code 0 and timed; each carried its events and their latency.
    requests = by(s, "ttbridge_requests_total", "pixel")
    assert set(requests) == {PIXEL_A, PIXEL_B} and sum(requests.values()) == fake.stats()["requests"]
    assert stats["requests"] == sum(requests.values())
    for pixel, sent in ((PIXEL_A, 10), (PIXEL_B, 4)):
        assert by(s, "ttbridge_api_responses_total", "code", pixel=pixel) == {"0": requests[pixel]}
        assert s[("ttbridge_request_duration_seconds_count", (("pixel", pixel),))] == requests[pixel]
        assert s[("ttbridge_request_duration_seconds_bucket", (("le", "+Inf"), ("pixel", pixel)))] == requests[pixel]
        assert 0 < s[("ttbridge_request_duration_seconds_sum", (("pixel", pixel),))] < 10 * requests[pixel]
        assert s[("ttbridge_request_events_count", (("pixel", pixel),))] == requests[pixel]
        assert s[("ttbridge_request_events_sum", (("pixel", pixel),))] == sent
        assert s[("ttbridge_ingest_to_accepted_seconds_count", (("pixel", pixel),))] == requests[pixel]
    # The click-less order waited join_wait (4 s) before it went: one request's oldest event.
    assert s[("ttbridge_ingest_to_accepted_seconds_bucket", (("le", "2.5"), ("pixel", PIXEL_A)))] \
        < requests[PIXEL_A]
    assert by(s, "ttbridge_requests_in_flight", "pixel") == {PIXEL_A: 0, PIXEL_B: 0}
    assert s[("ttbridge_broker_connected", ())] == 1
    assert s[("ttbridge_build_info", (("version", metadata.version("ttbridge")),))] == 1


async def test_the_retry_worker_serves_metrics_and_health_and_stops_cleanly_on_sigterm(
        kafka_bootstrap, unique, tmp_path):
    port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIKTOK_API_URL": "http://127.0.0.1:9/",
           "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A, "TTBRIDGE_APP_ID": f"rm{unique}",
           "TTBRIDGE_WEB_PORT": str(port), "TTBRIDGE_WEB_HOST": "127.0.0.1",
           "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}",
           "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}"}
    await create_topics(load(env))
    # Due in an hour: the first tier pauses on it, one record deep.
    now = time.time()
    body = {"event_source": "web", "event_source_id": PIXEL_A, "data": [{"event": "Purchase", "event_id": "later"}]}
    await produce_json(kafka_bootstrap, f"retry-{unique}", [retry_record(body, PIXEL_A, 1, now + 3600, now, {})],
                       key=PIXEL_A)
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "app", "retry-worker"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async def serving():
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                async with aiohttp.ClientSession() as s:
                    async with s.get(base + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        return r.status == 200 and await r.json() == {"status": "ok"}
            except (aiohttp.ClientError, OSError):
                return False
        await wait_for(serving, 30, "the retry worker's /healthz")

        async def ready():
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    page = await r.json()
                    assert (r.status == 200) == (page == {"ready": True}), (r.status, page)
                    return r.status == 200
        await wait_for(ready, 45, "the retry worker's /readyz")

        async def tier_depth():
            _, s = await scrape(base)
            return by(s, "ttbridge_consumer_lag_records", "partition", group=f"rm{unique}-retry-{unique}")
        await wait_for(lambda: _sum_is(tier_depth, 1), 45, "the first tier's depth")
        text, s = await scrape(base)
        assert sum(by(s, "ttbridge_consumer_lag_records", "partition", topic=f"retry-{unique}").values()) == 1
        assert sum(by(s, "ttbridge_consumer_lag_records", "partition", topic=f"retry-{unique}-2").values()) == 0
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert families["ttbridge_events_sent"] == "counter"
        assert families["ttbridge_request_duration_seconds"] == "histogram"
        assert s[("ttbridge_events_sent_total", (("pixel", ""),))] == 0
        assert s[("ttbridge_build_info", (("version", metadata.version("ttbridge")),))] == 1
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/stats") as r:
                assert r.status == 404  # the retry worker serves health and metrics only
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert out == ""  # no traceback, no error line


async def test_the_retry_workers_readiness_waits_for_every_tier_and_a_fetch_answer(kafka_bootstrap, unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIKTOK_API_URL": "http://127.0.0.1:9/",
           "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A, "TTBRIDGE_APP_ID": f"rr{unique}",
           "TTBRIDGE_TOPIC_RETRY": f"rr-retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"rr-dlq-{unique}",
           "TTBRIDGE_TOPIC_CLICKS": f"rr-clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"rr-events-{unique}"}
    settings = load(env)
    await create_topics(settings)
    sender = Sender(settings)
    retrier = Retrier(settings, sender, Metrics())
    tiers = ", ".join(retrier.topics)
    assert retrier.readiness() == (False, f"retry tier consumers not started: {tiers}")
    run = asyncio.ensure_future(retrier.run())
    try:
        async def ready():
            return retrier.readiness()[0]
        await wait_for(ready, 45, "every tier started and answered")
        # Fetch answers older than the bound (here: any) say the broker is not answering.
        assert retrier.readiness(silent_s=0) == (False, "no fetch answer from the broker for 0 s")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await sender.close()
    assert retrier.readiness() == (False, f"retry tier consumers not started: {tiers}")


async def _sum_is(read, n: int) -> bool:
    return sum((await read()).values()) == n
