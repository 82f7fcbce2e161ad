"""The retry and dead-letter records (schemas in app/topics/tiktok-retry.json and tiktok-dlq.json).

A retry record holds the ready-to-send request body (PII already hashed) — never the token.
Messages quote answers and exceptions, which can echo the token: they are redacted here, the
last step before anything is written (app/tiktok/redact.py).
"""
from __future__ import annotations

import base64
from typing import Any

import orjson

from app.mapping import values
from app.mapping.spec import Plan
from app.tiktok.redact import MAX_TEXT, redact

__all__ = ["retry_record", "dead_letter", "dead_letter_from_retry", "encode", "hash_original",
           "MAX_RECORD_BYTES", "MAX_ORIGINAL_BYTES"]

# Kafka refuses records over its max.message.bytes (1 MiB by default), and a refused write would
# be retried forever: every record we write stays under this, with room for headers and framing.
MAX_RECORD_BYTES = 900_000
# What a dead letter keeps of an original that cannot fit (over max_message_bytes, or text whose
# JSON escaping blows it up): the first bytes, base64 (4/3 of this), flagged as truncated.
MAX_ORIGINAL_BYTES = 512 * 1024


def retry_record(request: dict, pixel_code: str, attempt: int, not_before: float,
                 first_failed_at: float, last_error: dict) -> dict[str, Any]:
    if "message" in last_error:
        last_error = {**last_error, "message": redact(last_error["message"], MAX_TEXT)}
    return {"request": request, "pixel_code": pixel_code, "attempt": attempt,
            "not_before": not_before, "first_failed_at": first_failed_at, "last_error": last_error}


def dead_letter(reason: str, message: str, stage: str, now: float, *, attempts: int = 0,
                first_failed_at: float | None = None, source: dict | None = None,
                pixel_code: str | None = None, code: int | None = None,
                request: dict | None = None, original: bytes | None = None) -> dict[str, Any]:
    """One DLQ record. `original` is the raw input for events that never mapped; `request` the
    TikTok body for events that did."""
    record: dict[str, Any] = {
        "reason": reason, "message": redact(message, MAX_TEXT), "stage": stage, "attempts": attempts,
        "first_failed_at": now if first_failed_at is None else first_failed_at,
        "last_failed_at": now, "source": source, "pixel_code": pixel_code,
    }
    if code is not None:
        record["code"] = code
    if request is not None:
        record["request"] = request
    if original is not None:
        try:
            record["original"] = original.decode("utf-8")
            record["original_base64"] = False
        except UnicodeDecodeError:
            record["original"] = base64.b64encode(original).decode("ascii")
            record["original_base64"] = True
    return record


def hash_original(record: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """`[ttbridge] dlq_original = "hashed"`: the dead letter's original with the PII its input
    shape reads (plan.hashed_user: emails, phones, external IDs, names, zip codes) hashed as
    TikTok takes it; a value that cannot be hashed (an email that is not one, a phone with no
    E.164 form, a wrong type) is removed rather than kept raw. An original that is not a JSON
    object (or nested deeper than orjson writes) cannot be searched for PII: it is not kept.
    Flagged `original_hashed`: such a record is no longer the producer's input, and replay does
    not send it back as input."""
    if record.get("original") is None:
        return record
    raw = base64.b64decode(record["original"]) if record["original_base64"] else record["original"]
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    out = {k: v for k, v in record.items() if k not in ("original", "original_base64")}
    out["original_hashed"] = True
    if not isinstance(doc, dict):
        return out
    roots = [doc]
    if plan.batch_path is not None:  # a batch: an event's paths are in each element of its array,
        items = doc.get(plan.batch_path[0])  # and those under `batch.` in the message itself
        roots = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    for f in plan.hashed_user:
        for keys in f.paths:
            if plan.batch_path is not None and keys[0] == "batch":
                _hash_at(doc, keys[1:], f.convert)
                continue
            for root in roots:
                _hash_at(root, keys, f.convert)
    try:
        out.update(original=orjson.dumps(doc).decode("utf-8"), original_base64=False)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: not kept
        pass
    return out


def _hash_at(root: Any, keys: tuple, convert) -> None:
    if not keys:
        return
    parent = values.get(root, keys[:-1]) if len(keys) > 1 else root
    last = keys[-1]
    if not isinstance(parent, dict) or not isinstance(last, str) or last not in parent:
        return
    try:
        hashed = convert(parent[last])
    except (TypeError, ValueError, RecursionError):
        hashed = None
    if hashed:
        parent[last] = hashed
    else:
        del parent[last]


def dead_letter_from_retry(retry: dict, reason: str, message: str, now: float,
                           code: int | None = None) -> dict[str, Any]:
    return dead_letter(reason, message, "retry", now, attempts=retry["attempt"],
                       first_failed_at=retry["first_failed_at"], pixel_code=retry["pixel_code"],
                       code=code, request=retry["request"])


def encode(record: dict[str, Any]) -> list[bytes]:
    """The record as JSON, in as many Kafka records as it takes to stay under MAX_RECORD_BYTES:
    a request body too big for one record (up to 1000 events) is split into halves, each a
    record of its own with the same metadata (TikTok accepts any batch size up to 1000); an
    original that cannot fit is kept as base64 of its first MAX_ORIGINAL_BYTES."""
    raw = orjson.dumps(record)
    if len(raw) <= MAX_RECORD_BYTES:
        return [raw]
    request = record.get("request")
    if request is not None and len(request["data"]) > 1:
        half = len(request["data"]) // 2
        return [*encode({**record, "request": {**request, "data": request["data"][:half]}}),
                *encode({**record, "request": {**request, "data": request["data"][half:]}})]
    if record.get("original") is not None:
        original = (base64.b64decode(record["original"]) if record["original_base64"]
                    else record["original"].encode("utf-8"))
        kept = original[:MAX_ORIGINAL_BYTES]
        return [orjson.dumps({**record, "original": base64.b64encode(kept).decode("ascii"),
                       "original_base64": True, "original_truncated": len(kept) < len(original),
                       "original_bytes": len(original)})]
    # One mapped event this big cannot come from an input within max_message_bytes; keep the
    # record (and its reason) rather than block the partition on a write Kafka would refuse.
    return [orjson.dumps({**record, "request": None,
                          "message": f"request of {len(raw)} bytes dropped: over the Kafka record limit; "
                                     + record.get("message", "")[:1000]})]
