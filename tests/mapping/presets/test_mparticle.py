"""The mparticle preset: mParticle's own event batches -> exact TikTok data[] items.

The examples are mParticle's: the sample batch of its Events API JSON reference, and commerce
events with the custom flags, product actions and identity settings of its TikTok integration's
guide (seeds/004). A batch is read as one event per element of `events` (events_of). Every body
built from the items must pass the strict fake's checks.
"""
from __future__ import annotations

import copy

import pytest

from app.mapping import events
from app.mapping.config import MappingConfig
from app.mapping.events import Refusal, Skip, events_of, map_event, skip_reason
from app.mapping.spec import load_preset, resolve
from tests.support import accepted, sha

CONFIG = MappingConfig(spec=load_preset("mparticle"))
EVENT_TIME = 1795168800          # 2026-11-20T10:00:00Z
NOW = EVENT_TIME + 30.0


def sent(items: list[dict]) -> list[dict]:
    return accepted(items, NOW)


def outcomes(batch: dict, config: MappingConfig = CONFIG) -> list:
    """Each event of the batch: its items, or why it is not sent (a skip reason, a Refusal's)."""
    out: list = []
    for event in events_of(batch, config):
        if isinstance(event, Refusal):
            out.append(("refused", event.reason))
            continue
        try:
            items = map_event(event, None, config, NOW)
        except Skip as skip:
            out.append(("skipped", skip.reason))
        except Refusal as refusal:
            out.append(("refused", refusal.reason))
        else:
            out.append(sent(items) if items else ("skipped", skip_reason(event, config)))
    return out


# The sample batch of mParticle's Events API JSON reference, its events' own fields kept (the
# device_current_state and null fields of each event left out for brevity).
SAMPLE_BATCH = {
    "source_request_id": "769D83CB-8C60-48F9-A0C1-C38CF1B40A4F",
    "events": [
        {"event_type": "session_start",
         "data": {"timestamp_unixtime_ms": 1558342828195, "event_id": 5333365338074280876,
                  "source_message_id": "84E1B361-A282-4ADF-8A6D-1D31E6DD5A9E",
                  "session_id": 6051321688317951794, "session_uuid": "84E1B361-A282-4ADF-8A6D-1D31E6DD5A9E"}},
        {"event_type": "custom_event",
         "data": {"custom_event_type": "other", "event_name": "Example custom event", "custom_flags": {},
                  "timestamp_unixtime_ms": 1558388284131, "event_id": 31211936655863586,
                  "source_message_id": "f73133d5-116d-4ea4-b04a-691c339f04e3"}},
        {"event_type": "screen_view",
         "data": {"screen_name": "Example screen event", "activity_type": "activity_started",
                  "custom_flags": {}, "timestamp_unixtime_ms": 1558388284133,
                  "event_id": -7046523282345812629, "source_message_id": "95efd10d-ea9d-4eb9-b2e8-6c4170c9c7f4"}},
        {"event_type": "commerce_event",
         "data": {"product_action": {"action": "purchase", "checkout_step": 0, "checkout_options": None,
                                     "product_action_list": None, "product_list_source": None,
                                     "transaction_id": "foo transaction id", "affiliation": None,
                                     "total_amount": 123, "tax_amount": 0, "shipping_amount": 0,
                                     "coupon_code": None,
                                     "products": [{"id": "Product SKU", "name": "Product name", "brand": None,
                                                   "category": None, "variant": None, "position": 0,
                                                   "price": 123, "quantity": 1, "coupon_code": None,
                                                   "added_to_cart_time_ms": 1558388284150,
                                                   "total_product_amount": 123, "custom_attributes": {}}]},
                  "promotion_action": None, "product_impressions": None, "shopping_cart": None,
                  "currency_code": None, "is_non_interactive": False, "event_name": "eCommerce - Purchase",
                  "custom_event_type": "purchase", "custom_flags": {},
                  "timestamp_unixtime_ms": 1558388284159, "event_id": 6644003854898401924,
                  "source_message_id": "70f1f6aa-8bec-40c7-b48c-1ca253db9fa3",
                  "session_id": -2271448330363288817, "session_uuid": "8B8DFAA2-17C7-43E8-88EE-5F2DCF016D56",
                  "custom_attributes": {"Transaction Id": "foo transaction id", "Total Amount": "123"}}},
    ],
    "device_info": {"platform": "iOS", "os_version": "12.2", "locale_language": "en", "locale_country": "US",
                    "http_header_user_agent": "Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 "
                                              "(KHTML, like Gecko) Mobile/15E148",
                    "ios_idfv": "0f129dcb-d5b9-450b-9003-a38a7b7e946d"},
    "application_info": {"application_name": "SDK Canary", "application_version": "0.9.5"},
    "user_attributes": {"Test attribute": "Test value"},
    "user_identities": {"customer_id": "123456"},
    "environment": "development",
    "ip": "100.38.5.94",
    "mp_deviceid": "3fb44a79-df2d-446d-acf1-e87eda854ae1",
    "timestamp_unixtime_ms": 1558342842934,
    "batch_id": -8602161397754364000,
    "mpid": -7636538281262557000,
    "sdk_version": "7.9.2",
}


def test_mparticles_sample_batch():
    assert outcomes(SAMPLE_BATCH) == [
        ("skipped", "not_a_conversion"),
        ("skipped", "not_a_conversion"),
        ("skipped", "not_a_conversion"),
        [{
            "event": "PlaceAnOrder",
            "event_time": 1558388284,
            "event_id": "70f1f6aa-8bec-40c7-b48c-1ca253db9fa3",
            "user": {
                "external_id": sha("123456"),   # External Identity Type: Customer ID
                "ip": "100.38.5.94",
                "user_agent": "Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 "
                              "(KHTML, like Gecko) Mobile/15E148",
            },
            "properties": {
                "value": 123,
                "order_id": "foo transaction id",
                "contents": [{"content_id": "Product SKU", "content_name": "Product name", "price": 123,
                              "quantity": 1}],
                "num_items": 1,
            },
        }],
    ]


def commerce_event(action: str = "purchase", **data) -> dict:
    """A commerce event with the guide's custom flags, from mParticle's web SDK."""
    return {"event_type": "commerce_event", "data": {
        "event_name": "eCommerce - Purchase",
        "custom_event_type": action,
        "timestamp_unixtime_ms": EVENT_TIME * 1000 + 490,
        "event_id": 6644003854898401924,
        "source_message_id": "e8335d31-2031-4bff-afec-17ffc1784697",
        "currency_code": "USD",
        "custom_flags": {"TikTok.URL": "http://demo.mywebsite.com/purchase",
                         "TikTok.Referrer": "http://demo.mywebsite.com",
                         "TikTok.Callback": "E.C.P.v3fQ2RHacdksKfofPmlyuStIIHJ4Af1tKYxF9zz2c2PLx1Oaw15oHpcfl5AH"},
        "product_action": {
            "action": action, "transaction_id": "T-98030", "total_amount": 46.0,
            "products": [{"id": "1077218", "name": "Socks", "category": "apparel", "brand": "Acme",
                          "price": 8, "quantity": 2, "total_product_amount": 16},
                         {"id": "1197218", "name": "Dress", "category": "apparel", "price": 30, "quantity": 1}]},
        **data}}


def batch(*events: dict, **over) -> dict:
    return {"events": list(events), "environment": "production", "ip": "203.0.113.4",
            "device_info": {"platform": "web", "http_header_user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
            "user_identities": {"customer_id": "CUST-1001", "email": " Jane.Doe@Example.com ",
                                "mobile_number": "+44 7700 900123"},
            "mpid": -7636538281262557000, **over}


PURCHASE = {
    "event": "PlaceAnOrder",
    "event_time": EVENT_TIME,
    "event_id": "e8335d31-2031-4bff-afec-17ffc1784697",
    "user": {
        "email": sha("jane.doe@example.com"),
        "phone": sha("+447700900123"),
        "external_id": sha("CUST-1001"),
        "ttclid": "E.C.P.v3fQ2RHacdksKfofPmlyuStIIHJ4Af1tKYxF9zz2c2PLx1Oaw15oHpcfl5AH",
        "ip": "203.0.113.4",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    },
    "page": {"url": "http://demo.mywebsite.com/purchase", "referrer": "http://demo.mywebsite.com"},
    "properties": {
        "value": 46.0,
        "currency": "USD",
        "order_id": "T-98030",
        "contents": [
            {"content_id": "1077218", "content_name": "Socks", "content_category": "apparel", "brand": "Acme",
             "price": 8, "quantity": 2},
            {"content_id": "1197218", "content_name": "Dress", "content_category": "apparel", "price": 30,
             "quantity": 1},
        ],
        "num_items": 3,
    },
}


def test_a_purchase_with_the_guides_custom_flags_and_identities():
    assert outcomes(batch(commerce_event())) == [[PURCHASE]]


@pytest.mark.parametrize("action, tiktok", [
    ("add_to_cart", "AddToCart"), ("add_to_wishlist", "AddToWishlist"), ("purchase", "PlaceAnOrder"),
    ("checkout", "InitiateCheckout"), ("view_detail", "ViewContent"),
])
def test_every_row_of_the_guides_event_table(action, tiktok):
    (items,) = outcomes(batch(commerce_event(action)))
    assert items == [{**PURCHASE, "event": tiktok}]


def test_without_source_message_id_the_event_id_is_mparticles_event_id():
    event = commerce_event()
    del event["data"]["source_message_id"]
    ((item,),) = outcomes(batch(event))
    assert item["event_id"] == "6644003854898401924"


@pytest.mark.parametrize("event, reason", [
    ({"event_type": "custom_event", "data": {"event_name": "Signed Up", "custom_event_type": "other",
                                             "timestamp_unixtime_ms": EVENT_TIME * 1000}}, "not_a_conversion"),
    ({"event_type": "screen_view", "data": {"screen_name": "Checkout",
                                            "timestamp_unixtime_ms": EVENT_TIME * 1000}}, "not_a_conversion"),
    (commerce_event("refund"), "unmapped"),
    (commerce_event("remove_from_cart"), "unmapped"),
    ({"event_type": "commerce_event",   # a promotion: "other CommerceEvent types remain unsupported"
      "data": {"event_name": "eCommerce - PromotionClick", "custom_event_type": "promotion_click",
               "timestamp_unixtime_ms": EVENT_TIME * 1000,
               "promotion_action": {"action": "click", "promotions": [{"id": "SUMMER", "name": "Summer"}]}}},
     "unmapped"),
])
def test_events_the_integration_does_not_forward_are_skipped(event, reason):
    assert outcomes(batch(event)) == [("skipped", reason)]


def test_a_user_with_no_email_phone_or_external_id_is_not_forwarded():
    """Not even with a ttclid: "at least one of the above identifiers is required"."""
    assert outcomes(batch(commerce_event(), user_identities={"other": "x-1"})) == [("skipped", "no_user_identity")]
    assert outcomes(batch(commerce_event(), user_identities=None)) == [("skipped", "no_user_identity")]


def test_custom_flags_tiktok_would_refuse_are_left_out():
    event = commerce_event()
    event["data"]["custom_flags"] = {"TikTok.URL": "demo.mywebsite.com/purchase",       # no http(s)
                                     "TikTok.Referrer": "android-app://com.example.shop",
                                     "TikTok.Callback": "__CALLBACK_PARAM__"}            # TikTok's dummy value
    ((item,),) = outcomes(batch(event))
    assert "page" not in item and "ttclid" not in item["user"]


def test_a_timestamp_in_seconds_is_dead_lettered():
    """The guide: "This must be in millisecond resolution"; seconds read as ms are in 1970."""
    event = commerce_event(timestamp_unixtime_ms=EVENT_TIME)
    (refusal,) = outcomes(batch(event))
    assert refusal == ("refused", "invalid_timestamp")
    with pytest.raises(Refusal, match="data.timestamp_unixtime_ms: 1795168800 is before 2001"):
        map_event(events_of(batch(event), CONFIG)[0], None, CONFIG, NOW)


def test_one_bad_event_does_not_stop_its_batch():
    assert outcomes(batch("not an event", commerce_event())) == [("refused", "invalid_event"), [PURCHASE]]


def test_identities_already_hashed_are_passed_through():
    hashed = {"email": sha("jane.doe@example.com"), "phone": sha("+447700900123"), "external_id": sha("CUST-1001")}
    identities = {"email": hashed["email"].upper(), "mobile_number": hashed["phone"],
                  "customer_id": hashed["external_id"]}
    ((item,),) = outcomes(batch(commerce_event(), user_identities=identities))
    assert {k: item["user"][k] for k in hashed} == hashed


def test_a_users_file_chooses_the_identity_types():
    """The Email/Phone/External Identity Type settings: which batch.user_identities key feeds each."""
    config = MappingConfig.from_dict({"spec": resolve({
        "extends": "mparticle",
        "user": {"email": ["batch.user_identities.other"],
                 "phone": ["batch.user_identities.phone_number_2"],
                 "external_id": ["batch.user_identities.other_id_2"]}})})
    identities = {"customer_id": "CUST-1001", "email": "not@used.example", "mobile_number": "+44 7700 900999",
                  "other": "Jane.Doe@Example.com", "phone_number_2": "+1 213 373 4253", "other_id_2": "crm-77"}
    ((item,),) = outcomes(batch(commerce_event(), user_identities=identities), config)
    assert {k: item["user"][k] for k in ("email", "phone", "external_id")} == {
        "email": sha("jane.doe@example.com"), "phone": sha("+12133734253"), "external_id": sha("crm-77")}


def test_the_join_with_a_click_supplies_ttclid_ttp_ip_user_agent_and_page():
    """A purchase sent server to server (no device info, no custom flags) with the tracker's
    click ID as a custom attribute."""
    event = commerce_event(custom_attributes={"click_id": "clk-7"})
    del event["data"]["custom_flags"]
    doc = {"events": [event], "environment": "production", "user_identities": {"customer_id": "CUST-1001"}}
    (event,) = events_of(doc, CONFIG)
    assert events.click_id_of(event, CONFIG) == "clk-7"
    click = {"ttclid": "E.C.P.late030", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "203.0.113.30",
             "user_agent": "Mozilla/5.0 (iPhone)", "url": "https://shop.example/landing?ttclid=E.C.P.late030",
             "referrer": "https://www.tiktok.com/", "clicked_at": EVENT_TIME - 3600}
    expected = copy.deepcopy(PURCHASE)
    expected["user"] = {"external_id": sha("CUST-1001"), "ttclid": "E.C.P.late030",
                        "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "203.0.113.30",
                        "user_agent": "Mozilla/5.0 (iPhone)"}
    expected["page"] = {"url": "https://shop.example/landing?ttclid=E.C.P.late030",
                        "referrer": "https://www.tiktok.com/"}
    assert sent(map_event(event, click, CONFIG, NOW)) == [expected]
