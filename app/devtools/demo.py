"""`ttbridge demo`: the whole pipeline on this machine in about a minute, then everything stops.

A real Kafka broker, the fake Events API, the topics and a worker process; a realistic sample of
clicks and conversions (one whose click arrives late, a landing page with ttclid in its URL,
pre-hashed and raw emails, a phone without country code, an unmapped event, a malformed
message); a summary once every event is accounted for, and one request body as TikTok got it.
"""
from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import orjson

__all__ = ["register", "sample"]

TOKEN = "demo-token"
PIXEL = "DEMOPIXEL0000000000"


def sample(now: float) -> tuple[list[dict], list, list[dict]]:
    """(clicks produced first, events, clicks produced late)."""
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
    clicks = [{"click_id": f"clk_{i:03}", "ttclid": f"E.C.P.demo{i:03}", "ttp": f"2F7h37YkS1j57AYSKTI7IH{i:05}",
               "timestamp": now - 3600 + i, "ip": f"203.0.113.{i}", "user_agent": ua,
               "url": f"https://shop.example/landing?utm_source=tiktok&ttclid=E.C.P.demo{i:03}"}
              for i in range(1, 9)]
    prehashed = hashlib.sha256(b"bob@example.com").hexdigest().upper()

    def order(i: int, **traits) -> dict:
        return {"type": "track", "event": "Order Completed", "messageId": f"order-msg-{i}",
                "timestamp": now - 60 + i, "userId": f"user_{i}",
                "context": {"locale": "en-US", "traits": traits,
                            "page": {"url": "https://shop.example/checkout/thanks"}},
                "properties": {"click_id": f"clk_{i:03}", "order_id": f"98{i:03}", "value": "46.00",
                               "currency": "usd", "products": [
                                   {"product_id": 1077218, "name": "Socks", "category": "apparel",
                                    "price": 8, "quantity": 2},
                                   {"sku": "DRESS-30", "name": "Dress", "price": "30.00", "quantity": 1}]}}

    events = [
        order(1, email=" ALICE_abc@gmail.com "),                      # raw email: normalised + hashed
        order(2, email=prehashed),                                   # already hashed: passed through
        order(3, phone="(213) 373-4253"),                            # no country code: default region US
        {"type": "track", "event": "Product Added", "messageId": "cart-4", "timestamp": now - 50,
         "properties": {"click_id": "clk_004", "product_id": "SKU-4", "price": 12.5, "quantity": 1, "currency": "USD"}},
        {"type": "track", "event": "Checkout Started", "messageId": "checkout-5", "timestamp": now - 40,
         "properties": {"click_id": "clk_005", "value": 99, "currency": "EUR"}},
        # A landing page view carrying ttclid in its URL is recorded as a click; then a sign-up joins it.
        {"type": "page", "name": "Landing", "messageId": "landing-20", "timestamp": now - 30,
         "context": {"ip": "198.51.100.20", "userAgent": ua,
                     "page": {"url": "https://shop.example/?ttclid=E.C.P.fromlanding020"}},
         "properties": {"click_id": "clk_020"}},
        {"type": "track", "event": "Signed Up", "messageId": "signup-20", "timestamp": now - 20,
         "userId": "user_20", "properties": {"click_id": "clk_020"}},
        # Its click arrives a few seconds after it: the conversion waits and is re-joined.
        order(30, email="late@example.com"),
        {"type": "track", "event": "Video Paused", "messageId": "video-1", "timestamp": now - 10,
         "properties": {"click_id": "clk_001"}},                      # unmapped: skipped, counted
        b'{"type": "track", "event": "Order Completed", "properties": {',  # malformed: dead-lettered
        {"type": "track", "event": "Order Completed", "messageId": "bad-currency", "timestamp": now - 5,
         "properties": {"click_id": "clk_006", "value": 10, "currency": "BTC"}},  # refused: reason
    ]
    late = [{"click_id": "clk_030", "ttclid": "E.C.P.late030", "timestamp": now - 70, "ip": "203.0.113.30",
             "user_agent": ua}]
    return clicks, events, late


async def run(workdir: Path, out=sys.stdout) -> int:
    from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
    from app.devtools.kafka_local import Broker, free_port
    from app.devtools.worker_process import WorkerProcess, produce_json
    from app.job.topics import create_topics
    from app.settings import load

    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    broker = Broker(workdir / "kafka", free_port())
    fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, record_path=str(workdir / "tiktok.jsonl")))
    worker = None
    try:
        say("starting Apache Kafka 3.9.1 (first run fetches the jars with Maven) ...")
        bootstrap = await asyncio.to_thread(broker.start)
        base = await fake.start("127.0.0.1", 0)
        say(f"broker {bootstrap}, fake TikTok Events API {base}")
        config = workdir / "ttbridge.toml"
        config.write_text('[ttbridge]\nbatch_window_s = 0.5\njoin_wait_s = 5\ndefault_region = "US"\n')
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TIKTOK_API_URL": base, "TIKTOK_ACCESS_TOKEN": TOKEN,
               "TIKTOK_PIXEL_CODE": PIXEL, "TTBRIDGE_CONFIG": str(config),
               "TTBRIDGE_DATA_DIR": str(workdir / "state"), "TTBRIDGE_WEB_PORT": str(free_port())}
        settings = load(env)
        for line in await create_topics(settings):
            say(f"  topic {line}")
        worker = WorkerProcess(env, workdir / "worker.log")
        worker.start()
        await worker.wait_ready()
        say("worker ready; producing the sample ...")
        clicks, events, late = sample(time.time())
        await produce_json(bootstrap, settings.topic_clicks, clicks, key=lambda c: c["click_id"])
        await produce_json(bootstrap, settings.topic_events, events)
        await asyncio.sleep(2)
        await produce_json(bootstrap, settings.topic_clicks, late, key=lambda c: c["click_id"])

        deadline = time.monotonic() + 60
        while True:
            s = await worker.stats()
            settled = sum(s.get("dead_letters", {}).values()) + sum(s.get("events_skipped", {}).values())
            if s.get("events_in") == len(events) and not s.get("pending") and \
                    settled + len({e["event"]["event_id"] for e in fake.accepted}) >= len(events):
                break
            if time.monotonic() > deadline:
                say("timed out waiting for every event to be accounted for:", orjson.dumps(s).decode())
                return 1
            await asyncio.sleep(0.5)
        # The fake counts an event when it answers; the worker once the answer is back.
        while s.get("events_sent", 0) < len(fake.accepted) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            s = await worker.stats()
        say("")
        say("summary")
        say(f"  events in            {s['events_in']}")
        say(f"  joined with a click  {s.get('events_joined', 0)}")
        say(f"  sent without a click {s.get('events_waited', 0)} (waited join_wait for it)")
        say(f"  TikTok events sent   {s.get('events_sent', 0)} in {len(fake.batch_sizes)} request(s) "
            f"(sizes {fake.batch_sizes})")
        say(f"  skipped              {s.get('events_skipped', {})}")
        say(f"  dead-lettered        {s.get('dead_letters', {})}")
        say(f"  clicks recorded      {s.get('clicks_in', 0)} from the clicks topic, "
            f"{s.get('landing_clicks', 0)} landing page(s)")
        say("")
        say("the last request body exactly as the fake Events API received it (its first event):")
        body = dict(fake.last_body)
        body["data"] = body["data"][:1] + ([f"... {len(fake.last_body['data']) - 1} more"]
                                           if len(fake.last_body["data"]) > 1 else [])
        say(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    finally:
        if worker is not None:
            worker.stop()
        await fake.stop()
        await asyncio.to_thread(broker.stop)
        say("stopped the worker, the fake and the broker")


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the whole pipeline locally on a sample, print what TikTok got",
                              description=__doc__)
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, state)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ttbridge-demo-"))
    try:
        return asyncio.run(run(workdir))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
