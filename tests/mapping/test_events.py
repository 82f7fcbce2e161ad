"""app.mapping.events: one source event + its click -> exact TikTok data[] items, or a Refusal."""
from __future__ import annotations

import copy
import hashlib

import orjson
import pytest

from app.devtools.fake_tiktok import check_request
from app.mapping.events import (
    DEFAULT_EVENT_MAP,
    REASONS,
    MappingConfig,
    Refusal,
    click_id_of,
    has_identifier,
    map_event,
    parse_timestamp,
    tiktok_names,
    ttclid_from_url,
)
from app.tiktok.facts import CONTENT_FIELDS, PROPERTIES_FIELDS

EVENT_TIME = 1704721970           # 2024-01-08T13:52:50Z
NOW = EVENT_TIME + 30.0
CONFIG = MappingConfig()
GB = MappingConfig(default_region="GB")

# TikTok's own example hashes (TIKTOK_EVENTS_API.md).
ALICE_EMAIL = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
USER_123 = "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def accepted(items: list[dict]) -> bool:
    body = {"event_source": "web", "event_source_id": "PIXEL", "data": items}
    return check_request(body, now=NOW) == (0, "OK")


def order_completed() -> dict:
    """A Segment-spec Order Completed as a shop's server sends it, with the tracker's click ID."""
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "msg-98213",
        "timestamp": "2024-01-08T13:52:50.212Z",
        "originalTimestamp": "2024-01-08T13:52:49.000Z",
        "userId": "user_123",
        "anonymousId": "anon-1",
        "context": {
            "ip": "203.0.113.4",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "locale": "en-GB",
            "page": {"url": "https://shop.example/checkout/done",
                     "referrer": "https://shop.example/cart"},
            "traits": {"email": " ALICE_abc@gmail.com ", "phone": "07700 900123"},
            "library": {"name": "analytics-python", "version": "2.2.2"},
        },
        "properties": {
            "click_id": "clk-42",
            "order_id": 98213,
            "affiliation": "Shop Example",
            "revenue": "46.00",
            "shipping": 3,
            "coupon": "WINTER",
            "currency": "gbp",
            "products": [
                {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32",
                 "name": "Monopoly: 3rd Edition", "price": 19, "quantity": 1,
                 "category": "Games", "image_url": "https://shop.example/monopoly.jpg"},
                {"product_id": 123, "sku": "46493-32", "name": "Uno Card Game",
                 "price": "13.5", "quantity": "2", "category": "Games", "brand": "Mattel"},
            ],
        },
    }


def click(**changes) -> dict:
    """A click recorded at landing time, an hour before the conversion."""
    record = {"ttclid": "E.C.P.click", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
              "clicked_at": EVENT_TIME - 3600.0, "ip": "198.51.100.7",
              "user_agent": "Mozilla/5.0 (iPhone)", "url": "https://shop.example/landing?ttclid=E.C.P.click",
              "referrer": "https://www.tiktok.com/"}
    record.update(changes)
    return record


def track(event="Order Completed", **fields) -> dict:
    """A minimal track event; `fields` replace top-level keys."""
    base = {"type": "track", "event": event, "messageId": "m1",
            "timestamp": "2024-01-08T13:52:50Z", "properties": {}, "context": {}}
    base.update(fields)
    return base


def only(items: list[dict]) -> dict:
    assert len(items) == 1
    return items[0]


# ---- the whole item

def test_order_completed_with_products_and_click():
    items = map_event(order_completed(), click(), GB, NOW)
    assert items == [{
        "event": "Purchase",
        "event_time": EVENT_TIME,
        "event_id": "msg-98213",
        "user": {
            "email": ALICE_EMAIL,
            "phone": sha("+447700900123"),
            "external_id": USER_123,
            "ttclid": "E.C.P.click",
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ip": "203.0.113.4",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "locale": "en-GB",
        },
        "page": {"url": "https://shop.example/checkout/done",
                 "referrer": "https://shop.example/cart"},
        "properties": {
            "value": 46.0,
            "currency": "GBP",
            "order_id": "98213",
            "contents": [
                {"content_id": "507f1f77bcf86cd799439011", "content_name": "Monopoly: 3rd Edition",
                 "content_category": "Games", "price": 19, "quantity": 1},
                {"content_id": "123", "content_name": "Uno Card Game", "content_category": "Games",
                 "brand": "Mattel", "price": 13.5, "quantity": 2},
            ],
            "num_items": 3,
        },
    }]
    assert accepted(items)


def test_server_postback_gets_ip_user_agent_and_page_from_the_click():
    event = track(properties={"click_id": "clk-42", "value": 10, "currency": "USD"})
    item = only(map_event(event, click(), CONFIG, NOW))
    assert item["user"] == {"ttclid": "E.C.P.click", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
                            "ip": "198.51.100.7", "user_agent": "Mozilla/5.0 (iPhone)"}
    assert item["page"] == {"url": "https://shop.example/landing?ttclid=E.C.P.click",
                            "referrer": "https://www.tiktok.com/"}
    assert accepted([item])


def test_minimal_event_has_only_required_fields():
    assert map_event(track(), None, CONFIG, NOW) == [
        {"event": "Purchase", "event_time": EVENT_TIME, "event_id": "m1"}]


def test_mapping_does_not_modify_its_inputs():
    event, recorded = order_completed(), click()
    before = copy.deepcopy((event, recorded))
    map_event(event, recorded, GB, NOW)
    assert (event, recorded) == before


# ---- event names

@pytest.mark.parametrize("source, expected", list(DEFAULT_EVENT_MAP.items()) + [
    ("Purchase", ("Purchase",)),             # a TikTok standard name passes as itself
    ("CompletePayment", ("CompletePayment",)),
    ("order_completed", ("Purchase",)),      # case/underscore variants of a mapped name
    ("ORDER COMPLETED", ("Purchase",)),
    ("viewcontent", ("ViewContent",)),
    ("Page Scrolled", ()),                   # unmapped: skipped and counted by the caller
    ("Pageview", ()),
])
def test_default_event_map(source, expected):
    assert tiktok_names(track(source), CONFIG) == expected


def test_default_map_is_designs_table():
    assert DEFAULT_EVENT_MAP["Order Completed"] == ("Purchase",)
    assert DEFAULT_EVENT_MAP["Form Submitted"] == ("Lead",)
    assert len(DEFAULT_EVENT_MAP) == 10


def test_one_source_event_to_many_tiktok_events_share_event_id():
    config = MappingConfig.from_dict({"events": {"Order Completed": ["Purchase", "PlaceAnOrder"]}})
    items = map_event(order_completed(), None, config, NOW)
    assert [i["event"] for i in items] == ["Purchase", "PlaceAnOrder"]
    assert items[0]["event_id"] == items[1]["event_id"] == "msg-98213"
    assert {k: v for k, v in items[0].items() if k != "event"} == {
        k: v for k, v in items[1].items() if k != "event"}
    assert accepted(items)


@pytest.mark.parametrize("kind", ["page", "identify", "screen", "group", "alias"])
def test_non_track_calls_are_unmapped(kind):
    event = track("Order Completed", type=kind)
    assert tiktok_names(event, CONFIG) == ()
    assert map_event(event, None, CONFIG, NOW) == []


def test_type_may_be_absent():
    assert tiktok_names({"event": "Order Completed"}, CONFIG) == ("Purchase",)


def test_unmapped_event_is_not_refused_for_other_faults():
    assert map_event(track("Page Scrolled", timestamp="garbage"), None, CONFIG, NOW) == []


# ---- config

def test_config_from_toml_shaped_dict():
    config = MappingConfig.from_dict({
        "events": {"Order Completed": "CompletePayment", "Trial Started": ["StartTrial"],
                   "Product Viewed": []},
        "click_id_paths": ["properties.aff_click", "context.campaign.click"],
        "default_region": "gb",
        "attribution_window_s": 86400,
        "limited_data_use": False,
        "content_type": "product",
        "send_page_url": False,
        "max_event_age_s": 7 * 86400,
    })
    assert config.event_map["Order Completed"] == ("CompletePayment",)
    assert config.event_map["Trial Started"] == ("StartTrial",)
    assert config.event_map["Signed Up"] == ("CompleteRegistration",)   # defaults kept
    assert tiktok_names(track("Product Viewed"), config) == ()           # [] stops a default
    assert config.click_id_paths == ("properties.aff_click", "context.campaign.click")
    assert config.default_region == "GB"
    assert config.attribution_window_s == 86400
    item = only(map_event(track(properties={"value": 1}), None, config, NOW))
    assert item["limited_data_use"] is False
    assert item["properties"] == {"value": 1, "content_type": "product"}


def test_config_unknown_tiktok_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'Purchased'"):
        MappingConfig.from_dict({"events": {"Order Completed": ["Purchase", "Purchased"]}})
    with pytest.raises(ValueError, match="'Pageview'"):
        MappingConfig(event_map={"Page Viewed": ("Pageview",)})


@pytest.mark.parametrize("doc, message", [
    ({"event": {}}, "unknown mapping setting"),
    ({"events": ["Purchase"]}, "events"),
    ({"events": {"A": 5}}, "'A'"),
    ({"default_region": "XX"}, "default_region"),
    ({"default_region": 44}, "default_region"),
    ({"attribution_window_s": 0}, "attribution_window_s"),
    ({"attribution_window_s": 29 * 86400}, "28 days"),
    ({"attribution_window_s": True}, "attribution_window_s"),
    ({"content_type": "bundle"}, "content_type"),
    ({"limited_data_use": "yes"}, "limited_data_use"),
    ({"click_id_paths": "properties.click_id"}, "click_id_paths"),
    ({"click_id_paths": ["properties..x"]}, "click_id_paths"),
    ({"max_event_age_s": -1}, "max_event_age_s"),
    ({"events": {"Signup": "Lead", "signup": "CompleteRegistration"}}, "case or spacing"),
])
def test_config_rejects_bad_values(doc, message):
    with pytest.raises(ValueError, match=message):
        MappingConfig.from_dict(doc)


# ---- click ID

def test_click_id_of():
    assert click_id_of(order_completed(), CONFIG) == "clk-42"
    assert click_id_of(track(context={"click_id": "c2"}), CONFIG) == "c2"
    assert click_id_of(track(properties={"click_id": "", "x": 1}, context={"click_id": 77}),
                       CONFIG) == "77"
    assert click_id_of(track(properties={"click_id": {"id": 1}}), CONFIG) is None
    assert click_id_of(track(), CONFIG) is None
    custom = MappingConfig(click_id_paths=("properties.subid",))
    assert click_id_of(track(properties={"subid": " s-9 ", "click_id": "no"}), custom) == "s-9"


# ---- ttclid and _ttp precedence

def test_ttclid_explicit_on_event_beats_click_and_url():
    event = order_completed()
    event["properties"]["ttclid"] = "E.C.P.explicit"
    event["context"]["page"]["url"] = "https://shop.example/?ttclid=E.C.P.url"
    assert only(map_event(event, click(), CONFIG, NOW))["user"]["ttclid"] == "E.C.P.explicit"
    event = track(context={"ttclid": "E.C.P.context"})
    assert only(map_event(event, click(), CONFIG, NOW))["user"]["ttclid"] == "E.C.P.context"


def test_ttclid_from_click_beats_page_url():
    event = track(context={"page": {"url": "https://shop.example/?ttclid=E.C.P.url"}})
    assert only(map_event(event, click(), CONFIG, NOW))["user"]["ttclid"] == "E.C.P.click"


def test_ttclid_falls_back_to_page_url():
    event = track(context={"page": {"url": "https://shop.example/?a=b&ttclid=E.C.P.url"}})
    assert only(map_event(event, None, CONFIG, NOW))["user"] == {"ttclid": "E.C.P.url"}


def test_click_outside_attribution_window_gives_no_ttclid_or_ttp():
    old = click(clicked_at=EVENT_TIME - 7 * 86400 - 1)
    user = only(map_event(track(), old, CONFIG, NOW))["user"]
    assert "ttclid" not in user and "ttp" not in user
    assert user == {"ip": "198.51.100.7", "user_agent": "Mozilla/5.0 (iPhone)"}
    # ...but the page URL still counts
    event = track(context={"page": {"url": "https://shop.example/?ttclid=E.C.P.url"}})
    assert only(map_event(event, old, CONFIG, NOW))["user"]["ttclid"] == "E.C.P.url"


def test_click_at_the_window_edge_and_slightly_after_the_event_count():
    edge = click(clicked_at=EVENT_TIME - 7 * 86400)
    assert only(map_event(track(), edge, CONFIG, NOW))["user"]["ttclid"] == "E.C.P.click"
    skewed = click(clicked_at=EVENT_TIME + 300)   # tracker clock a few minutes ahead
    assert only(map_event(track(), skewed, CONFIG, NOW))["user"]["ttclid"] == "E.C.P.click"


def test_configured_attribution_window():
    day = MappingConfig(attribution_window_s=86400)
    two_days = click(clicked_at=EVENT_TIME - 2 * 86400)
    assert "ttclid" not in only(map_event(track(), two_days, day, NOW))["user"]
    assert only(map_event(track(), two_days, CONFIG, NOW))["user"]["ttclid"] == "E.C.P.click"


@pytest.mark.parametrize("clicked_at", [None, "yesterday", float("nan"), True])
def test_click_without_a_usable_time_gives_no_ttclid(clicked_at):
    assert "ttclid" not in only(map_event(track(), click(clicked_at=clicked_at), CONFIG, NOW))["user"]


def test_click_ttclid_may_sit_in_its_url():
    item = only(map_event(track(), click(ttclid=None), CONFIG, NOW))
    assert item["user"]["ttclid"] == "E.C.P.click"


def test_ttp_explicit_beats_click():
    for context in ({"ttp": "ttp-context"}, {"cookies": {"_ttp": "ttp-context"}}):
        user = only(map_event(track(context=context), click(), CONFIG, NOW))["user"]
        assert user["ttp"] == "ttp-context"
    event = track(properties={"ttp": "ttp-props"}, context={"ttp": "ttp-context"})
    assert only(map_event(event, click(), CONFIG, NOW))["user"]["ttp"] == "ttp-props"
    assert only(map_event(track(), click(), CONFIG, NOW))["user"]["ttp"] == (
        "2F7h37YkS1j57AYSKTI7IHhJPYH")


def test_ttclid_from_url():
    assert ttclid_from_url("https://a.example/p?utm=x&ttclid=E.C.P.1%2B2") == "E.C.P.1+2"
    assert ttclid_from_url("https://a.example/p?ttclid=") is None
    assert ttclid_from_url("https://a.example/p?xttclid=1") is None
    assert ttclid_from_url("https://a.example/p#ttclid=1") is None   # TikTok reads the query only
    assert ttclid_from_url("https://a.example/p") is None
    assert ttclid_from_url("http://[::1/?ttclid=1") is None
    assert ttclid_from_url(None) is None


# ---- identity

def test_identity_sources_and_precedence():
    event = track(userId=123,
                  context={"traits": {"email": "ctx@x.com"}, "ip": "192.0.2.1",
                           "userAgent": "UA", "locale": "de-DE"},
                  traits={"email": "top@x.com", "phone": "+44 7700 900123",
                          "firstName": " Ada ", "lastName": "Lovelace",
                          "address": {"postalCode": "SW1A 1AA", "city": "London"}},
                  properties={"phone": "+1 213 373 4253", "email": "props@x.com"})
    assert only(map_event(event, None, CONFIG, NOW))["user"] == {
        "email": sha("ctx@x.com"), "phone": sha("+447700900123"), "external_id": sha("123"),
        "first_name": sha("ada"), "last_name": sha("lovelace"), "zip_code": sha("sw1a1aa"),
        "ip": "192.0.2.1", "user_agent": "UA", "locale": "de-DE"}


def test_unusable_identifiers_are_left_out_not_refused():
    event = track(context={"traits": {"email": {"work": "a@x.com"}, "phone": "2133734253"}},
                  properties={"email": "fallback@x.com"})
    assert only(map_event(event, None, CONFIG, NOW))["user"] == {"email": sha("fallback@x.com")}


def test_prehashed_identifiers_are_not_hashed_again():
    hashed = sha("a@x.com").upper()
    event = track(context={"traits": {"email": hashed, "phone": [sha("+12133734253")]}})
    user = only(map_event(event, None, CONFIG, NOW))["user"]
    assert user == {"email": hashed.lower(), "phone": [sha("+12133734253")]}


def test_has_identifier():
    assert not has_identifier({})
    assert not has_identifier({"event": "Purchase", "event_time": EVENT_TIME})
    assert not has_identifier({"ip": "192.0.2.1", "locale": "en"})
    assert has_identifier({"ip": "192.0.2.1", "user_agent": "UA"})
    for name in ("ttclid", "ttp", "email", "phone", "external_id"):
        assert has_identifier({"event": "Purchase", "user": {name: "x"}})
    assert has_identifier(only(map_event(order_completed(), None, CONFIG, NOW)))
    assert not has_identifier(only(map_event(track(), None, CONFIG, NOW)))


# ---- page

def test_page_falls_back_to_properties_url():
    event = track(properties={"url": "https://shop.example/p", "referrer": "https://t.co/"})
    assert only(map_event(event, None, CONFIG, NOW))["page"] == {
        "url": "https://shop.example/p", "referrer": "https://t.co/"}


def test_non_http_page_url_is_left_out():
    event = track(context={"page": {"url": "android-app://com.shop/landing",
                                    "referrer": "https://www.tiktok.com/"}})
    assert only(map_event(event, None, CONFIG, NOW))["page"] == {"referrer": "https://www.tiktok.com/"}
    event = track(context={"page": {"url": "shop.example/landing", "referrer": {"x": 1}}})
    assert "page" not in only(map_event(event, None, CONFIG, NOW))


def test_send_page_url_off():
    config = MappingConfig(send_page_url=False)
    assert "page" not in only(map_event(order_completed(), click(), config, NOW))


# ---- event_id

def test_event_id_rules():
    assert only(map_event(track(messageId="abc"), None, CONFIG, NOW))["event_id"] == "abc"
    assert only(map_event(track(messageId=42), None, CONFIG, NOW))["event_id"] == "42"
    # an explicit event_id is how a server event dedups against the browser pixel's
    explicit = track(properties={"event_id": "px-1"})
    assert only(map_event(explicit, None, CONFIG, NOW))["event_id"] == "px-1"
    explicit = track(properties={"eventId": "px-2"})
    assert only(map_event(explicit, None, CONFIG, NOW))["event_id"] == "px-2"
    by_order = track(messageId=None, properties={"order_id": 98213})
    assert only(map_event(by_order, None, CONFIG, NOW))["event_id"] == "98213:Order Completed"


def test_event_id_hash_is_stable_across_key_order():
    event = track(messageId="", properties={"value": 5, "currency": "USD"})
    reordered = dict(reversed(list(event.items())))
    reordered["properties"] = {"currency": "USD", "value": 5}
    first = only(map_event(event, None, CONFIG, NOW))["event_id"]
    assert first == only(map_event(reordered, None, CONFIG, NOW))["event_id"]
    assert first == hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert first != only(map_event(track(messageId=None, userId="u"), None, CONFIG, NOW))["event_id"]


# ---- properties

def test_numeric_strings_are_converted():
    event = track(properties={"value": "46.00", "num_items": "3", "products": [
        {"product_id": "p", "price": "3.50", "quantity": "2"}, {"product_id": 7, "price": " 1e1 "}]})
    assert only(map_event(event, None, CONFIG, NOW))["properties"] == {
        "value": 46.0, "num_items": 3, "contents": [
            {"content_id": "p", "price": 3.5, "quantity": 2},
            {"content_id": "7", "price": 10.0}]}


def test_content_id_is_always_a_string():
    event = track(properties={"products": [{"product_id": 123}, {"sku": 45.0}, {"id": "x"},
                                           {"content_id": "tt"}]})
    contents = only(map_event(event, None, CONFIG, NOW))["properties"]["contents"]
    assert contents == [{"content_id": "123"}, {"content_id": "45"}, {"content_id": "x"},
                        {"content_id": "tt"}]


def test_value_sources_in_order():
    def value(props):
        return only(map_event(track(properties=props), None, CONFIG, NOW))["properties"]["value"]
    assert value({"value": 1, "revenue": 2, "total": 3}) == 1
    assert value({"revenue": 2, "total": 3}) == 2
    assert value({"total": 3}) == 3
    assert value({"value": "", "total": 3}) == 3


def test_currency_is_uppercased():
    props = only(map_event(track(properties={"currency": " eur "}), None, CONFIG, NOW))["properties"]
    assert props == {"currency": "EUR"}


def test_custom_properties_are_dropped():
    event = order_completed()
    event["properties"].update({"partner_name": "X", "mileage": {"unit": "km"}, "test_event_code": "T"})
    item = only(map_event(event, None, CONFIG, NOW))
    assert set(item["properties"]) <= PROPERTIES_FIELDS
    assert all(set(c) <= CONTENT_FIELDS for c in item["properties"]["contents"])
    assert set(item["properties"]) == {"value", "currency", "order_id", "contents", "num_items"}


def test_search_string_and_text_fields():
    event = track("Products Searched", properties={"query": "blue shoes", "shop_id": 7,
                                                   "description": "  Search page  "})
    assert only(map_event(event, None, CONFIG, NOW)) == {
        "event": "Search", "event_time": EVENT_TIME, "event_id": "m1",
        "properties": {"search_string": "blue shoes", "shop_id": "7", "description": "Search page"}}
    event = track("Products Searched", properties={"search_string": "red"})
    assert only(map_event(event, None, CONFIG, NOW))["properties"] == {"search_string": "red"}


def test_single_product_event_becomes_one_content():
    event = track("Product Added", properties={
        "product_id": "abc123", "sku": "S-1", "name": "Shirt", "price": 25, "quantity": 2,
        "category": "Apparel", "brand": "X", "currency": "USD", "id": "not-a-product"})
    # value: price x quantity, derived as TikTok's own template does (segment.toml value_from_contents)
    assert only(map_event(event, None, CONFIG, NOW))["properties"] == {
        "currency": "USD", "num_items": 2, "value": 50,
        "contents": [{"content_id": "abc123", "content_name": "Shirt", "content_category": "Apparel",
                      "brand": "X", "price": 25, "quantity": 2}]}


def test_num_items_given_wins_and_fractional_total_is_not_derived():
    event = track(properties={"num_items": 5, "products": [{"product_id": "a", "quantity": 1}]})
    assert only(map_event(event, None, CONFIG, NOW))["properties"]["num_items"] == 5
    event = track(properties={"products": [{"product_id": "a", "quantity": 1.5}]})
    assert "num_items" not in only(map_event(event, None, CONFIG, NOW))["properties"]


def test_empty_products_give_no_contents_and_empty_properties_are_omitted():
    assert "properties" not in only(map_event(track(properties={"products": []}), None, CONFIG, NOW))
    assert "properties" not in only(map_event(track(properties=None), None, CONFIG, NOW))


def test_content_type_from_event_or_config():
    def content_type(props, config=CONFIG):
        item = only(map_event(track(properties=props), None, config, NOW))
        return item.get("properties", {}).get("content_type")
    configured = MappingConfig(content_type="product")
    assert content_type({}) is None
    assert content_type({}, configured) == "product"
    assert content_type({"content_type": "product_group"}, configured) == "product_group"
    assert content_type({"contentType": "product_group"}) == "product_group"
    assert content_type({"content_type": "socks"}) is None          # not TikTok's: ignored
    assert content_type({"content_type": ["product"]}, configured) == "product"


def test_limited_data_use():
    def ldu(config=CONFIG, **fields):
        return only(map_event(track(**fields), None, config, NOW)).get("limited_data_use")
    assert ldu() is None
    assert ldu(MappingConfig(limited_data_use=True)) is True
    assert ldu(MappingConfig(limited_data_use=True), properties={"limited_data_use": False}) is False
    assert ldu(context={"limited_data_use": True}) is True
    assert ldu(properties={"limited_data_use": "yes"}) is None      # only a real bool counts


# ---- timestamps

@pytest.mark.parametrize("value, expected", [
    ("2020-09-17T19:49:27Z", 1600372167.0),
    ("2020-09-17T19:49:27.562Z", 1600372167.562),
    ("2020-09-17T21:49:27+02:00", 1600372167.0),
    ("2020-09-17T19:49:27", 1600372167.0),          # naive: UTC
    ("2023-10-01T00:00:00Z", 1696118400.0),
    (1600372167, 1600372167.0),
    (1600372167.5, 1600372167.5),
    (1600372167562, 1600372167.562),                # milliseconds
    ("1600372167", 1600372167.0),
])
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["yesterday", "", "2020-13-01T00:00:00Z", True, None, {},
                                   float("nan"), float("inf"), 10 ** 400, "1e999"])
def test_parse_timestamp_refuses(value):
    with pytest.raises(Refusal) as refused:
        parse_timestamp(value)
    assert refused.value.reason == "invalid_timestamp"


def test_event_time_falls_back_to_original_timestamp_and_is_integer_seconds():
    event = track(timestamp=None, originalTimestamp="2024-01-08T13:52:50.999Z")
    assert only(map_event(event, None, CONFIG, NOW))["event_time"] == EVENT_TIME


# ---- refusals: every reason, with where the event ends up (the caller dead-letters it)

def _with(path: str, value) -> dict:
    event = track(properties={"value": 1, "currency": "USD", "products": [{"product_id": "a"}]},
                  context={"ip": "192.0.2.1"})
    *parents, last = path.split(".")
    target = event
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return event


REFUSED = [
    ("invalid_event", ["not", "an", "object"], "expected a JSON object"),
    ("invalid_event", {"type": "track", "event": "Purchase", "timestamp": EVENT_TIME,
                       "junk": 2 ** 70}, "event_id"),
    ("missing_event_name", _with("event", None), "event"),
    ("missing_event_name", _with("event", "  "), "event"),
    ("invalid_event_name", _with("event", 123), "event"),
    ("invalid_event_name", _with("event", ["Purchase"]), "event"),
    ("missing_timestamp", _with("timestamp", None), "timestamp"),
    ("invalid_timestamp", _with("timestamp", "next tuesday"), "timestamp"),
    ("invalid_timestamp", _with("timestamp", "1999-12-31T23:59:59Z"), "before 2001"),
    ("future_event", _with("timestamp", NOW + 2 * 86400), "timestamp: 1704894800.0 is 172800 s in the future"),
    ("future_event", _with("timestamp", NOW + 301), "is 301 s in the future (more than max_future_s, 300 s)"),
    ("future_event", _with("timestamp", 1600372167562000), "in the future"),   # microseconds, read as ms
    ("invalid_value", _with("properties.value", "abc"), "properties.value"),
    ("invalid_value", _with("properties.value", -1), "properties.value"),
    ("invalid_value", _with("properties.value", True), "properties.value"),
    ("invalid_value", _with("properties.value", "NaN"), "properties.value"),
    ("invalid_value", _with("properties.value", 1e300), "properties.value"),
    ("invalid_currency", _with("properties.currency", "XYZ"), "properties.currency"),
    ("invalid_currency", _with("properties.currency", 840), "properties.currency"),
    ("invalid_price", _with("properties.products.0.price", "cheap"), "properties.products[0].price"),
    ("invalid_price", _with("properties.products.0.price", -0.5), "properties.products[0].price"),
    ("invalid_quantity", _with("properties.products.0.quantity", "two"),
     "properties.products[0].quantity"),
    ("invalid_quantity", _with("properties.products.0.quantity", -1),
     "properties.products[0].quantity"),
    ("invalid_num_items", _with("properties.num_items", 2.5), "properties.num_items"),
    ("invalid_contents", _with("properties.products", "a,b"), "properties.products"),
    ("invalid_contents", _with("properties.products.0", "a"), "properties.products[0]"),
    ("invalid_contents", _with("properties.products.0.product_id", True),
     "properties.products[0].product_id"),
    ("invalid_contents", _with("properties.products.0.name", {"en": "x"}),
     "properties.products[0].name"),
    ("invalid_field", _with("properties.order_id", {"id": 1}), "properties.order_id"),
    ("invalid_field", _with("properties.shop_id", [1]), "properties.shop_id"),
    ("invalid_field", _with("properties", ["a"]), "properties"),
    ("invalid_field", _with("context", "web"), "context"),
    ("invalid_field", _with("context.ip", ["192.0.2.1"]), "context.ip"),
    ("invalid_field", _with("messageId", {"id": 1}), "messageId"),
    ("invalid_field", _with("type", 1), "type"),
]


@pytest.mark.parametrize("reason, event, where", REFUSED)
def test_refusals(reason, event, where):
    with pytest.raises(Refusal) as refused:
        map_event(event, None, CONFIG, NOW)
    assert refused.value.reason == reason
    assert where in refused.value.message
    assert refused.value.retriable is False


def test_stale_event_is_refused_when_configured():
    config = MappingConfig(max_event_age_s=86400)
    with pytest.raises(Refusal) as refused:
        map_event(track(), None, config, EVENT_TIME + 86400 + 1)
    assert refused.value.reason == "stale_event"
    assert map_event(track(), None, config, EVENT_TIME + 86400)


def test_the_allowed_clock_skew_is_max_future_s_and_the_fake_draws_the_same_line():
    edge = map_event(track(userId="u1", timestamp=NOW + 300), None, CONFIG, NOW)
    assert only(edge)["event_time"] == NOW + 300 and accepted(edge)
    # One second more is never sent: the fake (like a strict TikTok) fails the whole batch for it.
    with pytest.raises(Refusal) as refused:
        map_event(track(userId="u1", timestamp="2024-01-08T13:58:21Z"), None, CONFIG, NOW)
    assert (refused.value.reason, refused.value.message) == (
        "future_event", "timestamp: '2024-01-08T13:58:21Z' is 301 s in the future (more than max_future_s, 300 s)")
    assert not accepted([{**only(edge), "event_time": int(NOW) + 301}])
    strict = MappingConfig(max_future_s=0)
    assert only(map_event(track(userId="u1", timestamp=NOW), None, strict, NOW))["event_time"] == NOW
    with pytest.raises(Refusal) as refused:
        map_event(track(userId="u1", timestamp=NOW + 1), None, strict, NOW)
    assert refused.value.message == "timestamp: 1704722001.0 is 1 s in the future (more than max_future_s, 0 s)"


@pytest.mark.parametrize("value", [-1, 86401, float("nan"), True, "300"])
def test_max_future_s_must_be_seconds_up_to_a_day(value):
    with pytest.raises(ValueError) as e:
        MappingConfig(max_future_s=value)
    assert str(e.value) == f"max_future_s: must be from 0 to 86400 seconds, got {value!r}"


def test_a_bad_field_in_the_click_record_is_left_out_not_refused():
    item = only(map_event(track(), click(ip=["198.51.100.7"], ttp={"v": 1}), CONFIG, NOW))
    assert item["user"] == {"ttclid": "E.C.P.click", "user_agent": "Mozilla/5.0 (iPhone)"}


def test_every_reason_is_tested_and_documented():
    # unmapped_event needs a spec with event.unmapped = "refuse": tests/mapping/presets/test_redtrack.py.
    assert {r for r, _, _ in REFUSED} | {"stale_event", "unmapped_event"} == set(REASONS)
    assert len(REASONS) == len(set(REASONS))
