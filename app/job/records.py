"""The retry and dead-letter records (schemas in topics/tiktok-retry.json and tiktok-dlq.json).

A retry record holds the ready-to-send request body (PII already hashed) — never the token.
Messages quote answers and exceptions, which can echo the token: they are redacted here, the
last step before anything is written (app/tiktok/redact.py).
"""
from __future__ import annotations

import base64
from typing import Any

import orjson

from app.tiktok.redact import MAX_TEXT, redact

__all__ = ["retry_record", "dead_letter", "dead_letter_from_retry", "encode",
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
