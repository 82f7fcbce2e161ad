"""Decoding raw Kafka messages: every refusal reason, and the click records that come out."""
from __future__ import annotations

from functools import partial

import orjson
import pytest

from app.mapping.decode import (
    CLICK_SKIP_REASONS,
    DECODE_REASONS,
    click_from_landing,
    decode_click,
    decode_event,
)
from app.mapping.events import MappingConfig, Refusal, click_id_of, skip_reason, tiktok_names

LIMIT = 1024
CLICKED_AT = 1763634000.0  # 2025-11-20T10:20:00Z
CONFIG = MappingConfig()
read_event = partial(decode_event, config=CONFIG)  # as the intake reads the default shape


def refusal(decode, raw, *args) -> Refusal:
    with pytest.raises(Refusal) as caught:
        decode(raw, *args)
    return caught.value


# ---------------------------------------------------------------- reasons shared by both decoders

@pytest.mark.parametrize("decode", [read_event, decode_click])
def test_too_large(decode):
    raw = orjson.dumps({"event": "Order Completed", "click_id": "c1", "pad": "x" * LIMIT})
    r = refusal(decode, raw, LIMIT)
    assert r.reason == "too_large"
    assert r.message == f"message is {len(raw)} bytes, the limit is {LIMIT}"


def test_exactly_the_limit_is_not_too_large():
    raw = orjson.dumps({"event": "Order Completed", "pad": ""})
    raw = raw.replace(b'""', b'"' + b"x" * (LIMIT - len(raw)) + b'"')
    assert len(raw) == LIMIT
    assert decode_event(raw, LIMIT, CONFIG)[0]["event"] == "Order Completed"


@pytest.mark.parametrize("decode", [read_event, decode_click])
@pytest.mark.parametrize("raw", [
    b'{"event": "Order Completed", ',                 # cut off
    b"",                                              # empty
    b"not json",
    b'{"event": "Order \xff Completed"}',             # invalid UTF-8 inside a string
    b"\xfe\xff{}",                                    # invalid UTF-8 before the object
    None,                                             # a tombstone
])
def test_invalid_json(decode, raw):
    assert refusal(decode, raw, LIMIT).reason == "invalid_json"


@pytest.mark.parametrize("decode", [read_event, decode_click])
@pytest.mark.parametrize("raw, kind", [
    (b"[1, 2]", "list"), (b'"Order Completed"', "str"), (b"42", "int"), (b"null", "NoneType"),
    (b"true", "bool"),
])
def test_not_an_object(decode, raw, kind):
    r = refusal(decode, raw, LIMIT)
    assert r.reason == "not_an_object"
    assert r.message == f"expected a JSON object, got {kind}"


# ---------------------------------------------------------------- tracking events

@pytest.mark.parametrize("doc", [
    {}, {"type": "track"}, {"event": None}, {"event": ""}, {"type": "track", "event": ""},
    {"properties": {"order_id": "98213"}},
])
def test_missing_event_name(doc):
    r = refusal(decode_event, orjson.dumps(doc), LIMIT, CONFIG)
    assert (r.reason, r.message) == ("missing_event_name", "event: the event has no name")


@pytest.mark.parametrize("name, kind", [(5, "int"), (0, "int"), (False, "bool"), ([], "list"),
                                        ({"n": "Order Completed"}, "dict"), (1.5, "float")])
def test_invalid_event_name(name, kind):
    r = refusal(decode_event, orjson.dumps({"event": name}), LIMIT, CONFIG)
    assert r.reason == "invalid_event_name"
    assert r.message == f"event: expected a string, got {kind}"


@pytest.mark.parametrize("doc", [
    {"type": "page", "name": "Home"}, {"type": "identify", "userId": "u1"},
    {"type": "screen", "name": "Cart"}, {"type": "page", "event": ""},
])
def test_page_identify_and_screen_calls_need_no_event(doc):
    assert decode_event(orjson.dumps(doc), LIMIT, CONFIG) == (doc, ())
    assert skip_reason(doc, CONFIG) == "not_a_conversion"


def test_a_valid_event_comes_back_as_decoded():
    doc = {"type": "track", "event": "Order Completed", "messageId": "m1",
           "properties": {"order_id": "98213", "total": 46.0, "currency": "USD"}}
    assert decode_event(orjson.dumps(doc), LIMIT, CONFIG) == (doc, ("Purchase",))


def test_an_unmapped_track_call_is_skipped_as_unmapped():
    doc = {"type": "track", "event": "Video Paused"}
    assert decode_event(orjson.dumps(doc), LIMIT, CONFIG) == (doc, ())
    assert skip_reason(doc, CONFIG) == "unmapped"


# The worker calls tiktok_names() on every event decode_event lets through, outside any
# `except Refusal` (app/worker.py, decode_events): decode must refuse what tiktok_names refuses,
# with the same reason, or one such message stops the agent.
@pytest.mark.parametrize("doc", [
    {"event": "   "},                          # blank name
    {"type": None},                            # type null, no event
    {"type": 5},                               # type not a string, no event
    {"type": 5, "event": "Order Completed"},   # type not a string
])
def test_decode_event_refuses_what_tiktok_names_refuses(doc):
    with pytest.raises(Refusal) as mapped:
        tiktok_names(doc, CONFIG)
    decoded = refusal(decode_event, orjson.dumps(doc), LIMIT, CONFIG)
    assert decoded.reason == mapped.value.reason


# ---------------------------------------------------------------- clicks

def click(**fields) -> bytes:
    return orjson.dumps({"click_id": "c1", "timestamp": CLICKED_AT, **fields})


def test_click_record_holds_the_click_fields():
    raw = click(ttclid="E.C.P.abc", ttp="2F7h37YkS1j57AYSKTI7IHhJPYH", ip="203.0.113.4",
                user_agent="Mozilla/5.0", url="https://shop.example/?utm=x",
                referrer="https://tiktok.com/", ignored="x")
    assert decode_click(raw, LIMIT) == ("c1", {
        "ttclid": "E.C.P.abc", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "clicked_at": CLICKED_AT,
        "ip": "203.0.113.4", "user_agent": "Mozilla/5.0", "url": "https://shop.example/?utm=x",
        "referrer": "https://tiktok.com/"})


def test_click_ttclid_comes_from_the_url_query():
    url = "https://shop.example/landing?utm_source=tt&ttclid=E.C.P.fromurl&x=1"
    assert decode_click(click(url=url), LIMIT) == (
        "c1", {"ttclid": "E.C.P.fromurl", "clicked_at": CLICKED_AT, "url": url})


def test_click_own_ttclid_wins_over_the_url():
    url = "https://shop.example/?ttclid=E.C.P.fromurl"
    assert decode_click(click(ttclid="E.C.P.own", url=url), LIMIT)[1]["ttclid"] == "E.C.P.own"


def test_click_without_any_ttclid_has_none():
    assert decode_click(click(url="https://shop.example/?a=1"), LIMIT) == (
        "c1", {"clicked_at": CLICKED_AT, "url": "https://shop.example/?a=1"})


@pytest.mark.parametrize("timestamp, seconds", [
    ("2025-11-20T10:20:00Z", CLICKED_AT), ("2025-11-20T10:20:00", CLICKED_AT),
    (1763634000, CLICKED_AT), (1763634000123, 1763634000.123), ("1763634000", CLICKED_AT),
])
def test_click_timestamp_forms(timestamp, seconds):
    assert decode_click(click(timestamp=timestamp), LIMIT)[1]["clicked_at"] == seconds


def test_click_id_is_stripped():
    assert decode_click(click(click_id="  c1  "), LIMIT)[0] == "c1"


@pytest.mark.parametrize("click_id, text", [(12345, "12345"), (0, "0")])
def test_numeric_click_id_becomes_text(click_id, text):
    assert decode_click(click(click_id=click_id), LIMIT)[0] == text


@pytest.mark.parametrize("click_id", [1234.0, 12345, 98213.0])
def test_numeric_click_id_matches_the_events_click_id(click_id):
    # The join key must be the same text on both sides, or the click is never found.
    event = {"event": "Order Completed", "properties": {"click_id": click_id}}
    assert decode_click(click(click_id=click_id), LIMIT)[0] == click_id_of(event, CONFIG)


@pytest.mark.parametrize("fields", [
    {"click_id": None}, {"click_id": ""}, {"click_id": "   "}, {"click_id": True},
    {"click_id": ["c1"]}, {"click_id": {"id": "c1"}},
])
def test_missing_click_id(fields):
    r = refusal(decode_click, click(**fields), LIMIT)
    assert (r.reason, r.message) == ("missing_click_id", "click_id: missing or not a string")


def test_click_without_click_id_key():
    r = refusal(decode_click, orjson.dumps({"timestamp": CLICKED_AT}), LIMIT)
    assert r.reason == "missing_click_id"


@pytest.mark.parametrize("key", ["ttclid", "ttp", "ip", "user_agent", "url", "referrer"])
@pytest.mark.parametrize("value, kind", [(5, "int"), (["x"], "list"), (True, "bool")])
def test_invalid_click_field(key, value, kind):
    r = refusal(decode_click, click(**{key: value}), LIMIT)
    assert r.reason == "invalid_click"
    assert r.message == f"{key}: expected a string, got {kind}"


@pytest.mark.parametrize("fields", [
    {"timestamp": None}, {"timestamp": "yesterday"}, {"timestamp": True}, {"timestamp": [1]},
])
def test_click_invalid_timestamp(fields):
    assert refusal(decode_click, click(**fields), LIMIT).reason == "invalid_timestamp"


def test_click_without_timestamp_key():
    r = refusal(decode_click, orjson.dumps({"click_id": "c1"}), LIMIT)
    assert (r.reason, r.message) == (
        "invalid_timestamp", "timestamp: expected ISO-8601 or Unix time, got None")


@pytest.mark.parametrize("decode, raw, reason", [
    (read_event, b"x" * (LIMIT + 1), "too_large"),
    (read_event, b"{", "invalid_json"),
    (read_event, b"[]", "not_an_object"),
    (read_event, b"{}", "missing_event_name"),
    (read_event, b'{"event": 1}', "invalid_event_name"),
    (decode_click, b'{"timestamp": 1763634000}', "missing_click_id"),
    (decode_click, b'{"click_id": "c1", "ip": 1, "timestamp": 1763634000}', "invalid_click"),
    (decode_click, b'{"click_id": "c1"}', "invalid_timestamp"),
])
def test_every_reason_raised_is_declared(decode, raw, reason):
    assert refusal(decode, raw, LIMIT).reason == reason
    assert reason in (CLICK_SKIP_REASONS if decode is decode_click else DECODE_REASONS)


# ---------------------------------------------------------------- landing pages recorded as clicks

def landing(**fields) -> dict:
    event = {
        "type": "track", "event": "Product Viewed", "timestamp": "2025-11-20T10:20:00Z",
        "properties": {"click_id": "c9", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH"},
        "context": {"ip": "203.0.113.4", "userAgent": "Mozilla/5.0",
                    "page": {"url": "https://shop.example/p/1?ttclid=E.C.P.land&utm=tt",
                             "referrer": "https://www.tiktok.com/"}},
    }
    event.update(fields)
    return event


def test_landing_event_becomes_a_click_record():
    assert click_from_landing(landing(), CONFIG) == ("c9", {
        "ttclid": "E.C.P.land", "clicked_at": CLICKED_AT,
        "url": "https://shop.example/p/1?ttclid=E.C.P.land&utm=tt", "ip": "203.0.113.4",
        "user_agent": "Mozilla/5.0", "referrer": "https://www.tiktok.com/",
        "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH"})


def test_landing_click_id_from_context_and_original_timestamp():
    event = landing(properties={}, context={"click_id": 77,
                                            "page": {"url": "https://s.example/?ttclid=T1"}})
    del event["timestamp"]
    event["originalTimestamp"] = 1763634000
    assert click_from_landing(event, CONFIG) == ("77", {
        "ttclid": "T1", "clicked_at": CLICKED_AT, "url": "https://s.example/?ttclid=T1"})


@pytest.mark.parametrize("event", [
    landing(context={"page": {"url": "https://shop.example/p/1?utm=tt"}}),    # no ttclid
    landing(context={"page": {"url": "https://shop.example/p/1?ttclid="}}),   # empty ttclid
    landing(context={"page": {}}),
    landing(context={"page": "https://shop.example/?ttclid=X"}),
    landing(context=None),
    {k: v for k, v in landing().items() if k != "context"},
    landing(properties={"ttp": "T"}),                                          # no click ID
    landing(timestamp="not a time"),                                           # refused later
    landing(timestamp=None),
])
def test_not_a_landing(event):
    assert click_from_landing(event, CONFIG) is None
