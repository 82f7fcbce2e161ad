"""How many events/s an Events API receiver accepts when driven directly:
`python -m bench.capacity --url URL [--seconds S] [--concurrency C]` prints one JSON object.

Run as its own process, so the client's CPU is not the receiver's (for the in-process fake the
receiver shares the benchmark's event loop, as in the real phases). The bodies are the
benchmark's own conversions, mapped with their clicks exactly as ttbridge maps them, 1,000 per
request; each request gets fresh event_ids (the fake drops repeats as TikTok does).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
import orjson

from app.mapping.decode import decode_click
from app.mapping.events import MappingConfig, Refusal, map_event
from app.tiktok.facts import TRACK_PATH
from bench.load import PIXEL, TOKEN, make_load

__all__ = ["template", "drive"]

BATCH = 1000
_MARK = b"QQQQQQQ"  # replaced by the request's number: event_ids "cap<request><j>"


def template(batch: int = BATCH) -> bytes:
    """One request body of `batch` mapped conversions whose event_ids hold _MARK."""
    now = time.time()
    load = make_load(batch + batch // 10, "cap", now)
    clicks = dict(decode_click(v, 1 << 20) for _, v in load.clicks + load.late_clicks)
    mapping = MappingConfig(default_region="GB")
    items: list[dict] = []
    for _, raw in load.events:
        try:
            doc = orjson.loads(raw)
            click = clicks.get((doc.get("properties") or {}).get("click_id"))
            items += map_event(doc, click, mapping, now)
        except (orjson.JSONDecodeError, Refusal):
            continue
    data = [{**item, "event_id": f"cap{_MARK.decode()}{j:05d}"} for j, item in enumerate(items[:batch])]
    return orjson.dumps({"event_source": "web", "event_source_id": PIXEL, "data": data})


async def drive(url: str, seconds: float, concurrency: int) -> dict:
    body = template()
    events_per_body = body.count(_MARK)
    headers = {"Access-Token": TOKEN, "Content-Type": "application/json"}
    target = url.rstrip("/") + TRACK_PATH
    counter = iter(range(10**7))
    accepted = errors = requests = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, errors, requests
        while time.perf_counter() < deadline:
            data = body.replace(_MARK, b"%07d" % next(counter))
            async with session.post(target, data=data, headers=headers) as r:
                answer = orjson.loads(await r.read())
            requests += 1
            if r.status == 200 and answer.get("code") == 0:
                accepted += events_per_body
            else:
                errors += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"eps": round(accepted / elapsed, 1), "events": accepted, "requests": requests, "errors": errors,
            "seconds": round(elapsed, 2), "concurrency": concurrency, "events_per_request": events_per_body,
            "body_bytes": len(body)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    print(orjson.dumps(asyncio.run(drive(args.url, args.seconds, args.concurrency))).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
