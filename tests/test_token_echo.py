"""An Events API that echoes the access token back, in every form the fake knows: a real worker
on the real broker keeps what each answer said, without the token, and the token appears in no
record of any topic the worker wrote, in no line of its log and on none of its pages."""
from __future__ import annotations

import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from app.devtools.fake_tiktok import ECHO_FORMS, FakeConfig, FakeTikTok
from app.devtools.kafka_local import free_port
from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.topics import create_topics
from app.settings import load
from app.tiktok.facts import TRACK_PATH
from tests.support import read_all, wait_for

PIXEL = "ECHOPIXEL0000000001"
PER_FORM = 3
# What the worker keeps of each answer (retry records' last_error), the token in it redacted.
# The last form holds its events (a token refusal); the others are retried until exhausted.
KEPT = {
    "html_502": {"reason": "transport_error", "code": None, "http_status": 502, "message": (
        f"HTTP 502: <html><body><h1>502 Bad Gateway</h1><pre>POST {TRACK_PATH}\nAccess-Token: ***\n"
        "Content-Type: application/json</pre></body></html>")},
    "json_500": {"reason": "server_error", "code": 50000, "http_status": 200,
                 "message": "Internal error ***, please try again later."},
    "reason_phrase": {"reason": "transport_error", "code": None, "http_status": 502,
                      "message": "HTTP 502: <html><body><h1>502 Bad Gateway</h1></body></html>"},
    "status_line": {"reason": "transport_error", "code": None, "http_status": None, "message": (
        "ClientResponseError: 400, message=\"Bad status line:\\n  Invalid status code:\\n\\n  "
        "b'HTTP/1.1 5O2 ***'\\n              ^\", url='{url}'")},
    "plain_text": {"reason": "transport_error", "code": None, "http_status": 200,
                   "message": "unreadable response: upstream refused the request\nAccess-Token: ***\n"},
    "json_401": {"reason": "token_invalid", "code": 40105, "http_status": 200,
                 "message": "Access token is invalid (Access-Token: ***)"},
}
HELD = "json_401"


@pytest.fixture
async def echoing(unique):
    token = f"tok-SECRET-{unique}-0123456789abcdef"
    fake = FakeTikTok(FakeConfig(tokens={token: frozenset({PIXEL})}))
    fake.base_url = await fake.start("127.0.0.1", 0)
    fake.token = token
    yield fake
    await fake.stop()


def worker_env(bootstrap: str, unique: str, tmp_path, fake) -> dict[str, str]:
    config = tmp_path / "ttbridge.toml"
    config.write_text("[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 1\nretry_tiers_s = [0.3, 0.3]\n")
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TIKTOK_API_URL": fake.base_url,
            "TIKTOK_ACCESS_TOKEN": fake.token, "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(config),
            "TTBRIDGE_APP_ID": f"echo{unique}", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
            "TTBRIDGE_WEB_PORT": str(free_port()),
            "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}",
            "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}"}


def conversions(form: str, now: float) -> tuple[list[dict], list[dict]]:
    """PER_FORM clicks and the conversions that join them (through the clicks table's log)."""
    clicks = [{"click_id": f"{form}-c{i}", "ttclid": f"E.C.P.{form}{i}", "timestamp": now - 60}
              for i in range(PER_FORM)]
    events = [{"type": "track", "event": "Order Completed", "messageId": f"{form}-{i}", "timestamp": now - 10,
               "userId": f"user-{i}", "properties": {"click_id": f"{form}-c{i}", "order_id": str(i),
                                                     "value": 10 + i, "currency": "USD"}}
              for i in range(PER_FORM)]
    return clicks, events


def ids_of(form: str) -> set[str]:
    return {f"{form}-{i}" for i in range(PER_FORM)}


async def records_of_topics(bootstrap: str, unique: str) -> dict[str, list]:
    """Every record (key, value, headers) of every topic whose name holds `unique`: the inputs,
    the retry tiers, the DLQ, the join's topics and faust's leader topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if unique in t)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out: dict[str, list] = {t: [] for t in topics}
    try:
        empty_polls = 0
        while empty_polls < 4:
            batch = await consumer.getmany(timeout_ms=500)
            got = [m for msgs in batch.values() for m in msgs]
            for m in got:
                out[m.topic].append((m.key, m.value, m.headers))
            empty_polls = 0 if got else empty_polls + 1
    finally:
        await consumer.stop()
    return out


async def page(worker: WorkerProcess, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(worker.web + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.text()


async def test_a_token_echoed_back_in_every_form_lands_nowhere(kafka_bootstrap, unique, tmp_path, echoing):
    fake, token = echoing, echoing.token
    env = worker_env(kafka_bootstrap, unique, tmp_path, fake)
    settings = load(env)
    await create_topics(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log", loglevel="info")
    worker.start()
    dlq, tiers = env["TTBRIDGE_TOPIC_DLQ"], [env["TTBRIDGE_TOPIC_RETRY"], f"{env['TTBRIDGE_TOPIC_RETRY']}-2"]
    exhausted = [f for f in ECHO_FORMS if f != HELD]
    try:
        await worker.wait_ready()
        # One form at a time (the fake echoes in one form to every request): the retried forms
        # first, each until its events are dead-lettered, then the held one.
        for form in [*exhausted, HELD]:
            fake.config.echo_token = form
            clicks, events = conversions(form, time.time())
            await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_CLICKS"], clicks, key=lambda c: c["click_id"])
            await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], events)
            if form == HELD:
                async def held_on_the_last_tier():
                    records = await read_all(kafka_bootstrap, tiers[1], 1, timeout=2)
                    return {e["event_id"] for r in records if r["last_error"]["reason"] == "token_invalid"
                            for e in r["request"]["data"]} >= ids_of(form)
                await wait_for(held_on_the_last_tier, 60, f"{form}: the events held on the last tier")
            else:
                async def dead_lettered():
                    records = await read_all(kafka_bootstrap, dlq, 1, timeout=2)
                    return {e["event_id"] for r in records for e in r["request"]["data"]} >= ids_of(form)
                await wait_for(dead_lettered, 60, f"{form}: the events to be dead-lettered")
        # The operator fixes what the API complained about: the held events go out.
        fake.config.echo_token = None

        async def held_ones_delivered():
            return {a["event"]["event_id"] for a in fake.accepted} >= ids_of(HELD)
        await wait_for(held_ones_delivered, 60, "the held events to be delivered")
        pages = {path: await page(worker, path) for path in ("/metrics", "/stats", "/readyz", "/healthz")}
    finally:
        assert worker.stop() == 0, worker.log_tail()

    url = settings.track_url
    kept = {form: {**info, "message": info["message"].replace("{url}", url)} for form, info in KEPT.items()}
    by_error = {orjson.dumps(info): form for form, info in kept.items()}

    # What was kept: each form's answer, exactly, on both tiers; the exhausted ones in the DLQ.
    for tier in tiers:
        records = await read_all(kafka_bootstrap, tier, 1, timeout=2)
        forms = {by_error.get(orjson.dumps(r["last_error"]), repr(r["last_error"])) for r in records}
        assert forms == set(ECHO_FORMS), tier
    dead = await read_all(kafka_bootstrap, dlq, 1, timeout=2)
    for d in dead:
        form = d["request"]["data"][0]["event_id"].rsplit("-", 1)[0]
        answer = kept[form]
        expected = {"reason": "retries_exhausted", "stage": "retry", "attempts": 3, "pixel_code": PIXEL,
                    "message": f"{answer['reason']}: {answer['message']}"}
        if answer["code"] is not None:
            expected["code"] = answer["code"]
        assert {k: d.get(k) for k in expected} == expected
        assert {e["event_id"].rsplit("-", 1)[0] for e in d["request"]["data"]} == {form}
    assert {e["event_id"] for d in dead for e in d["request"]["data"]} == set().union(*map(ids_of, exhausted))
    assert {a["event"]["event_id"] for a in fake.accepted} == ids_of(HELD)

    # The token itself: in no record of any topic the worker wrote, in no log line, on no page.
    secret = token.encode()
    written = await records_of_topics(kafka_bootstrap, unique)
    assert {env["TTBRIDGE_TOPIC_DLQ"], *tiers} <= {t for t, records in written.items() if records}
    leaks = [(t, raw) for t, records in written.items() for key, value, headers in records
             for raw in (key or b"", value or b"", *(v for _, v in headers)) if secret in raw]
    assert leaks == []
    log = worker.log_tail(10**7)
    assert "refuses the access token (code 40105)" in log  # the held form was logged, loudly
    assert token not in log
    assert {path: status for path, (status, _) in pages.items()} == {
        "/metrics": 200, "/stats": 200, "/readyz": 200, "/healthz": 200}
    exhausted = [sample.value for family in text_string_to_metric_families(pages["/metrics"][1])
                 for sample in family.samples if sample.name == "ttbridge_dead_letters_total"
                 and sample.labels.get("reason") == "retries_exhausted"]
    assert sum(exhausted) == len(dead)
    assert all(token not in text for _, text in pages.values())
