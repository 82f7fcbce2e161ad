"""The records of the two repartition topics: many events (or clicks) of one partition per record.

Why: faust's per-message stream path costs more than everything ttbridge does with an event
(bench/README.md, profile). The intake reads a batch, puts every event or click on the
partition of its click ID, and writes one record per partition; the agents reading the
repartition topics pay faust's per-message cost once per bundle instead of once per event.

A bundle holds only click IDs of its own partition, chosen by Kafka's default partitioner
(murmur2 of the click ID): the events of one click stay in order on one partition.

Two kinds of bundle: events (framed, below) and {"clicks": [[click_id, record], ...]}.

An events bundle carries each event as its own bytes, not nested in one JSON document:

    b"ttbridge-events/2\n" {"events": [{"click_id", "at", "source", "bytes": n}, ...]} b"\n"
    <event 1's n bytes><event 2's bytes>...   (back to back, in the header's order)

Why: the intake accepted each event by parsing exactly those bytes, so the forwarder parsing
exactly those bytes again cannot fail where the intake did not: no wrapper adds nesting (an
event 1,022-1,024 levels deep fits orjson's limit of 1,024 alone, not inside {"events":
[{"event": ...}]}, where it sank the whole bundle), and nothing is escaped or written again.
Whatever else makes one entry unreadable (bytes written by hand, another orjson on the other
side) costs that entry alone: `event_of` refuses it as the intake would, and its bundle-mates
go on. Refusing deep events at the intake instead would have guarded against depth only; JSON
strings or base64 per event would add a decoding pass and 13% or 33% bytes. The header is ours
and flat: it parses and frames the bytes exactly, or the whole record is junk. Still one parse
per event; `python -m bench.bundle_speed` (1.2 KB events, 170 a bundle): intake 2.5 -> 2.8,
forwarder 4.5 -> 5.2 µs per event (min of 400 runs) against the JSON bundle. There has been
no release, so the JSON bundle of before is not read: a record without the frame is junk.
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterator

import orjson
from aiokafka.partitioner import murmur2

from app.mapping.events import Refusal

__all__ = ["MAX_BUNDLE_BYTES", "EVENTS_FRAME", "partition_of", "Bundler", "events_value", "read_events",
           "event_of", "read_clicks"]

# Well under Kafka's 1 MB record limit; one event is at most 512 KiB (settings.MAX_MESSAGE_BYTES),
# so every event fits in a bundle of its own.
MAX_BUNDLE_BYTES = 768 * 1024
# The first bytes of a framed events bundle; a JSON document cannot start with them.
EVENTS_FRAME = b"ttbridge-events/2\n"


def partition_of(click_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `click_id` (Java clients and
    aiokafka agree on it))."""
    return (murmur2(click_id.encode()) & 0x7FFFFFFF) % partitions


class Bundler:
    """Collects one batch's events and clicks per partition; `records()` gives the
    bundles as writes for app.job.durable (role, key, value, partition)."""

    def __init__(self, partitions: int, spread: Iterator[int] | None = None) -> None:
        self.partitions = partitions
        self._events: dict[int, list[tuple[dict, bytes]]] = {}
        self._clicks: dict[int, list[list]] = {}
        # Events without a click ID take the partitions in turn; the caller may share one turn
        # across batches, so that a trickle of them does not all land on partition 0.
        self._spread = spread if spread is not None else itertools.cycle(range(partitions))

    def add_event(self, click_id: str | None, raw: bytes, at: float, source: dict) -> None:
        """One validated tracking event: `raw`, the bytes the intake parsed, travel on unchanged
        (no re-serialisation here, one parse per event downstream)."""
        p = partition_of(click_id, self.partitions) if click_id else next(self._spread)
        self._events.setdefault(p, []).append(({"click_id": click_id, "at": at, "source": source}, raw))

    def add_click(self, click_id: str, record: dict) -> None:
        """A click to store (app.mapping.decode.click_record)."""
        self._clicks.setdefault(partition_of(click_id, self.partitions), []).append([click_id, record])

    def records(self) -> list[tuple]:
        out = []
        for role, encode, by_partition in (("events-by-click-id", events_value, self._events),
                                           ("clicks-by-click-id", _clicks_value, self._clicks)):
            for p, items in by_partition.items():
                out += [(role, None, value, p) for value in _pack(items, encode)]
        self._events, self._clicks = {}, {}
        return out


def _clicks_value(items: list) -> bytes:
    return orjson.dumps({"clicks": items})


def _pack(items: list, encode: Callable[[list], bytes]) -> Iterator[bytes]:
    """`encode(items)` in as few records as fit under MAX_BUNDLE_BYTES."""
    value = encode(items)
    if len(value) <= MAX_BUNDLE_BYTES or len(items) == 1:
        yield value
        return
    half = len(items) // 2
    yield from _pack(items[:half], encode)
    yield from _pack(items[half:], encode)


def events_value(entries: list[tuple[dict, bytes]]) -> bytes:
    """One framed events bundle of (metadata, event bytes) pairs; the metadata as
    `Bundler.add_event` gives it (click_id, at, source)."""
    header = orjson.dumps({"events": [{**meta, "bytes": len(raw)} for meta, raw in entries]})
    return b"".join([EVENTS_FRAME, header, b"\n", *(raw for _, raw in entries)])


def read_events(value: bytes) -> list[dict]:
    """The entries of one events-by-click-id record: {"click_id", "at", "source", "bytes",
    "raw"}, "raw" the event's own bytes (a view into `value`; `event_of` parses it). Raises
    (ValueError, KeyError, TypeError) on a record that is not an events bundle, or whose header
    does not frame its bytes."""
    if not value.startswith(EVENTS_FRAME):
        raise ValueError("not an events bundle (no ttbridge-events/2 frame)")
    view = memoryview(value)
    start = len(EVENTS_FRAME)
    end = value.find(b"\n", start)
    if end < 0:
        raise ValueError("a framed bundle without the end of its header")
    entries = orjson.loads(view[start:end])["events"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("a bundle's events must be a list of objects")
    at = end + 1
    for entry in entries:
        n = entry["bytes"]
        if type(n) is not int or n < 0:
            raise ValueError(f"an entry's bytes must be a count, got {n!r}")
        entry["raw"] = view[at:at + n]
        at += n
    if at != len(value):
        raise ValueError(f"the header frames {at - end - 1} bytes of events, the record has {len(value) - end - 1}")
    return entries


def event_of(entry: dict) -> dict:
    """The entry's event, parsed from its own bytes once (and kept in entry["event"]: an event
    waiting for its click is read again at each re-join). Raises Refusal as the intake's decode
    would (invalid_json, not_an_object): this entry is dead-lettered, not its bundle."""
    event = entry.get("event")
    if event is not None:
        return event
    try:
        event = orjson.loads(entry["raw"])
    except orjson.JSONDecodeError as e:
        raise Refusal("invalid_json", str(e)) from None
    if not isinstance(event, dict):
        raise Refusal("not_an_object", f"expected a JSON object, got {type(event).__name__}")
    entry["event"] = event
    return event


def read_clicks(value: bytes) -> list[list]:
    """The [click_id, record] pairs of one clicks-by-click-id record, in the order the intake
    read them. Raises (ValueError, KeyError, TypeError) on a record that is not a clicks bundle."""
    clicks = orjson.loads(value)["clicks"]
    if not isinstance(clicks, list):
        raise ValueError("a bundle's clicks must be a list")
    return clicks
