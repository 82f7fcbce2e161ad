"""`python -m bench.bundle_speed`: µs per event that the events bundle costs, on the benchmark's
conversions (~1.2 KB) in bundles of 170 (a poll of 1,000 over 6 partitions): the intake's side
(add_event + records) and the forwarder's (read_events + parsing every event), for the framed
bundle ttbridge writes (app/job/bundles.py) and for the JSON bundle it wrote before
({"events": [{..., "event": <the event's bytes as an orjson.Fragment>}]}, parsed whole),
reproduced here as it was. Runs alternate so that a busy machine skews both alike."""
from __future__ import annotations

import gc
import statistics
import time

import orjson

from app.job.bundles import Bundler, event_of, partition_of, read_events
from bench.load import event

ROUNDS = 400
PER_BUNDLE = 170


def _json_bundle(entries: list[tuple[str, float, dict, bytes]]) -> bytes:
    # As Bundler.add_event and records() did: the partition of each click ID, one dict per event.
    by_partition: dict[int, list[dict]] = {}
    for c, at, source, raw in entries:
        by_partition.setdefault(partition_of(c, 1), []).append(
            {"click_id": c, "at": at, "source": source, "event": orjson.Fragment(raw)})
    [value] = [orjson.dumps({"events": items}) for items in by_partition.values()]
    return value


def _read_json_bundle(value: bytes) -> list[dict]:
    events = orjson.loads(value)["events"]
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValueError("a bundle's events must be a list of objects")
    return events


def _framed(entries: list[tuple[str, float, dict, bytes]]) -> bytes:
    bundler = Bundler(1)
    for c, at, source, raw in entries:
        bundler.add_event(c, raw, at, source)
    [(_, _, value, _)] = bundler.records()
    return value


def _read_framed(value: bytes) -> list[dict]:
    entries = read_events(value)
    for entry in entries:
        event_of(entry)
    return entries


def main() -> None:
    now = time.time()
    entries = [(f"m-c{i}", now, {"topic": "tracking-events", "partition": 3, "offset": 100_000 + i},
                orjson.dumps(event(i, "m", now, kind="joined"))) for i in range(PER_BUNDLE)]
    variants = {"JSON bundle (before)": (_json_bundle, _read_json_bundle), "framed (now)": (_framed, _read_framed)}
    runs = {name: ([], []) for name in variants}
    gc.disable()
    try:
        for _ in range(ROUNDS):
            for name, (write, read) in variants.items():
                t0 = time.perf_counter()
                value = write(entries)
                t1 = time.perf_counter()
                events = read(value)
                t2 = time.perf_counter()
                assert len(events) == PER_BUNDLE
                runs[name][0].append((t1 - t0) / PER_BUNDLE * 1e6)
                runs[name][1].append((t2 - t1) / PER_BUNDLE * 1e6)
    finally:
        gc.enable()
    for name, (write, read) in variants.items():
        size = len(write(entries)) / PER_BUNDLE
        w, r = runs[name]
        print(f"{name:21} {size:6.0f} B/event   intake min {min(w):5.2f} median {statistics.median(w):5.2f}   "
              f"forwarder min {min(r):5.2f} median {statistics.median(r):5.2f} µs/event")


if __name__ == "__main__":
    main()
