"""The records of the two repartition topics: many events (or clicks) of one partition per record.

Why: faust's per-message stream path costs more than everything ttbridge does with an event
(bench/README.md, profile). The decode stages read a batch, put every event or click on the
partition of its click ID, and write one record per partition; the stages reading the
repartition topics pay faust's per-message cost once per bundle instead of once per event.

The join still works as DESIGN.md says: a bundle holds only click IDs of its own partition,
chosen by Kafka's default partitioner (murmur2 of the click ID), so events and clicks stay
co-partitioned with each other and with the clicks table's changelog.

A bundle carries the header `ttbridge-bundle: 1`. A record without it is one event or one click
keyed by its click ID (what ttbridge wrote before bundles), read the same way, so an upgrade
finds the records the previous version left on the topics.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator

import orjson
from aiokafka.partitioner import murmur2

__all__ = ["BUNDLE_HEADER", "MAX_BUNDLE_BYTES", "partition_of", "Bundler", "is_bundle",
           "unbundle_events", "unbundle_clicks"]

BUNDLE_HEADER = ("ttbridge-bundle", b"1")
# Well under Kafka's 1 MB record limit; one event is at most 512 KiB (settings.MAX_MESSAGE_BYTES),
# so every event fits in a bundle of its own.
MAX_BUNDLE_BYTES = 768 * 1024


def partition_of(click_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `click_id` (Java clients and
    aiokafka agree on it), i.e. where the clicks table keeps that click."""
    return (murmur2(click_id.encode()) & 0x7FFFFFFF) % partitions


class Bundler:
    """Collects one batch's events and clicks per partition; `records()` gives the bundles as
    writes for app.job.durable (role, key, value, partition, headers)."""

    def __init__(self, partitions: int, spread: Iterator[int] | None = None) -> None:
        self.partitions = partitions
        self._events: dict[int, list[dict]] = {}
        self._clicks: dict[int, list[list]] = {}
        # Events without a click ID take the partitions in turn; the caller may share one turn
        # across batches, so that a trickle of them does not all land on partition 0.
        self._spread = spread if spread is not None else itertools.cycle(range(partitions))

    def add_event(self, click_id: str | None, raw: bytes, at: float, source: dict) -> None:
        """One validated tracking event: its original bytes travel on unchanged (a JSON
        fragment: no re-serialisation here, one parse per bundle downstream)."""
        p = partition_of(click_id, self.partitions) if click_id else next(self._spread)
        self._events.setdefault(p, []).append(
            {"click_id": click_id, "at": at, "source": source, "event": orjson.Fragment(raw)})

    def add_click(self, click_id: str, record: dict) -> None:
        self._clicks.setdefault(partition_of(click_id, self.partitions), []).append([click_id, record])

    def records(self) -> list[tuple]:
        out = []
        for role, kind, by_partition in (("events-by-click-id", "events", self._events),
                                         ("clicks-by-click-id", "clicks", self._clicks)):
            for p, items in by_partition.items():
                out += [(role, None, value, p, [BUNDLE_HEADER]) for value in _pack(kind, items)]
        self._events, self._clicks = {}, {}
        return out


def _pack(kind: str, items: list) -> Iterator[bytes]:
    """`{kind: items}` in as few records as fit under MAX_BUNDLE_BYTES."""
    value = orjson.dumps({kind: items})
    if len(value) <= MAX_BUNDLE_BYTES or len(items) == 1:
        yield value
        return
    half = len(items) // 2
    yield from _pack(kind, items[:half])
    yield from _pack(kind, items[half:])


def is_bundle(headers: Any) -> bool:
    """`headers` as faust gives them (a dict) or as aiokafka does (a list of pairs)."""
    if isinstance(headers, dict):
        return headers.get(BUNDLE_HEADER[0]) == BUNDLE_HEADER[1]
    return any(tuple(h) == BUNDLE_HEADER for h in headers or ())


def unbundle_events(key: bytes | None, value: bytes, headers: Any, at: float,
                    source: dict) -> list[dict]:
    """The entries of one events-by-click-id record: {"click_id", "at", "source", "event"}.
    `at` and `source` are the record's own, for a record from before bundles."""
    if is_bundle(headers):
        events = orjson.loads(value)["events"]
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise ValueError("a bundle's events must be a list of objects")
        return events
    return [{"click_id": key.decode() if key else None, "at": at, "source": source,
             "event": orjson.loads(value)}]


def unbundle_clicks(key: bytes | None, value: bytes, headers: Any) -> list[list]:
    """[click_id, record] pairs of one clicks-by-click-id record."""
    if is_bundle(headers):
        return orjson.loads(value)["clicks"]
    return [[key.decode(), orjson.loads(value)]]
