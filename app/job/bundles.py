"""The records of the two repartition topics: many events (or clicks) of one partition per record.

Why: faust's per-message stream path costs more than everything ttbridge does with an event
(bench/README.md, profile). The intake reads a batch, puts every event or click on the
partition of its click ID, and writes one record per partition; the agents reading the
repartition topics pay faust's per-message cost once per bundle instead of once per event.

The join still works as DESIGN.md says: a bundle holds only click IDs of its own partition,
chosen by Kafka's default partitioner (murmur2 of the click ID), so events and clicks stay
co-partitioned with each other and with the clicks table's changelog.

Three kinds of bundle, each a JSON object with one key: {"events": [entry, ...]} (entries as
`Bundler.add_event` describes), {"clicks": [[click_id, record], ...]} and {"expired":
[click_id, ...]} (the sweeper's deletions of clicks past the attribution window).
"""
from __future__ import annotations

import itertools
from typing import Iterator, NamedTuple

import orjson
from aiokafka.partitioner import murmur2

__all__ = ["MAX_BUNDLE_BYTES", "partition_of", "Bundler", "read_events", "read_clicks", "ClickBundle"]

# Well under Kafka's 1 MB record limit; one event is at most 512 KiB (settings.MAX_MESSAGE_BYTES),
# so every event fits in a bundle of its own.
MAX_BUNDLE_BYTES = 768 * 1024


def partition_of(click_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `click_id` (Java clients and
    aiokafka agree on it), i.e. where the clicks table keeps that click."""
    return (murmur2(click_id.encode()) & 0x7FFFFFFF) % partitions


class Bundler:
    """Collects one batch's events, clicks or expiries per partition; `records()` gives the
    bundles as writes for app.job.durable (role, key, value, partition)."""

    def __init__(self, partitions: int, spread: Iterator[int] | None = None) -> None:
        self.partitions = partitions
        self._events: dict[int, list[dict]] = {}
        self._clicks: dict[int, list[list]] = {}
        self._expired: dict[int, list[str]] = {}
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
        """A click to store (app.mapping.decode.click_record)."""
        self._clicks.setdefault(partition_of(click_id, self.partitions), []).append([click_id, record])

    def add_expiry(self, click_id: str) -> None:
        """A click past the attribution window, to delete unless it came again since."""
        self._expired.setdefault(partition_of(click_id, self.partitions), []).append(click_id)

    def records(self) -> list[tuple]:
        out = []
        for role, kind, by_partition in (("events-by-click-id", "events", self._events),
                                         ("clicks-by-click-id", "clicks", self._clicks),
                                         ("clicks-by-click-id", "expired", self._expired)):
            for p, items in by_partition.items():
                out += [(role, None, value, p) for value in _pack(kind, items)]
        self._events, self._clicks, self._expired = {}, {}, {}
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


def read_events(value: bytes) -> list[dict]:
    """The entries of one events-by-click-id record: {"click_id", "at", "source", "event"}.
    Raises (ValueError, KeyError, TypeError) on a record that is not an events bundle."""
    events = orjson.loads(value)["events"]
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValueError("a bundle's events must be a list of objects")
    return events


class ClickBundle(NamedTuple):
    clicks: list[list]   # [click_id, record] pairs, in the order the intake read them
    expired: list[str]   # click IDs the sweeper found past the attribution window


def read_clicks(value: bytes) -> ClickBundle:
    """One clicks-by-click-id record. Raises (ValueError, KeyError, TypeError) on a record that
    is not a clicks or an expired bundle."""
    doc = orjson.loads(value)
    if "expired" in doc:
        return ClickBundle([], list(doc["expired"]))
    clicks = doc["clicks"]
    if not isinstance(clicks, list):
        raise ValueError("a bundle's clicks must be a list")
    return ClickBundle(clicks, [])
