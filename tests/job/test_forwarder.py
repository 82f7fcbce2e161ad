"""The forwarder (app/job/forwarder.py), without a broker: every outcome an event can have — sent,
joined, pending, re-joined, sent without its click, skipped, dead-lettered (at mapping, at
routing, at the join, at sending), retried — with the exact records written, acks and metrics.

Also the rounds in the background: a round whose delivery fails leaves its message unsettled
(the intake's commit stops there and the next owner re-reads it) and frees its slot, so the next
round is delivered and acked.

Records are built relative to NOW (module import) or to time.time() where the join wait matters;
the forwarder reads the real clock, so its `now` (in DLQ and retry records) is checked between
values captured around the call, and everything derived from it exactly.
"""
import asyncio
import hashlib
import logging
import time
from types import SimpleNamespace

import orjson

from app.job.forwarder import ROUNDS_IN_FLIGHT, Forwarder
from app.job.metrics import Metrics
from app.mapping.events import MappingConfig, map_event
from app.settings import Pixel, Routing, Secret, load, mapping_config
from app.tiktok.outcomes import TRANSPORT, verdict_for_code
from app.tiktok.sender import Answer, Delivery

NOW = time.time()
ENV = {"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": "token-1"}
TOPIC = "tracking-events"
CLICK = {"ttclid": "ttclid-1", "ttp": "ttp-1", "clicked_at": NOW - 60, "ip": "203.0.113.7",
         "user_agent": "Mozilla/5.0 (test)"}


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def track(message_id: str, *, email: bool = True, name: str = "Order Completed", **props) -> dict:
    """A Segment track event; with `email`, identified by a hashed email of its own."""
    event = {"type": "track", "event": name, "messageId": message_id, "timestamp": NOW - 30,
             "context": {"traits": {"email": f"{message_id}@example.com"}} if email else {},
             "properties": {"value": 10, "currency": "EUR", **props}}
    return event


def entry(event: dict, offset: int, click_id: str | None = None, at: float | None = None) -> dict:
    """One event as the intake hands it over (app.job.intake): parsed, with its bytes."""
    return {"click_id": click_id, "at": NOW if at is None else at, "source": at_offset(offset),
            "event": event, "raw": orjson.dumps(event)}


class Record:
    """An input message as the intake hands it over: its entries (by default one event without a
    click ID) and its ticket (app.job.offsets.Ticket), settled once per entry; `acks` counts the
    times it was settled through (1: committable)."""

    def __init__(self, offset: int, message_id: str | None = None, *, entries: list | None = None) -> None:
        self.entries = [entry(track(message_id), offset)] if entries is None else entries
        self.tp, self.offset = (TOPIC, 0), offset
        self.open, self.acks = len(self.entries), 0

    @property
    def acked(self) -> bool:
        return self.acks > 0

    def settle(self) -> None:
        self.open -= 1
        if self.open == 0:
            self.acks += 1


def pairs(*records: Record) -> list:
    """What the intake hands the forwarder for these messages: (ticket, entry) pairs."""
    return [(r, e) for r in records for e in r.entries]


class Sender:
    """The Events API's sender: `answer(body)` says what became of a body (default: all of its
    events accepted in one request); `fail` makes delivery raise (a bug)."""

    def __init__(self, fail: bool = True, answer=None) -> None:
        self.fail, self.answer = fail, answer
        self.bodies, self.pixels = [], []

    async def deliver(self, pixel, body) -> Delivery:
        if self.fail:
            raise RuntimeError("a bug in delivery")
        self.bodies.append(body)
        self.pixels.append(pixel.code)
        if self.answer is not None:
            return self.answer(body)
        return Delivery(accepted=len(body["data"]), requests=1)


class Writer:
    """The `write` callable: keeps the records it was given (decoded) and the acks of `watched`
    at each call; its first `fail` calls raise, as a broker that is away."""

    def __init__(self, fail: int = 0) -> None:
        self.fail, self.calls, self.records, self.acks_at_call, self.watched = fail, 0, [], [], []

    async def __call__(self, records: list) -> None:
        self.calls += 1
        self.acks_at_call.append([r.acks for r in self.watched])
        if self.fail:
            self.fail -= 1
            raise RuntimeError("broker away")
        for record in records:
            role, key, value = record  # no partition: the retry and DLQ topics go by key
            assert isinstance(value, bytes)
            self.records.append((role, key, orjson.loads(value)))


class Clicks:
    """The `lookup(click_id)` callable over a dict of stored clicks."""

    def __init__(self, clicks: dict | None = None, error: Exception | None = None) -> None:
        self.clicks, self.error, self.calls = dict(clicks or {}), error, []

    def __call__(self, click_id: str):
        self.calls.append(click_id)
        if self.error is not None:
            raise self.error
        return self.clicks.get(click_id)


def setup(settings=None, *, lookup=None, answer=None, writer=None) -> SimpleNamespace:
    settings = settings or load(ENV)
    t = SimpleNamespace(settings=settings, mapping=mapping_config(settings),
                        lookup=lookup or Clicks(), sender=Sender(fail=False, answer=answer),
                        write=writer or Writer(), metrics=Metrics())
    t.forwarder = Forwarder(settings, t.mapping, t.lookup, t.sender, t.write, t.metrics)
    return t


async def run(t, *records) -> tuple[float, float]:
    """One round of `records` to its end; the clock before and after (bounds of its `now`)."""
    t.write.watched += records
    before = time.time()
    await t.forwarder.handle(pairs(*records))
    await t.forwarder.drain()
    return before, time.time()


async def until(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def items(t, event: dict, click: dict | None = None) -> list[dict]:
    return map_event(event, click, t.mapping, time.time())


def counted(metrics: Metrics) -> dict:
    return {f"{n}{{{r}}}" if r else n: v for (n, r), v in metrics.counts.items() if v}


def failed_at(record: dict, before: float, after: float) -> float:
    """The forwarder's `now` in a record: one moment, within the round."""
    t = record["first_failed_at"]
    assert before <= t <= after
    return t


def dlq(reason: str, message: str, stage: str, now: float, **fields) -> dict:
    """A DLQ record as app/topics/tiktok-dlq.json describes it."""
    return {"reason": reason, "message": message, "stage": stage, "attempts": 0,
            "first_failed_at": now, "last_failed_at": now, "source": None, "pixel_code": None,
            **fields}


def at_offset(offset: int) -> dict:
    """The `source` of an event read from tracking-events at `offset` (partition 0)."""
    return {"topic": "tracking-events", "partition": 0, "offset": offset}


def original(event: dict) -> dict:
    return {"original": orjson.dumps(event).decode(), "original_base64": False}


NO_IDENTIFIER = ("no ttclid, ttp, email, phone, external_id, or IP with user agent: TikTok cannot "
                 "attribute it")


# --------------------------------------------------------------------------- background rounds

async def test_a_failed_delivery_leaves_its_round_unacked_and_the_next_round_goes_out(caplog):
    settings = load({"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": "token-1"})
    written = []

    async def write(records):
        written.extend(records)

    sender = Sender()
    forwarder = Forwarder(settings, mapping_config(settings), None, sender, write, Metrics())
    first, second = Record(0, "m-0"), Record(1, "m-1")

    with caplog.at_level(logging.ERROR, logger="app.job.forwarder"):
        await forwarder.handle(pairs(first))
        await forwarder.drain()
    assert not first.acked
    assert [r.getMessage() for r in caplog.records] == [
        "a delivery failed; its events stay uncommitted and are re-read after a restart or rebalance"]
    assert forwarder._slots._value == ROUNDS_IN_FLIGHT  # the slot came back

    sender.fail = False
    await forwarder.handle(pairs(second))
    await forwarder.drain()
    assert second.acked and not first.acked
    assert [[item["event_id"] for item in body["data"]] for body in sender.bodies] == [["m-1"]]
    assert written == []  # nothing for the retry topic or the DLQ


# --------------------------------------------------------------------------- sent

async def test_an_accepted_event_is_delivered_in_its_pixels_body_and_acked_with_nothing_written():
    t = setup(load({**ENV, "TIKTOK_TEST_EVENT_CODE": "TEST123"}))
    a, b = Record(0, entries=[entry(track("m-1"), 10), entry(track("m-2"), 11)]), Record(1, "m-3")
    await run(t, a, b)

    expected = items(t, track("m-1")) + items(t, track("m-2")) + items(t, b.entries[0]["event"])
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": expected, "test_event_code": "TEST123"}]
    assert t.sender.pixels == ["PIX1"]
    # What map_event gives, spelled out for one of them.
    assert expected[0] == {"event": "Purchase", "event_time": int(NOW - 30), "event_id": "m-1",
                           "user": {"email": sha("m-1@example.com")},
                           "properties": {"value": 10, "currency": "EUR"}}
    assert (a.acks, b.acks) == (1, 1)
    assert t.write.calls == 0 and t.write.records == []
    assert counted(t.metrics) == {"events_sent": 3, "requests": 1, "batches": 1}
    assert t.lookup.calls == []  # no click ID, nothing to look up
    assert t.forwarder.pending_count == 0


async def test_a_pixel_without_a_test_event_code_sends_none_and_batch_max_splits_the_bodies():
    t = setup(load(ENV, batch_max=2))
    records = [Record(i, f"m-{i}") for i in range(3)]
    await run(t, *records)

    data = [item for r in records for item in items(t, r.entries[0]["event"])]
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1", "data": data[:2]},
                               {"event_source": "web", "event_source_id": "PIX1", "data": data[2:]}]
    assert [r.acks for r in records] == [1, 1, 1]
    assert t.write.records == []
    assert counted(t.metrics) == {"events_sent": 3, "requests": 2, "batches": 2}


# --------------------------------------------------------------------------- joined

async def test_an_event_joined_with_its_click_carries_the_clicks_identifiers():
    t = setup(lookup=Clicks({"c-1": CLICK}))
    event = track("m-1", email=False)
    rec = Record(5, entries=[entry(event, 50, click_id="c-1")])
    await run(t, rec)

    assert t.lookup.calls == ["c-1"]
    data = items(t, event, CLICK)
    assert data[0]["user"] == {"ttclid": "ttclid-1", "ttp": "ttp-1", "ip": "203.0.113.7",
                               "user_agent": "Mozilla/5.0 (test)"}
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1", "data": data}]
    assert rec.acks == 1
    assert t.write.records == []
    assert counted(t.metrics) == {"events_joined": 1, "events_sent": 1, "requests": 1, "batches": 1}


# --------------------------------------------------------------------------- pending, re-joined

async def test_an_event_waits_for_its_late_click_and_goes_out_joined_when_it_arrives():
    t = setup()
    waiting = track("m-1", email=False)
    other = track("m-2")
    first = Record(0, entries=[entry(waiting, 10, click_id="c-1", at=time.time())])
    second = Record(1, entries=[entry(other, 11, click_id="c-2", at=time.time())])
    await run(t, first, second)

    assert t.sender.bodies == [] and t.write.calls == 0
    assert (first.acks, second.acks) == (0, 0)
    assert t.forwarder.pending_count == 2
    assert counted(t.metrics) == {}

    # The first recheck is a full pass, but neither's join_wait is over nor its click stored:
    # neither is looked up again, both still wait.
    await t.forwarder.recheck(3600)
    await t.forwarder.drain()
    assert t.lookup.calls == ["c-1", "c-2"]
    assert t.forwarder.pending_count == 2 and t.sender.bodies == []

    t.forwarder.clicks_stored(["c-unknown"])  # no event waits for it: nothing to wake
    assert not t.forwarder._wake.is_set()
    t.lookup.clicks["c-1"] = CLICK
    t.forwarder.clicks_stored(["c-1"])
    await asyncio.wait_for(t.forwarder.next_recheck(3600), 1)  # woken now, not at the next tick
    await t.forwarder.recheck(3600)  # not a full pass: only the event whose click arrived
    await t.forwarder.drain()

    assert t.lookup.calls[2:] == ["c-1"]
    data = items(t, waiting, CLICK)
    assert data[0]["user"]["ttclid"] == "ttclid-1"
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1", "data": data}]
    assert (first.acks, second.acks) == (1, 0)
    assert t.forwarder.pending_count == 1 and list(t.forwarder.pending) == ["c-2"]
    assert t.write.calls == 0
    assert counted(t.metrics) == {"events_joined": 1, "events_sent": 1, "requests": 1, "batches": 1}


async def test_a_full_pass_looks_up_only_the_events_whose_join_wait_is_over():
    # Thousands of late conversions may wait at once: a pass every interval must not look up
    # each again (their clicks' arrival is signalled), only those it must now send without.
    t = setup(load(ENV, join_wait_s=60))
    due_soon, young = track("m-1"), track("m-2")
    first = Record(0, entries=[entry(due_soon, 10, click_id="c-1", at=time.time() - 59.7)])
    second = Record(1, entries=[entry(young, 11, click_id="c-2", at=time.time())])
    await run(t, first, second)
    assert t.forwarder.pending_count == 2 and t.lookup.calls == ["c-1", "c-2"]

    await asyncio.sleep(0.4)  # c-1's event is past join_wait now, c-2's is not
    await t.forwarder.recheck(0)
    await t.forwarder.drain()
    assert t.lookup.calls[2:] == ["c-1"]
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1", "data": items(t, due_soon)}]
    assert (first.acks, second.acks) == (1, 0) and list(t.forwarder.pending) == ["c-2"]


# --------------------------------------------------------------------------- sent without its click

async def test_an_event_older_than_join_wait_goes_out_without_its_click_or_to_the_dlq():
    t = setup()
    identified, anonymous = track("m-1"), track("m-2", email=False)
    rec = Record(3, entries=[entry(identified, 30, click_id="c-1", at=time.time() - 61),
                             entry(anonymous, 31, click_id="c-2", at=time.time() - 61)])
    before, after = await run(t, rec)

    assert t.lookup.calls == ["c-1", "c-2"]
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": items(t, identified)}]
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    assert record == dlq("no_identifier", NO_IDENTIFIER + " (click 'c-2' never arrived)", "join",
                         failed_at(record, before, after),
                         source=at_offset(31), **original(anonymous))
    assert rec.acks == 1 and t.write.acks_at_call == [[0]]  # written, then acked
    assert t.forwarder.pending_count == 0
    assert counted(t.metrics) == {"events_waited": 2, "events_sent": 1, "requests": 1, "batches": 1,
                                  "dead_letters{no_identifier}": 1}


async def test_a_pending_event_goes_out_without_its_click_at_the_recheck_after_join_wait():
    t = setup(load(ENV, join_wait_s=0.2))
    identified, anonymous = track("m-1"), track("m-2", email=False)
    at = time.time()
    a = Record(0, entries=[entry(identified, 10, click_id="c-1", at=at)])
    b = Record(1, entries=[entry(anonymous, 11, click_id="c-2", at=at)])
    await run(t, a, b)
    assert t.forwarder.pending_count == 2 and t.sender.bodies == []

    await until(lambda: time.time() - at >= 0.2)
    before = time.time()
    await t.forwarder.recheck(60)
    await t.forwarder.drain()
    after = time.time()

    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": items(t, identified)}]
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    assert record == dlq("no_identifier", NO_IDENTIFIER + " (click 'c-2' never arrived)", "join",
                         failed_at(record, before, after),
                         source=at_offset(11), **original(anonymous))
    assert (a.acks, b.acks) == (1, 1) and t.write.acks_at_call == [[0, 0]]
    assert t.forwarder.pending_count == 0
    assert counted(t.metrics) == {"events_waited": 2, "events_sent": 1, "requests": 1, "batches": 1,
                                  "dead_letters{no_identifier}": 1}


async def test_an_event_without_click_id_or_identifier_is_dead_lettered_at_the_join():
    t = setup()
    anonymous = track("m-1", email=False)
    rec = Record(0, entries=[entry(anonymous, 10)])
    before, after = await run(t, rec)

    assert t.sender.bodies == []
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    assert record == dlq("no_identifier", NO_IDENTIFIER, "join", failed_at(record, before, after),
                         source=at_offset(10), **original(anonymous))
    assert rec.acks == 1
    assert counted(t.metrics) == {"dead_letters{no_identifier}": 1}


# --------------------------------------------------------------------------- skipped

async def test_an_unmapped_event_is_skipped_acked_and_nothing_written():
    t = setup()
    rec = Record(0, entries=[entry(track("m-1", name="Coupon Viewed"), 10),
                             entry({"type": "page", "name": "Home", "messageId": "m-2"}, 11)])
    await run(t, rec)

    assert t.sender.bodies == [] and t.write.calls == 0
    assert rec.acks == 1
    assert counted(t.metrics) == {"events_skipped{unmapped}": 1, "events_skipped{not_a_conversion}": 1}


async def test_an_event_its_spec_does_not_forward_is_skipped_with_the_reason_and_its_neighbour_sent():
    # mParticle's preset forwards only events with an email, phone or external ID.
    settings = load(ENV, preset="mparticle")
    t = setup(settings)
    data = {"timestamp_unixtime_ms": int((NOW - 30) * 1000), "source_message_id": "mp-1",
            "product_action": {"action": "purchase", "total_amount": 5}, "currency_code": "USD"}
    known = {"event_type": "commerce_event", "data": data,
             "batch": {"user_identities": {"email": "buyer@example.com"}}}
    anonymous = {"event_type": "commerce_event", "data": {**data, "source_message_id": "mp-2"},
                 "batch": {"user_identities": {}}}
    rec = Record(0, entries=[entry(known, 10), entry(anonymous, 11)])
    await run(t, rec)

    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": map_event(known, None, t.mapping, time.time())}]
    assert t.write.calls == 0 and rec.acks == 1
    assert counted(t.metrics) == {"events_skipped{no_user_identity}": 1, "events_sent": 1, "requests": 1,
                                  "batches": 1}


# ------------------------------------------------------------------ dead-lettered at mapping

async def test_an_event_the_mapping_refuses_is_dead_lettered_with_its_reason_and_original():
    t = setup()
    bad = track("m-1", currency="ZZZ")
    rec = Record(0, entries=[entry(bad, 10), entry(track("m-2"), 11)])
    before, after = await run(t, rec)

    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": items(t, track("m-2"))}]
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    assert record == dlq("invalid_currency",
                         "properties.currency: 'ZZZ' is not an ISO-4217 code TikTok accepts", "map",
                         failed_at(record, before, after),
                         source=at_offset(10), **original(bad))
    assert rec.acks == 1 and t.write.acks_at_call == [[0]]
    assert counted(t.metrics) == {"events_sent": 1, "requests": 1, "batches": 1,
                                  "dead_letters{invalid_currency}": 1}


async def test_routing_sends_each_event_to_its_pixel_and_dead_letters_the_unroutable_as_no_route():
    pixels = {"PIX1": Pixel("PIX1", Secret("token-1")),
              "PIX2": Pixel("PIX2", Secret("token-2"), "offline", "TEST2")}
    settings = load({}, pixels=pixels,
                    routing=Routing("properties.site", {"a": "PIX1", "b": "PIX2"}))
    assert settings.routing.default is None
    t = setup(settings)
    to_a, to_b, to_c, nowhere = (track("m-1", site="a"), track("m-2", site="b"),
                                 track("m-3", site="c"), track("m-4"))
    rec = Record(0, entries=[entry(to_a, 10), entry(to_b, 11), entry(to_c, 12), entry(nowhere, 13)])
    before, after = await run(t, rec)

    assert t.sender.pixels == ["PIX1", "PIX2"]
    assert t.sender.bodies == [
        {"event_source": "web", "event_source_id": "PIX1", "data": items(t, to_a)},
        {"event_source": "offline", "event_source_id": "PIX2", "data": items(t, to_b),
         "test_event_code": "TEST2"}]
    message = "no pixel matches this event and no default pixel is configured"
    now = failed_at(t.write.records[0][2], before, after)
    assert t.write.records == [
        ("dlq", b"tracking-events", dlq("no_route", message, "map", now, **original(to_c),
                                        source=at_offset(12))),
        ("dlq", b"tracking-events", dlq("no_route", message, "map", now, **original(nowhere),
                                        source=at_offset(13)))]
    assert rec.acks == 1 and t.write.acks_at_call == [[0]]
    assert counted(t.metrics) == {"events_sent": 2, "requests": 2, "batches": 2,
                                  "dead_letters{no_route}": 2}


async def test_each_destination_takes_what_its_event_source_takes_and_dead_letters_what_it_cannot():
    crm_set, app_id = "7299000000000000001", "7568899277611696136"
    pixels = {"PIX1": Pixel("PIX1", Secret("token-1")), crm_set: Pixel(crm_set, Secret("token-2"), "crm"),
              app_id: Pixel(app_id, Secret("token-3"), "app")}
    settings = load({}, pixels=pixels,
                    routing=Routing("properties.site", {"web": "PIX1", "crm": crm_set, "app": app_id}))
    t = setup(settings)
    # One input shape feeding all three: it fills the lead and the app wherever the event has them.
    t.mapping = MappingConfig.from_dict({"spec": {"extends": "segment", "lead": {"lead_id": ["properties.lead_id"]},
                                                  "app": {"app_id": ["context.app.namespace"]}}})
    t.forwarder = Forwarder(settings, t.mapping, t.lookup, t.sender, t.write, t.metrics)
    web, crm, no_lead = track("m-1", site="web", lead_id="L-1"), track("m-2", site="crm", lead_id="L-2"), \
        track("m-4", site="crm")
    app, no_app = track("m-3", site="app"), track("m-5", site="app")
    app["context"]["app"] = {"namespace": "com.shop.app"}
    rec = Record(0, entries=[entry(e, 10 + i) for i, e in enumerate([web, crm, app, no_lead, no_app])])
    before, after = await run(t, rec)

    [web_item] = items(t, web)
    assert web_item["lead"] == {"lead_id": "L-1"}  # mapped; a pixel does not take it
    assert t.sender.pixels == ["PIX1", crm_set, app_id]
    assert t.sender.bodies == [
        {"event_source": "web", "event_source_id": "PIX1",
         "data": [{k: v for k, v in web_item.items() if k != "lead"}]},
        {"event_source": "crm", "event_source_id": crm_set, "data": items(t, crm)},
        {"event_source": "app", "event_source_id": app_id, "data": items(t, app)}]
    assert items(t, crm)[0]["lead"] == {"lead_id": "L-2"} and items(t, app)[0]["app"] == {"app_id": "com.shop.app"}
    now = failed_at(t.write.records[0][2], before, after)
    assert t.write.records == [
        ("dlq", b"tracking-events", dlq(
            "missing_lead_id", "lead.lead_id: a CRM event needs its TikTok lead ID (map it in the spec's "
            "[lead] table)", "map", now, pixel_code=crm_set, source=at_offset(13), **original(no_lead))),
        ("dlq", b"tracking-events", dlq(
            "missing_app_id", "app.app_id: an app event needs its app's ID (the store ID or package name; "
            "map it in the spec's [app] table)", "map", now, pixel_code=app_id, source=at_offset(14),
            **original(no_app)))]
    assert rec.acks == 1
    assert counted(t.metrics) == {"events_sent": 3, "requests": 3, "batches": 3,
                                  "dead_letters{missing_lead_id}": 1, "dead_letters{missing_app_id}": 1}


def raw_entry(raw: bytes, offset: int) -> dict:
    """An entry whose event the intake read from `raw` (bytes orjson could not write again)."""
    return {"click_id": None, "at": NOW, "source": at_offset(offset), "event": orjson.loads(raw), "raw": raw}


def nested(event: dict, depth: int) -> bytes:
    """`event`'s JSON with a list nested in it so that the document is `depth` levels deep
    (orjson writes at most 254, so put together by hand)."""
    lists = depth - 1
    return orjson.dumps({**event, "nest": 0}).replace(b'"nest":0', b'"nest":' + b"[" * lists + b"]" * lists)


async def test_an_event_nested_1023_deep_is_sent_and_its_dead_letter_keeps_its_own_bytes():
    # orjson reads 1,024 levels and writes 254: the dead letter cannot write the event again.
    t = setup()
    deep, deep_refused = nested(track("m-deep"), 1023), nested(track("m-zzz", currency="ZZZ"), 1023)
    rec = Record(0, entries=[entry(track("m-1"), 10), raw_entry(deep, 11), raw_entry(deep_refused, 12),
                             entry(track("m-2"), 13)])
    before, after = await run(t, rec)

    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": items(t, track("m-1")) + items(t, track("m-deep"))
                                + items(t, track("m-2"))}]
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    # Its original is its own bytes: they could not have been written again from the parsed event.
    assert record == dlq("invalid_currency",
                         "properties.currency: 'ZZZ' is not an ISO-4217 code TikTok accepts", "map",
                         failed_at(record, before, after), source=at_offset(12),
                         original=deep_refused.decode(), original_base64=False)
    assert rec.acks == 1
    assert counted(t.metrics) == {"events_sent": 3, "requests": 1, "batches": 1,
                                  "dead_letters{invalid_currency}": 1}


async def test_a_failing_click_lookup_dead_letters_the_event_as_internal_error(caplog):
    t = setup(lookup=Clicks(error=RuntimeError("store closed")))
    event = track("m-1")
    rec = Record(0, entries=[entry(event, 10, click_id="c-1")])
    with caplog.at_level(logging.ERROR, logger="app.job.forwarder"):
        before, after = await run(t, rec)

    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    assert record == dlq("internal_error", "RuntimeError: store closed", "map",
                         failed_at(record, before, after),
                         source=at_offset(10), **original(event))
    assert rec.acks == 1 and t.sender.bodies == []
    assert [r.getMessage() for r in caplog.records] == ["unexpected error preparing an event"]
    assert counted(t.metrics) == {"dead_letters{internal_error}": 1}


# --------------------------------------------------------------------------- retried, dead at send

async def test_a_body_to_retry_is_written_to_the_retry_topic_then_acked():
    answer = Answer(TRANSPORT, None, None, "ClientConnectorError: connection refused")
    t = setup(load(ENV, retry_tiers_s=[5.0, 60.0]),
              answer=lambda body: Delivery(requests=1, retry=[(body, answer)]))
    a, b = Record(0, "m-1"), Record(1, "m-2")
    before, after = await run(t, a, b)

    body = {"event_source": "web", "event_source_id": "PIX1",
            "data": items(t, a.entries[0]["event"]) + items(t, b.entries[0]["event"])}
    assert t.sender.bodies == [body]
    [(role, key, record)] = t.write.records
    assert (role, key) == ("retry", b"PIX1")
    now = failed_at(record, before, after)
    assert record == {"request": body, "pixel_code": "PIX1", "attempt": 1, "not_before": now + 5.0,
                      "first_failed_at": now,
                      "last_error": {"reason": "transport_error", "code": None, "http_status": None,
                                     "message": "ClientConnectorError: connection refused"}}
    assert (a.acks, b.acks) == (1, 1) and t.write.acks_at_call == [[0, 0]]
    assert counted(t.metrics) == {"events_retrying": 2, "requests": 1, "batches": 1}


async def test_a_body_tiktok_refuses_is_dead_lettered_at_send_with_its_code_and_request():
    answer = Answer(verdict_for_code(40001), 40001, 200, "No permission to operate pixel PIX1")
    t = setup(answer=lambda body: Delivery(requests=1, dead=[(body, answer)]))
    rec = Record(0, "m-1")
    before, after = await run(t, rec)

    body = {"event_source": "web", "event_source_id": "PIX1",
            "data": items(t, rec.entries[0]["event"])}
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"PIX1")
    assert record == dlq("no_permission", "No permission to operate pixel PIX1", "send",
                         failed_at(record, before, after), attempts=1, pixel_code="PIX1", code=40001,
                         request=body)
    assert rec.acks == 1 and t.write.acks_at_call == [[0]]
    assert counted(t.metrics) == {"requests": 1, "batches": 1, "dead_letters{no_permission}": 1}


async def test_a_partly_accepted_body_writes_its_retry_and_dead_parts_then_acks_once():
    retry = Answer(verdict_for_code(50000), 50000, 200, "internal error")
    dead = Answer(verdict_for_code(40002), 40002, 200, "Batch.1.properties: invalid")

    def answer(body):
        _, second, third = body["data"]
        return Delivery(accepted=1, requests=3, retry=[({**body, "data": [third]}, retry)],
                        dead=[({**body, "data": [second]}, dead)])

    t = setup(answer=answer)
    rec = Record(0, entries=[entry(track(f"m-{i}"), 10 + i) for i in range(3)])
    before, after = await run(t, rec)

    data = [item for e in rec.entries for item in items(t, e["event"])]
    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1", "data": data}]
    now = failed_at(t.write.records[0][2], before, after)
    assert t.write.records == [
        ("retry", b"PIX1", {"request": {"event_source": "web", "event_source_id": "PIX1",
                                        "data": data[2:]},
                            "pixel_code": "PIX1", "attempt": 1, "not_before": now + 30.0,
                            "first_failed_at": now,
                            "last_error": {"reason": "server_error", "code": 50000,
                                           "http_status": 200, "message": "internal error"}}),
        ("dlq", b"PIX1", dlq("invalid_parameter", "Batch.1.properties: invalid", "send", now,
                             attempts=1, pixel_code="PIX1", code=40002,
                             request={"event_source": "web", "event_source_id": "PIX1",
                                      "data": data[1:2]}))]
    assert rec.acks == 1 and t.write.calls == 1 and t.write.acks_at_call == [[0]]
    assert counted(t.metrics) == {"events_sent": 1, "requests": 3, "batches": 1, "events_retrying": 1,
                                  "dead_letters{invalid_parameter}": 1}


# --------------------------------------------------------------------------- messages, durability

async def test_a_message_of_mixed_outcomes_is_settled_once_after_its_last_event_is_rejoined():
    t = setup()
    sent, skipped = track("m-1"), track("m-2", name="Coupon Viewed")
    refused = track("m-3", currency="ZZZ")
    late_a, late_b = track("m-4", email=False), track("m-5", email=False)
    at = time.time()
    mixed = Record(0, entries=[entry(sent, 10), entry(skipped, 11), entry(refused, 12),
                               entry(late_a, 13, click_id="c-9", at=at),
                               entry(late_b, 14, click_id="c-9", at=at)])
    plain = Record(1, "m-6")
    before, after = await run(t, mixed, plain)

    assert t.sender.bodies == [{"event_source": "web", "event_source_id": "PIX1",
                                "data": items(t, sent) + items(t, plain.entries[0]["event"])}]
    [(role, key, record)] = t.write.records
    assert (role, key, record["reason"]) == ("dlq", b"tracking-events", "invalid_currency")
    assert record == dlq("invalid_currency",
                         "properties.currency: 'ZZZ' is not an ISO-4217 code TikTok accepts", "map",
                         failed_at(record, before, after),
                         source=at_offset(12), **original(refused))
    assert (mixed.acks, plain.acks) == (0, 1)  # two of its events still wait for their click
    assert t.forwarder.pending_count == 2

    t.lookup.clicks["c-9"] = CLICK
    t.forwarder.clicks_stored(["c-9"])
    await t.forwarder.recheck(3600)
    await t.forwarder.drain()

    assert t.sender.bodies[1:] == [{"event_source": "web", "event_source_id": "PIX1",
                                    "data": items(t, late_a, CLICK) + items(t, late_b, CLICK)}]
    assert (mixed.acks, plain.acks) == (1, 1)
    assert t.forwarder.pending_count == 0
    assert t.write.calls == 1  # the second round had nothing to write
    assert counted(t.metrics) == {"events_sent": 4, "requests": 2, "batches": 2, "events_joined": 2,
                                  "events_skipped{unmapped}": 1, "dead_letters{invalid_currency}": 1}


async def test_a_failed_write_is_retried_and_the_message_settled_only_once_it_succeeds(caplog):
    t = setup(writer=Writer(fail=1))
    bad = track("m-1", currency="ZZZ")
    rec = Record(0, entries=[entry(bad, 10)])
    t.write.watched.append(rec)
    with caplog.at_level(logging.WARNING, logger="app.job.durable"):
        before = time.time()
        await t.forwarder.handle(pairs(rec))
        await until(lambda: t.write.calls == 1)
        assert rec.acks == 0  # the write failed: not acked while write_durably waits to retry
        await t.forwarder.drain()
        after = time.time()

    assert t.write.calls == 2 and t.write.acks_at_call == [[0], [0]]
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    assert record == dlq("invalid_currency",
                         "properties.currency: 'ZZZ' is not an ISO-4217 code TikTok accepts", "map",
                         failed_at(record, before, after),
                         source=at_offset(10), **original(bad))
    assert rec.acks == 1
    assert [r.getMessage() for r in caplog.records] == [
        "could not write 1 records (RuntimeError); retrying in 0.5 s"]
    assert counted(t.metrics) == {"dead_letters{invalid_currency}": 1}


async def test_identifiers_the_mapping_could_not_use_are_counted_as_dropped_per_pixel():
    # No default_region: a phone without its country code cannot be put in E.164, so TikTok never
    # sees it (the event still goes, identified by its email); an email of blanks likewise.
    t = setup()
    national = track("m-1")
    national["context"]["traits"]["phone"] = "07700 900123"
    broken = track("m-2")
    broken["context"]["traits"].update(email="   ", phone="+44 7700 900123")
    fine = track("m-3")
    await run(t, Record(0, entries=[entry(national, 10), entry(broken, 11), entry(fine, 12)]))
    [body] = t.sender.bodies
    assert ["phone" in item["user"] for item in body["data"]] == [False, True, False]
    assert ["email" in item["user"] for item in body["data"]] == [True, False, True]
    assert {k: v for k, v in t.metrics.detail.items() if k[0] == "identifiers_dropped"} == {
        ("identifiers_dropped", "phone", "PIX1"): 1, ("identifiers_dropped", "email", "PIX1"): 1}
