"""Helpers for the tests that run against the real broker and the fake Events API."""
import asyncio
import hashlib
import time

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOKEN_A, TOKEN_B = "token-shop-a-0123456789", "token-shop-b-0123456789"
PIXEL_A, PIXEL_B = "PIXELSHOPA000000001", "PIXELSHOPB000000002"


def accepted(items: list[dict], now: float, test_event_code: str | None = None) -> list[dict]:
    """The items, after checking that TikTok (the strict fake) accepts the requests carrying them."""
    from app.devtools.fake_tiktok import check_request
    from app.tiktok.requests import request_bodies

    for body in request_bodies(("web", "CQ1PIXEL", test_event_code), items):
        assert check_request(body, now=now) == (0, "OK")
    return items


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


async def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            out += [orjson.loads(m.value) for msgs in batch.values() for m in msgs]
        batch = await consumer.getmany(timeout_ms=1000)  # anything beyond what we expect?
        out += [orjson.loads(m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_accepted(fake, n: int, what: str, timeout: float = 30) -> None:
    """Until the fake Events API has accepted at least `n` events."""
    async def enough():
        return len(fake.accepted) >= n
    await wait_for(enough, timeout, what)


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
