"""`python -m bench.map_speed`: µs per event of `map_event`, the worker's largest CPU cost, on the
benchmark's conversions joined with their clicks — once with every phone number new (as in the
benchmark's load) and once as a funnel where each customer sends three events, each with and
without the phone-number cache. Runs alternate so that a busy machine skews both alike."""
from __future__ import annotations

import gc
import statistics
import time

import orjson

from app.mapping import normalise
from app.mapping.decode import decode_click
from app.mapping.events import map_event
from app.settings import load, mapping_config
from bench.load import click, event, kind_of

ROUNDS = 6


def _load(n: int, funnel: bool, now: float) -> list[tuple[dict, dict]]:
    pairs = []
    for i in (i for i in range(n) if kind_of(i) == "joined"):
        e = event(i, "m", now)
        if funnel:
            e["context"]["traits"]["phone"] = f"+44 7700 9{(i // 3) % 100000:05d}"
        pairs.append((e, decode_click(orjson.dumps(click(i, "m", now)), 1 << 20)[1]))
    return pairs


def main() -> None:
    config = mapping_config(load({"TIKTOK_PIXEL_CODE": "P", "TIKTOK_ACCESS_TOKEN": "t"}))
    now = time.time()
    cached = normalise.e164
    variants = {"cache": cached, "no cache": cached.__wrapped__}
    gc.disable()
    try:
        for label, funnel in (("every phone new", False), ("3 events per phone", True)):
            pairs = _load(30_000, funnel, now)
            runs: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(ROUNDS):
                for name, e164 in variants.items():
                    normalise.e164 = e164
                    cached.cache_clear()
                    t0 = time.perf_counter()
                    for e, c in pairs:
                        map_event(e, c, config, now)
                    runs[name].append((time.perf_counter() - t0) / len(pairs) * 1e6)
            for name, us in runs.items():
                print(f"{label:20} {name:9} min {min(us):6.1f}  median {statistics.median(us):6.1f} µs/event")
    finally:
        normalise.e164 = cached
        gc.enable()


if __name__ == "__main__":
    main()
