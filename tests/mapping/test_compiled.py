"""app.mapping.compiled: the generated fast path gives exactly what the interpreter gives.

map_event runs a function generated per config and falls back to the interpreter
(events.interpret) wherever that function returns None. Here both run on every preset's README
example, on the benchmark's event, and on mutations of them at every path a spec reads (a
value of each JSON type, odd strings, deletion): the same items (repr: key order, int vs float)
or the same exception (type, reason, message), the input left unchanged, and the fast path
actually taken on most valid events.
"""
from __future__ import annotations

import copy
import math
from functools import cache

import orjson
import pytest

from app.mapping import normalise
from app.mapping.config import DAY_S, MappingConfig
from app.mapping.decode import decode_click
from app.mapping.events import Refusal, Skip, events_of, interpret, map_event
from app.mapping.spec import PRESETS, load_preset
from bench.load import click as bench_click
from bench.load import event as bench_event
from bench.load import kind_of
from bench.map_speed import readme_examples

HEX = "4a0a303e33c11f496a9312a77309133325af1527a26d9d95cf74b81feba9c955"
ODD = [
    None, "", "   ", " x ", 0, 1, -1, 1.5, 2.0, 2 ** 60, math.inf, math.nan, True, False, [], {}, ["a", 7],
    {"a": 1}, [{"id": "1"}], "46.00", "1e3", "-2", "abc", " Alice@Example.COM ", HEX, HEX.upper(),
    "+44 7700 900123", "07700 900123", "(+1)2133734253", "https://shop.example/p?ttclid=T1", "http://a.b/",
    "ftp://a.b/", "undefined", "__TTCLID__", "USD", "gbp", "XXX", "product", "2026-11-20T10:00:00Z",
    "2026-11-20 10:00:00", "1795168800", 1795168800, 1795168800000, 1795168800.5, "Purchase", "purchase",
    "  Purchase ", "_ttp=abc; ttclid=zz", {"_ttp": "a", "ttclid": "b"}, "track", "page",
]
DELETE = object()


@cache
def examples() -> list[tuple[str, dict, dict | None, float, str | None]]:
    """(preset, event, click, now, region): each README example, and the benchmark's event."""
    out = [(name, e, joined, now, region) for name, events, joined, now, region in readme_examples()
           for e in events]
    now = 1_795_168_830.0
    i = next(i for i in range(100) if kind_of(i) == "joined")  # as bench.map_speed draws them
    clicked = decode_click(orjson.dumps(bench_click(i, "t", now)), 1 << 20)[1]
    out.append(("segment", bench_event(i, "t", now), clicked, now, None))
    return out


def config_for(preset: str, region: str | None, **kwargs) -> MappingConfig:
    return MappingConfig(spec=load_preset(preset), default_region=region, max_event_age_s=7 * DAY_S, **kwargs)


def outcome(fn, event, click, config, now):
    try:
        return "items", repr(fn(event, click, config, now))
    except (Refusal, Skip) as e:
        return type(e).__name__, getattr(e, "reason", None), str(e)
    except Exception as e:  # noqa: BLE001 - whatever it is, both must raise it
        return type(e).__name__, str(e)


def same(event, click, config, now) -> bool:
    """Both give the same outcome and leave their inputs alone; True when the fast path decided."""
    before = repr((event, click))
    expected = outcome(interpret, copy.deepcopy(event), copy.deepcopy(click), config, now)
    got = outcome(map_event, event, click, config, now)
    assert got == expected, (event, click)
    assert repr((event, click)) == before
    try:
        return config._compiled(event, click, now) is not None
    except (Refusal, Skip):
        return True


def paths(config: MappingConfig) -> tuple[set, set]:
    """The event paths and the product paths the config's spec reads, with their parents."""
    plan = config.plan
    fields = [*plan.hashed_user, plan.ttclid, plan.ttp, *plan.plain_user, plan.page_url, plan.page_referrer,
              *plan.properties, *plan.app, *plan.lead]
    found = [p for f in fields for p in f.paths]
    found += [*plan.name_paths, *plan.timestamp_paths, *plan.event_id_paths, *plan.limited_data_use_paths,
              *plan.objects, *plan.ttclid_urls, *plan.cookie_paths, *plan.contents_paths,
              *(p for p in (plan.kind_path, plan.single_path, plan.columns_path) if p)]
    if plan.columns_path:
        found += [plan.columns_path + p for f in plan.item for p in f.paths]
    if plan.single_path:
        found += [plan.single_path + p for f in plan.single_item for p in f.paths]
    item = {p for f in plan.item for p in f.paths}

    def closed(ps):
        ps = {tuple(k for k in p) for p in ps if all(type(k) is str for k in p)}
        return {p[:i] for p in ps for i in range(1, len(p) + 1)}
    return closed(found), closed(item)


def put(doc: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    if value is DELETE:
        doc.pop(path[-1], None)
    else:
        doc[path[-1]] = copy.deepcopy(value)


def products_of(event: dict, config: MappingConfig) -> list[dict]:
    for keys in config.plan.contents_paths:
        node = event
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, list):
            return [p for p in node if isinstance(p, dict)]
    return []


@pytest.fixture(autouse=True)
def no_phone_cache(monkeypatch):
    monkeypatch.setattr(normalise, "e164", normalise.e164.__wrapped__)


def test_every_example_takes_the_fast_path_and_agrees():
    for preset, event, joined, now, region in examples():
        assert same(event, joined, config_for(preset, region), now), preset


def bases(event: dict, config: MappingConfig) -> list[dict]:
    """The event, and without what hides the fallbacks: its event IDs (order_id:name, the hash),
    its page (the click's), its ttclid/ttp (cookies, the click's, URLs, the referrer)."""
    plan = config.plan
    out = [event]
    for hidden in (plan.event_id_paths, [p for f in (plan.page_url, plan.page_referrer) for p in f.paths],
                   [*plan.ttclid.paths, *plan.ttp.paths, *plan.cookie_paths]):
        bare = copy.deepcopy(event)
        for keys in hidden:
            if all(type(k) is str for k in keys):
                put(bare, keys, DELETE)
        out.append(bare)
    return out


CLICK_KEYS = ("clicked_at", "ttclid", "ttp", "ip", "user_agent", "url", "referrer")
FEW = [None, "", " x ", "  Purchase ", 0, 1.5, math.nan, math.inf, True, [], {}, "46.00", "abc", "https://a.b/?ttclid=U"]


@pytest.mark.parametrize("preset", PRESETS)
def test_mutations_at_every_path_agree(preset):
    cases = fast = 0
    for name, event, joined, now, region in examples():
        if name != preset:
            continue
        for config in (config_for(preset, region), config_for(preset, "GB", send_page_url=False,
                       content_type="product", limited_data_use=True, max_future_s=0)):
            event_paths, item_paths = paths(config)
            for n, base in enumerate(bases(event, config)):
                for path in sorted(event_paths):
                    for value in [*(FEW if n else ODD), DELETE]:
                        mutated = copy.deepcopy(base)
                        put(mutated, path, value)
                        for click in (joined, None):
                            fast += same(mutated, click, config, now)
                            cases += 1
                for path in sorted(item_paths) if n == 0 else ():
                    for value in [*ODD, DELETE]:
                        mutated = copy.deepcopy(base)
                        for product in products_of(mutated, config)[:1]:
                            put(product, path, value)
                        fast += same(mutated, joined, config, now)
                        cases += 1
                for key in CLICK_KEYS:
                    for value in [*(FEW if n else ODD), now - 60, now + 60, now - 8 * DAY_S, DELETE]:
                        click = {"clicked_at": now - 60, "ttclid": " C ", "ttp": " P ", "ip": "1.2.3.4",
                                 "user_agent": "UA", "url": "https://lp.example/?ttclid=L",
                                 "referrer": "https://www.tiktok.com/"}
                        put(click, (key,), value)
                        fast += same(base, click, config, now)
                        cases += 1
    assert cases > 1000
    assert fast > cases / 2  # most mutations stay valid: the fast path must be what decides them


def test_times_at_the_window_edges_agree():
    for preset, event, joined, now, region in examples():
        config = config_for(preset, region)
        for delta in (-7 * DAY_S - 1, -7 * DAY_S, 0, 300, 300.001, 301):
            shifted = copy.deepcopy(event)
            for keys in config.plan.timestamp_paths:
                if len(keys) == 1:
                    put(shifted, keys, (now + delta) * (1000 if config.plan.timestamp_unit == "milliseconds"
                                                        else 1))
            same(shifted, joined, config, now)


def test_one_to_many_and_batches_agree():
    config = MappingConfig(event_map={"Order Completed": ["Purchase", "CompletePayment", "PlaceAnOrder"]})
    for preset, event, joined, now, region in examples():
        if preset == "segment":
            assert same(event, joined, config, now)
            items = map_event(event, joined, config, now)
            assert [i["event"] for i in items] == ["Purchase", "CompletePayment", "PlaceAnOrder"]
            assert items[0]["user"] is items[2]["user"]  # shared, as the interpreter's are
    mparticle = config_for("mparticle", None)
    message = {"events": [e for p, e, *_ in examples() if p == "mparticle"], "ip": "203.0.113.4"}
    for e in events_of(message, mparticle):
        if isinstance(e, dict):
            same(e, None, mparticle, 1_795_168_830.0)


def test_non_json_inputs_are_left_to_the_interpreter():
    config = config_for("segment", None)
    for preset, event, joined, now, region in examples():
        if preset == "segment":
            odd = copy.deepcopy(event)
            odd["context"] = (("ip", "1.2.3.4"),)  # a tuple: not a JSON value
            assert not same(odd, joined, config, now)
            assert not same(["not", "an", "object"], joined, config, now)
