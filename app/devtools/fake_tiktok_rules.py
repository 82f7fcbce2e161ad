"""The fake TikTok Events API's validation rules: what TikTok refuses, and with which code.

check_request() is pure validation of one parsed /event/track/ body, at least as strict as TikTok:
it reads the same tables in app.tiktok.facts as the mapping does. Each event source has its own
rules (facts' "event sources" section): the kind of event_source_id, the event names, which
objects and user fields an item may carry, and which it must (crm: lead.lead_id; app:
app.app_id; offline: an email or phone). The server in app.devtools.fake_tiktok answers
with it; property-based tests elsewhere call it to prove that what they emit would pass.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, NoReturn

from app.mapping.config import DEFAULT_MAX_FUTURE_S
from app.tiktok.facts import (
    APP_FIELDS,
    ATT_STATUSES,
    CONTENT_FIELDS,
    CONTENT_TYPES,
    CURRENCIES,
    EVENT_FIELDS,
    EVENT_SOURCES,
    HASHED_USER_FIELDS,
    LEAD_FIELDS,
    MAX_BATCH,
    NUMERIC_SOURCE_IDS,
    OFFLINE_IDENTIFIERS,
    PAGE_FIELDS,
    PROPERTIES_FIELDS,
    SOURCE_EVENTS,
    SOURCE_ITEM_FIELDS,
    SOURCE_USER_FIELDS,
    USER_FIELDS,
    Code,
)

__all__ = ["check_request", "INVALID_PARTNER"]

# Not in app.tiktok.facts.Code because we never send partner_name; only the fake answers it.
INVALID_PARTNER = 40063

TOP_LEVEL_FIELDS = frozenset({
    "event_source", "event_source_id", "test_event_code", "data", "partner_name",
})
# What our normaliser emits: SHA-256 as lowercase hex. Anything else is raw (or badly hashed) PII.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]+")
# An advertising ID (IDFA, GAID) is a UUID.
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_SOURCE_ID_KINDS = {"app": "TikTok App ID", "offline": "Offline Event Set ID", "crm": "CRM Event Set ID"}
# event_time must be Unix seconds. Before 2001-09 (1e9) is surely a bug. Ahead of now by more than
# ttbridge's default allowed clock skew (max_future_s) is refused: TikTok's own limit is
# unconfirmed, so the fake is at least as strict as what ttbridge sends by default.
_MIN_EVENT_TIME = 1_000_000_000
_MAX_FUTURE_S = DEFAULT_MAX_FUTURE_S


# --------------------------------------------------------------------------- request validation

class _Reject(Exception):
    """args = (code, message) of the first problem: TikTok reports one, fails the whole request."""


def _fail(path: str, problem: str, code: int = Code.INVALID_PARAMETER) -> NoReturn:
    # TikTok's style: "Batch.0.properties.contents.0.content_id: Not a valid string."
    raise _Reject(code, f"{path}: {problem}")


def _is_number(value: Any) -> bool:
    # bool is an int in Python, but JSON true is not a number to TikTok; NaN/inf are not JSON.
    # (isfinite only on floats: it overflows on a huge int.)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


# A checker takes a value and its path ("Batch.0.user.email") and raises _Reject on a problem.
Check = Callable[[Any, str], None]


def _rule(is_valid: Callable[[Any], bool], problem: str) -> Check:
    def check(value: Any, path: str) -> None:
        if not is_valid(value):
            _fail(path, problem)
    return check


# Conditions short-circuit on the type first, so e.g. an unhashable list never reaches `in`.
_string = _rule(lambda v: isinstance(v, str), "Not a valid string.")
_non_empty_string = _rule(lambda v: isinstance(v, str) and v.strip() != "",
                          "Not a valid string (must not be empty).")
_integer = _rule(lambda v: isinstance(v, int) and not isinstance(v, bool), "Not a valid integer.")
_boolean = _rule(lambda v: isinstance(v, bool), "Not a valid boolean.")
_number = _rule(_is_number, "Not a valid number.")
_quantity = _rule(lambda v: _is_number(v) and v >= 0, "Not a valid number >= 0.")
# TikTok fails the event when the page URL lacks a scheme.
_url = _rule(lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
             "Not a valid URL (must start with http:// or https://).")


def _one_of(allowed: frozenset[str], problem: str) -> Check:
    return _rule(lambda v: isinstance(v, str) and v in allowed, problem)


def _hashed(value: Any, path: str) -> None:
    # The 2.0 docs type these as arrays; single strings are accepted in practice. Both: hashed.
    items = enumerate(value) if isinstance(value, list) else [(None, value)]
    for j, item in items:
        item_path = path if j is None else f"{path}.{j}"
        _string(item, item_path)
        if not _SHA256_HEX.fullmatch(item):
            _fail(item_path, "Must be SHA-256 hashed (64 lowercase hex characters).",
                  Code.PII_NOT_HASHED)


def _object(fields: frozenset[str], checks: dict[str, Check]) -> Check:
    """A checker for a JSON object whose fields are exactly those in app.tiktok.facts's table."""
    # The tables in app.tiktok.facts are the contract: fail at import if this file drifts from them.
    if set(checks) != fields:
        raise RuntimeError(f"fake_tiktok out of step with app.tiktok.facts: {set(checks) ^ fields}")

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, "Not a valid mapping type.")
        for name in value:
            if name not in fields:
                _fail(f"{path}.{name}", "Unknown field.")
        for name, check_field in checks.items():
            if name in value:
                check_field(value[name], f"{path}.{name}")
    return check


def _list_of(check_item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            _fail(path, "Not a valid list.")
        for j, item in enumerate(value):
            check_item(item, f"{path}.{j}")
    return check


def _advertising_id(case: Callable[[str], str], rule: str) -> Check:
    """IDFA (raw in UPPERCASE) or GAID (raw in lowercase): a UUID written so, or its SHA-256."""
    def check(value: Any, path: str) -> None:
        _non_empty_string(value, path)
        if not (_SHA256_HEX.fullmatch(value) or _UUID.fullmatch(value) and value == case(value)):
            _fail(path, f"Not a valid ID ({rule}, or its SHA-256 as 64 lowercase hex characters).")
    return check


_DEVICE = {
    "idfa": _advertising_id(str.upper, "a raw IDFA is a UUID in UPPERCASE"),
    "gaid": _advertising_id(str.lower, "a raw GAID is a UUID in lowercase"),
    "idfv": _non_empty_string,
    "att_status": _one_of(ATT_STATUSES, "Must be one of: " + ", ".join(sorted(ATT_STATUSES))),
}
_USER = _object(USER_FIELDS, {
    name: _hashed if name in HASHED_USER_FIELDS else _DEVICE.get(name, _string)
    for name in sorted(USER_FIELDS)
})
_PAGE = _object(PAGE_FIELDS, {"url": _url, "referrer": _string})
_CONTENT = _object(CONTENT_FIELDS, {
    "content_id": _string, "content_name": _string, "content_category": _string,
    "price": _number, "quantity": _quantity, "brand": _string,
})
_PROPERTIES = _object(PROPERTIES_FIELDS, {
    "contents": _list_of(_CONTENT),
    "content_type": _one_of(CONTENT_TYPES, "Must be one of: " + ", ".join(sorted(CONTENT_TYPES))),
    "currency": _one_of(CURRENCIES, "Not a valid ISO 4217 currency code."),
    "value": _number, "num_items": _integer, "order_id": _string, "shop_id": _string,
    "description": _string, "search_string": _string,
})
_LEAD = _object(LEAD_FIELDS, {"lead_id": _non_empty_string, "lead_event_source": _string})
_APP = _object(APP_FIELDS, {"app_id": _non_empty_string, "app_name": _string, "app_version": _string})
_EVENT_NAMES = {
    "web": _one_of(SOURCE_EVENTS["web"], "Not a standard event name."),
    "offline": _one_of(SOURCE_EVENTS["offline"], "Not a standard event name."),
    "app": _one_of(SOURCE_EVENTS["app"], "Not an app standard event name."),
    "crm": _non_empty_string,  # SOURCE_EVENTS["crm"] is None: a CRM event set's own names
}
_EVENT_SOURCE = _one_of(EVENT_SOURCES, "Must be one of: " + ", ".join(sorted(EVENT_SOURCES)))
# The parts of an event that need no context; event, event_time and event_id are checked by hand
# in _check_event because they are required, depend on the clock, or on event_source. Which parts
# an event may (or must) have depends on event_source too: _check_source.
_EVENT_PARTS = {"user": _USER, "page": _PAGE, "properties": _PROPERTIES,
                "limited_data_use": _boolean, "lead": _LEAD, "app": _APP}


def _check_event_time(value: Any, path: str, now: float) -> None:
    _integer(value, path)
    if value > now + _MAX_FUTURE_S:
        _fail(path, "Must be Unix seconds, not in the future (milliseconds?).")
    if value < _MIN_EVENT_TIME:
        _fail(path, "Must be Unix seconds.")


def _only_for(name: str, tables: dict[str, frozenset[str]]) -> str:
    sources = " or ".join(source for source in sorted(tables) if name in tables[source])
    return f"Only allowed when event_source is {sources}."


def _check_source(item: dict, path: str, source: str) -> None:
    """What `source` allows and requires of an item, once its parts are known to be well typed."""
    for name in item:
        if name not in SOURCE_ITEM_FIELDS[source]:
            _fail(f"{path}.{name}", _only_for(name, SOURCE_ITEM_FIELDS))
    user = item.get("user", {})
    for name in user:
        if name not in SOURCE_USER_FIELDS[source]:
            _fail(f"{path}.user.{name}", _only_for(name, SOURCE_USER_FIELDS))
    if source == "crm":
        if "lead" not in item:
            _fail(f"{path}.lead", "Missing data for required field (CRM events).")
        if "lead_id" not in item["lead"]:
            _fail(f"{path}.lead.lead_id", "Missing data for required field (CRM events).")
    elif source == "app":
        if "app" not in item:
            _fail(f"{path}.app", "Missing data for required field (app events).")
        if "app_id" not in item["app"]:
            _fail(f"{path}.app.app_id", "Missing data for required field (app events).")
    elif source == "offline" and not any(user.get(name) for name in OFFLINE_IDENTIFIERS):
        _fail(f"{path}.user", "Offline events are matched by email or phone: send at least one.")


def _check_event(item: Any, path: str, event_source: str, now: float) -> None:
    if not isinstance(item, dict):
        _fail(path, "Not a valid mapping type.")
    for name in item:
        if name not in EVENT_FIELDS:
            _fail(f"{path}.{name}", "Unknown field.")
    for required in ("event", "event_time"):
        if required not in item:
            _fail(f"{path}.{required}", "Missing data for required field.")
    _EVENT_NAMES[event_source](item["event"], f"{path}.event")
    _check_event_time(item["event_time"], f"{path}.event_time", now)
    if "event_id" in item:
        _non_empty_string(item["event_id"], f"{path}.event_id")
    for name, check in _EVENT_PARTS.items():
        if name in item:
            check(item[name], f"{path}.{name}")
    _check_source(item, path, event_source)


def _check_body(body: Any, pixels_allowed: frozenset[str] | None, now: float) -> None:
    if not isinstance(body, dict):
        raise _Reject(Code.INVALID_PARAMETER, "Request body must be a JSON object.")
    # We never send partner_name, and TikTok rejects one it does not know: refuse it outright.
    if "partner_name" in body:
        raise _Reject(INVALID_PARTNER, "Invalid partner_name")
    for name in body:
        if name not in TOP_LEVEL_FIELDS:
            _fail(name, "Unknown field.")
    for required in ("event_source", "event_source_id", "data"):
        if required not in body:
            _fail(required, "Missing data for required field.")
    _EVENT_SOURCE(body["event_source"], "event_source")
    source_id = body["event_source_id"]
    _non_empty_string(source_id, "event_source_id")
    # A pixel code where an event set or app ID belongs (or the other way round) is the usual
    # mistake: the kinds differ in shape (facts.NUMERIC_SOURCE_IDS).
    numeric = _DIGITS.fullmatch(source_id) is not None
    if body["event_source"] in NUMERIC_SOURCE_IDS and not numeric:
        _fail("event_source_id", f"Not a valid {_SOURCE_ID_KINDS[body['event_source']]} (digits only).")
    if body["event_source"] == "web" and numeric:
        _fail("event_source_id", "Not a valid Pixel Code (an all-digit ID is an event set or app ID).")
    # Permission comes before the payload: TikTok authorises a request before it reads the events.
    if pixels_allowed is not None and source_id not in pixels_allowed:
        raise _Reject(Code.NO_PERMISSION, f"No permission to operate pixel code: {source_id}")
    if "test_event_code" in body:
        _string(body["test_event_code"], "test_event_code")
    data = body["data"]
    if not isinstance(data, list):
        _fail("data", "Not a valid list.")
    if not data:
        _fail("data", f"Length must be between 1 and {MAX_BATCH}.")
    if len(data) > MAX_BATCH:
        _fail("data", f"Length must be between 1 and {MAX_BATCH}.", Code.INVALID_BATCH_SIZE)
    for i, item in enumerate(data):
        _check_event(item, f"Batch.{i}", body["event_source"], now)


def check_request(body: object, pixels_allowed: frozenset[str] | None = None, *,
                  now: float | None = None) -> tuple[int, str]:
    """Validate a parsed /event/track/ body like TikTok does; (0, "OK") when it would be accepted.

    Pure: no I/O, no token checks (those need headers). The pixel (event_source_id) is checked
    against pixels_allowed only when it is given. `now` (Unix seconds) bounds event_time; the clock
    by default.
    """
    try:
        _check_body(body, pixels_allowed, time.time() if now is None else now)
    except _Reject as reject:
        return reject.args
    return Code.OK, "OK"
