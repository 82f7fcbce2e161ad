"""The records of the clicks table's log (clicks-by-click-id): many clicks of one partition per
record. The clicks there are those the intake derives from tracking events (landing pages with
ttclid in their URL); the tracker's own clicks feed the table from the clicks topic directly.

Why: one record per click would cost every worker's follower (app.job.clicks) a Kafka record's
overhead per click; a bundle of a poll's clicks for one partition is one record and one parse.
A bundle holds only click IDs of its own partition, chosen by Kafka's default partitioner
(murmur2 of the click ID): a click ID's records stay in order on one partition. The value is {"clicks": [[click_id, record], ...]}.
"""
from __future__ import annotations

from typing import Iterator

import orjson
from aiokafka.partitioner import murmur2

__all__ = ["MAX_BUNDLE_BYTES", "partition_of", "Bundler", "read_clicks"]

# Well under Kafka's 1 MB record limit; one click comes from a message of at most 512 KiB
# (settings.MAX_MESSAGE_BYTES), so every click fits in a bundle of its own.
MAX_BUNDLE_BYTES = 768 * 1024


def partition_of(click_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `click_id` (Java clients and
    aiokafka agree on it)."""
    return (murmur2(click_id.encode()) & 0x7FFFFFFF) % partitions


class Bundler:
    """Collects one poll's clicks per partition; `records()` gives the bundles as writes for
    app.job.durable (role, key, value, partition)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._clicks: dict[int, list[list]] = {}

    def add_click(self, click_id: str, record: dict) -> None:
        """A click to store (app.mapping.decode.click_record)."""
        self._clicks.setdefault(partition_of(click_id, self.partitions), []).append([click_id, record])

    def records(self) -> list[tuple]:
        out = [("clicks-by-click-id", None, value, p)
               for p, items in self._clicks.items() for value in _pack(items)]
        self._clicks = {}
        return out


def _pack(items: list) -> Iterator[bytes]:
    """The clicks in as few records as fit under MAX_BUNDLE_BYTES."""
    value = orjson.dumps({"clicks": items})
    if len(value) <= MAX_BUNDLE_BYTES or len(items) == 1:
        yield value
        return
    half = len(items) // 2
    yield from _pack(items[:half])
    yield from _pack(items[half:])


def read_clicks(value: bytes) -> list[list]:
    """The [click_id, record] pairs of one clicks-by-click-id record, in the order the intake
    read them. Raises (ValueError, KeyError, TypeError) on a record that is not a clicks bundle."""
    clicks = orjson.loads(value)["clicks"]
    if not isinstance(clicks, list):
        raise ValueError("a bundle's clicks must be a list")
    return clicks
