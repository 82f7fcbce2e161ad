"""The tealium preset: Tealium's own event objects -> exact TikTok data[] items.

The examples are Tealium's: the event data object its connectors receive (its webhook guide's
example), and events carrying its standard data layer (the Tealium Events extension's names, its
purchase event specification's attributes, products as parallel arrays), with each parameter of
the TikTok connector's guide (seeds/002) where the preset reads it. Every body built from the
items must pass the strict fake's checks.
"""
from __future__ import annotations

import pytest

from app.mapping import events
from app.mapping.config import MappingConfig
from app.mapping.events import Refusal, map_event, skip_reason
from app.mapping.spec import load_preset
from tests.support import accepted, sha

CONFIG = MappingConfig(spec=load_preset("tealium"))
EVENT_TIME = 1795168800          # 2026-11-20T10:00:00Z
NOW = EVENT_TIME + 30.0


def sent(items: list[dict], test_event_code: str | None = None) -> list[dict]:
    return accepted(items, NOW, test_event_code)


def tealium_event(udo: dict, **top) -> dict:
    """An event object as EventStream hands it to a connector, from a page on shop.example."""
    return {
        "account": "acme", "profile": "main", "env": "prod",
        "event_id": "0f9c2c1e-6a7b-4d1e-8c55-3b1d2e4f5a60",
        "visitor_id": "__acme_main__5_017f2a1b3c4d5e6f",
        "post_time": EVENT_TIME * 1000 + 742,
        "client_ip": "203.0.113.9",
        "useragent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
        "data": {
            "dom": {"url": "https://shop.example/checkout/thanks", "referrer": "https://shop.example/cart",
                    "domain": "shop.example", "pathname": "/checkout/thanks", "title": "Thank you"},
            "udo": {"tealium_timestamp_utc": "2026-11-20T10:00:00.000Z", **udo},
            "firstparty_tealium_cookies": {"utag_main": "v_id:017f2a1b3c4d5e6f", "_ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH"},
        },
        **top,
    }


def purchase() -> dict:
    """A purchase with the attributes of Tealium's purchase event specification."""
    return tealium_event({
        "tealium_event": "purchase",
        "customer_id": "CUST-1001",
        "customer_email": " Jane.Doe@Example.com ",
        "customer_phone": "+44 7700 900123",
        "order_id": "ORD-98030",
        "order_currency": "eur",
        "order_total": "46.00",
        "order_tax": "7.67",
        "product_id": ["SKU-1", "SKU-2"],
        "product_name": ["Socks", "Dress"],
        "product_category": ["apparel", "apparel"],
        "product_brand": ["Acme", "Acme"],
        "product_unit_price": ["8.00", "30.00"],
        "product_quantity": ["2", "1"],
    })


def test_a_purchase():
    assert sent(map_event(purchase(), None, CONFIG, NOW)) == [{
        "event": "Purchase",
        "event_time": EVENT_TIME,
        "event_id": "0f9c2c1e-6a7b-4d1e-8c55-3b1d2e4f5a60",   # Tealium's own ID of the event
        "user": {
            "email": sha("jane.doe@example.com"),
            "phone": sha("+447700900123"),
            "external_id": sha("CUST-1001"),
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
        },
        "page": {"url": "https://shop.example/checkout/thanks", "referrer": "https://shop.example/cart"},
        "properties": {
            "value": 46.0,
            "currency": "EUR",
            "order_id": "ORD-98030",
            "contents": [
                {"content_id": "SKU-1", "content_name": "Socks", "content_category": "apparel",
                 "brand": "Acme", "price": 8.0, "quantity": 2},
                {"content_id": "SKU-2", "content_name": "Dress", "content_category": "apparel",
                 "brand": "Acme", "price": 30.0, "quantity": 1},
            ],
            "num_items": 3,
        },
    }]


def test_the_guides_parameters():
    """Event ID, Test Event Code, Callback, Description, Query, Content Type, and a cart's Value
    ("total value of the items sold") from its products; one product sent as plain values."""
    event = tealium_event({
        "tealium_event": "cart_add",
        "event_id": "SessionID_8731",
        "test_event_code": "TEST123",
        "ttclid": "E.C.P.v3fQ2RHacdksKfofPmlyuStIIHJ4Af1tKYxF9zz2c",
        "description": "quick add",
        "search_keyword": "wool socks",
        "content_type": "product",
        "order_currency": "GBP",
        "product_id": "SKU-1",
        "product_unit_price": 8.5,
        "product_quantity": 3,
    })
    assert events.test_event_code_of(event, CONFIG) == "TEST123"   # its request carries it
    assert sent(map_event(event, None, CONFIG, NOW), "TEST123") == [{
        "event": "AddToCart",
        "event_time": EVENT_TIME,
        "event_id": "SessionID_8731",
        "user": {
            "ttclid": "E.C.P.v3fQ2RHacdksKfofPmlyuStIIHJ4Af1tKYxF9zz2c",
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
        },
        "page": {"url": "https://shop.example/checkout/thanks", "referrer": "https://shop.example/cart"},
        "properties": {
            "currency": "GBP",
            "description": "quick add",
            "search_string": "wool socks",
            "content_type": "product",
            "contents": [{"content_id": "SKU-1", "price": 8.5, "quantity": 3}],
            "num_items": 3,
            "value": 25.5,
        },
    }]


def test_the_callback_from_the_landing_url_and_the_timestamp_tealium_received_it_at():
    event = tealium_event({"tealium_event": "product_view", "product_id": ["SKU-9"]})
    del event["data"]["udo"]["tealium_timestamp_utc"]   # "if none, the current timestamp": post_time
    event["data"]["dom"]["url"] = "https://shop.example/p/sku-9?ttclid=E.C.P.fromurl&utm_source=tiktok"
    (item,) = sent(map_event(event, None, CONFIG, NOW))
    assert (item["event_time"], item["user"]["ttclid"], item["page"]["url"]) == (
        EVENT_TIME, "E.C.P.fromurl", "https://shop.example/p/sku-9?ttclid=E.C.P.fromurl&utm_source=tiktok")


TABLE = [("product_view", "ViewContent"), ("cart_add", "AddToCart"), ("checkout", "InitiateCheckout"),
         ("purchase", "Purchase"), ("search", "Search"), ("user_register", "CompleteRegistration"),
         ("email_signup", "Lead")]


@pytest.mark.parametrize("tealium_name, tiktok", TABLE)
def test_every_row_of_the_event_table(tealium_name, tiktok):
    event = tealium_event({"tealium_event": tealium_name}, event_id="e-1")
    del event["data"]["firstparty_tealium_cookies"]
    assert sent(map_event(event, None, CONFIG, NOW)) == [{
        "event": tiktok, "event_time": EVENT_TIME, "event_id": "e-1",
        "user": {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)"},
        "page": {"url": "https://shop.example/checkout/thanks", "referrer": "https://shop.example/cart"},
    }]


def test_tealiums_documented_event_object_a_page_view_is_not_sent():
    """The event data object of Tealium's webhook connector guide: a page view."""
    event = {"account": "tealium", "profile": "main", "env": "prod", "data": {
        "dom": {"referrer": "", "domain": "tealium.com",
                "title": "Tealium | Customer Data Hub and Enterprise Tag Management",
                "query_string": "", "url": "http://tealium.com/", "pathname": "/"},
        "udo": {"tealium_event": "page_view",
                "page_name": "Tealium | Customer Data Hub and Enterprise Tag Management",
                "page_type": "home", "device_type": "desktop"},
        "firstparty_tealium_cookies": {"trace_id": ""}}}
    assert map_event(event, None, CONFIG, NOW) == []
    assert skip_reason(event, CONFIG) == "unmapped"


@pytest.mark.parametrize("field, raw_key, hashed_key, raw, normalised", [
    ("email", "customer_email", "customer_email_sha256", " Jane.Doe@Example.com ", "jane.doe@example.com"),
    ("phone", "customer_phone", "customer_phone_sha256", "+1 (213) 373-4253", "+12133734253"),
    ("external_id", "customer_id", "customer_id_sha256", " CUST-1001 ", "CUST-1001"),
])
def test_each_identifier_raw_or_already_hashed(field, raw_key, hashed_key, raw, normalised):
    """"apply SHA256 hash": hashed as TikTok normalises; "already SHA256 hashed": passed through
    (lowercased), never hashed twice."""
    hashed = sha(normalised)
    for udo in ({raw_key: raw}, {hashed_key: hashed.upper()}, {raw_key: hashed}):
        (item,) = sent(map_event(tealium_event({"tealium_event": "purchase", **udo}), None, CONFIG, NOW))
        assert item["user"][field] == hashed, udo


def test_a_product_price_tiktok_would_refuse_is_dead_lettered():
    event = purchase()
    event["data"]["udo"]["product_unit_price"] = ["8.00", "free"]
    with pytest.raises(Refusal) as refused:
        map_event(event, None, CONFIG, NOW)
    assert refused.value.reason == "invalid_price"
    assert refused.value.message == "data.udo.product_unit_price[1]: expected a number, got 'free'"


def test_a_timestamp_that_is_not_iso_8601_is_dead_lettered():
    event = purchase()
    event["data"]["udo"]["tealium_timestamp_utc"] = "20/11/2026 10:00"
    with pytest.raises(Refusal) as refused:
        map_event(event, None, CONFIG, NOW)
    assert refused.value.reason == "invalid_timestamp"


def test_the_join_with_a_click_supplies_ttclid_ttp_ip_user_agent_and_page():
    """A purchase a shop's server posted to Tealium's HTTP API: the tracker's click ID only."""
    event = {"account": "acme", "profile": "main", "event_id": "srv-7", "post_time": EVENT_TIME * 1000,
             "data": {"udo": {"tealium_event": "purchase", "click_id": "clk-7", "order_id": "98030",
                              "order_total": 46, "order_currency": "USD", "customer_id": "CUST-1001"}}}
    click = {"ttclid": "E.C.P.late030", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "203.0.113.30",
             "user_agent": "Mozilla/5.0 (iPhone)", "url": "https://shop.example/landing?ttclid=E.C.P.late030",
             "referrer": "https://www.tiktok.com/", "clicked_at": EVENT_TIME - 3600}
    assert events.click_id_of(event, CONFIG) == "clk-7"
    assert sent(map_event(event, click, CONFIG, NOW)) == [{
        "event": "Purchase",
        "event_time": EVENT_TIME,
        "event_id": "srv-7",
        "user": {"external_id": sha("CUST-1001"), "ttclid": "E.C.P.late030",
                 "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "203.0.113.30",
                 "user_agent": "Mozilla/5.0 (iPhone)"},
        "page": {"url": "https://shop.example/landing?ttclid=E.C.P.late030",
                 "referrer": "https://www.tiktok.com/"},
        "properties": {"value": 46, "currency": "USD", "order_id": "98030"},
    }]
