"""Properties of app.mapping.events over generated Segment-shaped events and clicks.

1. Whatever arrives, map_event either returns items the fake Events API (as strict as TikTok)
   accepts, or raises Refusal with a documented reason: never anything else, never a 40002.
2. Well-formed events are never refused.

Strings exclude lone surrogates: events arrive as JSON through orjson, which refuses them.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from app.devtools.fake_tiktok import check_request
from app.mapping.events import DEFAULT_EVENT_MAP, REASONS, MappingConfig, Refusal, map_event
from app.tiktok.facts import CURRENCIES, STANDARD_EVENTS

NOW = 1_704_722_000.0
CONFIGS = (
    MappingConfig(),
    MappingConfig(default_region="GB", content_type="product", limited_data_use=False,
                  attribution_window_s=86400, max_event_age_s=30 * 86400),
    MappingConfig.from_dict({"events": {"Order Completed": ["Purchase", "PlaceAnOrder"],
                                        "Custom Thing": "Contact"},
                             "click_id_paths": ["properties.subid"], "send_page_url": False}),
)
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text,
                    st.integers(-10 ** 30, 10 ** 30))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(text, inner, max_size=3), max_leaves=6)


def any_of(*strategies):
    """A field's plausible values, or now and then (1 in 40) wrong-typed junk.

    Rare enough that most events get through to items the fake can check, while every field is
    still tried with every kind of junk over a run."""
    plausible = st.one_of(*strategies)
    return st.integers(0, 39).flatmap(lambda n: junk if n == 0 else plausible)


numeric_strings = st.one_of(
    st.from_regex(r"[ ]?-?\d{1,12}(\.\d{1,4})?([eE][+-]?\d{1,3})?[ ]?", fullmatch=True),
    st.sampled_from(["NaN", "inf", "-0", "1_000", "0x10", "", " ", "١٢٣"]))
numbers = any_of(st.integers(-5, 10 ** 16), st.floats(), numeric_strings)
# Mostly plausible times (ISO with Z, offset or none, Unix s or ms) near NOW; 1 in 4 anywhere.
recent = st.datetimes(min_value=datetime(2023, 11, 1), max_value=datetime(2024, 1, 9))
plausible_times = st.one_of(
    recent.map(lambda d: d.replace(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")),
    recent.map(lambda d: d.isoformat(timespec="milliseconds")),
    recent.map(lambda d: d.replace(tzinfo=timezone(timedelta(hours=5, minutes=30))).isoformat()),
    st.floats(NOW - 30 * 86400, NOW), st.integers(int(NOW) - 86400, int(NOW)).map(lambda t: t * 1000))
wild_times = st.one_of(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)).map(
        datetime.isoformat),
    st.floats(NOW - 2 * 86400, NOW + 2 * 86400), st.floats(9e8, 2e12), st.integers(0, 10 ** 16),
    numeric_strings)
timestamps = any_of(st.integers(0, 3).flatmap(lambda n: wild_times if n == 0 else plausible_times))
urls = any_of(st.builds(lambda scheme, rest: scheme + rest,
                        st.sampled_from(["https://", "http://", "HTTP://", "ftp://", "", " https://"]),
                        text),
              st.builds("https://shop.example/p?a=1&ttclid={}".format, text))
known_names = st.sampled_from(sorted(DEFAULT_EVENT_MAP) + sorted(STANDARD_EVENTS)
                              + ["order_completed", "Custom Thing"])
names = any_of(st.integers(0, 9).flatmap(
    lambda n: known_names if n else st.sampled_from(["Page Scrolled", ""]) | text))
currencies = any_of(st.sampled_from(sorted(CURRENCIES)).map(str.lower),
                    st.sampled_from(sorted(CURRENCIES)), st.sampled_from(["XYZ", "usd ", "€"]))
ids = any_of(text, st.integers(), st.floats())
emails = any_of(st.emails(), text, st.lists(st.emails() | text, max_size=3))
phones = any_of(st.sampled_from(["+1 213 373 4253", "07700 900123", "(+1)2133734253", "+134234325"]),
                st.from_regex(r"\+?[0-9 ()-]{0,18}", fullmatch=True), st.integers())

products = st.fixed_dictionaries({}, optional={
    "product_id": ids, "sku": ids, "id": ids, "content_id": ids, "name": any_of(text),
    "category": any_of(text), "brand": any_of(text), "price": numbers, "quantity": numbers,
    "image_url": urls, "variant": junk,
})
properties = st.fixed_dictionaries({}, optional={
    "click_id": ids, "subid": ids, "order_id": ids, "shop_id": ids, "event_id": ids, "eventId": ids,
    "value": numbers, "revenue": numbers, "total": numbers, "currency": currencies,
    "num_items": numbers, "products": any_of(st.lists(any_of(products), max_size=4), products),
    "contents": any_of(st.lists(products, max_size=2)), "product_id": ids, "price": numbers,
    "quantity": numbers, "query": any_of(text), "search_string": any_of(text),
    "description": any_of(text), "content_type": any_of(st.sampled_from(["product", "product_group"])),
    "ttclid": any_of(text), "ttp": any_of(text), "email": emails, "phone": phones, "url": urls,
    "referrer": urls, "limited_data_use": junk, "coupon": junk, "mileage": junk,
})
context = st.fixed_dictionaries({}, optional={
    "ip": any_of(st.ip_addresses().map(str)), "userAgent": any_of(text), "locale": any_of(text),
    "page": any_of(st.fixed_dictionaries({}, optional={"url": urls, "referrer": urls})),
    "traits": any_of(st.fixed_dictionaries({}, optional={
        "email": emails, "phone": phones, "firstName": any_of(text), "lastName": any_of(text),
        "address": any_of(st.fixed_dictionaries({}, optional={"postalCode": ids}))})),
    "ttclid": any_of(text), "ttp": any_of(text), "cookies": junk, "click_id": ids,
    "limited_data_use": junk,
})
events = st.fixed_dictionaries({"event": names, "timestamp": timestamps}, optional={
    "type": any_of(st.sampled_from(["track"] * 5 + ["page", "identify"])),
    "messageId": ids, "originalTimestamp": timestamps,
    "userId": ids, "anonymousId": ids, "traits": junk,
    "context": any_of(context), "properties": any_of(properties), "integrations": junk,
})
clicks = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "ttclid": any_of(text), "ttp": any_of(text), "ip": any_of(text), "user_agent": any_of(text),
    "url": urls, "referrer": urls,
    "clicked_at": any_of(st.floats(NOW - 30 * 86400, NOW + 86400), st.floats()),
}))


def sendable(items: list[dict]) -> None:
    body = {"event_source": "web", "event_source_id": "PIXEL", "data": items}
    assert check_request(body, now=NOW) == (0, "OK")
    orjson.dumps(body)  # the sender must be able to serialise what it is given


@SETTINGS
@given(event=events, click=clicks, config=st.sampled_from(CONFIGS))
def test_map_event_only_refuses_and_what_it_emits_is_accepted(event, click, config):
    try:
        items = map_event(event, click, config, NOW)
    except Refusal as refusal:
        assert refusal.reason in REASONS
        assert refusal.message
        note(f"refused: {refusal.reason}")
        return
    note(f"{len(items)} item(s)")
    if items:
        sendable(items)
        assert map_event(event, click, config, NOW) == items  # deterministic, event_id included


# ---- well-formed events are never refused

good_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
                    ).filter(str.strip)
good_numbers = st.one_of(st.integers(0, 10 ** 9), st.floats(0, 1e9),
                         st.decimals(0, 10 ** 6, places=2).map(str))
good_products = st.fixed_dictionaries({}, optional={
    "product_id": st.one_of(good_text, st.integers(0, 10 ** 12)), "sku": good_text,
    "name": good_text, "category": good_text, "brand": good_text, "price": good_numbers,
    "quantity": st.integers(0, 1000), "image_url": good_text,
})
good_events = st.fixed_dictionaries({
    "type": st.just("track"),
    "event": st.sampled_from(sorted(DEFAULT_EVENT_MAP) + sorted(STANDARD_EVENTS)),
    "messageId": good_text,
    "timestamp": st.floats(NOW - 20 * 86400, NOW).map(
        lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat()),
}, optional={
    "userId": st.one_of(good_text, st.integers()),
    "context": st.fixed_dictionaries({}, optional={
        "ip": st.ip_addresses().map(str), "userAgent": good_text, "locale": good_text,
        "page": st.fixed_dictionaries({}, optional={"url": urls, "referrer": urls}),
        "traits": st.fixed_dictionaries({}, optional={"email": st.emails(), "phone": phones}),
    }),
    "properties": st.fixed_dictionaries({}, optional={
        "click_id": good_text, "order_id": st.one_of(good_text, st.integers(0, 10 ** 12)),
        "value": good_numbers, "revenue": good_numbers, "currency": st.sampled_from(sorted(CURRENCIES)),
        "products": st.lists(good_products, max_size=5), "query": good_text,
        "ttclid": good_text, "coupon": good_text, "custom": junk,
    }),
})


@SETTINGS
@given(event=good_events, click=clicks, config=st.sampled_from(CONFIGS))
def test_well_formed_events_are_mapped(event, click, config):
    items = map_event(event, click, config, NOW)
    assert items
    sendable(items)


def test_iso_helper_sanity():
    # The well-formed strategy's timestamps round-trip to Unix seconds near NOW.
    stamp = datetime.fromtimestamp(NOW, timezone.utc) - timedelta(days=1)
    items = map_event({"event": "Purchase", "timestamp": stamp.isoformat()}, None, CONFIGS[0], NOW)
    assert items[0]["event_time"] == int(NOW) - 86400
