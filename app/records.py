"""The retry and dead-letter records (schemas in topics/tiktok-retry.json and tiktok-dlq.json).

A retry record holds the ready-to-send request body (PII already hashed) — never the token.
"""
from __future__ import annotations

import base64
from typing import Any

__all__ = ["retry_record", "dead_letter", "dead_letter_from_retry", "error_info"]


def error_info(reason: str, message: str, code: int | None = None,
               http_status: int | None = None) -> dict[str, Any]:
    return {"reason": reason, "code": code, "http_status": http_status, "message": message[:2000]}


def retry_record(request: dict, pixel_code: str, attempt: int, not_before: float,
                 first_failed_at: float, last_error: dict) -> dict[str, Any]:
    return {"request": request, "pixel_code": pixel_code, "attempt": attempt,
            "not_before": not_before, "first_failed_at": first_failed_at, "last_error": last_error}


def dead_letter(reason: str, message: str, stage: str, now: float, *, attempts: int = 0,
                first_failed_at: float | None = None, source: dict | None = None,
                pixel_code: str | None = None, code: int | None = None,
                request: dict | None = None, original: bytes | None = None) -> dict[str, Any]:
    """One DLQ record. `original` is the raw input for events that never mapped; `request` the
    TikTok body for events that did."""
    record: dict[str, Any] = {
        "reason": reason, "message": message[:2000], "stage": stage, "attempts": attempts,
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
