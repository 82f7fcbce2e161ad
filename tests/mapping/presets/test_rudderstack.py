"""The rudderstack preset: RudderStack's own track calls -> exact TikTok data[] items.

The examples are the guide's (seeds/003: its sample Order Completed, its event and property
tables) in the full message RudderStack's SDKs send, and messages from RudderStack's own
destination tests (shared/reference/peer-cases.json). Every body built from the items must pass
the strict fake's checks.
"""
from __future__ import annotations

import pytest

from app.mapping import events
from app.mapping.config import MappingConfig
from app.mapping.events import Refusal, map_event, skip_reason
from app.mapping.spec import load_preset, merge
from tests.support import accepted, sha

CONFIG = MappingConfig(spec=load_preset("rudderstack"))
EVENT_TIME = 1795168800          # 2026-11-20T10:00:00Z
NOW = EVENT_TIME + 30.0


def sent(items: list[dict], test_event_code: str | None = None) -> list[dict]:
    return accepted(items, NOW, test_event_code)


def order_completed() -> dict:
    """The guide's sample `rudderanalytics.track("Order Completed", {...})`, as the JS SDK sends it."""
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "5f58d1f6-2a1e-4c1b-9d0c-5c7b3f0e9a11",
        "anonymousId": "21e13f4bc7ceddad",
        "userId": "u-1001",
        "originalTimestamp": "2026-11-20T09:59:59.500Z",
        "timestamp": "2026-11-20T10:00:00.000Z",
        "context": {
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
            "locale": "en-US",
            "library": {"name": "RudderLabs JavaScript SDK", "version": "3.0.0"},
            "page": {"url": "https://www.website.com/checkout/thanks",
                     "referrer": "https://www.website.com/cart"},
            "traits": {"email": " Jane.Doe@Example.com ", "phone": "+44 7700 900123"},
            "externalId": [{"type": "brazeExternalId", "id": "braze-9"},
                           {"type": "tiktokExternalId", "id": "cust-42"}],
        },
        "properties": {
            "checkout_id": "12345", "order_id": "1234", "affiliation": "Apple Store", "total": 20,
            "revenue": 15.0, "shipping": 22, "tax": 1, "discount": 1.5, "coupon": "ImagePro",
            "currency": "USD", "contentType": "product",
            "products": [
                {"product_id": "123", "sku": "G-32", "name": "Monopoly", "price": 14, "quantity": 1,
                 "category": "Games", "url": "https://www.website.com/product/path",
                 "image_url": "https://www.website.com/product/path.jpg"},
                {"product_id": "345", "sku": "F-32", "name": "UNO", "price": 3.45, "quantity": 2,
                 "category": "Games"},
            ],
        },
    }


def test_the_guides_order_completed():
    assert sent(map_event(order_completed(), None, CONFIG, NOW)) == [{
        "event": "PlaceAnOrder",
        "event_time": EVENT_TIME,
        "event_id": "5f58d1f6-2a1e-4c1b-9d0c-5c7b3f0e9a11",
        "user": {
            "email": sha("jane.doe@example.com"),
            "phone": sha("+447700900123"),
            "external_id": sha("cust-42"),   # the tiktokExternalId entry, not the braze one
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
            "locale": "en-US",
        },
        "page": {"url": "https://www.website.com/checkout/thanks",
                 "referrer": "https://www.website.com/cart"},
        "properties": {
            "value": 15.0,   # no properties.value: revenue
            "currency": "USD",
            "order_id": "1234",
            "content_type": "product",
            "contents": [
                {"content_id": "123", "content_name": "Monopoly", "content_category": "Games",
                 "price": 14, "quantity": 1},
                {"content_id": "345", "content_name": "UNO", "content_category": "Games",
                 "price": 3.45, "quantity": 2},
            ],
            "num_items": 3,
        },
    }]


def test_the_guides_property_table():
    """properties.eventId, testEventCode, contents, value, description, query, context.* rows."""
    message = {
        "type": "track",
        "event": "Search",
        "messageId": "msg-2",
        "timestamp": "2026-11-20T10:00:00Z",
        "context": {"ip": "198.51.100.2", "userAgent": "Mozilla/5.0 (X11)",
                    "page": {"url": "https://shop.example/search?q=socks"},
                    "externalId": [{"type": "tiktokExternalId", "id": ["id-1", "id-2"]}]},
        "properties": {
            "eventId": "1616318632825_357",
            "testEventCode": "TEST123",
            "query": "wool socks",
            "description": "search from the header",
            "value": 0,
            "currency": "eur",
            "contents": {"content_id": 1077218, "content_name": "Socks", "price": "8.00", "quantity": 2},
            "context": {"ad": {"callback": "E.C.P.v3fQ2RHacdksKfofPmlyuStIIHJ4Af1tKYxF9zz2c"},
                        "page": {"url": "https://shop.example/search", "referrer": "https://shop.example/"},
                        "user": {"email": "abc@xyz.com"}},
        },
    }
    assert events.test_event_code_of(message, CONFIG) == "TEST123"  # its request carries it
    assert sent(map_event(message, None, CONFIG, NOW), "TEST123") == [{
        "event": "Search",
        "event_time": EVENT_TIME,
        "event_id": "1616318632825_357",
        "user": {
            "email": sha("abc@xyz.com"),
            "external_id": [sha("id-1"), sha("id-2")],
            "ttclid": "E.C.P.v3fQ2RHacdksKfofPmlyuStIIHJ4Af1tKYxF9zz2c",
            "ip": "198.51.100.2",
            "user_agent": "Mozilla/5.0 (X11)",
        },
        "page": {"url": "https://shop.example/search", "referrer": "https://shop.example/"},
        "properties": {
            "value": 0,
            "currency": "EUR",
            "description": "search from the header",
            "search_string": "wool socks",
            "contents": [{"content_id": "1077218", "content_name": "Socks", "price": 8.0, "quantity": 2}],
            "num_items": 2,
        },
    }]


def test_events_1_0_message_from_rudderstacks_own_tests():
    """rs-tiktok_ads-proc-00: properties.context.{ad,page,user}, properties.clickId winning over
    context.ad.callback, email/phone already hashed (hashUserProperties off) passed through."""
    message = {
        "anonymousId": "21e13f4bc7ceddad",
        "channel": "web",
        "context": {
            "userAgent": "Mozilla/5.0 (platform; rv:geckoversion) Gecko/geckotrail Firefox/firefoxversion",
            "ip": "13.57.97.131",
            "locale": "en-US",
            "externalId": [{"type": "tiktokExternalId",
                            "id": "f0e388f53921a51f0bb0fc8a2944109ec188b59172935d8f23020b1614cc44bc"}],
        },
        "messageId": "84e26acc-56a5-4835-8233-591137fca468",
        "originalTimestamp": "2026-11-20T09:59:55.562Z",
        "timestamp": "2026-11-20T10:00:00Z",
        "type": "track",
        "event": "checkout step completed",
        "properties": {
            "eventId": "1616318632825_357",
            "contents": [{"price": 8, "quantity": 2, "content_type": "socks", "content_id": "1077218"},
                         {"price": 30, "quantity": 1, "content_type": "dress", "content_id": "1197218"}],
            "clickId": "E.C.P.dummyclickId",
            "currency": "USD",
            "value": 46,
            "context": {
                "ad": {"callback": "E.C.P.123ATXSfe"},
                "page": {"url": "http://demo.mywebsite.com/purchase", "referrer": "http://demo.mywebsite.com"},
                "user": {"phone_number": "2F9D2B4DF907E5C9A7B3434351B55700167B998A83DC479B825096486FFCF4EA",
                         "email": "dd6ff77f54e2106661089bae4d40cdb600979bf7edc9eb65c0942ba55c7c2d7f"},
            },
        },
    }
    assert sent(map_event(message, None, CONFIG, NOW)) == [{
        "event": "CompletePayment",
        "event_time": EVENT_TIME,
        "event_id": "1616318632825_357",
        "user": {
            "email": "dd6ff77f54e2106661089bae4d40cdb600979bf7edc9eb65c0942ba55c7c2d7f",
            "phone": "2f9d2b4df907e5c9a7b3434351b55700167b998a83dc479b825096486ffcf4ea",
            "external_id": "f0e388f53921a51f0bb0fc8a2944109ec188b59172935d8f23020b1614cc44bc",
            "ttclid": "E.C.P.dummyclickId",
            "ip": "13.57.97.131",
            "user_agent": "Mozilla/5.0 (platform; rv:geckoversion) Gecko/geckotrail Firefox/firefoxversion",
            "locale": "en-US",
        },
        "page": {"url": "http://demo.mywebsite.com/purchase", "referrer": "http://demo.mywebsite.com"},
        "properties": {
            "value": 46,
            "currency": "USD",
            "contents": [{"content_id": "1077218", "price": 8, "quantity": 2},
                         {"content_id": "1197218", "price": 30, "quantity": 1}],
            "num_items": 3,
        },
    }]


GUIDE_TABLE = [
    ("ViewContent", "ViewContent"), ("ClickButton", "ClickButton"), ("Search", "Search"),
    ("Contact", "Contact"), ("Download", "Download"), ("SubmitForm", "SubmitForm"),
    ("CompleteRegistration", "CompleteRegistration"), ("Subscribe", "Subscribe"),
    ("Product Added to Wishlist", "AddToWishlist"), ("Product Added", "AddToCart"),
    ("Checkout Started", "InitiateCheckout"), ("Payment Info Entered", "AddPaymentInfo"),
    ("Checkout Step Completed", "CompletePayment"), ("Order Completed", "PlaceAnOrder"),
]


@pytest.mark.parametrize("source, tiktok", GUIDE_TABLE)
@pytest.mark.parametrize("spelling", [str, str.lower])   # RudderStack looks names up lowercased
def test_every_row_of_the_guides_event_table(source, tiktok, spelling):
    message = {"type": "track", "event": spelling(source), "messageId": "m-1",
               "timestamp": "2026-11-20T10:00:00Z", "context": {"ip": "203.0.113.1", "userAgent": "UA"}}
    assert sent(map_event(message, None, CONFIG, NOW)) == [{
        "event": tiktok, "event_time": EVENT_TIME, "event_id": "m-1",
        "user": {"ip": "203.0.113.1", "user_agent": "UA"},
    }]


@pytest.mark.parametrize("message", [
    {"type": "identify", "userId": "u-1", "traits": {"email": "jane@example.com"},
     "timestamp": "2026-11-20T10:00:00Z"},
    {"type": "page", "name": "Home", "timestamp": "2026-11-20T10:00:00Z",
     "properties": {"url": "https://shop.example/"}},
    {"event": "Order Completed", "timestamp": "2026-11-20T10:00:00Z"},   # no type: RudderStack refuses it
])
def test_calls_that_are_not_track_calls_are_skipped(message):
    assert map_event(message, None, CONFIG, NOW) == []
    assert skip_reason(message, CONFIG) == "not_a_conversion"


def test_a_name_outside_the_table_is_skipped_as_unmapped():
    message = {"type": "track", "event": "Product Viewed", "timestamp": "2026-11-20T10:00:00Z"}
    assert map_event(message, None, CONFIG, NOW) == []
    assert skip_reason(message, CONFIG) == "unmapped"


def test_a_currency_tiktok_refuses_is_dead_lettered():
    message = order_completed()
    message["properties"]["currency"] = "US$"
    with pytest.raises(Refusal) as refused:
        map_event(message, None, CONFIG, NOW)
    assert refused.value.reason == "invalid_currency"
    assert refused.value.message == "properties.currency: 'US$' is not an ISO-4217 code TikTok accepts"


def test_identifiers_already_hashed_are_passed_through():
    hashed_email, hashed_phone, hashed_id = sha("jane.doe@example.com"), sha("+447700900123"), sha("cust-42")
    message = order_completed()
    message["context"]["traits"] = {"email": hashed_email.upper(), "phone": hashed_phone}
    message["context"]["externalId"] = [{"type": "tiktokExternalId", "id": hashed_id}]
    (item,) = sent(map_event(message, None, CONFIG, NOW))
    assert {k: item["user"].get(k) for k in ("email", "phone", "external_id")} == {
        "email": hashed_email, "phone": hashed_phone, "external_id": hashed_id}


def test_the_join_with_a_click_supplies_ttclid_ttp_ip_and_user_agent():
    """A server-side Order Completed carrying only the tracker's click ID."""
    message = {"type": "track", "event": "Order Completed", "messageId": "srv-7",
               "timestamp": "2026-11-20T10:00:00Z",
               "properties": {"click_id": "clk-7", "order_id": "98030", "revenue": 46, "currency": "USD"}}
    click = {"ttclid": "E.C.P.late030", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "203.0.113.30",
             "user_agent": "Mozilla/5.0 (iPhone)", "url": "https://shop.example/landing?ttclid=E.C.P.late030",
             "referrer": "https://www.tiktok.com/", "clicked_at": EVENT_TIME - 3600}
    assert sent(map_event(message, click, CONFIG, NOW)) == [{
        "event": "PlaceAnOrder",
        "event_time": EVENT_TIME,
        "event_id": "srv-7",
        "user": {"ttclid": "E.C.P.late030", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "203.0.113.30",
                 "user_agent": "Mozilla/5.0 (iPhone)"},
        "page": {"url": "https://shop.example/landing?ttclid=E.C.P.late030",
                 "referrer": "https://www.tiktok.com/"},
        "properties": {"value": 46, "currency": "USD", "order_id": "98030"},
    }]


def test_without_a_tiktok_external_id_entry_there_is_no_external_id():
    message = order_completed()
    message["context"]["externalId"] = [{"type": "brazeExternalId", "id": "braze-9"}]
    (item,) = map_event(message, None, CONFIG, NOW)
    assert "external_id" not in item["user"]


@pytest.mark.parametrize("path", ["context.externalId[type].id", "context.externalId[0].id",
                                  "context..externalId", 'context."externalId.id'])
def test_a_path_the_spec_cannot_read_names_its_key(path):
    with pytest.raises(ValueError, match=r"^user\.external_id: .* is not a dotted path"):
        MappingConfig(spec=merge(load_preset("rudderstack"), {"user": {"external_id": [path]}}))
