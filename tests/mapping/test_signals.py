"""Signal the peers miss (issue 12, item 5), at the mapping's level, exact items:

- ttclid from a same-site referrer: the referrer's ttclid parameter when the referrer's host is the
  page's host (a user who came back from a page of the shop whose URL had it), after every other
  source, as TikTok's own server-side tag does (tiktok/gtm-template-eapi, template.js
  getTtclidFromUrl: page URL, then a same-hostname referrer);
- several emails, phones and external IDs: each hashed on its own, the list kept;
- value from contents: the segment preset derives it when the event has none (TikTok's template's
  getValue does the same).
Every item built here is also a body the strict fake accepts.
"""
from __future__ import annotations

import hashlib

import pytest

from app.devtools.fake_tiktok import check_request
from app.mapping.events import MappingConfig, map_event

EVENT_TIME = 1704721970
NOW = EVENT_TIME + 30.0
CONFIG = MappingConfig()
GB = MappingConfig(default_region="GB")
ALICE = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"  # TikTok's own example


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def accepted(items: list[dict]) -> bool:
    body = {"event_source": "web", "event_source_id": "CQ1PIXEL000000000", "data": items}
    return check_request(body, now=NOW) == (0, "OK")


def order(page: dict | None = None, traits: dict | None = None, **properties) -> dict:
    context = {"ip": "203.0.113.4", "userAgent": "Mozilla/5.0 (X11)"}
    if page is not None:
        context["page"] = page
    if traits is not None:
        context["traits"] = traits
    return {"type": "track", "event": "Order Completed", "messageId": "msg-1", "timestamp": "2024-01-08T13:52:50Z",
            "context": context, "properties": {"order_id": "98213", **properties}}


def ttclid_of(event: dict, click: dict | None = None, config: MappingConfig = CONFIG) -> str | None:
    [item] = map_event(event, click, config, NOW)
    assert accepted([item])
    return item["user"].get("ttclid")


# --------------------------------------------------------------------------- same-site referrer
def test_ttclid_from_a_same_site_referrer():
    page = {"url": "https://shop.example/checkout", "referrer": "https://shop.example/product/7?ttclid=E.C.P.ref1"}
    [item] = map_event(order(page), None, CONFIG, NOW)
    assert item == {
        "event": "Purchase", "event_time": EVENT_TIME, "event_id": "msg-1",
        "user": {"ttclid": "E.C.P.ref1", "ip": "203.0.113.4", "user_agent": "Mozilla/5.0 (X11)"},
        "page": {"url": "https://shop.example/checkout", "referrer": "https://shop.example/product/7?ttclid=E.C.P.ref1"},
        "properties": {"order_id": "98213"},
    }
    assert accepted([item])


@pytest.mark.parametrize(("url", "referrer", "ttclid"), [
    # the host compares without case and port (a URL's hostname), as TikTok's tag compares hostnames
    ("https://shop.example/checkout", "https://SHOP.example:8443/p?ttclid=E.C.P.ref2", "E.C.P.ref2"),
    ("https://shop.example/checkout", "http://shop.example/p?utm=x&ttclid=E.C.P.ref3#top", "E.C.P.ref3"),
    # another host: the ttclid was someone else's page, not this user's landing on the shop
    ("https://shop.example/checkout", "https://www.tiktok.com/?ttclid=E.C.P.other", None),
    ("https://shop.example/checkout", "https://www.shop.example/p?ttclid=E.C.P.sub", None),  # exact host
    ("https://shop.example/checkout", "https://evil.example/?next=https://shop.example&ttclid=E.C.P.x", None),
    # no page URL: nothing to compare the referrer's host with
    (None, "https://shop.example/p?ttclid=E.C.P.ref4", None),
    # a placeholder is no ttclid, wherever it comes from
    ("https://shop.example/checkout", "https://shop.example/p?ttclid=__CALLBACK_PARAM__", None),
    ("https://shop.example/checkout", "https://shop.example/p?ttclid=", None),
    ("https://shop.example/checkout", "https://shop.example/p", None),
    ("https://shop.example/checkout", "not a url ttclid=E.C.P.x", None),
    ("https://[shop.example/checkout", "https://shop.example/p?ttclid=E.C.P.x", None),  # unparseable page URL
])
def test_same_site_referrer_cases(url, referrer, ttclid):
    page = {"referrer": referrer} if url is None else {"url": url, "referrer": referrer}
    assert ttclid_of(order(page)) == ttclid


def test_the_referrer_comes_after_every_other_source():
    referrer = "https://shop.example/p?ttclid=E.C.P.referrer"
    # the page URL's own ttclid wins (TikTok's tag: location first)
    page = {"url": "https://shop.example/checkout?ttclid=E.C.P.page", "referrer": referrer}
    assert ttclid_of(order(page)) == "E.C.P.page"
    # the event's own ttclid field wins
    assert ttclid_of(order({"url": "https://shop.example/checkout", "referrer": referrer},
                           ttclid="E.C.P.field")) == "E.C.P.field"
    # a ttclid cookie wins
    event = order({"url": "https://shop.example/checkout", "referrer": referrer})
    event["context"]["cookies"] = {"ttclid": "E.C.P.cookie"}
    spec = MappingConfig.from_dict({"spec": {"extends": "segment", "event": {"cookies": ["context.cookies"]}}})
    assert ttclid_of(event, config=spec) == "E.C.P.cookie"
    # the click's ttclid wins (recorded at landing, in the attribution window)
    click = {"ttclid": "E.C.P.click", "clicked_at": EVENT_TIME - 60}
    assert ttclid_of(order({"url": "https://shop.example/checkout", "referrer": referrer}), click) == "E.C.P.click"
    # a click outside the window does not count: the referrer's ttclid is used
    stale = {"ttclid": "E.C.P.click", "clicked_at": EVENT_TIME - 30 * 86400}
    assert ttclid_of(order({"url": "https://shop.example/checkout", "referrer": referrer}), stale) == "E.C.P.referrer"


def test_a_spec_without_a_referrer_path_reads_none():
    spec = MappingConfig.from_dict({"spec": {"extends": "segment", "page": {"referrer": []}}})
    page = {"url": "https://shop.example/checkout", "referrer": "https://shop.example/p?ttclid=E.C.P.ref"}
    assert ttclid_of(order(page), config=spec) is None


# --------------------------------------------------------------------------- several identifiers
def test_several_emails_phones_and_external_ids_are_hashed_one_by_one():
    spec = MappingConfig.from_dict({"default_region": "GB", "spec": {
        "extends": "segment", "user": {"external_id": ["properties.user_ids", "userId"]}}})
    event = order(traits={"email": [" ALICE_abc@gmail.com ", "", "BOB@example.com",
                                    sha("carol@example.com").upper()],
                          "phone": ["+44 7700 900123", "07700 900456", "12", None]},
                  user_ids=["user_123", " user_456 ", 789])
    [item] = map_event(event, None, spec, NOW)
    assert item["user"] == {
        # trimmed and lowercased each; an empty one left out; a hashed one passed through lowercased
        "email": [ALICE, sha("bob@example.com"), sha("carol@example.com")],
        # each in E.164 (the national one with the default region); "12" can't be, None is nothing
        "phone": [sha("+447700900123"), sha("+447700900456")],
        # trimmed, case kept; a number is its text
        "external_id": [sha("user_123"), sha("user_456"), sha("789")],
        "ip": "203.0.113.4", "user_agent": "Mozilla/5.0 (X11)",
    }
    assert accepted([item])


def test_a_list_of_one_stays_a_list_and_a_list_of_nothing_is_left_out():
    [item] = map_event(order(traits={"email": ["bob@example.com"], "phone": ["", None]}), None, GB, NOW)
    assert item["user"]["email"] == [sha("bob@example.com")]
    assert "phone" not in item["user"]


# --------------------------------------------------------------------------- value from contents
def test_the_segment_preset_derives_value_from_its_products():
    event = order(currency="EUR", products=[{"product_id": "A", "price": 8, "quantity": 2},
                                            {"product_id": "B", "price": 30.5}])  # quantity 1
    [item] = map_event(event, None, CONFIG, NOW)
    assert item["properties"] == {
        "order_id": "98213", "currency": "EUR", "value": 46.5, "num_items": 2,
        "contents": [{"content_id": "A", "price": 8, "quantity": 2}, {"content_id": "B", "price": 30.5}],
    }
    assert accepted([item])


def test_a_given_value_wins_and_a_product_without_price_derives_none():
    products = [{"product_id": "A", "price": 8, "quantity": 2}]
    [item] = map_event(order(revenue=99, products=products), None, CONFIG, NOW)
    assert item["properties"]["value"] == 99
    [item] = map_event(order(products=[*products, {"product_id": "B"}]), None, CONFIG, NOW)
    assert "value" not in item["properties"]  # a partial sum would understate the order


def test_float_prices_sum_to_cents():
    [item] = map_event(order(products=[{"product_id": "A", "price": 0.1, "quantity": 3}]), None, CONFIG, NOW)
    assert item["properties"]["value"] == 0.3
