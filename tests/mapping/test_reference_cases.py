"""The 57 reference cases of ../shared/reference/peer-cases.json, run against ttbridge's own code.

Each case comes from the test suite of RudderStack's or Segment's TikTok connector. Its expected
outcome is first TRANSLATED into ttbridge's terms without changing what it means (the helpers
below: Events 1.0 fields to their v1.3 names, the peer's error messages to ttbridge's outcomes, its
destination settings to a MappingConfig and a pixel). DEVIATIONS then says, field by field, where
ttbridge deliberately does something else and why; it is the only place where an expectation
differs from the peer's. TikTok's rules (../shared/TIKTOK_EVENTS_API.md) win over both peers.

Every case asserts ttbridge's whole outcome exactly, also where the peer's own test checks only a
subset (match "subset", Jest's toMatchObject): what ttbridge sends beyond that subset is listed in
DEVIATIONS too. Every request body ttbridge builds must also pass the fake Events API's checks.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.devtools.fake_tiktok import check_request
from app.mapping import devices, normalise
from app.mapping.events import MappingConfig, Refusal, map_event
from app.mapping.sources import for_source
from app.tiktok.facts import MAX_BATCH, NUMERIC_SOURCE_IDS
from app.tiktok.outcomes import Action, verdict_for_code
from app.tiktok.requests import request_bodies
from app.tiktok.sender import _read_answer

PEER_CASES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "peer-cases.json"
CASES: dict[str, dict] = {case["id"]: case for case in json.loads(PEER_CASES.read_text())}
NOW = 1_750_000_000.0  # 2025-06-15, after every case's timestamp (map_event refuses the future)


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __deepcopy__(self, memo: dict) -> _Marker:
        return self  # compared by identity


ABSENT = _Marker("ABSENT")            # ttbridge leaves the field (or the whole data[] item) out
UNMAPPED = _Marker("UNMAPPED")        # map_event gives []: skipped and counted, never sent


@dataclass(frozen=True)
class Refused:
    """map_event raised Refusal(reason): the event is dead-lettered alone, never sent."""

    reason: str


# ============================================================================== the deviations
# case id -> {field: (what ttbridge does instead, why)}. A field is a dotted path into every data[]
# item of the case ("user.email"), into one item of its data[] counted across all its requests
# ("[1].event"; "[0]" alone is the whole item), into every request body ("body.test_event_code"),
# or one of: "outcome" (the whole outcome), "config.events" (the event map ttbridge is configured
# with because MappingConfig refuses the peer's: asserted), "job<N>" (a router job the peer
# refuses). Unit and delivery cases use paths into their expected value ("classifications[1]").
# An entry that changes nothing fails, so the table cannot go stale. "BUG:" marks ttbridge breaking
# one of TikTok's rules: the entry records what it does today.

# Why, once per reason.
PRESET = "read once the rudderstack preset lands (issue 12)"
RS_NAME = "RudderStack event name: mapped once the rudderstack preset lands (issue 12)"
RS_USER = f"RudderStack shape properties.context.user.*: {PRESET}"
RS_PAGE = f"RudderStack shape properties.context.page: {PRESET}"
RS_EXTERNAL_ID = f"RudderStack shape context.externalId[type=tiktokExternalId]: {PRESET}"
RS_CLICK_ID = f"RudderStack shape properties.clickId (the ttclid): {PRESET}"
RS_CONTENT_TYPE = ("RudderStack adds content_type=product for some event names; ttbridge sends one only "
                   "when the event or MappingConfig.content_type sets it")
CASE_SENSITIVE = ("TikTok event names are case-sensitive: MappingConfig refuses 'download'/'search' "
                  "(asserted), so the operator writes them as TikTok spells them")
CUSTOM_EVENT = ("custom event names are not sent: TikTok discards them on web (TIKTOK_EVENTS_API.md); "
                "ttbridge has no sendCustomEvents")
TOKEN_AT_START = ("the access token is a pixel setting checked once at start-up (app.settings, "
                  "tests/test_settings.py), never per event")
NO_EVENT_NAME = TOKEN_AT_START + "; this message also has no event name, which the mapping refuses"
RAW_IDFA = ("TikTok takes a raw IDFA in UPPERCASE or its SHA-256: ttbridge sends it raw, as TikTok writes "
            "it (whether TikTok lowercases it before hashing is unstated); the peer hashes it lowercased")
RAW_DEVICE_IDS = (RAW_IDFA + "; a raw GAID goes lowercase (TikTok's rule; the peer hashes the uppercase "
                  "form); a SHA-256 passes through")
APP_OBJECT = ("TikTok requires app.app_id on app events: ttbridge maps Segment's own app defaults "
              "(context.app), which the peer's expected request lacks")
APP_FROM_RS = ("RudderStack sends these web events as event_source 'app' (properties.eventSource) to the "
               "pixel code: an app event needs an app event name (CompletePayment and Download are web "
               "names) and app.app_id, so the forwarder refuses it once the destination is known")
LOCALE = "ttbridge sends context.locale as user.locale (a TikTok user field); the peer's request has none"
ONE_AS_STRING = ("one identifier is sent as a string (TikTok takes a string or an array); the peer wraps "
                 "it in an array")
EXTERNAL_ID_CASE = "external_id keeps its case (TikTok: trim, case kept); Segment lowercases it first"
USER_ID = "ttbridge hashes userId as external_id (DESIGN.md's identity contract); the peer sends none"
NO_DOUBLE_HASH = "already SHA-256 hex: TikTok says pass it through, never hash twice (the peer does)"
RAW_PII = "TikTok refuses unhashed PII (40062): ttbridge hashes it (the peer sends it raw)"
NOT_E164 = "not a possible E.164 number (wrong length for its country code): left out, not hashed"
NO_REGION = ("no country code and no default_region configured: TikTok wants E.164, so ttbridge "
             "leaves it out rather than guess")
OFFLINE_NO_MATCH = (NO_REGION + " ('1234567890'); TikTok matches offline events by email or phone only, "
                    "so nothing is left to match it on: refused (no_identifier) where the peer sends the "
                    "unnormalised number's hash")
NOT_E164_PAIR = ("neither is E.164: '+12345432' has 7 digits after +1, a local-only length (no area "
                 "code), '+134234325' a wrong length; both are left out, not hashed")
ZIP = ("zip_code normalisation is unconfirmed (not in TIKTOK_EVENTS_API.md): ttbridge trims, "
       "lowercases, drops spaces; the peer drops spaces and dashes, keeps case")
NO_CITY = "ttbridge does not map city/state/country (plain TikTok user fields) from traits yet"
NUM_ITEMS = ("num_items is the sum of the quantities (TikTok's example: one content of quantity 2, "
             "num_items 2); RudderStack counts rows, Segment sends none")
CONTENT_TYPE_ITEM = "not a field of a TikTok contents item (facts.CONTENT_FIELDS): not sent"
CATEGORY = ("a product's category is TikTok's content_category; Segment's mapping points it at "
            "content_type, which it then does not send")
CONTENTS_IDS = "not a TikTok v1.3 properties field (facts.PROPERTIES_FIELDS): not sent"
QUERY = "TikTok's properties field for the search is search_string; query is not one"
VALUE_FROM_CONTENTS = ("without a value, ttbridge sends the products' price x quantity, as TikTok's own "
                       "server-side template does (the segment preset's value_from_contents)")
EVENT_CHANNEL = "event_channel belongs to the retired Events 1.0 offline API, not to v1.3"
EXTRA_PROPERTIES = "not a TikTok properties field: TikTok discards extra properties, ttbridge omits them"
EMPTY_CONTENTS = "ttbridge leaves out an empty contents list"
EMPTY_STRINGS = "an empty string carries nothing: ttbridge leaves the field out rather than send \"\""
ID_TEXT = "TikTok refuses a numeric ID with 40002 ('Not a valid string'): ttbridge sends it as text"
DERIVED_EVENT_ID = ("without messageId the event_id is the SHA-256 of the event (DESIGN.md: "
                    "deterministic, so TikTok deduplicates a re-send)")
TEST_CODE_TOP = "TikTok takes test_event_code at the top level, never inside data[] (the peer's bug)"
ISOLATE = ("TikTok: one bad event fails the whole batch with 40002, so ttbridge isolates it (the "
           "message names it) and resends the rest; the peer aborts them all")
NO_CONTENT_ID = ("TIKTOK_EVENTS_API.md does not make content_id required: ttbridge sends the product "
                 "without one")
# What several cases share.
RS_V1_WEB = {  # the RudderStack Events 1.0 web cases with the two sample contents
    "page": (ABSENT, RS_PAGE),
    "user.email": (ABSENT, RS_USER),
    "user.phone": (ABSENT, RS_USER),
    "user.external_id": (ABSENT, RS_EXTERNAL_ID),
    "user.locale": ("en-US", LOCALE),
    "properties.contents[0].content_type": (ABSENT, CONTENT_TYPE_ITEM),
    "properties.contents[1].content_type": (ABSENT, CONTENT_TYPE_ITEM),
    "properties.num_items": (3, NUM_ITEMS),
}
RS_V2 = {  # the RudderStack Events 2.0 cases with the two sample contents
    "properties.contents[0].content_type": (ABSENT, CONTENT_TYPE_ITEM),
    "properties.contents[1].content_type": (ABSENT, CONTENT_TYPE_ITEM),
    "properties.contents_ids": (ABSENT, CONTENTS_IDS),
    "properties.num_items": (3, NUM_ITEMS),
    "user.external_id": (ABSENT, RS_EXTERNAL_ID),
}
RS_OFFLINE = {  # the RudderStack offline cases: userId "eventIdn01", phone "1234567890"
    "properties.event_channel": (ABSENT, EVENT_CHANNEL),
    "user.phone": (ABSENT, NO_REGION + " ('1234567890')"),
    "user.external_id": (sha("eventIdn01"), USER_ID),
}
SEGMENT_USER = {  # the Segment web cases: userId "testId123", one email, one phone
    "user.email": (sha("coreytest1231@gmail.com"), ONE_AS_STRING),
    "user.phone": (sha("+15555555555"), ONE_AS_STRING),
    "user.external_id": (sha("testId123"), EXTERNAL_ID_CASE),
}
SEGMENT_QUERY = {"properties.query": (ABSENT, QUERY), "properties.search_string": ("shoes", QUERY)}
SEGMENT_PLACEHOLDERS = {  # Segment's exact bodies send these as ""
    f"user.{name}": (ABSENT, EMPTY_STRINGS)
    for name in ("first_name", "last_name", "city", "state", "country", "zip_code")}
SEGMENT_VEHICLE = {
    f"properties.{name}": (ABSENT, EXTRA_PROPERTIES)
    for name in ("postal_code", "make", "model", "year", "state_of_vehicle", "exterior_color",
                 "transmission", "body_style", "fuel_type", "trim", "vin", "interior_color",
                 "condition_of_vehicle", "mileage", "preferred_price_range")}
SEGMENT_APP = {  # the Segment App Events cases
    "user.email": (sha("test@test.com"), ONE_AS_STRING),
    "user.external_id": (sha("testId123"), EXTERNAL_ID_CASE),
    "user.phone": ([sha("+353987687687")], NOT_E164 + " ('+2132435345': 7 digits after +213)"),
    "user.locale": ("en-US", LOCALE),
}
SEGMENT_APP_OBJECT = {"app_id": "com.production.segment", "app_name": "InitechGlobal", "app_version": "545"}
CHECKOUT_STEP = (ABSENT, RS_NAME + " ('checkout step completed')")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 12_1_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Mobile/16D57")
APP_EVENTS_03_SENT = [{  # what ttbridge sends for seg-tiktok-app-events-03, which Segment refuses
    "event_source": "app", "event_source_id": "7000000000000000001",  # PLACEHOLDER_ID
    "data": [{
        "event": "Checkout", "event_id": "corey123", "event_time": 1704721970,
        "limited_data_use": False, "app": SEGMENT_APP_OBJECT,
        "user": {"email": sha("test@test.com"), "phone": [sha("+353987687687")],
                 "external_id": sha("testId123"), "ip": "0.0.0.0", "user_agent": IPHONE, "locale": "en-US",
                 "idfa": "7A3CBEA0-BDF5-11E4-8DFC-AA07A5B093DB", "idfv": "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"},
        "properties": {"value": 100, "currency": "USD", "num_items": 3, "content_type": "product",
                       "contents": [
                           {"content_id": "prod id 1", "content_name": "Choo-choo toy",
                            "content_category": "trains", "brand": "TrainCo", "price": 100, "quantity": 2},
                           {"content_name": "vroom toy", "content_category": "cars", "brand": "CarCo",
                            "price": 99, "quantity": 1}]},
    }],
}]
# The one subcase of rs-tiktok_ads-unit-v2-builtin-names that ttbridge sends.
PURCHASE_SUBCASE = CASES["rs-tiktok_ads-unit-v2-builtin-names"]["input"]["subcases"][2]["message"]

DEVIATIONS: dict[str, dict[str, tuple[Any, str]]] = {
    "rs-tiktok_ads-proc-00": {"outcome": (UNMAPPED, RS_NAME + " ('checkout step completed')")},
    "rs-tiktok_ads-proc-06": RS_V1_WEB,
    "rs-tiktok_ads-proc-17": RS_V1_WEB,  # the peer also hashes the already-hashed external_id again
    "rs-tiktok_ads-proc-18": {  # email and phone come from context.traits, a Segment path: as the peer
        **{path: why for path, why in RS_V1_WEB.items() if path not in ("user.email", "user.phone")},
    },
    "rs-tiktok_ads-proc-20": {
        "config.events": ({"abc": ["Download", "Search"], "def": ["Search"]}, CASE_SENSITIVE),
        "[0].event": ("Download", CASE_SENSITIVE),
        "[1].event": ("Search", CASE_SENSITIVE),
        **RS_V1_WEB,
    },
    "rs-tiktok_ads-proc-21": {"config.events": ({"def": ["Download"]}, CASE_SENSITIVE)},
    "rs-tiktok_ads-proc-23": {
        "config.events": ({"abc": ["Download"], "def": ["Download"]}, CASE_SENSITIVE),
        "[0].event": ("Download", CASE_SENSITIVE),
        **RS_V1_WEB,
    },
    "rs-tiktok_ads-proc-26": {"outcome": (UNMAPPED, RS_NAME + " ('checkout step completed')")},
    "rs-tiktok_ads-proc-28": {"outcome": (UNMAPPED, RS_NAME + " ('checkout step completed')")},
    "rs-tiktok_ads-proc-29": {"outcome": (UNMAPPED, CUSTOM_EVENT)},
    "rs-tiktok_ads-proc-32": {"outcome": (UNMAPPED, CUSTOM_EVENT)},
    "rs-tiktok_ads-proc-34": {
        "config.events": ({"addToCart": ["Download", "AddToWishlist"]}, CASE_SENSITIVE),
        "[0].event": ("Download", CASE_SENSITIVE),
        **RS_V2,
    },
    "rs-tiktok_ads-proc-35": {
        "config.events": ({"addToCart": ["Download", "AddToWishlist"]}, CASE_SENSITIVE),
        "[0].event": ("Download", CASE_SENSITIVE),
        **RS_V2,
        "user.phone": (ABSENT, NOT_E164_PAIR),
    },
    "rs-tiktok_ads-proc-39": {"outcome": (Refused("missing_event_name"), NO_EVENT_NAME)},
    "rs-tiktok_ads-proc-41": {
        "config.events": ({"addToCart": ["Download", "AddToWishlist"]}, CASE_SENSITIVE),
        **RS_V2,
        "properties.content_type": (ABSENT, RS_CONTENT_TYPE),
        "user.phone": (ABSENT, NOT_E164_PAIR),
    },
    "rs-tiktok_ads-proc-42": {
        "config.events": ({"addToCart": ["Download", "AddToWishlist"]}, CASE_SENSITIVE),
        "properties.contents_ids": (ABSENT, CONTENTS_IDS),
        "properties.num_items": (3, NUM_ITEMS),
        "properties.query": (ABSENT, QUERY),
        "user.external_id": (ABSENT, RS_EXTERNAL_ID),
        "user.city": (ABSENT, NO_CITY),
        "user.state": (ABSENT, NO_CITY),
        "user.country": (ABSENT, NO_CITY),
        "user.zip_code": (sha("us-1234-"), ZIP + " (' US - 1234-')"),
        "user.phone": (ABSENT, NOT_E164_PAIR),
    },
    "rs-tiktok_ads-proc-43": {
        "config.events": ({"addToCart": ["Download"]}, CASE_SENSITIVE),
        "[0].event": ("Download", CASE_SENSITIVE),
        "properties.contents[0].content_type": (ABSENT, CONTENT_TYPE_ITEM),
        "properties.contents_ids": (ABSENT, CONTENTS_IDS),
        "properties.num_items": (2, NUM_ITEMS),
        "user.external_id": (ABSENT, RS_EXTERNAL_ID),
    },
    "rs-tiktok_ads-proc-45": {"outcome": (UNMAPPED, RS_NAME + " ('checkout step completed')")},
    "rs-tiktok_ads-proc-46": {"outcome": (UNMAPPED, CUSTOM_EVENT)},
    "rs-tiktok_ads-proc-47": {"user.external_id": (ABSENT, RS_EXTERNAL_ID)},
    "rs-tiktok_ads-proc-49": {**RS_V1_WEB, "user.ttclid": (ABSENT, RS_CLICK_ID)},
    "rs-tiktok_ads-proc-51": {"outcome": (UNMAPPED, RS_NAME + " ('application approval')")},
    "rs-tiktok_ads-router-00": {"[0]": CHECKOUT_STEP, **RS_V1_WEB},
    "rs-tiktok_ads-router-03": {
        "config.events": ({"addToCart": ["CompletePayment", "Download"]}, CASE_SENSITIVE),
        "[0]": CHECKOUT_STEP, "[3]": CHECKOUT_STEP, "[4]": CHECKOUT_STEP,
        "[1]": (ABSENT, APP_FROM_RS), "[2]": (ABSENT, APP_FROM_RS),
        "job2": (Refused("event_not_for_source"), APP_FROM_RS),
    },
    "rs-tiktok_ads-router-04": {f"[{i}]": CHECKOUT_STEP for i in range(4)},
    "rs-tiktok_ads-router-06": {
        "config.events": ({"addToCart": ["CompletePayment", "Download"]}, CASE_SENSITIVE),
        "job2": (UNMAPPED, TOKEN_AT_START + "; the job's 'checkout step completed' is unmapped: " + RS_NAME),
        "[0]": CHECKOUT_STEP, "[3]": CHECKOUT_STEP, "[4]": CHECKOUT_STEP,
        "[2].event": ("Download", CASE_SENSITIVE),
        "properties.content_type": (ABSENT, RS_CONTENT_TYPE),
        **RS_V2,
    },
    "rs-tiktok_ads-router-07": {
        "config.events": ({"addToCart": ["CompletePayment", "Download"]}, CASE_SENSITIVE),
        "[0]": CHECKOUT_STEP, "[1]": CHECKOUT_STEP,
    },
    "rs-tiktok_ads-delivery-table": {"classifications[1].action": (Action.ISOLATE, ISOLATE)},
    "rs-tiktok_ads-unit-hashUserField": {
        "user.phone": (None, NOT_E164 + " ('+1234567890': 9 digits after +1)"),
    },
    "rs-tiktok_ads-unit-v2-builtin-names": {
        "subcases[2].data[0].event_id": (
            sha(json.dumps(PURCHASE_SUBCASE, sort_keys=True, separators=(",", ":"))), DERIVED_EVENT_ID),
        "subcases[3]": (UNMAPPED, RS_NAME + " ('start trial')"),
        "subcases[4]": (UNMAPPED, RS_NAME + " ('submit application')"),
    },
    "rs-tiktok_ads_offline-proc-01": {
        **RS_OFFLINE,
        "properties.contents[0].content_type": (ABSENT, CONTENT_TYPE_ITEM),
        "properties.num_items": (2, NUM_ITEMS),
        "user.phone": ("c775e7b757ede630cd0aa1113bd102661ab38829ca52a6422ab782862f268646", ONE_AS_STRING),
    },
    "rs-tiktok_ads_offline-proc-02": {"outcome": (Refused("no_identifier"), OFFLINE_NO_MATCH)},
    "rs-tiktok_ads_offline-proc-03": {"outcome": (Refused("no_identifier"), OFFLINE_NO_MATCH)},
    "rs-tiktok_ads_offline-proc-05": {
        **RS_OFFLINE,
        "properties.contents[0].content_type": (ABSENT, CONTENT_TYPE_ITEM),
        "properties.contents[1].content_type": (ABSENT, CONTENT_TYPE_ITEM),
        "properties.num_items": (14, NUM_ITEMS),
        "properties.value": (8 * 2 + 18 * 12, VALUE_FROM_CONTENTS),
        "user.email": (sha("random@mail.com"), ONE_AS_STRING),
    },
    "rs-tiktok_ads_offline-proc-06": {
        "properties.order_id": ("60241286212", ID_TEXT),
        "user.email": (["efaaf5c8803af4fbf305d7a110c832673d89ed40983770329092fd04b0ba7900",
                        "078d6c8e19f24093368d1712d7801970467f59216f7ccc087bf81b91e0e1f68f"], NO_DOUBLE_HASH),
        "user.phone": (["c4994d14e724936f1169147dddf1673a09af69b55cc54bc695dbe246bd093b05",
                        "078d6c8e19f24093368d1712d7801970467f59216f7ccc087bf81b91e0e1f68f"], NO_DOUBLE_HASH),
        "user.external_id": (sha("60241286212"), USER_ID),
    },
    "rs-tiktok_ads_offline-proc-04": {"outcome": (Refused("missing_event_name"), NO_EVENT_NAME)},
    "rs-tiktok_ads_offline-router-00": {
        **RS_OFFLINE,
        "properties.contents[0].content_type": (ABSENT, CONTENT_TYPE_ITEM),
        "properties.contents[1].content_type": (ABSENT, CONTENT_TYPE_ITEM),
        "[0]": (ABSENT, OFFLINE_NO_MATCH), "job1": (Refused("no_identifier"), OFFLINE_NO_MATCH),
        "[1].properties.num_items": (14, NUM_ITEMS),
        "[1].properties.value": (8 * 2 + 18 * 12, VALUE_FROM_CONTENTS),
        "[1].user.email": (sha("random@mail.com"), ONE_AS_STRING),
    },
    "seg-tiktok-conversions-00": {
        **SEGMENT_USER, **SEGMENT_QUERY, "properties.contents": (ABSENT, EMPTY_CONTENTS),
    },
    "seg-tiktok-conversions-01": {**SEGMENT_USER, **SEGMENT_QUERY, "properties.num_items": (2, NUM_ITEMS)},
    "seg-tiktok-conversions-02": {**SEGMENT_USER, **SEGMENT_QUERY, "properties.num_items": (2, NUM_ITEMS)},
    "seg-tiktok-conversions-03": {**SEGMENT_USER, **SEGMENT_QUERY, "properties.num_items": (2, NUM_ITEMS)},
    "seg-tiktok-conversions-05": {
        **SEGMENT_USER, **SEGMENT_QUERY, **SEGMENT_PLACEHOLDERS, "properties.num_items": (2, NUM_ITEMS),
    },
    "seg-tiktok-conversions-06": {
        **SEGMENT_USER, **SEGMENT_QUERY, **SEGMENT_PLACEHOLDERS,
        "properties.contents": (ABSENT, EMPTY_CONTENTS),
    },
    "seg-tiktok-conversions-07": {
        **SEGMENT_USER, **SEGMENT_PLACEHOLDERS, **SEGMENT_VEHICLE,
        "properties.contents": (ABSENT, EMPTY_CONTENTS),
    },
    "seg-tiktok-conversions-sandbox-05": {
        **SEGMENT_USER, **SEGMENT_QUERY, "properties.num_items": (2, NUM_ITEMS),
        "test_event_code": (ABSENT, TEST_CODE_TOP),
        "body.test_event_code": ("TEST04030", TEST_CODE_TOP),
    },
    "seg-tiktok-offline-00": {
        "properties.contents": (ABSENT, EMPTY_CONTENTS),
        "user.external_id": (sha("testId123-contact"), EXTERNAL_ID_CASE),
    },
    "seg-tiktok-offline-03": {
        **SEGMENT_QUERY,
        "properties.num_items": (2, NUM_ITEMS),
        "properties.contents[0].content_category": ("Air Force One (Size S)", CATEGORY),
        "user.external_id": (sha("testId123-complete-payment"), EXTERNAL_ID_CASE),
    },
    "seg-tiktok-app-events-00": {
        **SEGMENT_APP,
        "user.idfa": ("7A3CBEA0-BDF5-11E4-8DFC-AA07A5B093DB", RAW_IDFA),
        "app": (SEGMENT_APP_OBJECT, APP_OBJECT),
        "properties.num_items": (3, NUM_ITEMS),
    },
    "seg-tiktok-app-events-02": {
        **SEGMENT_APP, "app": (SEGMENT_APP_OBJECT, APP_OBJECT), "properties.num_items": (2, NUM_ITEMS),
    },
    "seg-tiktok-app-events-03": {
        "outcome": (APP_EVENTS_03_SENT, f"{NO_CONTENT_ID}; {RAW_IDFA}; {APP_OBJECT}"),
    },
    "seg-tiktok-conversions-formatter": {"formatPhones[0]": (None, NO_REGION + " ('12345678901234')")},
    "seg-tiktok-app-events-formatter-adid": {
        "results": (["7A3CBEA0-BDF5-11E4-8DFC-AA07A5B093DB", "7a3cbea0-bdf5-11e4-8dfc-aa07a5b093db",
                     "08f1f8e9e433f685c514154e1a5b0dfe1885c6f140a7e3eff08a037bda13dcc1"], RAW_DEVICE_IDS),
    },
}


# ============================================================================== translation
def _seconds(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


_V1_EVENT_FIELDS = {"event", "event_id", "timestamp", "properties", "context", "type", "pixel_code",
                    "event_set_id", "partner_name", "test_event_code"}
# Events 1.0 user field -> its v1.3 name; the offline API's emails/phone_numbers are lists already.
_V1_USER_FIELDS = {"email": "email", "emails": "email", "phone_number": "phone", "phone_numbers": "phone",
                   "external_id": "external_id"}


def _v1_item(event: dict) -> dict:
    """One Events 1.0 event (a /pixel/ or /offline/ track body or batch entry) -> its data[] item."""
    assert set(event) <= _V1_EVENT_FIELDS, f"untranslated field(s) {set(event) - _V1_EVENT_FIELDS}"
    item = {"event": event["event"], "event_time": _seconds(event["timestamp"]),
            "event_id": event["event_id"]}
    context = dict(event.get("context", {}))
    user = {_V1_USER_FIELDS[k]: v for k, v in context.pop("user", {}).items()}
    if "ad" in context:
        user["ttclid"] = context.pop("ad")["callback"]
    for key in ("ip", "user_agent", "locale"):
        if key in context:
            user[key] = context.pop(key)
    if "page" in context:
        item["page"] = context.pop("page")
    assert not context, f"untranslated Events 1.0 context field(s) {set(context)}"
    if user:
        item["user"] = user
    if "properties" in event:
        item["properties"] = event["properties"]
    return item


def _head(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "data"}


def translate_requests(requests: list[dict]) -> list[dict]:
    """A peer's expected requests -> the v1.3 event/track bodies carrying the same events.

    partner_name is dropped: it names the peer itself (ttbridge sends none; TikTok rejects an
    unknown one with 40063). Events 1.0 /pixel/track/ and /offline/track/ take one event per
    request, so consecutive ones to the same destination become one v1.3 body, as the peers'
    own v1.3 builders do (rs-tiktok_ads-proc-34).
    """
    bodies: list[dict] = []
    for request in requests:
        body = request["body"]
        if "data" in body:  # v1.3 already
            bodies.append({k: _source_id(body["event_source"], v) if k == "event_source_id" else v
                           for k, v in body.items() if k != "partner_name"})
            continue
        offline = "event_set_id" in body
        translated = {"event_source": "offline" if offline else "web",
                      "event_source_id": _source_id("offline" if offline else "web",
                                                    body["event_set_id" if offline else "pixel_code"]),
                      "data": [_v1_item(e) for e in body.get("batch", [body])]}
        if body.get("test_event_code"):
            translated["test_event_code"] = body["test_event_code"]
        if bodies and "batch" not in body and _head(bodies[-1]) == _head(translated):
            bodies[-1]["data"] += translated["data"]
        else:
            bodies.append(translated)
    return bodies


def translate_error(error: str, message: dict) -> Any:
    """A peer's error for one message -> ttbridge's outcome of the same meaning.

    "Not mapped to a standard event" and "not a track call" are what ttbridge calls unmapped
    (skipped and counted, never sent); a missing or non-string event name is a refusal. Any other
    error has no ttbridge counterpart and stays as it is: only a DEVIATIONS entry can match it.
    """
    if error.endswith("must be mapped to one of standard events") or \
            re.fullmatch(r"Event type \w+ is not supported", error):
        return UNMAPPED
    if error == "Event is a required field and should be a string":
        return Refused("missing_event_name" if message.get("event") in (None, "") else "invalid_event_name")
    if error == "InstrumentationError (event name required)":
        return Refused("missing_event_name")
    return error


# Segment's action field defaults (content_type "product", limited_data_use false) are settings of
# its destination; ttbridge has the same two settings.
SEGMENT_DEFAULTS = {"content_type": "product", "limited_data_use": False}
# The rest of Segment's default field mappings for its app and CRM destinations (tiktok-app-events
# common_fields.ts: app from context.app, the advertising ID from context.device.advertisingId,
# IDFA on these iOS cases, the IDFV from context.device.id; tiktok-conversions crm_fields.ts: the
# lead from properties), as a mapping file over the segment preset.
SEGMENT_SOURCE_SPECS = {
    "app": {"extends": "segment",
            "app": {"app_id": ["context.app.namespace"], "app_name": ["context.app.name"],
                    "app_version": ["context.app.version"]},
            "user": {"idfa": ["context.device.advertisingId"], "idfv": ["context.device.id"]}},
    "crm": {"extends": "segment",
            "lead": {"lead_id": ["properties.lead_id"], "lead_event_source": ["properties.lead_event_source"]}},
}


def rudderstack_events(destination_configs: list[dict]) -> dict[str, list[str]]:
    """RudderStack's eventsToStandard as ttbridge's `events` table. RudderStack looks a name up
    lowercased and sends every match, so entries differing in case are one source name."""
    spelled: dict[str, str] = {}
    events: dict[str, list[str]] = {}
    for config in destination_configs:
        for entry in config.get("eventsToStandard", []):
            targets = events.setdefault(spelled.setdefault(entry["from"].lower(), entry["from"]), [])
            if entry["to"] not in targets:
                targets.append(entry["to"])
    return events


def mapping_config(case: dict, doc: dict) -> MappingConfig:
    """MappingConfig.from_dict(doc) for the peer's settings, or, when DEVIATIONS gives the case a
    config.events, that table instead, after checking that MappingConfig refuses the peer's."""
    deviation = DEVIATIONS.get(case["id"], {}).get("config.events")
    if deviation is None:
        return MappingConfig.from_dict(doc)
    with pytest.raises(ValueError):
        MappingConfig.from_dict(doc)
    return MappingConfig.from_dict({**doc, "events": deviation[0]})


def _agreed(messages: list[dict], key: str) -> str | None:
    values = {(m.get("properties") or {}).get(key) or None for m in messages}
    return values.pop() if len(values) == 1 else None


# The peers' tests name apps and event sets with placeholders ("appIdTest", "test-event-set-id",
# RudderStack's pixelCode as an app's ID); TikTok's App IDs and event set IDs are numeric
# (app.tiktok.facts.NUMERIC_SOURCE_IDS, checked by the fake). A placeholder of those kinds becomes
# one numeric ID, on both sides: the same meaning, in TikTok's form.
PLACEHOLDER_ID = "7000000000000000001"


def _source_id(source: str, source_id: str | None) -> str | None:
    if source in NUMERIC_SOURCE_IDS and source_id and not source_id.isdigit():
        return PLACEHOLDER_ID
    return source_id


def destination_for(case: dict, messages: list[dict], settings: dict) -> tuple[str, str, str | None]:
    source, source_id, test_event_code = _peer_destination(case, messages, settings)
    return source, _source_id(source, source_id), test_event_code


def sent(destination: tuple[str, str, str | None], items: list[dict], batch_max: int = MAX_BATCH) -> Any:
    """The request bodies ttbridge sends `items` in to `destination`, after what the forwarder
    does once the pixel is known (app.mapping.sources.for_source); or Refused(reason)."""
    try:
        items = for_source(items, destination[0])
    except Refusal as refusal:
        return Refused(refusal.reason)
    return list(request_bodies(destination, items, batch_max))


def _peer_destination(case: dict, messages: list[dict], settings: dict) -> tuple[str, str, str | None]:
    """The ttbridge pixel (event_source, event_source_id, test_event_code) configured to reach the
    peer's destination. RudderStack reads eventSource, eventSetId and testEventCode per event:
    they become the pixel's settings when all the case's events agree (a pixel has one of each)."""
    if case["peer"].startswith("segment/"):
        overrides, action = case["input"].get("mapping_overrides", {}), case["input"]["action"]
        source = overrides.get("event_source") or (
            "app" if action == "reportAppEvent" else "offline" if "Offline" in action else "web")
        source_id = settings.get("pixelCode") or settings.get("eventSetID") or settings.get("appID")
        return source, source_id, overrides.get("test_event_code")
    if case["peer"].endswith("_offline_events"):
        return "offline", _agreed(messages, "eventSetId"), None
    return _agreed(messages, "eventSource") or "web", settings["pixelCode"], _agreed(messages, "testEventCode")


def outcome_of(message: dict, config: MappingConfig) -> Any:
    """map_event's outcome: the data[] items, UNMAPPED or Refused(reason)."""
    try:
        items = map_event(message, None, config, NOW)
    except Refusal as refusal:
        return Refused(refusal.reason)
    return items or UNMAPPED


# ============================================================================== the case kinds
# Each returns (ttbridge's outcome, the peer's expectation translated), in the same shape.

def run_proc(case: dict) -> tuple[Any, Any]:
    """One message -> the request bodies ttbridge builds for it, or UNMAPPED, or Refused."""
    given = case["input"]
    if "message" in given:  # RudderStack
        message, settings = given["message"], given["destination_config"]
        doc = {"events": rudderstack_events([settings])}
    else:  # Segment: one action with its field mappings
        message, settings = given["event"], given["settings"]
        doc = dict(SEGMENT_DEFAULTS)
        if "event" in given.get("mapping_overrides", {}):
            doc["events"] = {message["event"]: given["mapping_overrides"]["event"]}
        source = destination_for(case, [message], settings)[0]
        if source in SEGMENT_SOURCE_SPECS:
            doc["spec"] = SEGMENT_SOURCE_SPECS[source]
    outcome = outcome_of(message, mapping_config(case, doc))
    if isinstance(outcome, list):
        outcome = sent(destination_for(case, [message], settings), outcome)
    expected = case["expected"]
    if expected["status"] == "ok":
        return outcome, translate_requests(expected["requests"])
    return outcome, translate_error(expected["error"], message)


def run_router(case: dict) -> tuple[Any, Any]:
    """Several messages -> {"bodies": request_bodies for all their items (one pixel, the peer's
    batch size), "job<N>": the outcome of each job ttbridge refuses or the peer refuses}."""
    jobs = {job["jobId"]: job["message"] for job in case["input"]["events"]}
    settings = [job["destination_config"] for job in case["input"]["events"]]
    config = mapping_config(case, {"events": rudderstack_events(settings)})
    outcomes = {job_id: outcome_of(message, config) for job_id, message in jobs.items()}
    destination = destination_for(case, list(jobs.values()), settings[0])
    for job_id, outcome in outcomes.items():  # what the forwarder does once the pixel is known
        if isinstance(outcome, list):
            try:
                outcomes[job_id] = for_source(outcome, destination[0])
            except Refusal as refusal:
                outcomes[job_id] = Refused(refusal.reason)
    items = [item for outcome in outcomes.values() if isinstance(outcome, list) for item in outcome]
    batch_max = case["input"].get("test_overrides", {}).get("maxBatchSizeV2", MAX_BATCH)
    actual = {"bodies": list(request_bodies(destination, items, batch_max))}
    expected: dict[str, Any] = {"bodies": []}
    for output in case["expected"]["outputs"]:
        if "error" in output:
            for job_id in output["jobIds"]:
                expected[f"job{job_id}"] = translate_error(output["error"], jobs[job_id])
        else:
            expected["bodies"] += translate_requests(output["requests"])
    for job_id, outcome in outcomes.items():
        if isinstance(outcome, Refused) or f"job{job_id}" in expected:
            actual[f"job{job_id}"] = "sent" if isinstance(outcome, list) else outcome
    return actual, expected


# The peer's classification of an answer -> ttbridge's (Action, slows_down); the reason is the
# TikTok name of the code (TIKTOK_EVENTS_API.md's table) in ttbridge's words, or transport_error
# for an HTTP failure. The peer's own job status (400/429/5xx) says the same as its classification.
PEER_CLASSIFICATIONS = {"success": (Action.DONE, False), "aborted": (Action.DEAD, False),
                        "throttled": (Action.RETRY, True), "retryable": (Action.RETRY, False)}
TIKTOK_CODE_NAMES = {0: "ok", 40001: "no_permission", 40002: "invalid_parameter", 40100: "rate_limited"}


def run_delivery(case: dict) -> tuple[Any, Any]:
    """TikTok answers -> the sender's verdict on each: action, reason, whether it slows down."""
    actual, expected = [], []
    for response, peer in zip(case["input"]["responses"], case["expected"]["classifications"], strict=True):
        body = response["body"]
        answer = _read_answer(response["http_status"], json.dumps(body).encode() if isinstance(body, dict)
                              else body.encode())
        if isinstance(body, dict):
            assert (answer.code, answer.verdict) == (body["code"], verdict_for_code(body["code"]))
        verdict = answer.verdict
        actual.append({"action": verdict.action, "reason": verdict.reason, "slows_down": verdict.slows_down})
        action, slows_down = PEER_CLASSIFICATIONS[peer["classification"]]
        reason = TIKTOK_CODE_NAMES[body["code"]] if isinstance(body, dict) else "transport_error"
        expected.append({"action": action, "reason": reason, "slows_down": slows_down})
    return {"classifications": actual}, {"classifications": expected}


def _hash_user_field(case: dict) -> dict:
    user = case["input"]["user"]
    return {"user": {"external_id": normalise.hash_external_id(user["external_id"]),
                     "email": normalise.hash_email(user["email"]),
                     "phone": normalise.hash_phone(user["phone"])}}


def _builtin_names(case: dict) -> dict:
    outcomes = []
    for sub in case["input"]["subcases"]:
        settings = {**case["input"]["config_base"], **sub["config_overrides"]}
        config = mapping_config(case, {"events": rudderstack_events([settings])})
        outcome = outcome_of(sub["message"], config)
        if isinstance(outcome, list):
            outcome = sent(destination_for(case, [sub["message"]], settings), outcome)
        if isinstance(outcome, list):
            (outcome,) = outcome
        outcomes.append(outcome)
    return {"subcases": outcomes}


def _formatter(case: dict) -> dict:
    return {"formatEmails": [normalise.hash_email(v) for v in case["input"]["formatEmails"]],
            "formatPhones": [normalise.hash_phone(v) for v in case["input"]["formatPhones"]]}


def _advertising_ids(case: dict) -> dict:
    # The peer's formatter: an iOS advertising ID is the IDFA, an Android one the GAID.
    convert = {"ios": devices.idfa, "android": devices.gaid}
    return {"results": [convert[c["platform"]](c["id"]) for c in case["input"]["cases"]]}


UNIT_CASES = {  # the peer's unit under test -> the same job done by ttbridge's code
    "rs-tiktok_ads-unit-hashUserField": _hash_user_field,
    "rs-tiktok_ads-unit-v2-builtin-names": _builtin_names,
    "seg-tiktok-conversions-formatter": _formatter,
    "seg-tiktok-app-events-formatter-adid": _advertising_ids,
}


def run_unit(case: dict) -> tuple[Any, Any]:
    expected = {k: v for k, v in case["expected"].items() if k != "status"}
    if "subcases" in expected:
        expected["subcases"] = [
            translate_error(sub["error"], given["message"]) if "error" in sub
            else translate_requests([{"body": sub["body_subset"]}])[0]
            for sub, given in zip(expected["subcases"], case["input"]["subcases"], strict=True)]
    return UNIT_CASES[case["id"]](case), expected


def kind_of(case: dict) -> str:
    given = case["input"]
    if "message" in given or "event" in given:
        return "proc"
    if "events" in given:
        return "router"
    return "delivery" if "responses" in given else "unit"


RUNNERS = {"proc": run_proc, "router": run_router, "delivery": run_delivery, "unit": run_unit}


# ============================================================================== applying deviations
_KEY = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _keys(path: str) -> list[str | int]:
    return [int(index) if index else name for name, index in _KEY.findall(path)]


def _has(root: Any, path: str) -> bool:
    for key in _keys(path):
        if isinstance(root, dict) and key in root or isinstance(root, list) and key < len(root):
            root = root[key]
        else:
            return False
    return True


def _put(root: Any, path: str, value: Any) -> bool:
    """Set the value at `path` (ABSENT: delete it); whether that changed anything."""
    *keys, last = _keys(path)
    for key in keys:
        if not _has(root, f"[{key}]" if isinstance(key, int) else key):
            if value is ABSENT:
                return False
            root[key] = {}
        root = root[key]
    present = _has(root, f"[{last}]" if isinstance(last, int) else last)
    if value is ABSENT:
        if present:
            del root[last]
        return present
    if present and root[last] == value:
        return False
    root[last] = copy.deepcopy(value)
    return True


def _is_item_path(path: str) -> bool:
    return path not in ("outcome", "config.events") and not path.startswith(("job", "body.", "["))


def _deviate_bodies(bodies: list[dict], deviations: dict, case_id: str) -> list[dict]:
    """The item and body deviations applied to request bodies; bodies left empty are dropped."""
    items = [item for body in bodies for item in body["data"]]
    dropped = set()
    for path, (value, _) in deviations.items():
        if path.startswith("["):
            index, rest = re.fullmatch(r"\[(\d+)\]\.?(.*)", path).groups()
            if rest:
                changed = _put(items[int(index)], rest, value)
            else:
                assert value is ABSENT, f"{case_id}: {path}: only ABSENT replaces a whole item"
                changed = int(index) not in dropped
                dropped.add(int(index))
        elif path.startswith("body."):
            changed = any([_put(body, path[5:], value) for body in bodies])  # noqa: C419 every body
        elif _is_item_path(path):
            changed = any([_put(item, path, value) for item in items])  # noqa: C419 every item
        else:
            continue
        assert changed, f"{case_id}: the deviation {path} changes nothing"
    out, start = [], 0
    for body in bodies:
        indices = range(start, start + len(body["data"]))
        data = [items[i] for i in indices if i not in dropped]
        start += len(body["data"])
        if data:
            out.append({**_head(body), "data": data})
    return out


def deviate(kind: str, expected: Any, deviations: dict, case_id: str) -> Any:
    """The peer's translated expectation with the case's DEVIATIONS applied."""
    expected = copy.deepcopy(expected)
    if "outcome" in deviations:
        assert expected != deviations["outcome"][0], f"{case_id}: the outcome changes nothing"
        return copy.deepcopy(deviations["outcome"][0])
    if kind == "proc" and isinstance(expected, list):
        return _deviate_bodies(expected, deviations, case_id)
    if kind == "router":
        expected["bodies"] = _deviate_bodies(expected["bodies"], deviations, case_id)
    for path, (value, _) in deviations.items():
        if path != "config.events" and (kind != "router" or path.startswith("job")):
            assert _put(expected, path, value), f"{case_id}: the deviation {path} changes nothing"
    return expected


def sent_bodies(kind: str, outcome: Any) -> list[dict]:
    if kind == "proc":
        return outcome if isinstance(outcome, list) else []
    if kind == "router":
        return outcome["bodies"]
    return [sub for sub in outcome.get("subcases", []) if isinstance(sub, dict)]


# ============================================================================== the tests
CASE_IDS = (
    "rs-tiktok_ads-proc-00", "rs-tiktok_ads-proc-03", "rs-tiktok_ads-proc-06", "rs-tiktok_ads-proc-08",
    "rs-tiktok_ads-proc-14", "rs-tiktok_ads-proc-17", "rs-tiktok_ads-proc-18", "rs-tiktok_ads-proc-20",
    "rs-tiktok_ads-proc-21", "rs-tiktok_ads-proc-23", "rs-tiktok_ads-proc-26", "rs-tiktok_ads-proc-28",
    "rs-tiktok_ads-proc-29", "rs-tiktok_ads-proc-30", "rs-tiktok_ads-proc-32", "rs-tiktok_ads-proc-34",
    "rs-tiktok_ads-proc-35", "rs-tiktok_ads-proc-39", "rs-tiktok_ads-proc-41", "rs-tiktok_ads-proc-42",
    "rs-tiktok_ads-proc-43", "rs-tiktok_ads-proc-45", "rs-tiktok_ads-proc-46", "rs-tiktok_ads-proc-47",
    "rs-tiktok_ads-proc-48", "rs-tiktok_ads-proc-49", "rs-tiktok_ads-proc-51",
    "rs-tiktok_ads-router-00", "rs-tiktok_ads-router-03", "rs-tiktok_ads-router-04",
    "rs-tiktok_ads-router-06", "rs-tiktok_ads-router-07", "rs-tiktok_ads-delivery-table",
    "rs-tiktok_ads-unit-hashUserField", "rs-tiktok_ads-unit-v2-builtin-names",
    "rs-tiktok_ads_offline-proc-01", "rs-tiktok_ads_offline-proc-02", "rs-tiktok_ads_offline-proc-03",
    "rs-tiktok_ads_offline-proc-05", "rs-tiktok_ads_offline-proc-06", "rs-tiktok_ads_offline-proc-04",
    "rs-tiktok_ads_offline-router-00",
    "seg-tiktok-conversions-00", "seg-tiktok-conversions-01", "seg-tiktok-conversions-02",
    "seg-tiktok-conversions-03", "seg-tiktok-conversions-05", "seg-tiktok-conversions-06",
    "seg-tiktok-conversions-07", "seg-tiktok-conversions-sandbox-05", "seg-tiktok-offline-00",
    "seg-tiktok-offline-03", "seg-tiktok-app-events-00", "seg-tiktok-app-events-02",
    "seg-tiktok-app-events-03", "seg-tiktok-conversions-formatter", "seg-tiktok-app-events-formatter-adid",
)


def test_every_reference_case_is_run():
    assert len(CASE_IDS) == len(set(CASE_IDS)) == 57
    assert set(CASE_IDS) == set(CASES)


def test_every_deviation_is_for_a_case_and_says_why():
    assert set(DEVIATIONS) <= set(CASES)
    for case_id, deviations in DEVIATIONS.items():
        assert deviations, case_id
        for path, (_, why) in deviations.items():
            assert isinstance(why, str) and len(why) > 30, (case_id, path)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_reference_case(case_id):
    case = CASES[case_id]
    kind = kind_of(case)
    actual, peer = RUNNERS[kind](case)
    expected = deviate(kind, peer, DEVIATIONS.get(case_id, {}), case_id)
    for body in sent_bodies(kind, actual):
        assert check_request(body, now=NOW) == (0, "OK")
    for request in case["expected"].get("requests", []):  # what the peer's subset test requires absent
        for path in request.get("body_keys_expected_absent", []):
            assert isinstance(actual, list) and not _has(actual[0], path), path
    if kind == "proc" and isinstance(actual, list) and isinstance(expected, list):
        # The data[] items first, for a readable diff; then the whole bodies.
        assert [i for b in actual for i in b["data"]] == [i for b in expected for i in b["data"]]
    assert actual == expected
