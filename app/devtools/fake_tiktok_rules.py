"""The fake TikTok Events API's validation rules: what TikTok refuses, and with which code.

check_request() is pure validation of one parsed /event/track/ body, at least as strict as TikTok:
it reads the same tables in app.tiktok.facts as the mapping does. The server in app.devtools.fake_tiktok answers
with it; property-based tests elsewhere call it to prove that what they emit would pass.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, NoReturn

from app.tiktok.facts import (
    CONTENT_FIELDS,
    CONTENT_TYPES,
    CURRENCIES,
    EVENT_FIELDS,
    EVENT_SOURCES,
    HASHED_USER_FIELDS,
    LEAD_FIELDS,
    MAX_BATCH,
    PAGE_FIELDS,
    PROPERTIES_FIELDS,
    STANDARD_EVENTS,
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
# event_time must be Unix seconds. Before 2001-09 (1e9) is surely a bug; more than a day ahead
# means a wrong clock or milliseconds (which also land far in the future).
_MIN_EVENT_TIME = 1_000_000_000
_MAX_FUTURE_S = 86_400


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


_USER = _object(USER_FIELDS, {
    name: _hashed if name in HASHED_USER_FIELDS else _string for name in sorted(USER_FIELDS)
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
_LEAD = _object(LEAD_FIELDS, {name: _string for name in sorted(LEAD_FIELDS)})
_EVENT_NAME = _one_of(STANDARD_EVENTS, "Not a standard event name.")
_EVENT_SOURCE = _one_of(EVENT_SOURCES, "Must be one of: " + ", ".join(sorted(EVENT_SOURCES)))
# The parts of an event that need no context; event, event_time, event_id and lead are checked by
# hand in _check_event because they are required, depend on the clock, or on event_source.
_EVENT_PARTS = {"user": _USER, "page": _PAGE, "properties": _PROPERTIES,
                "limited_data_use": _boolean}


def _check_event_time(value: Any, path: str, now: float) -> None:
    _integer(value, path)
    if value > now + _MAX_FUTURE_S:
        _fail(path, "Must be Unix seconds, not in the future (milliseconds?).")
    if value < _MIN_EVENT_TIME:
        _fail(path, "Must be Unix seconds.")


def _check_event(item: Any, path: str, event_source: str, now: float) -> None:
    if not isinstance(item, dict):
        _fail(path, "Not a valid mapping type.")
    for name in item:
        if name not in EVENT_FIELDS:
            _fail(f"{path}.{name}", "Unknown field.")
    for required in ("event", "event_time"):
        if required not in item:
            _fail(f"{path}.{required}", "Missing data for required field.")
    _EVENT_NAME(item["event"], f"{path}.event")
    _check_event_time(item["event_time"], f"{path}.event_time", now)
    if "event_id" in item:
        _non_empty_string(item["event_id"], f"{path}.event_id")
    for name, check in _EVENT_PARTS.items():
        if name in item:
            check(item[name], f"{path}.{name}")
    if "lead" in item:
        if event_source != "crm":
            _fail(f"{path}.lead", "Only allowed when event_source is crm.")
        _LEAD(item["lead"], f"{path}.lead")


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
