"""The benchmark's building blocks, without Kafka and without timing anything: the load is what
the benchmark claims (size, mix, valid for the mapping and the fake Events API), percentiles are
exact, and the report files hold what they must."""
import math
import time
from collections import Counter

import orjson
import pytest

from app.devtools.fake_tiktok import check_request
from app.mapping.decode import decode_click, decode_event
from app.mapping.events import MappingConfig, Refusal, map_event
from bench.baselines import naive_body
from bench.load import BAD_KINDS, PIXEL, Pacer, event, kind_of, make_load, sent_at_of
from bench.profile import hot_spots
from bench.report import REQUIRED_KEYS, percentile, table, write_json, write_png

MAPPING = MappingConfig(default_region="GB", max_event_age_s=7 * 86400)


def test_load_is_realistic_and_every_joinable_event_passes_the_fake():
    now = time.time()
    n = 4000
    load = make_load(n, "t1", now)
    assert len(load.events) == n
    assert load.kinds == Counter({"joined": 3580, "late": 200, "no_click": 200, "bad_json": 10,
                                  "bad_currency": 10})
    assert load.joinable == n - 20
    sizes = [len(v) for _, v in load.events]
    assert 1000 <= sum(sizes) / len(sizes) <= 1300  # ~1 KB each
    clicks = dict(decode_click(v, 1 << 20) for _, v in load.clicks + load.late_clicks)
    assert len(clicks) == n - 200  # every conversion with a click ID has its click
    assert {k.decode() for k, _ in load.late_clicks} == {f"t1-c{i}" for i in range(n) if kind_of(i) == "late"}

    items, refused = [], Counter()
    for i, (_, raw) in enumerate(load.events):
        kind = kind_of(i)
        try:
            doc, _ = decode_event(raw, 256 * 1024, MAPPING)
            click_id = doc.get("properties", {}).get("click_id")
            mapped = map_event(doc, clicks.get(click_id), MAPPING, now)
        except Refusal as r:
            refused[r.reason] += 1
            assert kind in BAD_KINDS
            continue
        assert kind not in BAD_KINDS
        assert len(mapped) == 1
        user = mapped[0]["user"]
        assert ("ttclid" in user) == (kind != "no_click")
        assert "email" in user and "phone" in user and "ip" in user
        assert 2 <= len(mapped[0]["properties"]["contents"]) <= 3
        items += mapped
    assert refused == {"invalid_json": 10, "invalid_currency": 10}
    for start in range(0, len(items), 1000):
        body = {"event_source": "web", "event_source_id": PIXEL, "data": items[start:start + 1000]}
        assert check_request(body, frozenset({PIXEL}), now=now) == (0, "OK")

    # The naive forwarder's one-event requests pass too.
    body = naive_body(orjson.loads(load.events[0][1]), MAPPING, now)
    assert check_request(body, frozenset({PIXEL}), now=now) == (0, "OK")

    # The latency phase stamps the produce time into messageId, which TikTok gets as event_id.
    stamped = event(5, "t1", now, message_id="t1-l5-1795318090123456")
    [item] = map_event(stamped, None, MAPPING, now)
    assert sent_at_of(item["event_id"]) == 1795318090.123456
    assert sent_at_of("t1-e5") is None


def test_percentiles_are_exact_nearest_rank():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.5], 99) == 7.5
    assert percentile([1, 2, 3, 4], 25) == 1 and percentile([1, 2, 3, 4], 26) == 2
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_pacer_offers_a_steady_rate():
    pacer = Pacer(rate=200.0, start=10.0)
    assert pacer.due(10.0) == 0
    assert pacer.due(10.5) == 100
    pacer.sent = 100
    assert pacer.due(10.5) == 0 and pacer.due(11.0) == 100


def test_report_files_hold_the_required_keys(tmp_path):
    result = {"date": "2026-11-22T10:00:00+00:00", "cores": 2, "n": 1000, "ceiling_eps": 100000.0,
              "naive_eps": 1500.0, "ttbridge_eps": 3000.0,
              "latency_ms": {"p50": 800.0, "p95": 1200.0, "p99": 1500.0, "max": 1600.0, "count": 3},
              "latency_offered_eps": 1500.0, "rss_mb": 150.4, "recovery_s": 9.24, "quick": True,
              "clicks_in_table": 50000, "fake": "in-process",
              "naive_at_rtt": {"rtt_ms": 50, "eps": 19.0},
              "ttbridge_at_rtt": {"rtt_ms": 50, "eps": 2850.0, "events": 2850, "seconds": 1.0},
              "two_workers": {"eps": 3500.0, "events": 7000, "seconds": 2.0}}
    write_json(result, tmp_path / "out" / "r.json")
    written = orjson.loads((tmp_path / "out" / "r.json").read_bytes())
    assert written == result
    assert set(REQUIRED_KEYS) <= set(written)
    text = table(result)
    for expected in ("100,000 events/s", "1,500 events/s", "3,000 events/s", "0.030", "2.0x",
                     "800 / 1,200 / 1,500 ms", "150 MB", "9.2 s", "1,000 / 2 / in-process",
                     "naive, API answering in 50 ms 19 events/s",
                     "ttbridge, API answering in 50 ms 2,850 events/s (150x naive at that latency)",
                     "ttbridge, two workers on these cores 3,500 events/s"):
        assert expected in " ".join(text.split()), expected
    with pytest.raises(ValueError, match="recovery_s"):
        write_json({k: v for k, v in result.items() if k != "recovery_s"}, tmp_path / "bad.json")
    write_png(result, [800.0, 1200.0, 1500.0], tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hot_spots_from_collapsed_stacks():
    raw = ("main (app/__main__.py);run (app/worker.py);map_event (app/mapping.py) 6\n"
           "main (app/__main__.py);run (app/worker.py) 2\n"
           "main (app/__main__.py);select (selectors.py) 2\n")
    spots = hot_spots(raw, top=3)
    assert spots["samples"] == 10
    assert spots["self"] == [("map_event (app/mapping.py)", 0.6), ("run (app/worker.py)", 0.2),
                             ("select (selectors.py)", 0.2)]
    # Plumbing (the interpreter's entry, the selector) is left out of the totals.
    assert spots["total"] == [("run (app/worker.py)", 0.8), ("map_event (app/mapping.py)", 0.6)]
