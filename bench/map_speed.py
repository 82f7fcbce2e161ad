"""`python -m bench.map_speed`: µs per event of `map_event`, the worker's largest CPU cost, on the
benchmark's conversions joined with their clicks — once with every phone number new (as in the
benchmark's load) and once as a funnel where each customer sends three events, each with and
without the phone-number cache. Runs alternate so that a busy machine skews both alike. Then, per
preset, its README example (the native message and click that tests/test_readme_examples.py
keeps true), with the phone cache off (one message repeated would always hit it)."""
from __future__ import annotations

import gc
import re
import shlex
import statistics
import time
from pathlib import Path

import orjson

from app.mapping import normalise
from app.mapping.config import DAY_S, MappingConfig
from app.mapping.decode import decode_click
from app.mapping.events import events_of, map_event
from app.mapping.spec import load_preset
from app.settings import load, mapping_config
from bench.load import click, event, kind_of

ROUNDS = 6
README = Path(__file__).resolve().parents[1] / "README.md"
_FILE = re.compile(r"```json file=(\S+)\n(.*?)```", re.S)
_COMMAND = re.compile(r"^\$ ttbridge map --preset (.+)$", re.M)


def readme_examples() -> list[tuple[str, list[dict], dict | None, float, str | None]]:
    """(preset, its events, its click or None, --now, --default-region) per README example."""
    text = README.read_text()
    files = {name: body for name, body in _FILE.findall(text)}
    out = []
    for line in _COMMAND.findall(text):
        words = shlex.split("--preset " + line.replace("<", "--stdin"))
        opts = dict(zip(words[::2], words[1::2]))
        events = []
        for raw in files[opts["--stdin"]].splitlines():
            doc = orjson.loads(raw)
            events += events_of(doc, MappingConfig(spec=load_preset(opts["--preset"])))
        click = decode_click(files[opts["--click"]].encode(), 1 << 20)[1] if "--click" in opts else None
        out.append((opts["--preset"], events, click, float(opts["--now"]), opts.get("--default-region")))
    return out


def presets() -> None:
    for name, events, joined, now, region in readme_examples():
        config = MappingConfig(spec=load_preset(name), default_region=region, max_event_age_s=7 * DAY_S)
        n = 20_000 // len(events)
        runs = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for _ in range(n):
                for e in events:
                    map_event(e, joined, config, now)
            runs.append((time.perf_counter() - t0) / (n * len(events)) * 1e6)
        print(f"preset {name:15} min {min(runs):6.1f}  median {statistics.median(runs):6.1f} µs/event "
              f"(README example, {len(events)} event(s){', joined' if joined else ''})")


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
        # Each phone "new": the preset examples repeat one message, which the cache would answer.
        normalise.e164 = cached.__wrapped__
        presets()
    finally:
        normalise.e164 = cached
        gc.enable()


if __name__ == "__main__":
    main()
