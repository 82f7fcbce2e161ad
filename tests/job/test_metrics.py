"""The counters, histograms and gauges of /metrics, their Prometheus text and their names."""
from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.job.metrics import IDENTIFIERS, Metrics
from app.tiktok.outcomes import Action, Verdict
from app.tiktok.sender import Answer, Delivery

ALL_ZERO = """\
# HELP ttbridge_batches_total request bodies built by the forwarder
# TYPE ttbridge_batches_total counter
ttbridge_batches_total 0.0
# HELP ttbridge_click_sweeps_total runs of the sweeper that deletes expired clicks
# TYPE ttbridge_click_sweeps_total counter
ttbridge_click_sweeps_total 0.0
# HELP ttbridge_clicks_expired_total clicks past the attribution window deleted from the table
# TYPE ttbridge_clicks_expired_total counter
ttbridge_clicks_expired_total 0.0
# HELP ttbridge_clicks_in_total records of the clicks topic read by this worker's clicks table (every worker reads them all)
# TYPE ttbridge_clicks_in_total counter
ttbridge_clicks_in_total 0.0
# HELP ttbridge_clicks_refused_total records of the clicks topic not stored, by reason (skipped by every worker alike, not dead-lettered)
# TYPE ttbridge_clicks_refused_total counter
ttbridge_clicks_refused_total{reason=""} 0.0
# HELP ttbridge_clicks_stored_total clicks written to this worker's copy of the clicks table
# TYPE ttbridge_clicks_stored_total counter
ttbridge_clicks_stored_total 0.0
# HELP ttbridge_dead_letters_total records written to the dead-letter topic, by reason
# TYPE ttbridge_dead_letters_total counter
ttbridge_dead_letters_total{pixel="",reason=""} 0.0
# HELP ttbridge_events_in_total tracking events read
# TYPE ttbridge_events_in_total counter
ttbridge_events_in_total 0.0
# HELP ttbridge_events_joined_total events that found their click
# TYPE ttbridge_events_joined_total counter
ttbridge_events_joined_total 0.0
# HELP ttbridge_events_retrying_total TikTok events written to the retry topic
# TYPE ttbridge_events_retrying_total counter
ttbridge_events_retrying_total{pixel=""} 0.0
# HELP ttbridge_events_sent_total TikTok events accepted by the Events API
# TYPE ttbridge_events_sent_total counter
ttbridge_events_sent_total{pixel=""} 0.0
# HELP ttbridge_events_skipped_total events not sent on purpose, by reason (e.g. unmapped)
# TYPE ttbridge_events_skipped_total counter
ttbridge_events_skipped_total{reason=""} 0.0
# HELP ttbridge_events_waited_total events sent without their click after waiting join_wait
# TYPE ttbridge_events_waited_total counter
ttbridge_events_waited_total 0.0
# HELP ttbridge_landing_clicks_total tracking events recorded as clicks (a landing page with ttclid in its URL)
# TYPE ttbridge_landing_clicks_total counter
ttbridge_landing_clicks_total 0.0
# HELP ttbridge_requests_total requests sent to the Events API
# TYPE ttbridge_requests_total counter
ttbridge_requests_total{pixel=""} 0.0
# HELP ttbridge_api_responses_total answers of the Events API by code: TikTok's code, http_<status> or transport
# TYPE ttbridge_api_responses_total counter
# HELP ttbridge_events_refused_total TikTok events the Events API refused (dead-lettered at send), by reason
# TYPE ttbridge_events_refused_total counter
# HELP ttbridge_events_sent_with_identifier_total accepted TikTok events carrying this identifier (match quality: divide by ttbridge_events_sent_total)
# TYPE ttbridge_events_sent_with_identifier_total counter
# HELP ttbridge_identifiers_dropped_total identifiers an event carried that could not be used (e.g. a phone without country code and no default_region, an email that is not one)
# TYPE ttbridge_identifiers_dropped_total counter
# HELP ttbridge_join_candidates_total events routed to a pixel that carried a click ID
# TYPE ttbridge_join_candidates_total counter
# HELP ttbridge_join_matched_total events routed to a pixel that carried a click ID and found their click
# TYPE ttbridge_join_matched_total counter
# HELP ttbridge_build_info the running ttbridge's version
# TYPE ttbridge_build_info gauge
ttbridge_build_info{version="{version}"} 1.0
# HELP ttbridge_broker_connected 1 when the broker answered a fetch within 30 s, else 0
# TYPE ttbridge_broker_connected gauge
# HELP ttbridge_consumer_lag_records records not yet read, per partition, as of the group's last poll
# TYPE ttbridge_consumer_lag_records gauge
# HELP ttbridge_request_duration_seconds time of one POST to the Events API
# TYPE ttbridge_request_duration_seconds histogram
# HELP ttbridge_request_events TikTok events in one request to the Events API
# TYPE ttbridge_request_events histogram
# HELP ttbridge_ingest_to_accepted_seconds from the intake reading a request's oldest event to TikTok accepting the request
# TYPE ttbridge_ingest_to_accepted_seconds histogram
""".replace("{version}", metadata.version("ttbridge"))


def test_add_and_get():
    m = Metrics()
    m.add("events_in")
    m.add("events_in", 4)
    m.add("dead_letters", reason="invalid_json")
    m.add("dead_letters", 2, reason="too_large")
    m.add("dead_letters", reason="invalid_json", pixel="PIX1")
    assert m.get("events_in") == 5
    assert m.get("events_in", "") == 5
    assert m.get("dead_letters") == 4
    assert m.get("dead_letters", "invalid_json") == 2  # with and without a pixel
    assert m.get("dead_letters", "too_large") == 2
    assert m.get("dead_letters", "no_route") == 0
    assert m.get("events_sent") == 0


def test_get_does_not_create_counters():
    m = Metrics()
    m.get("events_sent")
    m.get("dead_letters", "x")
    assert m.snapshot() == {}


def test_snapshot_sums_over_pixels():
    m = Metrics()
    m.add("requests", 3)
    m.add("events_sent", 600, pixel="PIX1")
    m.add("events_sent", 400, pixel="PIX2")
    m.add("dead_letters", reason="tiktok_40002", pixel="PIX1")
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


def test_render_counts_reasons_and_pixels():
    m = Metrics()
    m.add("events_sent", 7, pixel="PIX1")
    m.add("events_sent", 2)  # a caller that does not know the pixel
    m.add("dead_letters", 2, reason="too_large")
    m.add("dead_letters", reason="invalid_json", pixel="PIX2")
    m.add("custom_thing", 3)
    expected = ALL_ZERO.replace(
        'ttbridge_events_sent_total{pixel=""} 0.0\n',
        'ttbridge_events_sent_total{pixel="PIX1"} 7.0\nttbridge_events_sent_total{pixel=""} 2.0\n').replace(
        'ttbridge_dead_letters_total{pixel="",reason=""} 0.0\n',
        'ttbridge_dead_letters_total{pixel="PIX2",reason="invalid_json"} 1.0\n'
        'ttbridge_dead_letters_total{pixel="",reason="too_large"} 2.0\n').replace(
        "# HELP ttbridge_dead_letters_total",
        "# HELP ttbridge_custom_thing_total custom_thing\n"
        "# TYPE ttbridge_custom_thing_total counter\n"
        "ttbridge_custom_thing_total 3.0\n"
        "# HELP ttbridge_dead_letters_total")
    assert m.render() == expected


def samples(m: Metrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.render()) for s in f.samples}


def body(*users: dict) -> dict:
    return {"event_source": "web", "event_source_id": "PIX1",
            "data": [{"event": "Purchase", "user": u} for u in users]}


def test_a_delivery_counts_sent_refused_and_the_identifiers_of_what_was_accepted():
    m = Metrics()
    sent = body({"ttclid": "a", "email": "e"}, {"ttp": "p", "ip": "1.2.3.4", "user_agent": "UA"},
                {"phone": "h", "external_id": "x", "ip": "1.2.3.4"}, {"ttclid": "b"})
    refused = Answer(Verdict(Action.DEAD, "tiktok_40002"), 40002, 200, "Batch.3 bad")
    delivery = Delivery(accepted=3, requests=2, dead=[({**sent, "data": sent["data"][3:]}, refused)])
    m.delivered("PIX1", sent, delivery, oldest_at=0.0)
    got = samples(m)
    assert got[("ttbridge_events_sent_total", (("pixel", "PIX1"),))] == 3
    assert got[("ttbridge_requests_total", (("pixel", "PIX1"),))] == 2
    assert got[("ttbridge_events_refused_total", (("pixel", "PIX1"), ("reason", "tiktok_40002")))] == 1
    with_id = {dict(labels)["identifier"]: v for (name, labels), v in got.items()
               if name == "ttbridge_events_sent_with_identifier_total"}
    # The refused event's ttclid is not counted: only the accepted ones.
    assert with_id == {"ttclid": 1, "ttp": 1, "email": 1, "phone": 1, "external_id": 1, "ip_user_agent": 1}
    assert set(with_id) == set(IDENTIFIERS)
    assert got[("ttbridge_ingest_to_accepted_seconds_count", (("pixel", "PIX1"),))] == 1
    assert got[("ttbridge_ingest_to_accepted_seconds_bucket", (("le", "3600.0"), ("pixel", "PIX1")))] == 0


def test_request_observations_and_the_join_rate():
    m = Metrics()
    ok = Answer(Verdict(Action.DONE, "ok"), 0, 200, "OK")
    m.request_observed("PIX1", 250, 0.2, ok)
    m.request_observed("PIX1", 3, 0.02, Answer(Verdict(Action.HOLD, "http_error"), None, 404, "HTTP 404"))
    m.request_observed("PIX2", 1, 31.0, Answer(Verdict(Action.RETRY, "transport"), None, None, "timeout"))
    m.routed("PIX1", True)
    m.routed("PIX1", False)
    m.routed("PIX2", True)
    got = samples(m)
    codes = {tuple(dict(labels).values()): v for (name, labels), v in got.items()
             if name == "ttbridge_api_responses_total"}
    assert codes == {("0", "PIX1"): 1, ("http_404", "PIX1"): 1, ("transport", "PIX2"): 1}
    assert got[("ttbridge_request_duration_seconds_count", (("pixel", "PIX1"),))] == 2
    assert got[("ttbridge_request_duration_seconds_bucket", (("le", "0.025"), ("pixel", "PIX1")))] == 1
    assert got[("ttbridge_request_duration_seconds_bucket", (("le", "30.0"), ("pixel", "PIX2")))] == 0
    assert got[("ttbridge_request_events_sum", (("pixel", "PIX1"),))] == 253
    assert got[("ttbridge_request_events_bucket", (("le", "250.0"), ("pixel", "PIX1")))] == 2
    assert got[("ttbridge_join_candidates_total", (("pixel", "PIX1"),))] == 2
    assert got[("ttbridge_join_matched_total", (("pixel", "PIX1"),))] == 1
    assert got[("ttbridge_join_matched_total", (("pixel", "PIX2"),))] == 1


def test_gauges_are_read_when_scraped():
    m = Metrics()
    pending = {(): 0}
    m.gauge("pending_late_events", "waiting", (), lambda: pending)
    pending[()] = 4
    assert samples(m)[("ttbridge_pending_late_events", ())] == 4
    assert samples(m)[("ttbridge_build_info", (("version", metadata.version("ttbridge")),))] == 1


def used() -> Metrics:
    """A Metrics with every kind of metric the job exports created and counted."""
    m = Metrics()
    ok = Answer(Verdict(Action.DONE, "ok"), 0, 200, "OK")
    for name in ("events_in", "clicks_in", "landing_clicks", "events_joined", "events_waited", "batches",
                 "clicks_expired", "click_sweeps"):
        m.add(name)
    m.add("clicks_refused", reason="invalid_json")
    m.add("events_skipped", reason="unmapped")
    m.add("events_retrying", pixel="PIX1")
    m.add("dead_letters", reason="tiktok_40002", pixel="PIX1")
    m.delivered("PIX1", body({"ttclid": "a"}), Delivery(accepted=1, requests=1), oldest_at=0.0)
    m.delivered("PIX1", body({"ttclid": "a"}), Delivery(dead=[(body({"ttclid": "a"}), ok)], requests=1))
    m.request_observed("PIX1", 1, 0.1, ok)
    m.routed("PIX1", True)
    m.count("identifiers_dropped", 1, "PIX1", "phone")
    m.gauge("pending_late_events", "events waiting for their late click", (), lambda: {(): 0})
    m.gauge("requests_in_flight", "requests on the wire", ("pixel",), lambda: {("PIX1",): 1})
    m.gauge("clicks_table_ready", "the clicks table caught up and followed", (), lambda: {(): 1})
    return m


def exported_names(m: Metrics) -> set[str]:
    """Every sample name /metrics can serve (a histogram's _bucket, _sum, _count, _created)."""
    names = set()
    for family in text_string_to_metric_families(m.render()):
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
    return names


def test_every_metric_name_follows_prometheus_conventions():
    families = list(text_string_to_metric_families(used().render()))
    assert len(families) >= 25
    for f in families:
        assert re.fullmatch(r"ttbridge_[a-z][a-z0-9_]*", f.name), f.name
        assert f.documentation and f.documentation != f.name, f.name
        names = {s.name for s in f.samples}
        if f.type == "counter":
            assert not f.name.endswith("_total")  # the parser strips it: every sample carries it
            assert names and all(n == f.name + "_total" for n in names - {f.name + "_created"}), f.name
        else:
            assert not any(n.endswith("_total") for n in names), f.name
        if f.type == "histogram":
            assert names >= {f.name + "_bucket", f.name + "_sum", f.name + "_count"}
            # A duration is in seconds and says so; a size names what it counts.
            assert f.name.endswith(("_seconds", "_events")), f.name
        assert not re.search(r"_(ms|milliseconds|millis|secs|minutes|kb|mb)(_|$)", f.name), f.name
        assert ("latency" in f.name or "duration" in f.name) <= f.name.endswith("_seconds"), f.name
        if f.name.endswith("_info"):
            assert f.type == "gauge" and [s.value for s in f.samples] == [1.0]


# ------------------------------------------------------------------ the dashboard and alert rules

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"

# What a PromQL expression may name besides metrics: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "delta", "histogram_quantile",
    "absent", "vector", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "label_values", "clamp_min", "topk", "time",
}


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard query."""
    out = []
    rules = yaml.safe_load((MONITORING / "ttbridge-alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            out.append((rule["alert"], rule["expr"]))
    dashboard = json.loads((MONITORING / "ttbridge-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            out.append((variable["name"], variable["query"]["query"]))
    return out


def names_in(expr: str) -> set[str]:
    """The metric names of a PromQL expression: what is left once strings, label matchers,
    ranges, label lists, Grafana variables, numbers and PromQL's own words are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    expr = re.sub(r"label_values\(\s*(\w+)\s*,\s*\w+\s*\)", r"\1", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", re.sub(r"\b\d+(\.\d+)?(e\d+)?\b", "", expr)))
    return words - PROMQL_WORDS


def test_the_dashboard_and_alert_rules_query_only_metrics_ttbridge_exports():
    exported = exported_names(used())
    found = queries()
    alerts = {where for where, _ in found if where.startswith("Ttbridge")}
    assert {"TtbridgeNothingSent", "TtbridgeJoinRateDrop", "TtbridgeMatchQualityDrop", "TtbridgeTokenErrors",
            "TtbridgeDeadLetters", "TtbridgeConsumerLag", "TtbridgeBrokerUnreachable"} <= alerts
    used_names = set()
    for where, expr in found:
        names = names_in(expr)
        assert names, (where, expr)
        assert names <= exported, (where, names - exported)
        used_names |= names
    # What an operator needs is on the dashboard or in a rule: per-pixel throughput and latency,
    # match quality, dead letters by reason, lag, token errors.
    assert {"ttbridge_events_sent_total", "ttbridge_request_duration_seconds_bucket",
            "ttbridge_ingest_to_accepted_seconds_bucket", "ttbridge_events_sent_with_identifier_total",
            "ttbridge_join_matched_total", "ttbridge_join_candidates_total", "ttbridge_dead_letters_total",
            "ttbridge_consumer_lag_records", "ttbridge_api_responses_total", "ttbridge_broker_connected"} <= used_names


def test_the_name_check_catches_a_metric_ttbridge_does_not_export():
    assert names_in('sum by (pixel) (rate(ttbridge_events_sent_total{pixel=~"$pixel"}[5m] offset 1d))') == {
        "ttbridge_events_sent_total"}
    assert names_in("histogram_quantile(0.99, sum by (le) (rate(ttbridge_request_latency_ms_bucket[5m])))") == {
        "ttbridge_request_latency_ms_bucket"}
    assert "ttbridge_request_latency_ms_bucket" not in exported_names(used())
