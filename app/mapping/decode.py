"""Decode and validate raw Kafka messages: tracking events and clicks.

Anything unusable raises Refusal with a machine-readable reason; the caller dead-letters it with
the original bytes. Plain functions over bytes and dicts: this is the hot path.
"""
from __future__ import annotations

import orjson

from app.mapping.events import MappingConfig, Refusal, click_id_of, tiktok_names
from app.mapping.values import get, parse_timestamp, ttclid_from_url

__all__ = ["decode_object", "decode_event", "decode_click", "click_from_landing", "click_record", "DECODE_REASONS",
           "CLICK_SKIP_REASONS"]

DECODE_REASONS = (
    "too_large",           # the message is over max_message_bytes
    "invalid_json",        # not JSON (or not UTF-8)
    "not_an_object",       # JSON, but not an object
    "missing_event_name",  # a conversion without a name where its shape's spec says it is
    "invalid_event_name",  # the name is not a string
    "unmapped_event",      # a name the [events] table lacks, for a spec with event.unmapped = "refuse"
    "invalid_field",       # the kind (Segment's `type`) is not a string
)

# What decode_click refuses. The clicks table counts and skips these (clicks_refused{reason},
# app.job.clicks): every worker reads every click, so none of them dead-letters one.
CLICK_SKIP_REASONS = (
    "too_large", "invalid_json", "not_an_object",  # as for an event
    "missing_click_id",    # a click without click_id
    "invalid_click",       # a click field of the wrong type
    "invalid_timestamp",   # a click whose timestamp is not a time
)

_CLICK_ID_AT_TOP = MappingConfig(click_id_paths=("click_id",))
_CLICK_TEXT_FIELDS = ("ttclid", "ttp", "ip", "user_agent", "url", "referrer")


def _object(raw: bytes, max_bytes: int) -> dict:
    if raw is None:
        raise Refusal("invalid_json", "empty message (a tombstone?)")
    if len(raw) > max_bytes:
        raise Refusal("too_large", f"message is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Refusal("invalid_json", str(e)) from None
    if not isinstance(doc, dict):
        raise Refusal("not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def decode_object(raw: bytes, max_bytes: int) -> dict:
    """A message that must be one JSON object (a tracking event, or a batch of them)."""
    return _object(raw, max_bytes)


def decode_event(raw: bytes, max_bytes: int, config: MappingConfig) -> tuple[dict, tuple[str, ...]]:
    """(the event, its TikTok names) in the input shape `config` reads; () when it is not sent
    (app.mapping.events.skip_reason says why). Refuses an event with no usable name."""
    event = _object(raw, max_bytes)
    return event, tiktok_names(event, config)


def decode_click(raw: bytes, max_bytes: int) -> tuple[str, dict]:
    """(click_id, the record stored in the clicks table). Every worker runs this on every click
    (app.job.clicks), so the common case (a string ID, string fields) reads each field once."""
    doc = _object(raw, max_bytes)
    click_id = doc.get("click_id")
    if type(click_id) is str:
        click_id = click_id.strip() or None
    else:  # the same reading of the ID as on the conversion side (1234.0 and "1234" are one click)
        click_id = click_id_of(doc, _CLICK_ID_AT_TOP)
    if click_id is None:
        raise Refusal("missing_click_id", "click_id: missing or not a string")
    record = {}
    for key in _CLICK_TEXT_FIELDS:
        value = doc.get(key)
        if value is None:
            continue
        if type(value) is not str:
            raise Refusal("invalid_click", f"{key}: expected a string, got {type(value).__name__}")
        if value:
            record[key] = value
    # The timestamp must be a time: a click of unknown age can't be held to the attribution window.
    clicked_at = parse_timestamp(doc.get("timestamp"), "timestamp")
    if "ttclid" not in record:
        ttclid = ttclid_from_url(record.get("url"))
        if ttclid:
            record = {"ttclid": ttclid, **record}
    record["clicked_at"] = clicked_at
    return click_id, record


def click_from_landing(event: dict, config: MappingConfig) -> tuple[str, dict] | None:
    """A tracking event with a click ID and a ttclid in its page URL is a landing: record it."""
    plan = config.plan
    url, ttclid = None, None
    for keys in plan.ttclid_urls:
        url = get(event, keys)
        ttclid = ttclid_from_url(url)
        if ttclid:
            break
    if ttclid is None:
        return None
    click_id = click_id_of(event, config)
    if click_id is None:
        return None
    stamp = next((v for v in (get(event, k) for k in plan.timestamp_paths) if v not in (None, "")), None)
    try:
        clicked_at = parse_timestamp(stamp, unit=plan.timestamp_unit)
    except Refusal:
        return None  # the event itself will be refused with its reason downstream

    def raw(f) -> str | None:  # click_record keeps strings only
        return next((v for v in (get(event, k) for k in f.paths) if v is not None), None)
    fields = {f.name: f for f in plan.plain_user}
    return click_id, click_record(
        clicked_at, ttclid=ttclid, url=url, ip=raw(fields["ip"]) if "ip" in fields else None,
        user_agent=raw(fields["user_agent"]) if "user_agent" in fields else None,
        referrer=raw(plan.page_referrer), ttp=raw(plan.ttp))


def click_record(clicked_at: float, **texts) -> dict:
    """A click as the clicks table stores it: `clicked_at` (Unix seconds) and those of
    ttclid, ttp, ip, user_agent, url and referrer that are non-empty strings."""
    record = {k: v for k, v in texts.items() if v and isinstance(v, str)}
    record["clicked_at"] = clicked_at
    return record
