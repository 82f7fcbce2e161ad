"""The fake TikTok Events API: every rule is shown over real HTTP, and check_request directly."""
from __future__ import annotations

import argparse
import asyncio
import copy
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from app.devtools.fake_tiktok import (
    DEMO_PIXEL,
    DEMO_TOKEN,
    INVALID_PARTNER,
    FakeConfig,
    FakeTikTok,
    check_request,
    main,
    register,
)
from app.tiktok.facts import (
    APP_EVENTS,
    CURRENCIES,
    HASHED_USER_FIELDS,
    MAX_BATCH,
    STANDARD_EVENTS,
    TRACK_PATH,
    Code,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-0123-secret-value"
OTHER_TOKEN = "tok-4567-other-value"
PIXEL = "CPIXELTEST000000001"
OTHER_PIXEL = "CPIXELTEST000000002"  # a real pixel, but TOKEN may not send to it
# TikTok's event set and app IDs are numeric (app.tiktok.facts.NUMERIC_SOURCE_IDS).
CRM_SET = "7299000000000000001"
OFFLINE_SET = "7181537436256731137"
APP_ID = "7568899277611696136"
# TikTok's own example: sha256(" ALICE_abc@gmail.com " trimmed and lowercased).
HASHED_EMAIL = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
HASHED_PHONE = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
NOW = int(time.time())


def make_event(**fields) -> dict:
    event = {
        "event": "Purchase", "event_time": NOW - 60, "event_id": "order_98213",
        "user": {"ttclid": "E.C.P.abc", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
                 "email": HASHED_EMAIL, "phone": [HASHED_PHONE], "ip": "203.0.113.4",
                 "user_agent": "Mozilla/5.0", "locale": "en-US"},
        "page": {"url": "https://shop.example/checkout", "referrer": "https://shop.example/"},
        "properties": {"contents": [{"content_id": "SKU1", "content_name": "Shirt",
                                     "content_category": "apparel", "price": 25.0,
                                     "quantity": 2, "brand": "Acme"}],
                       "content_type": "product", "currency": "USD", "value": 50.0,
                       "num_items": 2, "order_id": "98213"},
        "limited_data_use": False,
    }
    event.update(fields)
    return event


def make_body(*events, **fields) -> dict:
    body = {"event_source": "web", "event_source_id": PIXEL, "data": list(events) or [make_event()]}
    body.update(fields)
    return body


# ---------------------------------------------------------------- the rule table
# Each case mutates a fresh valid body. Expected: (code, the path before ": " in the message).

def _set(path: str, value):
    """Mutator setting body[path] (dotted, list indexes as numbers) to value; DROP deletes it."""
    def mutate(body):
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        if value is DROP:
            del node[key]
        else:
            node[key] = copy.deepcopy(value)
    return mutate


DROP = object()
RAW_EMAIL = " ALICE_abc@gmail.com "

REJECTED = [
    pytest.param(_set("extra", 1), Code.INVALID_PARAMETER, "extra", id="top-unknown-field"),
    pytest.param(_set("partner_name", "Acme"), INVALID_PARTNER, None, id="partner-name"),
    pytest.param(_set("event_source", DROP), Code.INVALID_PARAMETER, "event_source",
                 id="event-source-missing"),
    pytest.param(_set("event_source", "website"), Code.INVALID_PARAMETER, "event_source",
                 id="event-source-unknown"),
    pytest.param(_set("event_source", ["web"]), Code.INVALID_PARAMETER, "event_source",
                 id="event-source-list"),
    pytest.param(_set("event_source_id", ""), Code.INVALID_PARAMETER, "event_source_id",
                 id="source-id-empty"),
    pytest.param(_set("event_source_id", 123), Code.INVALID_PARAMETER, "event_source_id",
                 id="source-id-number"),
    pytest.param(_set("event_source_id", OTHER_PIXEL), Code.NO_PERMISSION, None,
                 id="pixel-not-allowed"),
    pytest.param(_set("test_event_code", 123), Code.INVALID_PARAMETER, "test_event_code",
                 id="test-event-code-number"),
    pytest.param(_set("data", DROP), Code.INVALID_PARAMETER, "data", id="data-missing"),
    pytest.param(_set("data", {"event": "Purchase"}), Code.INVALID_PARAMETER, "data",
                 id="data-not-list"),
    pytest.param(_set("data", []), Code.INVALID_PARAMETER, "data", id="data-empty"),
    pytest.param(_set("data", [make_event()] * (MAX_BATCH + 1)), Code.INVALID_BATCH_SIZE, "data",
                 id="data-1001"),
    pytest.param(_set("data.0", "Purchase"), Code.INVALID_PARAMETER, "Batch.0", id="item-string"),
    pytest.param(_set("data.0.custom", 1), Code.INVALID_PARAMETER, "Batch.0.custom",
                 id="event-unknown-field"),
    pytest.param(_set("data.0.event", DROP), Code.INVALID_PARAMETER, "Batch.0.event",
                 id="event-missing"),
    pytest.param(_set("data.0.event", "purchase"), Code.INVALID_PARAMETER, "Batch.0.event",
                 id="event-wrong-case"),
    pytest.param(_set("data.0.event", "Pageview"), Code.INVALID_PARAMETER, "Batch.0.event",
                 id="event-not-standard"),
    pytest.param(_set("data.0.event_time", DROP), Code.INVALID_PARAMETER, "Batch.0.event_time",
                 id="time-missing"),
    pytest.param(_set("data.0.event_time", str(NOW)), Code.INVALID_PARAMETER,
                 "Batch.0.event_time", id="time-string"),
    pytest.param(_set("data.0.event_time", NOW + 0.5), Code.INVALID_PARAMETER,
                 "Batch.0.event_time", id="time-float"),
    pytest.param(_set("data.0.event_time", True), Code.INVALID_PARAMETER, "Batch.0.event_time",
                 id="time-bool"),
    pytest.param(_set("data.0.event_time", 999_999_999), Code.INVALID_PARAMETER,
                 "Batch.0.event_time", id="time-too-old"),
    pytest.param(_set("data.0.event_time", NOW * 1000), Code.INVALID_PARAMETER,
                 "Batch.0.event_time", id="time-milliseconds"),
    pytest.param(_set("data.0.event_time", NOW + 2 * 86400), Code.INVALID_PARAMETER,
                 "Batch.0.event_time", id="time-future"),
    pytest.param(_set("data.0.event_time", NOW + 3600), Code.INVALID_PARAMETER,  # past the allowed skew
                 "Batch.0.event_time", id="time-an-hour-ahead"),
    pytest.param(_set("data.0.event_id", ""), Code.INVALID_PARAMETER, "Batch.0.event_id",
                 id="event-id-empty"),
    pytest.param(_set("data.0.event_id", 98213), Code.INVALID_PARAMETER, "Batch.0.event_id",
                 id="event-id-number"),
    pytest.param(_set("data.0.user", "alice"), Code.INVALID_PARAMETER, "Batch.0.user",
                 id="user-not-object"),
    pytest.param(_set("data.0.user.gender", "f"), Code.INVALID_PARAMETER, "Batch.0.user.gender",
                 id="user-unknown-field"),
    pytest.param(_set("data.0.user.email", RAW_EMAIL), Code.PII_NOT_HASHED, "Batch.0.user.email",
                 id="email-raw"),
    pytest.param(_set("data.0.user.email", HASHED_EMAIL.upper()), Code.PII_NOT_HASHED,
                 "Batch.0.user.email", id="email-uppercase-hex"),
    pytest.param(_set("data.0.user.email", HASHED_EMAIL[:63]), Code.PII_NOT_HASHED,
                 "Batch.0.user.email", id="email-63-hex"),
    pytest.param(_set("data.0.user.email", [HASHED_EMAIL, RAW_EMAIL]), Code.PII_NOT_HASHED,
                 "Batch.0.user.email.1", id="email-list-raw-item"),
    pytest.param(_set("data.0.user.email", 42), Code.INVALID_PARAMETER, "Batch.0.user.email",
                 id="email-number"),
    pytest.param(_set("data.0.user.email", [42]), Code.INVALID_PARAMETER, "Batch.0.user.email.0",
                 id="email-list-number"),
    *[pytest.param(_set(f"data.0.user.{name}", "raw value"), Code.PII_NOT_HASHED,
                   f"Batch.0.user.{name}", id=f"{name}-raw")
      for name in sorted(HASHED_USER_FIELDS)],
    pytest.param(_set("data.0.user.ttclid", 12345), Code.INVALID_PARAMETER, "Batch.0.user.ttclid",
                 id="ttclid-number"),
    pytest.param(_set("data.0.user.ip", ["203.0.113.4"]), Code.INVALID_PARAMETER,
                 "Batch.0.user.ip", id="ip-list"),
    pytest.param(_set("data.0.page", "https://x"), Code.INVALID_PARAMETER, "Batch.0.page",
                 id="page-not-object"),
    pytest.param(_set("data.0.page.url", "shop.example/checkout"), Code.INVALID_PARAMETER,
                 "Batch.0.page.url", id="page-url-no-scheme"),
    pytest.param(_set("data.0.page.url", "ftp://shop.example/"), Code.INVALID_PARAMETER,
                 "Batch.0.page.url", id="page-url-ftp"),
    pytest.param(_set("data.0.page.referrer", 1), Code.INVALID_PARAMETER, "Batch.0.page.referrer",
                 id="page-referrer-number"),
    pytest.param(_set("data.0.page.title", "Checkout"), Code.INVALID_PARAMETER,
                 "Batch.0.page.title", id="page-unknown-field"),
    pytest.param(_set("data.0.properties", []), Code.INVALID_PARAMETER, "Batch.0.properties",
                 id="properties-not-object"),
    pytest.param(_set("data.0.properties.custom_prop", 1), Code.INVALID_PARAMETER,
                 "Batch.0.properties.custom_prop", id="properties-unknown-field"),
    pytest.param(_set("data.0.properties.contents", {"content_id": "SKU1"}),
                 Code.INVALID_PARAMETER, "Batch.0.properties.contents", id="contents-not-list"),
    pytest.param(_set("data.0.properties.contents.0", "SKU1"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0", id="content-not-object"),
    pytest.param(_set("data.0.properties.contents.0.content_id", 123), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0.content_id", id="content-id-number"),
    pytest.param(_set("data.0.properties.contents.0.sku", "SKU1"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0.sku", id="content-unknown-field"),
    pytest.param(_set("data.0.properties.contents.0.price", "25.0"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0.price", id="price-string"),
    pytest.param(_set("data.0.properties.contents.0.price", True), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0.price", id="price-bool"),
    pytest.param(_set("data.0.properties.contents.0.quantity", -1), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0.quantity", id="quantity-negative"),
    pytest.param(_set("data.0.properties.contents.0.quantity", "2"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.contents.0.quantity", id="quantity-string"),
    *[pytest.param(_set(f"data.0.properties.contents.0.{name}", 5), Code.INVALID_PARAMETER,
                   f"Batch.0.properties.contents.0.{name}", id=f"{name}-number")
      for name in ("content_name", "content_category", "brand")],
    pytest.param(_set("data.0.properties.value", "50.0"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.value", id="value-string"),
    pytest.param(_set("data.0.properties.value", False), Code.INVALID_PARAMETER,
                 "Batch.0.properties.value", id="value-bool"),
    pytest.param(_set("data.0.properties.num_items", 2.5), Code.INVALID_PARAMETER,
                 "Batch.0.properties.num_items", id="num-items-float"),
    pytest.param(_set("data.0.properties.num_items", True), Code.INVALID_PARAMETER,
                 "Batch.0.properties.num_items", id="num-items-bool"),
    pytest.param(_set("data.0.properties.currency", "usd"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.currency", id="currency-lowercase"),
    pytest.param(_set("data.0.properties.currency", "XYZ"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.currency", id="currency-unknown"),
    pytest.param(_set("data.0.properties.content_type", "sku"), Code.INVALID_PARAMETER,
                 "Batch.0.properties.content_type", id="content-type-unknown"),
    *[pytest.param(_set(f"data.0.properties.{name}", 98213), Code.INVALID_PARAMETER,
                   f"Batch.0.properties.{name}", id=f"{name}-number")
      for name in ("order_id", "shop_id", "description", "search_string")],
    pytest.param(_set("data.0.limited_data_use", "false"), Code.INVALID_PARAMETER,
                 "Batch.0.limited_data_use", id="limited-data-use-string"),
    pytest.param(_set("data.0.lead", {"lead_id": "L1"}), Code.INVALID_PARAMETER, "Batch.0.lead",
                 id="lead-on-web"),
    pytest.param(_set("data.1", make_event(event="Buy")), Code.INVALID_PARAMETER,
                 "Batch.1.event", id="second-event-bad"),
]

ACCEPTED = [
    pytest.param(_set("data.0", {"event": "ViewContent", "event_time": NOW}), id="minimal"),
    pytest.param(_set("data.0.user.email", [HASHED_EMAIL, HASHED_PHONE]), id="email-list"),
    pytest.param(_set("data.0.user.email", []), id="email-empty-list"),
    pytest.param(_set("data.0.properties.contents.0.price", 25), id="price-int"),
    pytest.param(_set("data.0.properties.contents.0.quantity", 0), id="quantity-zero"),
    pytest.param(_set("data.0.properties.content_type", "product_group"), id="product-group"),
    pytest.param(_set("data.0.page.url", "http://shop.example/"), id="page-url-http"),
    pytest.param(_set("data.0.event_time", NOW + 300), id="time-slightly-ahead"),  # the allowed skew
    pytest.param(_set("test_event_code", "TEST123"), id="test-event-code"),
    pytest.param(_set("data.0.limited_data_use", True), id="limited-data-use"),
    pytest.param(_set("data", [make_event(event_id=f"e{i}") for i in range(MAX_BATCH)]),
                 id="data-1000"),
]


def _path_of(message: str) -> str:
    return message.split(": ", 1)[0]


# ---------------------------------------------------------------- check_request, directly

@pytest.mark.parametrize(("mutate", "code", "path"), REJECTED)
def test_check_request_rejects(mutate, code, path):
    body = make_body(make_event(), make_event(event_id="order_2"))
    mutate(body)
    got_code, message = check_request(body, frozenset({PIXEL}))
    assert got_code == code, message
    if path is not None:
        assert _path_of(message) == path


@pytest.mark.parametrize("mutate", ACCEPTED)
def test_check_request_accepts(mutate):
    body = make_body(make_event(), make_event(event_id="order_2"))
    mutate(body)
    assert check_request(body, frozenset({PIXEL})) == (0, "OK")


def test_check_request_exact_tiktok_message():
    body = make_body(make_event())
    body["data"][0]["properties"]["contents"][0]["content_id"] = 123
    assert check_request(body) == (
        Code.INVALID_PARAMETER, "Batch.0.properties.contents.0.content_id: Not a valid string.")


@pytest.mark.parametrize("body", [None, [], "text", 3, [make_body()]])
def test_check_request_body_not_object(body):
    assert check_request(body)[0] == Code.INVALID_PARAMETER


def test_check_request_pixel_checked_only_when_given():
    body = make_body(event_source_id=OTHER_PIXEL)
    assert check_request(body) == (0, "OK")
    assert check_request(body, frozenset({PIXEL}))[0] == Code.NO_PERMISSION


@pytest.mark.parametrize("name", sorted(STANDARD_EVENTS))
def test_check_request_every_standard_event(name):
    assert check_request(make_body(make_event(event=name))) == (0, "OK")


@pytest.mark.parametrize("currency", sorted(CURRENCIES))
def test_check_request_every_currency(currency):
    body = make_body(make_event())
    body["data"][0]["properties"]["currency"] = currency
    assert check_request(body) == (0, "OK")


def test_check_request_lead_only_for_crm():
    lead = {"lead_id": "L1", "lead_event_source": "HubSpot"}
    crm = make_body(make_event(event="Lead", lead=lead), event_source="crm",
                    event_source_id=CRM_SET)
    assert check_request(crm) == (0, "OK")
    crm["data"][0]["lead"]["score"] = 5
    assert _path_of(check_request(crm)[1]) == "Batch.0.lead.score"
    crm["data"][0]["lead"] = {"lead_id": 7}
    assert _path_of(check_request(crm)[1]) == "Batch.0.lead.lead_id"


def test_check_request_now_bounds_event_time():
    body = make_body(make_event(event_time=1_700_000_000))
    assert check_request(body, now=1_700_000_000)[0] == 0
    assert check_request(body, now=1_600_000_000)[0] == Code.INVALID_PARAMETER


def test_check_request_nan_is_not_a_number():
    body = make_body(make_event())
    body["data"][0]["properties"]["value"] = float("nan")
    assert _path_of(check_request(body)[1]) == "Batch.0.properties.value"


def test_check_request_is_pure():
    body = make_body(make_event())
    before = copy.deepcopy(body)
    check_request(body, frozenset({PIXEL}))
    assert body == before


# ---------------------------------------------------------------- each event source's rules
# One valid body per source; each case mutates a fresh one and expects the exact answer.
IDFA = "EA7583CD-A667-48BC-B806-42ECB2B48606"     # TikTok's own examples (its API reference)
GAID = "aaaaaaaa-2222-1111-8787-809e92233ba0"
IDFV = "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"
HASHED_IDFA = "70574fa9c8f498a7b2e5c8712b1126de7b1406fd02fdc591821c5bd33092fd1c"
LEAD = {"lead_id": "7123456789012345678", "lead_event_source": "HubSpot"}
APP = {"app_id": "com.test.flyingsneakers", "app_name": "Flying Sneakers", "app_version": "3.0.2"}


def source_body(source: str) -> dict:
    if source == "app":  # TikTok's app example: device IDs and app, no page, ttclid or ttp
        event = make_event(event="InstallApp", app=copy.deepcopy(APP))
        del event["page"]
        event["user"] = {"email": HASHED_EMAIL, "phone": HASHED_PHONE, "idfa": IDFA, "idfv": IDFV,
                         "gaid": GAID, "att_status": "AUTHORIZED", "ip": "203.0.113.4",
                         "user_agent": "Mozilla/5.0", "locale": "en-US"}
        return make_body(event, event_source="app", event_source_id=APP_ID)
    if source == "crm":
        return make_body(make_event(event="Lead", lead=dict(LEAD)), event_source="crm",
                         event_source_id=CRM_SET)
    if source == "offline":
        return make_body(make_event(), event_source="offline", event_source_id=OFFLINE_SET)
    return make_body(make_event())


ONLY_WEB_LIKE = "Only allowed when event_source is crm or offline or web."
SOURCE_REJECTED = [  # (source, mutation, code, exact message)
    *[pytest.param(source, _set("event_source_id", PIXEL), Code.INVALID_PARAMETER,
                   f"event_source_id: Not a valid {kind} (digits only).", id=f"{source}-pixel-code-as-id")
      for source, kind in (("app", "TikTok App ID"), ("offline", "Offline Event Set ID"),
                           ("crm", "CRM Event Set ID"))],
    pytest.param("web", _set("event_source_id", OFFLINE_SET), Code.INVALID_PARAMETER,
                 "event_source_id: Not a valid Pixel Code (an all-digit ID is an event set or app ID).",
                 id="web-event-set-id-as-pixel"),
    pytest.param("web", _set("data.0.app", APP), Code.INVALID_PARAMETER,
                 "Batch.0.app: Only allowed when event_source is app.", id="web-app-object"),
    pytest.param("web", _set("data.0.user.idfa", IDFA), Code.INVALID_PARAMETER,
                 "Batch.0.user.idfa: Only allowed when event_source is app.", id="web-idfa"),
    pytest.param("web", _set("data.0.user.att_status", "AUTHORIZED"), Code.INVALID_PARAMETER,
                 "Batch.0.user.att_status: Only allowed when event_source is app.", id="web-att-status"),
    pytest.param("crm", _set("data.0.lead", DROP), Code.INVALID_PARAMETER,
                 "Batch.0.lead: Missing data for required field (CRM events).", id="crm-no-lead"),
    pytest.param("crm", _set("data.0.lead", {"lead_event_source": "HubSpot"}), Code.INVALID_PARAMETER,
                 "Batch.0.lead.lead_id: Missing data for required field (CRM events).", id="crm-no-lead-id"),
    pytest.param("crm", _set("data.0.lead.lead_id", ""), Code.INVALID_PARAMETER,
                 "Batch.0.lead.lead_id: Not a valid string (must not be empty).", id="crm-empty-lead-id"),
    pytest.param("crm", _set("data.0.lead.lead_id", 7123456789012345678), Code.INVALID_PARAMETER,
                 "Batch.0.lead.lead_id: Not a valid string (must not be empty).", id="crm-numeric-lead-id"),
    pytest.param("crm", _set("data.0.lead.lead_event_source", 1), Code.INVALID_PARAMETER,
                 "Batch.0.lead.lead_event_source: Not a valid string.", id="crm-lead-source-number"),
    pytest.param("crm", _set("data.0.event", ""), Code.INVALID_PARAMETER,
                 "Batch.0.event: Not a valid string (must not be empty).", id="crm-empty-name"),
    pytest.param("crm", _set("data.0.app", APP), Code.INVALID_PARAMETER,
                 "Batch.0.app: Only allowed when event_source is app.", id="crm-app-object"),
    pytest.param("crm", _set("data.0.user.gaid", GAID), Code.INVALID_PARAMETER,
                 "Batch.0.user.gaid: Only allowed when event_source is app.", id="crm-gaid"),
    pytest.param("offline", _set("data.0.user", {"external_id": HASHED_EMAIL, "ip": "203.0.113.4"}),
                 Code.INVALID_PARAMETER,
                 "Batch.0.user: Offline events are matched by email or phone: send at least one.",
                 id="offline-no-email-or-phone"),
    pytest.param("offline", _set("data.0.user", {"email": [], "phone": []}), Code.INVALID_PARAMETER,
                 "Batch.0.user: Offline events are matched by email or phone: send at least one.",
                 id="offline-empty-lists"),
    pytest.param("offline", _set("data.0.user", DROP), Code.INVALID_PARAMETER,
                 "Batch.0.user: Offline events are matched by email or phone: send at least one.",
                 id="offline-no-user"),
    pytest.param("offline", _set("data.0.event", "InstallApp"), Code.INVALID_PARAMETER,
                 "Batch.0.event: Not a standard event name.", id="offline-app-event-name"),
    pytest.param("offline", _set("data.0.event", "Qualified"), Code.INVALID_PARAMETER,
                 "Batch.0.event: Not a standard event name.", id="offline-custom-name"),
    pytest.param("offline", _set("data.0.lead", LEAD), Code.INVALID_PARAMETER,
                 "Batch.0.lead: Only allowed when event_source is crm.", id="offline-lead"),
    pytest.param("app", _set("data.0.app", DROP), Code.INVALID_PARAMETER,
                 "Batch.0.app: Missing data for required field (app events).", id="app-no-app"),
    pytest.param("app", _set("data.0.app", {"app_name": "Flying Sneakers"}), Code.INVALID_PARAMETER,
                 "Batch.0.app.app_id: Missing data for required field (app events).", id="app-no-app-id"),
    pytest.param("app", _set("data.0.app.app_id", 343200656), Code.INVALID_PARAMETER,
                 "Batch.0.app.app_id: Not a valid string (must not be empty).", id="app-numeric-app-id"),
    pytest.param("app", _set("data.0.app.app_version", 3), Code.INVALID_PARAMETER,
                 "Batch.0.app.app_version: Not a valid string.", id="app-version-number"),
    pytest.param("app", _set("data.0.app.bundle", "x"), Code.INVALID_PARAMETER,
                 "Batch.0.app.bundle: Unknown field.", id="app-unknown-field"),
    pytest.param("app", _set("data.0.event", "InitiateCheckout"), Code.INVALID_PARAMETER,
                 "Batch.0.event: Not an app standard event name.", id="app-web-name"),
    pytest.param("app", _set("data.0.page", {"url": "https://shop.example/"}), Code.INVALID_PARAMETER,
                 f"Batch.0.page: {ONLY_WEB_LIKE}", id="app-page"),
    pytest.param("app", _set("data.0.user.ttclid", "E.C.P.abc"), Code.INVALID_PARAMETER,
                 f"Batch.0.user.ttclid: {ONLY_WEB_LIKE}", id="app-ttclid"),
    pytest.param("app", _set("data.0.user.ttp", "2F7h37YkS1j57AYSKTI7IHhJPYH"), Code.INVALID_PARAMETER,
                 f"Batch.0.user.ttp: {ONLY_WEB_LIKE}", id="app-ttp"),
    pytest.param("app", _set("data.0.lead", LEAD), Code.INVALID_PARAMETER,
                 "Batch.0.lead: Only allowed when event_source is crm.", id="app-lead"),
    *[pytest.param("app", _set(f"data.0.user.{name}", value), Code.INVALID_PARAMETER,
                   f"Batch.0.user.{name}: Not a valid ID ({rule}, or its SHA-256 as 64 lowercase hex "
                   "characters).", id=f"app-{case}")
      for name, value, rule, case in (
          ("idfa", IDFA.lower(), "a raw IDFA is a UUID in UPPERCASE", "idfa-lowercase"),
          ("idfa", "not-an-idfa", "a raw IDFA is a UUID in UPPERCASE", "idfa-not-uuid"),
          ("idfa", HASHED_IDFA.upper(), "a raw IDFA is a UUID in UPPERCASE", "idfa-hash-uppercase"),
          ("gaid", GAID.upper(), "a raw GAID is a UUID in lowercase", "gaid-uppercase"),
          ("gaid", f" {GAID}", "a raw GAID is a UUID in lowercase", "gaid-untrimmed"))],
    pytest.param("app", _set("data.0.user.idfa", 5), Code.INVALID_PARAMETER,
                 "Batch.0.user.idfa: Not a valid string (must not be empty).", id="app-idfa-number"),
    pytest.param("app", _set("data.0.user.idfv", ""), Code.INVALID_PARAMETER,
                 "Batch.0.user.idfv: Not a valid string (must not be empty).", id="app-idfv-empty"),
    pytest.param("app", _set("data.0.user.att_status", "authorized"), Code.INVALID_PARAMETER,
                 "Batch.0.user.att_status: Must be one of: AUTHORIZED, DENIED, NOT_APPLICABLE, "
                 "NOT_DETERMINED, RESTRICTED", id="app-att-status-lowercase"),
    pytest.param("app", _set("data.0.user.email", "Alice@Example.com"), Code.PII_NOT_HASHED,
                 "Batch.0.user.email: Must be SHA-256 hashed (64 lowercase hex characters).",
                 id="app-raw-email"),
]

SOURCE_ACCEPTED = [
    pytest.param("web", lambda body: None, id="web"),
    pytest.param("offline", lambda body: None, id="offline"),
    pytest.param("offline", _set("data.0.user", {"phone": HASHED_PHONE}), id="offline-phone-only"),
    pytest.param("crm", lambda body: None, id="crm"),
    # TikTok's own CRM example: a standard name, the lead and nothing else.
    pytest.param("crm", _set("data.0", {"event": "AddToCart", "event_time": NOW, "lead": {"lead_id": "L1"}}),
                 id="crm-tiktok-minimal-example"),
    pytest.param("crm", _set("data.0.event", "Qualified Lead"), id="crm-custom-name"),
    pytest.param("app", lambda body: None, id="app"),
    pytest.param("app", _set("data.0.user.idfa", HASHED_IDFA), id="app-hashed-idfa"),
    pytest.param("app", _set("data.0.user", {"gaid": GAID, "att_status": "NOT_APPLICABLE"}), id="app-android"),
    pytest.param("app", _set("data.0.app", {"app_id": "343200656"}), id="app-id-only"),
]


@pytest.mark.parametrize(("source", "mutate", "code", "message"), SOURCE_REJECTED)
def test_check_request_source_rules_reject(source, mutate, code, message):
    body = source_body(source)
    mutate(body)
    assert check_request(body, frozenset({PIXEL, CRM_SET, OFFLINE_SET, APP_ID})) == (code, message)


@pytest.mark.parametrize(("source", "mutate"), SOURCE_ACCEPTED)
def test_check_request_source_rules_accept(source, mutate):
    body = source_body(source)
    mutate(body)
    assert check_request(body, frozenset({PIXEL, CRM_SET, OFFLINE_SET, APP_ID})) == (0, "OK")


@pytest.mark.parametrize("name", sorted(APP_EVENTS))
def test_check_request_every_app_event(name):
    body = source_body("app")
    body["data"][0]["event"] = name
    assert check_request(body) == (0, "OK")


def test_check_request_standard_names_are_not_all_app_names():
    # Web names that are not app names are refused on app (TikTok's app list spells them otherwise).
    for name in sorted(STANDARD_EVENTS - APP_EVENTS):
        body = source_body("app")
        body["data"][0]["event"] = name
        assert check_request(body) == (Code.INVALID_PARAMETER, "Batch.0.event: Not an app standard event name.")


@pytest.mark.asyncio
@pytest.mark.parametrize("source", ["web", "offline", "crm", "app"])
async def test_http_each_source_is_accepted_and_recorded_with_its_source(server, source):
    fake, session = server
    body = source_body(source)
    status, payload = await track(session, body)
    assert (status, payload["code"], payload["message"]) == (200, 0, "OK")
    [entry] = fake.accepted
    assert (entry["pixel_code"], entry["event_source"], entry["event"]) == (
        body["event_source_id"], source, body["data"][0])


@pytest.mark.asyncio
async def test_http_source_rule_answers_40002_with_the_exact_message(server):
    fake, session = server
    body = source_body("crm")
    del body["data"][0]["lead"]
    status, payload = await track(session, body)
    assert status == 200
    assert_error_shape(payload, Code.INVALID_PARAMETER)
    assert payload["message"] == "Batch.0.lead: Missing data for required field (CRM events)."
    assert fake.accepted == [] and (await get_stats(session))["rejections"] == {"40002": 1}


# ---------------------------------------------------------------- over HTTP

@pytest_asyncio.fixture
async def server(tmp_path):
    """A fake on a free port: TOKEN may send to PIXEL, CRM_SET, OFFLINE_SET and APP_ID, OTHER_TOKEN to
    OTHER_PIXEL."""
    config = FakeConfig(tokens={TOKEN: frozenset({PIXEL, CRM_SET, OFFLINE_SET, APP_ID}),
                                OTHER_TOKEN: frozenset({OTHER_PIXEL})},
                        record_path=str(tmp_path / "accepted.jsonl"), seed=7)
    fake = FakeTikTok(config)
    base_url = await fake.start("127.0.0.1", 0)
    async with aiohttp.ClientSession(base_url) as session:
        yield fake, session
    await fake.stop()


async def track(session, body, token=TOKEN, raw: bytes | None = None):
    """POST to the track endpoint; (HTTP status, parsed JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Access-Token"] = token
    data = raw if raw is not None else orjson.dumps(body)
    async with session.post(TRACK_PATH, data=data, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def control(session, **settings):
    async with session.post("/control", data=orjson.dumps(settings)) as response:
        assert response.status == 200, await response.text()
        return orjson.loads(await response.read())


async def get_stats(session):
    async with session.get("/stats") as response:
        return orjson.loads(await response.read())


def assert_error_shape(payload, code):
    assert payload["code"] == code, payload
    assert set(payload) == {"code", "message", "request_id", "data"}
    assert payload["data"] == {} and payload["request_id"] and payload["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("mutate", "code", "path"), REJECTED)
async def test_http_rejects(server, mutate, code, path):
    fake, session = server
    body = make_body(make_event(), make_event(event_id="order_2"))
    mutate(body)
    status, payload = await track(session, body)
    assert status == 200  # TikTok answers API errors with HTTP 200: the body code decides
    assert_error_shape(payload, code)
    if path is not None:
        assert _path_of(payload["message"]) == path
    assert fake.accepted == []
    assert (await get_stats(session))["rejections"] == {str(code): 1}


@pytest.mark.asyncio
@pytest.mark.parametrize("mutate", ACCEPTED)
async def test_http_accepts(server, mutate):
    fake, session = server
    body = make_body(make_event())
    mutate(body)
    status, payload = await track(session, body)
    assert (status, payload["code"], payload["message"]) == (200, 0, "OK")
    assert len(fake.accepted) == len(body["data"])


@pytest.mark.asyncio
async def test_tiktok_example_batch_is_accepted_and_recorded(server, tmp_path):
    fake, session = server
    events = [make_event(event_id="order_1"), make_event(event="AddToCart", event_id="cart_1")]
    body = make_body(*events, test_event_code="TEST123")
    status, payload = await track(session, body)
    assert status == 200
    assert payload["code"] == 0 and payload["message"] == "OK" and payload["data"] == {}
    assert [entry["event"] for entry in fake.accepted] == events
    lines = (tmp_path / "accepted.jsonl").read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]
    assert records == fake.accepted
    for record, event in zip(records, events):
        assert record["pixel_code"] == PIXEL and record["event_source"] == "web"
        assert record["test_event_code"] == "TEST123" and record["event"] == event
        assert abs(record["received_at"] - time.time()) < 5
    assert records[0]["event"]["user"]["email"] == HASHED_EMAIL


@pytest.mark.asyncio
async def test_raw_email_answers_40062_with_path(server):
    _, session = server
    body = make_body(make_event(), make_event(user={"email": "alice_abc@gmail.com"}))
    status, payload = await track(session, body)
    assert status == 200 and payload["code"] == Code.PII_NOT_HASHED
    assert _path_of(payload["message"]) == "Batch.1.user.email"


@pytest.mark.asyncio
async def test_numeric_content_id_answers_tiktok_message(server):
    _, session = server
    body = make_body(make_event())
    body["data"][0]["properties"]["contents"][0]["content_id"] = 123
    status, payload = await track(session, body)
    assert (status, payload["code"]) == (200, Code.INVALID_PARAMETER)
    assert payload["message"] == "Batch.0.properties.contents.0.content_id: Not a valid string."


@pytest.mark.asyncio
async def test_1001_events_answer_40061_and_nothing_is_recorded(server, tmp_path):
    fake, session = server
    body = make_body(*[make_event(event_id=f"e{i}") for i in range(MAX_BATCH + 1)])
    status, payload = await track(session, body)
    assert (status, payload["code"]) == (200, Code.INVALID_BATCH_SIZE)
    assert fake.accepted == [] and not (tmp_path / "accepted.jsonl").read_bytes()


@pytest.mark.asyncio
@pytest.mark.parametrize(("token", "code"), [
    (None, Code.TOKEN_EMPTY), ("", Code.TOKEN_EMPTY), ("not-a-token", Code.TOKEN_INVALID),
    (OTHER_TOKEN, Code.NO_PERMISSION),  # a valid token, but not for PIXEL
])
async def test_token_checks(server, token, code):
    fake, session = server
    status, payload = await track(session, make_body(), token=token)
    assert status == 200
    assert_error_shape(payload, code)
    assert fake.accepted == []


@pytest.mark.asyncio
@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"'])
async def test_body_not_a_json_object_answers_40002(server, raw):
    _, session = server
    status, payload = await track(session, None, raw=raw)
    assert status == 200
    assert_error_shape(payload, Code.INVALID_PARAMETER)


@pytest.mark.asyncio
async def test_request_ids_are_unique(server):
    _, session = server
    ids = set()
    for token in (TOKEN, None, "bad", TOKEN):
        ids.add((await track(session, make_body(), token=token))[1]["request_id"])
    assert len(ids) == 4


@pytest.mark.asyncio
async def test_dedup_on_source_event_and_event_id(server, tmp_path):
    fake, session = server
    first = make_event(event_id="order_1")
    assert (await track(session, make_body(first)))[1]["code"] == 0
    # Same pixel + event + event_id: accepted (code 0) but dropped as a duplicate.
    assert (await track(session, make_body(first)))[1]["code"] == 0
    # A different event name, or no event_id at all, is not a duplicate.
    other_event = make_event(event="AddToCart", event_id="order_1")
    assert (await track(session, make_body(other_event)))[1]["code"] == 0
    no_id = make_event()
    del no_id["event_id"]
    assert (await track(session, make_body(no_id, no_id)))[1]["code"] == 0
    # Inside one batch too.
    repeat = make_event(event_id="order_2")
    assert (await track(session, make_body(repeat, repeat)))[1]["code"] == 0
    stats = await get_stats(session)
    assert stats["duplicates"] == 2 and stats["events_accepted"] == 5
    assert len(fake.accepted) == 5
    assert len((tmp_path / "accepted.jsonl").read_bytes().splitlines()) == 5


@pytest.mark.asyncio
async def test_dedup_key_includes_the_pixel(server):
    fake, session = server
    event = make_event(event_id="order_1")
    await track(session, make_body(event))
    await track(session, make_body(event, event_source_id=OTHER_PIXEL), token=OTHER_TOKEN)
    assert len(fake.accepted) == 2 and fake.stats()["duplicates"] == 0


@pytest.mark.asyncio
async def test_dedup_window_expires():
    fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, dedup_window_s=0))
    base_url = await fake.start()
    try:
        async with aiohttp.ClientSession(base_url) as session:
            await track(session, make_body())
            await track(session, make_body())
        assert len(fake.accepted) == 2 and fake.stats()["duplicates"] == 0
    finally:
        await fake.stop()


@pytest.mark.asyncio
async def test_fail_share_answers_50000_before_token_checks(server):
    fake, session = server
    assert (await control(session, fail_share=1.0))["fail_share"] == 1.0
    for token in (TOKEN, None):
        status, payload = await track(session, make_body(), token=token)
        assert status == 200
        assert_error_shape(payload, Code.SERVER_ERROR)
    assert fake.accepted == []
    await control(session, fail_share=0)
    assert (await track(session, make_body()))[1]["code"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(("setting", "status", "title"), [
    ("http_502_share", 502, "502 Bad Gateway"), ("http_503_share", 503, "503 Service"),
])
async def test_gateway_errors_answer_html(server, setting, status, title):
    fake, session = server
    await control(session, **{setting: 1.0})
    async with session.post(TRACK_PATH, data=orjson.dumps(make_body()),
                            headers={"Access-Token": TOKEN}) as response:
        assert response.status == status
        assert response.content_type == "text/html"
        text = await response.text()
    assert text.startswith("<html>") and title in text
    assert fake.accepted == [] and (await get_stats(session))["http_errors"] == 1


@pytest.mark.asyncio
async def test_fault_draws_follow_the_seed():
    async def codes(seed):
        fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, fail_share=0.5, seed=seed))
        base_url = await fake.start()
        try:
            async with aiohttp.ClientSession(base_url) as session:
                return [(await track(session, make_body(make_event(event_id=str(i)))))[1]["code"]
                        for i in range(20)]
        finally:
            await fake.stop()
    first = await codes(11)
    assert first == await codes(11)
    assert set(first) == {0, Code.SERVER_ERROR}


@pytest.mark.asyncio
async def test_rate_limit_per_token(server):
    fake, session = server
    assert (await control(session, rate_limit_qps=2))["rate_limit_qps"] == 2.0
    results = [(await track(session, make_body(make_event(event_id=str(i)))))
               for i in range(3)]
    assert [payload["code"] for _, payload in results] == [0, 0, Code.RATE_LIMITED]
    assert results[2][0] == 200
    assert_error_shape(results[2][1], Code.RATE_LIMITED)
    # Another token has its own budget.
    other = make_body(event_source_id=OTHER_PIXEL)
    assert (await track(session, other, token=OTHER_TOKEN))[1]["code"] == 0
    stats = await get_stats(session)
    assert stats["rate_limited"] == 1 and stats["rejections"] == {"40100": 1}
    await control(session, rate_limit_qps=None)
    assert (await track(session, make_body(make_event(event_id="later"))))[1]["code"] == 0


@pytest.mark.asyncio
async def test_tokens_expired_then_restored(server):
    _, session = server
    assert (await control(session, tokens_expired=True))["tokens_expired"] is True
    status, payload = await track(session, make_body())
    assert status == 200
    assert_error_shape(payload, Code.TOKEN_EXPIRED)
    # An unknown token is still reported as invalid, not expired.
    assert (await track(session, make_body(), token="nope"))[1]["code"] == Code.TOKEN_INVALID
    await control(session, tokens_expired=False)
    assert (await track(session, make_body()))[1]["code"] == 0


@pytest.mark.asyncio
async def test_latency_is_added(server):
    _, session = server
    await control(session, latency_ms=150)
    started = time.monotonic()
    assert (await track(session, make_body()))[1]["code"] == 0
    assert time.monotonic() - started >= 0.14


@pytest.mark.asyncio
async def test_control_answers_settings_and_refuses_bad_values(server):
    fake, session = server
    settings = await control(session, http_503_share=0.25, latency_ms=0)
    assert settings == {"fail_share": 0.0, "http_502_share": 0.0, "http_503_share": 0.25,
                        "latency_ms": 0.0, "rate_limit_qps": None, "tokens_expired": False}
    for bad in ({"fail_share": 2}, {"fail_share": True}, {"tokens_expired": "yes"},
                {"rate_limit_qps": 0}, {"latency_ms": -1}, {"tokens": {}},
                {"fail_share": 1.0, "seed": 3}):
        async with session.post("/control", data=orjson.dumps(bad)) as response:
            assert response.status == 400, bad
    # A refused request changed nothing, not even its valid part.
    assert fake.config.fail_share == 0.0 and fake.config.http_503_share == 0.25


@pytest.mark.asyncio
async def test_stats_counters_are_exact_and_reset_clears_them(server):
    fake, session = server
    await track(session, make_body(make_event(event_id="a"), make_event(event_id="b")))  # 2 new
    await track(session, make_body(make_event(event_id="a")))                           # 1 dup
    await track(session, make_body(), token=None)                                       # 40104
    await track(session, make_body(make_event(event="Buy")))                           # 40002
    await track(session, make_body(make_event(event="Buy")))                           # 40002
    await control(session, http_502_share=1.0)
    async with session.post(TRACK_PATH, data=b"{}", headers={"Access-Token": TOKEN}) as response:
        assert response.status == 502
    await control(session, http_502_share=0.0, rate_limit_qps=1)
    await track(session, make_body(make_event(event_id="c")))                           # 1 new
    await track(session, make_body(make_event(event_id="d")))                           # 40100
    assert await get_stats(session) == {
        "requests": 8, "events_accepted": 3, "duplicates": 1,
        "rejections": {"40104": 1, "40002": 2, "40100": 1}, "http_errors": 1, "rate_limited": 1,
    }
    async with session.post("/reset") as response:
        assert response.status == 200
    assert await get_stats(session) == {"requests": 0, "events_accepted": 0, "duplicates": 0,
                                        "rejections": {}, "http_errors": 0, "rate_limited": 0}
    assert fake.accepted == []
    # Dedup state is gone too: "a" is new again.
    await control(session, rate_limit_qps=None)
    await track(session, make_body(make_event(event_id="a")))
    assert len(fake.accepted) == 1 and fake.stats()["duplicates"] == 0


@pytest.mark.asyncio
async def test_port_0_reports_the_bound_port_and_health_answers():
    fake = FakeTikTok()
    base_url = await fake.start("127.0.0.1", 0)
    try:
        assert base_url.startswith("http://127.0.0.1:") and int(base_url.rsplit(":", 1)[1]) > 0
        async with aiohttp.ClientSession(base_url) as session:
            async with session.get("/health") as response:
                assert response.status == 200
    finally:
        await fake.stop()


@pytest.mark.asyncio
async def test_app_property_serves_under_aiohttp_test_server():
    fake = FakeTikTok()  # demo token and pixel
    async with TestServer(fake.app) as test_server:
        async with aiohttp.ClientSession(str(test_server.make_url("/"))) as session:
            body = make_body(event_source_id=DEMO_PIXEL)
            assert (await track(session, body, token=DEMO_TOKEN))[1]["code"] == 0
    assert len(fake.accepted) == 1


@pytest.mark.asyncio
async def test_same_fake_restarts_and_keeps_its_state():
    fake = FakeTikTok()
    for _ in range(2):
        base_url = await fake.start()
        try:
            async with aiohttp.ClientSession(base_url) as session:
                await track(session, make_body(event_source_id=DEMO_PIXEL), token=DEMO_TOKEN)
        finally:
            await fake.stop()
    # Same event_id twice: the second run still remembers the first.
    assert len(fake.accepted) == 1 and fake.stats()["duplicates"] == 1


@pytest.mark.asyncio
async def test_record_file_appends_across_restarts(tmp_path):
    record = tmp_path / "events.jsonl"
    for run in range(2):
        fake = FakeTikTok(FakeConfig(record_path=str(record)))  # demo token and pixel
        base_url = await fake.start()
        try:
            async with aiohttp.ClientSession(base_url) as session:
                body = make_body(make_event(event_id=f"run{run}"), event_source_id=DEMO_PIXEL)
                assert (await track(session, body, token=DEMO_TOKEN))[1]["code"] == 0
        finally:
            await fake.stop()
    ids = [orjson.loads(line)["event"]["event_id"] for line in record.read_bytes().splitlines()]
    assert ids == ["run0", "run1"]


@pytest.mark.asyncio
async def test_unwritable_record_path_fails_at_start(tmp_path):
    fake = FakeTikTok(FakeConfig(record_path=str(tmp_path / "missing-dir" / "x.jsonl")))
    with pytest.raises(OSError):
        await fake.start()
    await fake.stop()


# ---------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttbridge")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_defaults_and_options():
    args = _parser().parse_args(["fake-tiktok"])
    assert args.func is main
    assert (args.host, args.port) == ("127.0.0.1", 8099)
    assert args.access_tokens is None and args.pixels is None
    assert (args.fail_share, args.rate_limit_qps, args.record, args.seed) == (0.0, None, None, None)
    args = _parser().parse_args([
        "fake-tiktok", "--access-token", "a", "--access-token", "b", "--pixel", "P1",
        "--fail-share", "0.1", "--http-502-share", "0.2", "--latency-ms", "5",
        "--rate-limit-qps", "50", "--record", "out.jsonl", "--seed", "3", "--port", "0"])
    assert args.access_tokens == ["a", "b"] and args.pixels == ["P1"]
    assert (args.fail_share, args.http_502_share, args.latency_ms, args.rate_limit_qps) == (
        0.1, 0.2, 5.0, 50.0)
    assert (args.record, args.seed, args.port) == ("out.jsonl", 3, 0)


@pytest.mark.parametrize("argv", [["--fail-share", "1.5"], ["--rate-limit-qps", "0"],
                                  ["--latency-ms", "-3"], ["--fail-share", "nan"]])
def test_cli_refuses_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["fake-tiktok", *argv])
    assert exit_info.value.code == 2


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["fake-tiktok", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--access-token", "--pixel", "--fail-share",
                   "--http-502-share", "--latency-ms", "--rate-limit-qps", "--record", "--seed"):
        assert option in out
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    assert "fake-tiktok" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.asyncio
async def test_cli_process_serves_until_sigterm(tmp_path):
    port = _free_port()
    launcher = ("import argparse, sys; from app.devtools.fake_tiktok import register; "
                "p = argparse.ArgumentParser(); register(p.add_subparsers()); "
                "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    record = tmp_path / "cli.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", launcher, "fake-tiktok", "--port", str(port),
        "--access-token", TOKEN, "--pixel", PIXEL, "--record", str(record),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        base_url = line.split()[-1]
        assert base_url == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(base_url) as session:
            async with session.get("/health") as response:
                assert response.status == 200
            assert (await track(session, make_body()))[1]["code"] == 0
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert TOKEN not in line + out.decode() + err.decode()
    assert len(record.read_bytes().splitlines()) == 1
    with pytest.raises(OSError):  # nothing is listening any more
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
