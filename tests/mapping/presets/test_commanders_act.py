"""The commanders_act preset: Commanders Act's own events -> the exact TikTok data[] items.

The examples are Commanders Act's documented messages (its server-side v2 "Purchase event example"
and its "Web event specificity" payload), the table is the TikTok destination guide's
(../shared/seeds/001_79499ced050daa3c.txt). Every item built here also passes the strict fake's
checks.
"""
from __future__ import annotations

import copy

import pytest

from app.mapping.events import MappingConfig, Refusal, click_id_of, map_event, skip_reason, tiktok_names
from app.mapping.values import cookie
from tests.support import accepted, sha

NOW = 1_750_000_000.0  # 2025-06-15: after every example's timestamp
CONFIG = MappingConfig.from_dict({"spec": "commanders_act"})
UA = ("Mozilla/5.0 (X11; CrOS x86_64 14268.67.0) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/96.0.4664.111 Safari/537.36")
EMAIL_SHA256 = "4a0a303e33c11f496a9312a77309133325af1527a26d9d95cf74b81feba9c955"


def mapped(event: dict, click: dict | None = None, config: MappingConfig = CONFIG) -> list[dict]:
    """map_event's items, after checking that TikTok (the strict fake) would accept them."""
    return accepted(map_event(event, click, config, NOW), NOW)


def purchase_v2() -> dict:
    """Commanders Act's server-side v2 purchase, as its migration guide writes it."""
    return {
        "event_name": "purchase",
        "properties": {
            "id": 9179124954957,
            "revenue": 295.82,
            "value": 300.00,
            "currency": "USD",
            "point_of_sale_eg_brand_name": "magicOne",
            "p_line": "F",
            "items": [
                {"discount": 1.99, "quantity": 2,
                 "product": {"id": "4521812", "name": "Luggage compartment"}},
                {"discount": 1.99, "quantity": 1, "product": {"id": "5721913", "name": "Lifeline"}},
            ],
            "user": {"id": "61be2261-8701-4b4d-af97-60ea4329c7aa", "email_sha256": EMAIL_SHA256,
                     "consent_categories": [1, 2, 3]},
        },
        "page": {"location": "https://www.domain.com/Checkout/V1/MultiItemBookingConfirmation",
                 "title": "page.Hotels.Checkout.Confirmation"},
        "device": {"user_agent": UA,
                   "cookie": "_fbp=fb.1.1596403881668.1116446470;_fbc=fb.1.233356.5656565;"},
        "event_timestamp": 1641907920000,
    }


def search_web() -> dict:
    """The search event a Commanders Act web source sends, with the fields it adds itself."""
    return {
        "event_name": "search",
        "search_term": "t-shirts",
        "url": "https://www.mywebsite.com/path1/path2/",
        "path": "/path1/path2/",
        "referrer": "https:///www.google.fr",
        "title": "My page title",
        "user": {"id": "12345", "consistent_anonymous_id": "567892", "email": "toto@domain.fr",
                 "consent_categories": ["1", "3"]},
        "context": {
            "event_id": "202110130000000000",
            "generatorVersion": "10.0",
            "containerVersion": "3.1",
            "event_timestamp": "1639044446636",
            "page": {"title": "Search page", "url": "https://shop.com/search?q=...", "lang": "en",
                     "referrer": "https:///www.google.fr", "viewport": {"width": 320, "height": 568}},
            "device": {"user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_0) AppleWebKit/537.36 "
                                     "(KHTML, like Gecko) Chrome/46.0.2490.86 Safari/537.36",
                       "ip": "102.3.4.56", "lang": "fr", "cookie": "_fbp=123; _fbc=456; _ga=789",
                       "timezone": "Europe/Paris"},
        },
    }


# ------------------------------------------------------------------ Commanders Act's own examples

def test_the_server_side_v2_purchase_example():
    assert mapped(purchase_v2()) == [{
        "event": "CompletePayment",
        "event_time": 1641907920,
        "event_id": "9179124954957",
        "user": {
            "email": EMAIL_SHA256,  # email_sha256: already hashed, passed through
            "external_id": sha("61be2261-8701-4b4d-af97-60ea4329c7aa"),
            "user_agent": UA,
        },
        "page": {"url": "https://www.domain.com/Checkout/V1/MultiItemBookingConfirmation"},
        "properties": {
            "value": 300.0,
            "currency": "USD",
            "contents": [
                {"content_id": "4521812", "content_name": "Luggage compartment", "quantity": 2},
                {"content_id": "5721913", "content_name": "Lifeline", "quantity": 1},
            ],
            "num_items": 3,
            "description": "purchase",
        },
    }]


def test_the_web_source_search_example():
    assert mapped(search_web()) == [{
        "event": "Search",
        "event_time": 1639044446,
        "event_id": "202110130000000000",
        "user": {
            "email": sha("toto@domain.fr"),
            "external_id": sha("12345"),
            "ip": "102.3.4.56",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_0) AppleWebKit/537.36 "
                          "(KHTML, like Gecko) Chrome/46.0.2490.86 Safari/537.36",
        },
        "page": {"url": "https://shop.com/search?q=...", "referrer": "https:///www.google.fr"},
        "properties": {"search_string": "t-shirts", "description": "search"},
    }]


def test_a_purchase_with_the_guides_fields_maps_each_to_its_tiktok_field():
    event = {
        "event_name": "purchase",
        "event_timestamp": 1704721970000,
        "properties": {
            "id": "O_12345", "value": 16.0, "currency": "eur", "content_type": "product",
            "user": {"id": "user_123", "email": " Anakin@Domain.com ", "phone": "+33 6 12 34 56 78"},
            "items": [{"id": "SKU_12345", "quantity": 1, "content_type": "product",
                       "product": {"id": "12345", "name": "Trex tshirt", "category_1": "clothes",
                                   "brand": "Lucasfilm", "price": 9.99}}],
        },
        "page": {"url": "https://shop.example/thanks?ttclid=E.C.P.fromurl",
                 "referrer": "https://shop.example/cart"},
        "device": {"ip": "203.0.113.4", "user_agent": "Mozilla/5.0 (iPhone)",
                   "cookie": "_ga=1; _ttp=cookie-ttp; ttclid=E.C.P.fromcookie"},
        "partners": {"tiktok": {"ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ttclid": "E.C.P.frompartners"}},
    }
    assert mapped(event) == [{
        "event": "CompletePayment",
        "event_time": 1704721970,
        "event_id": "O_12345",
        "user": {
            "email": sha("anakin@domain.com"),
            "phone": sha("+33612345678"),
            "external_id": sha("user_123"),
            "ttclid": "E.C.P.frompartners",
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ip": "203.0.113.4",
            "user_agent": "Mozilla/5.0 (iPhone)",
        },
        "page": {"url": "https://shop.example/thanks?ttclid=E.C.P.fromurl",
                 "referrer": "https://shop.example/cart"},
        "properties": {
            "value": 16.0,
            "currency": "EUR",
            "content_type": "product",
            # the item's own content_type is not a TikTok content field: left out
            "contents": [{"content_id": "SKU_12345", "content_name": "Trex tshirt",
                          "content_category": "clothes", "brand": "Lucasfilm", "price": 9.99,
                          "quantity": 1}],
            "num_items": 1,
            "description": "purchase",
        },
    }]


# ------------------------------------------------------------------ the guide's event table

GUIDE_TABLE = [
    ("add_payment_info", "AddPaymentInfo"),
    ("add_to_cart", "AddToCart"),
    ("add_to_wishlist", "AddToWishlist"),
    ("begin_checkout", "InitiateCheckout"),
    ("click_button", "ClickButton"),
    ("complete_payment", "CompletePayment"),
    ("purchase", "CompletePayment"),
    ("contact", "Contact"),
    ("download", "Download"),
    ("page_view", "ViewContent"),
    ("search", "Search"),
    ("sign_up", "CompleteRegistration"),
    ("submit_form", "SubmitForm"),
    ("subscribe", "Subscribe"),
]


def test_the_table_has_the_guides_14_rows_and_no_other():
    assert {s: (t,) for s, t in GUIDE_TABLE} == dict(CONFIG.event_map)
    assert len(GUIDE_TABLE) == 14


@pytest.mark.parametrize("source, tiktok", GUIDE_TABLE)
def test_every_row_of_the_guides_event_table(source, tiktok):
    event = {"event_name": source, "event_timestamp": 1704721970000, "properties": {"id": "E1"},
             "device": {"ip": "203.0.113.4", "user_agent": "Mozilla/5.0"}}
    assert tiktok_names(event, CONFIG) == (tiktok,)
    assert mapped(event) == [{
        "event": tiktok, "event_time": 1704721970, "event_id": "E1",
        "user": {"ip": "203.0.113.4", "user_agent": "Mozilla/5.0"},
        "properties": {"description": source},
    }]


def test_a_user_re_maps_a_name_in_their_own_file():
    config = MappingConfig.from_dict({"spec": {"extends": "commanders_act",
                                               "events": {"purchase": "Purchase", "page_view": []}}})
    event = purchase_v2()
    assert [item["event"] for item in mapped(event, config=config)] == ["Purchase"]
    event["event_name"] = "page_view"
    assert map_event(event, None, config, NOW) == []


# ------------------------------------------------------------------ skipped and refused

def test_an_event_that_is_not_a_conversion_is_skipped_as_unmapped():
    # Commanders Act's remove_from_cart (and its custom events) have no TikTok counterpart.
    event = {"event_name": "remove_from_cart", "event_timestamp": 1704721970000,
             "properties": {"items": [{"id": "SKU_1", "quantity": 1}]}}
    assert tiktok_names(event, CONFIG) == ()
    assert map_event(event, None, CONFIG, NOW) == []
    assert skip_reason(event, CONFIG) == "unmapped"


def test_a_currency_tiktok_does_not_know_is_refused():
    event = purchase_v2()
    event["properties"]["currency"] = "EURO"
    with pytest.raises(Refusal) as refused:
        map_event(event, None, CONFIG, NOW)
    assert refused.value.reason == "invalid_currency"
    assert "properties.currency" in refused.value.message


def test_an_event_without_its_timestamp_is_refused():
    event = purchase_v2()
    del event["event_timestamp"]
    with pytest.raises(Refusal) as refused:
        map_event(event, None, CONFIG, NOW)
    assert refused.value.reason == "missing_timestamp"


# ------------------------------------------------------------------ identifiers

def test_identifiers_already_hashed_pass_through_lowercased():
    hashed_phone = sha("+33612345678").upper()
    event = purchase_v2()
    event["properties"]["user"] = {"id": "u1", "email_sha256": EMAIL_SHA256.upper(), "phone": hashed_phone}
    user = mapped(event)[0]["user"]
    assert user["email"] == EMAIL_SHA256
    assert user["phone"] == hashed_phone.lower()


def test_the_raw_email_wins_over_its_hashes_and_md5_is_never_sent():
    event = purchase_v2()
    event["properties"]["user"] = {"email": "Toto@Domain.fr", "email_sha256": EMAIL_SHA256,
                                   "email_md5": "0cc175b9c0f1b6a831c399e269772661"}
    assert mapped(event)[0]["user"]["email"] == sha("toto@domain.fr")
    event["properties"]["user"] = {"email_md5": "0cc175b9c0f1b6a831c399e269772661"}
    assert "email" not in mapped(event)[0]["user"]


def test_ttp_from_partners_then_the_ttp_cookie():
    event = purchase_v2()
    event["device"]["cookie"] = "_fbp=fb.1.2; _ttp=2F7h37YkS1j57AYSKTI7IHhJPYH; _ga=3"
    assert mapped(event)[0]["user"]["ttp"] == "2F7h37YkS1j57AYSKTI7IHhJPYH"
    event["partners"] = {"tiktok": {"ttp": "fromPartners"}}
    assert mapped(event)[0]["user"]["ttp"] == "fromPartners"


def test_ttclid_from_partners_then_the_cookie_then_the_page_url():
    event = purchase_v2()
    event["page"] = {"location": {"href": "https://shop.example/?utm_source=tt&ttclid=E.C.P.url"}}
    assert mapped(event)[0]["user"]["ttclid"] == "E.C.P.url"
    event["device"]["cookie"] = "ttclid=E.C.P.cookie; _fbp=1"
    assert mapped(event)[0]["user"]["ttclid"] == "E.C.P.cookie"
    event["partners"] = {"tiktok": {"ttclid": "E.C.P.partners"}}
    assert mapped(event)[0]["user"]["ttclid"] == "E.C.P.partners"


def test_a_web_source_cookie_in_its_context_block_counts_too():
    event = search_web()
    event["context"]["device"]["cookie"] = "_fbp=123; _ttp=webttp; _ga=789"
    assert mapped(event)[0]["user"]["ttp"] == "webttp"


@pytest.mark.parametrize("jar, name, value", [
    ("_fbp=1; _ttp=abc; _ga=2", "_ttp", "abc"),
    ("_ttp=abc", "_ttp", "abc"),
    ('_ttp="quoted"', "_ttp", "quoted"),
    ("x_ttp=no; _ttp = spaced ", "_ttp", "spaced"),
    ("_ttp=; other=1", "_ttp", None),
    ("ttclid=__CALLBACK_PARAM__", "ttclid", None),   # an unfilled macro is no ttclid
    ("_fbp=1", "_ttp", None),
    ({"_ttp": "fromobject"}, "_ttp", "fromobject"),
    (["_ttp=abc"], "_ttp", None),
    (None, "_ttp", None),
])
def test_cookie_reads_one_cookie_of_a_header(jar, name, value):
    assert cookie(jar, name) == value


def test_a_page_url_without_http_is_left_out():
    event = purchase_v2()
    event["page"] = {"url": "android-app://com.shop/thanks", "referrer": "javascript:void(0)"}
    assert "page" not in mapped(event)[0]


# ------------------------------------------------------------------ the join with a click

def test_joined_with_a_click_the_ttclid_and_ttp_come_from_the_click():
    # Commanders Act events carry no click ID of a tracker: a user who adds one says where it is.
    config = MappingConfig.from_dict({"spec": "commanders_act", "click_id_paths": ["properties.click_id"]})
    event = purchase_v2()
    event["properties"]["click_id"] = "clk_42"
    click = {"ttclid": "E.C.P.click", "ttp": "clickttp", "ip": "198.51.100.7", "user_agent": "click UA",
             "url": "https://shop.example/landing?ttclid=E.C.P.click", "clicked_at": 1641907000}
    assert click_id_of(event, config) == "clk_42"
    expected = copy.deepcopy(mapped(event, config=config))
    expected[0]["user"].update({"ttclid": "E.C.P.click", "ttp": "clickttp", "ip": "198.51.100.7"})
    assert mapped(event, click, config) == expected
    # The event's own ttclid (partners.tiktok) wins over the click's.
    event["partners"] = {"tiktok": {"ttclid": "E.C.P.own"}}
    assert mapped(event, click, config)[0]["user"]["ttclid"] == "E.C.P.own"
