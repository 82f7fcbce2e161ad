"""What /metrics serves (Prometheus, through prometheus_client) and /stats summarises.

The hot path stays plain dict increments, once per batch: `add(name, n, reason=..., pixel=...)`.
A collector of our own (in a registry of our own, not prometheus_client's global one) turns the
dicts into counter families only when scraped, so /stats (`snapshot()`, `get()`: the classic
counters summed over pixels) and /metrics read the same numbers. Histograms are
prometheus_client's own (observed once per request), gauges are read at scrape time.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from importlib import metadata
from typing import Callable

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# In the text format a histogram's `_created` series comes out as one more gauge family per
# histogram, which Prometheus stores and nobody queries. The process has no other registry.
disable_created_metrics()

__all__ = ["Metrics", "IDENTIFIERS", "BROKER_SILENT_S"]

PREFIX = "ttbridge_"

# The counters of /stats: name -> (help, labels). A counter with labels and no count yet is served
# at 0 with empty labels, so that its series exists (rates and "nothing sent" alerts need it).
_COUNTERS = {
    "events_in": ("tracking events read", ()),
    "clicks_in": ("records of the clicks topic read by this worker's clicks table (every worker "
                  "reads them all)", ()),
    "clicks_refused": ("records of the clicks topic not stored, by reason (skipped by every worker "
                       "alike, not dead-lettered)", ("reason",)),
    "landing_clicks": ("tracking events recorded as clicks (a landing page with ttclid in its URL)", ()),
    "clicks_stored": ("clicks written to this worker's copy of the clicks table", ()),
    "events_joined": ("events that found their click", ()),
    "events_waited": ("events sent without their click after waiting join_wait", ()),
    "events_skipped": ("events not sent on purpose, by reason (e.g. unmapped)", ("reason",)),
    "events_sent": ("TikTok events accepted by the Events API", ("pixel",)),
    "events_retrying": ("TikTok events written to the retry topic", ("pixel",)),
    "dead_letters": ("records written to the dead-letter topic, by reason", ("reason", "pixel")),
    "requests": ("requests sent to the Events API", ("pixel",)),
    "batches": ("request bodies built by the forwarder", ()),
    "clicks_expired": ("clicks past the attribution window deleted from the table", ()),
    "click_sweeps": ("runs of the sweeper that deletes expired clicks", ()),
}

# Counters for /metrics only (not in /stats): name -> (help, label of the second key).
_DETAIL = {
    "events_refused": ("TikTok events the Events API refused (dead-lettered at send), by reason",
                       "reason"),
    "api_responses": ("answers of the Events API by code: TikTok's code, http_<status> or transport",
                      "code"),
    "events_sent_with_identifier": ("accepted TikTok events carrying this identifier (match quality: "
                                    "divide by ttbridge_events_sent_total)", "identifier"),
    "identifiers_dropped": ("identifiers an event carried that could not be used (e.g. a phone "
                            "without country code and no default_region, an email that is not one)",
                            "identifier"),
    "join_candidates": ("events routed to a pixel that carried a click ID", ""),
    "join_matched": ("events routed to a pixel that carried a click ID and found their click", ""),
}

# The identifiers TikTok matches on (TIKTOK_EVENTS_API.md); ip_user_agent counts both together.
IDENTIFIERS = ("ttclid", "ttp", "email", "phone", "external_id", "ip_user_agent")

# broker_connected is 0 once no fetch answer came back for this long.
BROKER_SILENT_S = 30.0
_LAG_EVERY_S = 1.0


def identifier_counts(data: list) -> list[int]:
    """How many of these TikTok events carry each of IDENTIFIERS (one pass, key lookups)."""
    ttclid = ttp = email = phone = external_id = ip_ua = 0
    for event in data:
        user = event.get("user")
        if not user:
            continue
        ttclid += "ttclid" in user
        ttp += "ttp" in user
        email += "email" in user
        phone += "phone" in user
        external_id += "external_id" in user
        ip_ua += "ip" in user and "user_agent" in user
    return [ttclid, ttp, email, phone, external_id, ip_ua]


def _version() -> str:
    try:
        return metadata.version("ttbridge")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()            # (name, reason): /stats
        self.by_pixel: Counter[tuple[str, str, str]] = Counter()     # (name, reason, pixel)
        self.detail: Counter[tuple[str, str, str]] = Counter()       # (name, label, pixel)
        self._gauges: dict[str, tuple[str, tuple[str, ...], Callable[[], dict]]] = {}
        self._consumers: dict = {}                                  # group -> aiokafka consumer
        self._lag: dict[str, dict[tuple[str, int], int]] = {}
        self._lag_at: dict[str, float] = {}
        self.version = _version()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        self.request_seconds = Histogram(
            "ttbridge_request_duration_seconds", "time of one POST to the Events API", ["pixel"],
            registry=self.registry, buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.request_events = Histogram(
            "ttbridge_request_events", "TikTok events in one request to the Events API", ["pixel"],
            registry=self.registry, buckets=(1, 5, 10, 50, 100, 250, 500, 1000))
        self.ingest_to_accepted = Histogram(
            "ttbridge_ingest_to_accepted_seconds", "from the intake reading a request's oldest event "
            "to TikTok accepting the request", ["pixel"], registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))

    # ------------------------------------------------------------------ the hot path (per batch)

    def add(self, name: str, n: int = 1, reason: str = "", pixel: str = "") -> None:
        self.counts[(name, reason)] += n
        if pixel:
            self.by_pixel[(name, reason, pixel)] += n

    def count(self, name: str, n: int, pixel: str = "", label: str = "") -> None:
        """A /metrics-only counter (_DETAIL)."""
        if n:
            self.detail[(name, label, pixel)] += n

    def delivered(self, pixel: str, body: dict, delivery, oldest_at: float | None = None) -> None:
        """One body's Delivery (app.tiktok.sender): sent, requests, refusals and match quality."""
        self.add("events_sent", delivery.accepted, pixel=pixel)
        self.add("requests", delivery.requests, pixel=pixel)
        if delivery.accepted:
            counts = identifier_counts(body["data"])
            for failed, _ in (*delivery.retry, *delivery.dead):  # what TikTok did not accept
                counts = [a - b for a, b in zip(counts, identifier_counts(failed["data"]))]
            for identifier, n in zip(IDENTIFIERS, counts):
                self.count("events_sent_with_identifier", n, pixel, identifier)
            if oldest_at is not None:
                self.ingest_to_accepted.labels(pixel).observe(max(0.0, time.time() - oldest_at))
        for failed, answer in delivery.dead:
            self.count("events_refused", len(failed["data"]), pixel, answer.verdict.reason)

    def routed(self, pixel: str, joined: bool, n: int = 1) -> None:
        """n events with a click ID go to `pixel`: the join rate's denominator (and, joined, its
        numerator)."""
        self.detail[("join_candidates", "", pixel)] += n
        if joined:
            self.detail[("join_matched", "", pixel)] += n

    def request_observed(self, pixel: str, events: int, seconds: float, answer) -> None:
        """The Sender's observe hook: once per POST."""
        self.request_seconds.labels(pixel).observe(seconds)
        self.request_events.labels(pixel).observe(events)
        if answer.code is not None:
            code = str(answer.code)
        elif answer.http_status is not None and answer.http_status != 200:
            code = f"http_{answer.http_status}"
        else:
            code = "transport"
        self.detail[("api_responses", code, pixel)] += 1

    # ------------------------------------------------------------------ gauges (read when scraped)

    def gauge(self, name: str, help: str, labels: tuple[str, ...], read: Callable[[], dict]) -> None:
        """Serve `ttbridge_<name>`: read() -> {label values tuple: value}, called at scrape time."""
        self._gauges[name] = (help, labels, read)

    def watch_consumer(self, group: str, consumer) -> None:
        """A consumer whose fetches show the broker is reachable, and whose lag is served."""
        self._consumers[group] = consumer
        self._lag[group] = {}

    async def refresh_lag(self, group: str, consumer, end_offsets: bool = False) -> None:
        """Records behind, per assigned partition: highwater - position, at most once a second
        (from the poll loop: positions are coroutines in aiokafka). A consumer that pauses its
        partitions (the retry tiers, until a record is due) gets no fetch answers for them, so
        its highwater goes stale: with `end_offsets` the ends are asked for instead, every 5 s
        (one ListOffsets request), and the lag is the tier's depth."""
        now = time.monotonic()
        if now - self._lag_at.get(group, 0.0) < (5 * _LAG_EVERY_S if end_offsets else _LAG_EVERY_S):
            return
        self._lag_at[group] = now
        assigned = consumer.assignment()
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(list(assigned)), 2) if end_offsets and assigned \
                else {tp: consumer.highwater(tp) for tp in assigned}
        except Exception:  # noqa: BLE001 - the broker away: keep the last numbers
            return
        lag = {}
        for tp, high in ends.items():
            if high is None:
                continue
            try:
                lag[(tp.topic, tp.partition)] = max(0, high - await consumer.position(tp))
            except Exception:  # noqa: BLE001 - revoked meanwhile: no lag to tell for it
                continue
        self._lag[group] = lag

    def watching(self) -> bool:
        """Whether a consumer is watched, i.e. broker_connected() has anything to tell."""
        return bool(self._consumers)

    def broker_connected(self, silent_s: float = BROKER_SILENT_S) -> int:
        """1 when a watched consumer had a fetch answer within `silent_s` (the gauge: BROKER_SILENT_S)."""
        now_ms = time.time() * 1000
        for consumer in self._consumers.values():
            try:
                stamps = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
            except Exception:  # noqa: BLE001 - a consumer stopping: not connected
                continue
            if any(s is not None and now_ms - s <= silent_s * 1000 for s in stamps):
                return 1
        return 0

    # ------------------------------------------------------------------ reading

    def get(self, name: str, reason: str | None = None) -> int:
        if reason is not None:
            return self.counts[(name, reason)]
        return sum(v for (n, _), v in self.counts.items() if n == name)

    def snapshot(self) -> dict:
        """{name: n} for plain counters, {name: {reason: n}} for counters with reasons."""
        out: dict = {}
        labelled = {n for n, r in self.counts if r}
        for (name, reason), v in sorted(self.counts.items()):
            if name in labelled:
                out.setdefault(name, {})[reason or "unlabelled"] = v
            else:
                out[name] = v
        return out

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _Collector:
    """Builds the counter and gauge families from Metrics' dicts when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self):
        m = self.m
        names = sorted({n for n, _ in m.counts} | set(_COUNTERS))
        for name in names:
            help_, labels = _COUNTERS.get(name, (name, ()))
            rows = sorted((r, v) for (n, r), v in m.counts.items() if n == name)
            if name not in _COUNTERS:  # not declared: a reason label if it has reasons
                labels = ("reason",) if any(r for r, _ in rows) else ()
                labels += ("pixel",) if any(k[0] == name for k in m.by_pixel) else ()
            family = CounterMetricFamily(PREFIX + name, help_, labels=labels)
            for reason, total in rows or [("", 0)]:
                rest = total
                for (n, r, pixel), v in sorted(m.by_pixel.items()):
                    if n == name and r == reason:
                        family.add_metric(_values(labels, reason, pixel), v)
                        rest -= v
                if rest or rest == total:  # counted without a pixel (or nothing counted)
                    family.add_metric(_values(labels, reason, ""), rest)
            yield family
        for name, (help_, second) in sorted(_DETAIL.items()):
            labels = ("pixel", second) if second else ("pixel",)
            family = CounterMetricFamily(PREFIX + name, help_, labels=labels)
            for (n, label, pixel), v in sorted(m.detail.items()):
                if n == name:
                    family.add_metric([pixel, label] if second else [pixel], v)
            yield family
        info = GaugeMetricFamily(PREFIX + "build_info", "the running ttbridge's version", labels=["version"])
        info.add_metric([m.version], 1)
        yield info
        # Without a watched consumer (none started yet) there is nothing to tell: no sample.
        up = GaugeMetricFamily(PREFIX + "broker_connected", "1 when the broker answered a fetch "
                               f"within {BROKER_SILENT_S:g} s, else 0")
        if m._consumers:
            up.add_metric([], m.broker_connected())
        yield up
        lag = GaugeMetricFamily(PREFIX + "consumer_lag_records", "records not yet read, per "
                                "partition, as of the group's last poll", labels=["group", "topic", "partition"])
        for group, partitions in sorted(m._lag.items()):
            for (topic, partition), v in sorted(partitions.items()):
                lag.add_metric([group, topic, str(partition)], v)
        yield lag
        for name, (help_, labels, read) in sorted(m._gauges.items()):
            family = GaugeMetricFamily(PREFIX + name, help_, labels=list(labels))
            for values, v in sorted(read().items()):
                family.add_metric(list(values), v)
            yield family


def _values(labels: tuple[str, ...], reason: str, pixel: str) -> list[str]:
    return [pixel if label == "pixel" else reason for label in labels]
