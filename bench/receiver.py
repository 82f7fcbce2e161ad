"""A counting Events API receiver for the throughput phases: `python -m bench.receiver --port P`.

The faithful fake (app/devtools/fake_tiktok.py) validates every field of every event, which costs
CPU per event; with it on the benchmark's two cores a fast forwarder would measure the fake. This
receiver, in a process of its own, still parses every body with orjson and checks its shape (the
pixel, 1..1,000 events, each with an event name, an event_id and a user object) and counts the
events and the ones that carry a ttclid (joined their click). Anything else is answered with
TikTok's 40002 and counted as rejected, so a broken sender cannot pass unnoticed. A strict phase
of the benchmark keeps proving that the real bodies pass the faithful fake.

GET /stats: {"requests", "events_accepted", "joined", "rejected", "first_received_at",
"last_received_at"} (Unix seconds).
"""
from __future__ import annotations

import argparse
import time

import orjson
from aiohttp import web

from app.tiktok.facts import TRACK_PATH
from bench.load import PIXEL, TOKEN

__all__ = ["make_app", "main"]

_OK = orjson.dumps({"code": 0, "message": "OK", "request_id": "bench-receiver", "data": {}})


def _bad(message: str) -> web.Response:
    return web.Response(body=orjson.dumps({"code": 40002, "message": message, "data": {}}),
                        content_type="application/json")


def make_app(token: str = TOKEN, pixel: str = PIXEL) -> web.Application:
    stats = {"requests": 0, "events_accepted": 0, "joined": 0, "rejected": 0,
             "first_received_at": None, "last_received_at": None}

    async def track(request: web.Request) -> web.Response:
        stats["requests"] += 1
        if request.headers.get("Access-Token") != token:
            stats["rejected"] += 1
            return _bad("access token")
        try:
            body = orjson.loads(await request.read())
            data = body["data"]
            ok = body["event_source_id"] == pixel and isinstance(data, list) and 1 <= len(data) <= 1000
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ok = False
        if not ok:
            stats["rejected"] += 1
            return _bad("body: expected event_source_id and 1..1000 events in data")
        joined = 0
        for item in data:
            user = item.get("user") if isinstance(item, dict) else None
            if not (isinstance(user, dict) and item.get("event") and item.get("event_id")):
                stats["rejected"] += 1
                return _bad("data[]: every event needs event, event_id and user")
            joined += "ttclid" in user
        now = time.time()
        stats["events_accepted"] += len(data)
        stats["joined"] += joined
        stats["first_received_at"] = stats["first_received_at"] or now
        stats["last_received_at"] = now
        return web.Response(body=_OK, content_type="application/json")

    async def get_stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post(TRACK_PATH, track)
    app.router.add_get("/stats", get_stats)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
