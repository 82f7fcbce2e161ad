"""The forwarder: join each event with its click, map it, batch per pixel, deliver, and make the
outcome durable before its input message may be committed.

Every event handed to `handle` ends up in exactly one place: accepted by TikTok, on the retry
topic, on the dead-letter topic, counted as skipped, or pending (waiting for its click, its
message not committable). The intake hands each event over with the ticket of the message it
came from (app.job.offsets): the ticket is settled once the event's outcome is durable.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from typing import Any, Awaitable, Callable, Mapping

from app.job.durable import Write, write_durably
from app.job.metrics import Metrics
from app.job.offsets import Ticket
from app.job.records import dead_letter, encode, hash_original, retry_record
from app.mapping.events import (
    MappingConfig,
    Refusal,
    Skip,
    dropped_identifiers,
    has_identifier,
    map_event,
    skip_reason,
    test_event_code_of,
)
from app.mapping.routing import Router
from app.mapping.sources import for_source
from app.settings import Settings
from app.tiktok.requests import request_bodies
from app.tiktok.sender import Sender

__all__ = ["Forwarder", "Lookup"]

log = logging.getLogger(__name__)

_PENDING = object()
# Rounds on the wire at once. The intake maps the next round while one is delivered: with one
# the worker sat idle (12% of its samples in select) for every request's round trip.
ROUNDS_IN_FLIGHT = 2


# lookup(click_id): the click, or None (app.job.clicks.Clicks.read).
Lookup = Callable[[str], "dict | None"]


class Forwarder:
    def __init__(self, settings: Settings, mapping: MappingConfig, lookup: Lookup, sender: Sender,
                 write: Write, metrics: Metrics, assigned: Callable[[], set] | None = None,
                 mappings: Mapping[str, MappingConfig] | None = None) -> None:
        self.settings = settings
        # The input topic's shape reads its events; `mapping` those of any other topic.
        self.mapping = mapping
        self.mappings = dict(mappings or {})
        self.lookup = lookup
        self.sender = sender
        self.write = write
        self.metrics = metrics
        self.router = Router(settings)
        self.assigned = assigned
        # click ID -> [(ticket, entry)] waiting for that late click. Unsettled, so a crash re-reads
        # them; their offsets hold back commits by at most join_wait.
        self.pending: dict[str, list[tuple[Ticket, dict]]] = {}
        self._arrived: set[str] = set()  # pending click IDs the click store has stored since
        self._wake = asyncio.Event()
        self._last_full_pass = 0.0
        self._lock = asyncio.Lock()  # handle and recheck both take from and add to `pending`
        self._in_flight: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(ROUNDS_IN_FLIGHT)
        metrics.gauge("pending_late_events", "events waiting for their late click (their messages not "
                      "committable)", (), lambda: {(): self.pending_count})
        # The real Sender times each POST for the metrics (tests' stand-ins may not).
        if getattr(sender, "observe", False) is None:
            sender.observe = metrics.request_observed
        if hasattr(sender, "in_flight"):
            metrics.gauge("requests_in_flight", "requests to the Events API on the wire", ("pixel",),
                          sender.in_flight)

    async def handle(self, entries: list) -> None:
        """Join and map these (ticket, entry) pairs now; their delivery goes on in the background
        (returns at once, or when one of ROUNDS_IN_FLIGHT rounds is done). An entry is
        {"click_id", "at" (when the intake read it), "source", "event", "raw" (its bytes)}."""
        await self._start(lambda: entries)

    def abandon_pending(self) -> None:
        """The intake restarted from its committed offsets: the events waiting for a click are
        read again, so they wait no longer here."""
        self.pending.clear()
        self._arrived = set()

    async def drain(self, within: float | None = None) -> None:
        """Wait for the rounds on the wire (at shutdown, before the HTTP session closes); those
        still out after `within` seconds are cancelled: their events stay uncommitted and are
        re-read (with the same event_ids, which TikTok drops as duplicates)."""
        deadline = None if within is None else time.monotonic() + within
        while self._in_flight:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                for task in self._in_flight:
                    task.cancel()
                left = None
            await asyncio.wait(list(self._in_flight), timeout=left)

    async def _start(self, take: Callable[[], list]) -> None:
        """Under the lock, `take()` the entries and prepare them; then deliver in the
        background, in one of ROUNDS_IN_FLIGHT slots."""
        await self._slots.acquire()
        try:
            async with self._lock:
                delivery = self._process(take(), time.time())
        except BaseException:
            self._slots.release()
            raise
        task = asyncio.get_running_loop().create_task(delivery)
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            # Its events stay unsettled: the partition's commits stop there and the next owner (or
            # this worker after a restart) re-reads them. Loud, not lost.
            log.error("a delivery failed; its events stay uncommitted and are re-read after a restart "
                      "or rebalance", exc_info=task.exception())

    @property
    def pending_count(self) -> int:
        return sum(map(len, self.pending.values()))

    def clicks_stored(self, click_ids) -> None:
        """Called by the click store: re-join the events waiting for these clicks now, not at
        the next tick (a late conversion's latency is its click's, not a timer's)."""
        if self.pending:
            arrived = [c for c in click_ids if c in self.pending]
            if arrived:
                self._arrived.update(arrived)
                self._wake.set()

    async def next_recheck(self, interval: float) -> None:
        """Wait until a pending event's click was stored, or at most `interval`."""
        try:
            await asyncio.wait_for(self._wake.wait(), interval)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    async def recheck(self, interval: float) -> None:
        """Re-join the pending events whose click arrived; every `interval`, also those whose
        join_wait is over (they go out without their click). Cost: one lookup per event taken.
        The others are not looked up again: their click's arrival is signalled (clicks_stored),
        and a full pass that looked up all of them cost as many lookups every `interval` as
        there were late conversions waiting."""
        if not self.pending:
            return

        def take() -> list:
            now = time.time()
            ids = [c for c in self._arrived if c in self.pending]
            if now - self._last_full_pass >= interval:
                self._last_full_pass = now
                # A click ID's events wait in the order they came: the first is the oldest.
                wait = self.settings.join_wait_s
                arrived = set(ids)
                ids += [c for c, waiting in self.pending.items()
                        if now - waiting[0][1]["at"] >= wait and c not in arrived]
            self._arrived = set()
            entries = [e for c in ids for e in self.pending.pop(c)]
            if self.assigned is not None:
                # A partition moved away in a rebalance: its new owner re-reads these events.
                mine = self.assigned()
                entries = [e for e in entries if e[0].tp in mine]
            return entries
        await self._start(take)

    def _process(self, entries: list, now: float) -> Awaitable[None]:
        """Join and map `entries` (those waiting for their click go to `pending`); returns their
        delivery, which settles each one's ticket once its outcome is durable."""
        groups: dict[tuple, list[dict]] = defaultdict(list)
        pixels: dict[tuple, Any] = {}
        oldest: dict[tuple, float] = {}  # per body group: when the intake read its oldest event
        dead: list[tuple[bytes | None, dict]] = []
        done: list[Ticket] = []
        m = self.metrics
        joins: Counter = Counter()  # counted here, added to the metrics once per round
        for ticket, entry in entries:
            try:
                outcome = self._prepare(entry, now, joins)
            except Exception as e:  # noqa: BLE001 - a bug must not stop the stream or lose the event
                log.exception("unexpected error preparing an event")
                outcome = dead_letter("internal_error", f"{type(e).__name__}: {e}", "map", now,
                                      source=entry.get("source"), original=_original(entry))
            if outcome is _PENDING:
                self.pending.setdefault(entry["click_id"], []).append((ticket, entry))
                continue
            done.append(ticket)
            if isinstance(outcome, dict):
                dead.append((None, outcome))
            elif outcome is not None:
                pixel, items, test_event_code = outcome
                # An event's own test event code is a field of the request: it batches apart.
                key = (pixel.event_source, pixel.code, test_event_code)
                pixels[key] = pixel
                oldest[key] = min(oldest.get(key, entry["at"]), entry["at"])
                groups[key].extend(items)
        for key, n in joins.items():
            if type(key) is str:
                m.add(key, n)
            else:
                m.routed(*key, n)

        bodies = [(pixels[key], body) for key, items in groups.items()
                  for body in request_bodies(key, items, self.settings.batch_max)]
        m.add("batches", len(bodies))
        ats = [oldest[key] for key, items in groups.items()
               for _ in range(-(-len(items) // self.settings.batch_max))]
        return self._deliver(bodies, dead, done, now, ats if len(ats) == len(bodies) else None)

    async def _deliver(self, bodies: list, dead: list, done: list, now: float,
                       ats: list | None = None) -> None:
        m = self.metrics
        deliveries = await asyncio.gather(*(self.sender.deliver(p, b) for p, b in bodies))

        retries = []
        for i, ((pixel, sent), delivery) in enumerate(zip(bodies, deliveries)):
            m.delivered(pixel.code, sent, delivery, ats[i] if ats else None)
            for body, answer in delivery.retry:
                m.add("events_retrying", len(body["data"]), pixel=pixel.code)
                not_before = now + self.settings.retry_tiers_s[0]
                retries.append((pixel.code.encode(), retry_record(body, pixel.code, 1, not_before,
                                                                  now, answer.error())))
            for body, answer in delivery.dead:
                dead.append((pixel.code.encode(), dead_letter(
                    answer.verdict.reason, answer.message, "send", now, attempts=1,
                    pixel_code=pixel.code, code=answer.code, request=body)))
        for _, record in dead:
            m.add("dead_letters", reason=record["reason"], pixel=record.get("pixel_code") or "")
        await self._durably(retries, dead)
        for ticket in done:
            ticket.settle()

    def _prepare(self, entry: dict, now: float, joins: Counter):
        """One event's fate: _PENDING, a dead-letter record, None (skipped), or (pixel, items,
        test event code). `joins` counts events_joined/events_waited, and per (pixel, joined)
        the events with a click ID routed to a pixel."""
        m = self.metrics
        event, click_id = entry["event"], entry["click_id"]
        click = self.lookup(click_id) if click_id else None
        if click is None and click_id and now - entry["at"] < self.settings.join_wait_s:
            return _PENDING
        if click is not None:
            joins["events_joined"] += 1
        elif click_id:
            joins["events_waited"] += 1
        mapping = self.mappings.get((entry.get("source") or {}).get("topic"), self.mapping) \
            if self.mappings else self.mapping
        try:
            items = map_event(event, click, mapping, now)
        except Refusal as r:
            return dead_letter(r.reason, r.message, "map", now, source=entry["source"],
                               original=_original(entry))
        except Skip as s:
            m.add("events_skipped", reason=s.reason)
            return None
        if not items:
            m.add("events_skipped", reason=skip_reason(event, mapping))
            return None
        if not has_identifier(items[0]):
            never = f" (click {click_id!r} never arrived)" if click_id and click is None else ""
            return dead_letter("no_identifier", "no ttclid, ttp, email, phone, external_id, or IP "
                               f"with user agent: TikTok cannot attribute it{never}", "join", now,
                               source=entry["source"], original=_original(entry))
        pixel = self.router.pixel_for(event)
        if pixel is None:
            return dead_letter("no_route", "no pixel matches this event and no default pixel is "
                               "configured", "map", now, source=entry["source"], original=_original(entry))
        try:  # what the destination's event source takes (its lead, app, names, identifiers)
            items = for_source(items, pixel.event_source)
        except Refusal as r:
            return dead_letter(r.reason, r.message, "map", now, source=entry["source"],
                               pixel_code=pixel.code, original=_original(entry))
        if click_id:
            joins[(pixel.code, click is not None)] += 1
        for name in dropped_identifiers(event, items[0].get("user") or {}, mapping):
            m.count("identifiers_dropped", 1, pixel.code, name)
        return pixel, items, test_event_code_of(event, mapping) or pixel.test_event_code

    async def _durably(self, retries: list, dead: list) -> None:
        writes = [("retry", k, value) for k, record in retries for value in encode(record)]
        if self.settings.dlq_original == "hashed":
            dead = [(k, self._hashed(record)) for k, record in dead]
        writes += [("dlq", k or b"tracking-events", value) for k, record in dead for value in encode(record)]
        await write_durably(self.write, writes)


    def _hashed(self, record: dict) -> dict:
        """`dlq_original = "hashed"`: the original's PII hashed, by its input's shape."""
        if record.get("original") is None:
            return record
        topic = (record.get("source") or {}).get("topic")
        return hash_original(record, (self.mappings.get(topic, self.mapping) if self.mappings
                                      else self.mapping).plan)


def _original(entry: dict) -> bytes | None:
    """The event for its dead letter: its own bytes, as the intake read them."""
    return entry.get("raw")
