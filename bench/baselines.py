"""The two yardsticks ttbridge is measured against, on the same events topic.

- ceiling: a plain aiokafka consumer that reads and orjson-decodes every event and does nothing
  else. No forwarder written in Python on this machine can beat it.
- naive: what most connectors do: consume one message, map it, POST it alone, await the answer,
  next. Its rate is bound by one request round trip per event.
"""
from __future__ import annotations

import time
import uuid

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from app.mapping.events import MappingConfig, Refusal, map_event
from app.tiktok.facts import TRACK_PATH
from bench.kafka import TopicCounts
from bench.load import PIXEL, TOKEN

__all__ = ["ceiling_rate", "naive_rate", "naive_body"]


async def ceiling_rate(bootstrap: str, topic: str) -> dict:
    """Read the whole topic once from the start, decoding every value. Timed from the first
    fetch (the consumer is connected and assigned) to the last message."""
    counts = TopicCounts(bootstrap)
    await counts.start()
    try:
        partitions, total = await counts.partitions(topic), await counts.count(topic)
    finally:
        await counts.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        read = bad = 0
        t0 = last = time.perf_counter()
        while read < total and time.perf_counter() - last < 10:  # 10 s of nothing: give up
            for messages in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for m in messages:
                    try:
                        loads(m.value)
                    except decode_error:
                        bad += 1
                read += len(messages)
                last = time.perf_counter()
        elapsed = last - t0
    finally:
        await consumer.stop()
    return {"eps": read / elapsed, "events": read, "undecodable": bad, "seconds": elapsed}


def naive_body(event: dict, mapping: MappingConfig, now: float) -> dict | None:
    """A minimal valid request for one event (no join: most connectors have no click table)."""
    items = map_event(event, None, mapping, now)
    if not items:
        return None
    return {"event_source": "web", "event_source_id": PIXEL, "data": items}


async def naive_rate(bootstrap: str, topic: str, base_url: str, seconds: float) -> dict:
    """Forward one event per request for `seconds` (timed from the first message), or until the
    topic is exhausted."""
    mapping = MappingConfig(default_region="GB")
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"naive-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    url = base_url.rstrip("/") + TRACK_PATH
    headers = {"Access-Token": TOKEN, "Content-Type": "application/json"}
    accepted = rejected = skipped = 0
    t0 = now = None
    await consumer.start()
    try:
        async with aiohttp.ClientSession() as session:
            while now is None or now - t0 < seconds:
                fetched = await consumer.getmany(timeout_ms=3000 if t0 else 30_000)
                if not fetched:
                    break  # nothing more to read
                t0 = t0 or time.perf_counter()
                for message in (m for messages in fetched.values() for m in messages):
                    try:
                        body = naive_body(orjson.loads(message.value), mapping, time.time())
                    except (orjson.JSONDecodeError, Refusal):
                        body = None  # a real connector would dead-letter it; here it is not sent
                    if body is None:
                        skipped += 1
                    else:
                        async with session.post(url, data=orjson.dumps(body), headers=headers) as r:
                            answer = orjson.loads(await r.read())
                        if answer.get("code") == 0:
                            accepted += len(body["data"])
                        else:
                            rejected += 1
                    now = time.perf_counter()
                    if now - t0 >= seconds:
                        break
    finally:
        await consumer.stop()
    elapsed = (now or 0) - (t0 or 0)
    return {"eps": accepted / elapsed if elapsed > 0 else 0.0, "events": accepted, "rejected": rejected,
            "skipped": skipped, "seconds": elapsed}
