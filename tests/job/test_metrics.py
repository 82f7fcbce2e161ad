"""Counters and their Prometheus text rendering."""
from __future__ import annotations

from app.job.metrics import Metrics

ALL_ZERO = """\
# HELP ttbridge_batches_total request bodies built by the forwarder
# TYPE ttbridge_batches_total counter
ttbridge_batches_total 0
# HELP ttbridge_click_sweeps_total runs of the sweeper that deletes expired clicks
# TYPE ttbridge_click_sweeps_total counter
ttbridge_click_sweeps_total 0
# HELP ttbridge_clicks_expired_total clicks past the attribution window deleted from the table
# TYPE ttbridge_clicks_expired_total counter
ttbridge_clicks_expired_total 0
# HELP ttbridge_clicks_in_total clicks read (including landing pages recorded as clicks)
# TYPE ttbridge_clicks_in_total counter
ttbridge_clicks_in_total 0
# HELP ttbridge_dead_letters_total records written to the dead-letter topic, by reason
# TYPE ttbridge_dead_letters_total counter
ttbridge_dead_letters_total 0
# HELP ttbridge_events_in_total tracking events read
# TYPE ttbridge_events_in_total counter
ttbridge_events_in_total 0
# HELP ttbridge_events_joined_total events that found their click
# TYPE ttbridge_events_joined_total counter
ttbridge_events_joined_total 0
# HELP ttbridge_events_retrying_total TikTok events written to the retry topic
# TYPE ttbridge_events_retrying_total counter
ttbridge_events_retrying_total 0
# HELP ttbridge_events_sent_total TikTok events accepted by the Events API
# TYPE ttbridge_events_sent_total counter
ttbridge_events_sent_total 0
# HELP ttbridge_events_skipped_total events not sent on purpose, by reason (e.g. unmapped)
# TYPE ttbridge_events_skipped_total counter
ttbridge_events_skipped_total 0
# HELP ttbridge_events_waited_total events sent without their click after waiting join_wait
# TYPE ttbridge_events_waited_total counter
ttbridge_events_waited_total 0
# HELP ttbridge_requests_total requests sent to the Events API
# TYPE ttbridge_requests_total counter
ttbridge_requests_total 0
"""


def test_add_and_get():
    m = Metrics()
    m.add("events_in")
    m.add("events_in", 4)
    m.add("dead_letters", reason="invalid_json")
    m.add("dead_letters", 2, reason="too_large")
    m.add("dead_letters", reason="invalid_json")
    assert m.get("events_in") == 5
    assert m.get("events_in", "") == 5
    assert m.get("dead_letters") == 4
    assert m.get("dead_letters", "invalid_json") == 2
    assert m.get("dead_letters", "too_large") == 2
    assert m.get("dead_letters", "no_route") == 0
    assert m.get("events_sent") == 0


def test_get_does_not_create_counters():
    m = Metrics()
    m.get("events_sent")
    m.get("dead_letters", "x")
    assert m.snapshot() == {}


def test_snapshot():
    m = Metrics()
    m.add("requests", 3)
    m.add("events_sent", 1000)
    m.add("dead_letters", reason="tiktok_40002")
    m.add("dead_letters", 2, reason="invalid_json")
    assert m.snapshot() == {"dead_letters": {"invalid_json": 2, "tiktok_40002": 1},
                            "events_sent": 1000, "requests": 3}


def test_snapshot_of_a_counter_with_and_without_reason():
    # render() handles this mix; snapshot() (the worker's JSON stats) must not crash on it.
    m = Metrics()
    m.add("events_skipped")
    m.add("events_skipped", 2, reason="unmapped")
    skipped = m.snapshot()["events_skipped"]
    assert skipped["unmapped"] == 2
    assert sum(skipped.values()) == 3  # the count without a reason is kept too


def test_render_with_nothing_counted_lists_every_counter_at_zero():
    assert Metrics().render() == ALL_ZERO


def test_render_counts_and_reasons():
    m = Metrics()
    m.add("events_sent", 7)
    m.add("dead_letters", 2, reason="too_large")
    m.add("dead_letters", reason="invalid_json")
    m.add("custom_thing", 3)
    expected = ALL_ZERO.replace(
        "ttbridge_events_sent_total 0", "ttbridge_events_sent_total 7").replace(
        "ttbridge_dead_letters_total 0\n",
        'ttbridge_dead_letters_total{reason="invalid_json"} 1\n'
        'ttbridge_dead_letters_total{reason="too_large"} 2\n').replace(
        "# HELP ttbridge_dead_letters_total",
        "# HELP ttbridge_custom_thing_total custom_thing\n"
        "# TYPE ttbridge_custom_thing_total counter\n"
        "ttbridge_custom_thing_total 3\n"
        "# HELP ttbridge_dead_letters_total")
    assert m.render() == expected
