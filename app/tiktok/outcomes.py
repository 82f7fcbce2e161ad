"""What each TikTok answer means for the events in a request: the error taxonomy, in one table.

Retry logic reads `Verdict.action`, never a message. Errors arrive with HTTP 200: the body code
decides; real HTTP errors and unreadable bodies are transport failures.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.tiktok.facts import Code
from app.tiktok.redact import MAX_TEXT, redact

__all__ = ["Action", "Verdict", "verdict_for_code", "error_info", "TRANSPORT", "TOO_LARGE"]


class Action(Enum):
    DONE = "done"          # accepted
    ISOLATE = "isolate"    # one bad event failed the whole batch: find it, send the rest
    SPLIT = "split"        # batch size refused: halve and resend
    RETRY = "retry"        # transient: the retry tiers
    HOLD = "hold"          # the operator must act (token): keep the data on the slow tiers, alert
    DEAD = "dead"          # can never succeed as it is: dead-letter with the reason


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str            # machine-readable, lands in retry/DLQ records and metrics
    slows_down: bool = False  # a rate limit: the sender lowers its in-flight requests


_BY_CODE: dict[int, Verdict] = {
    Code.OK: Verdict(Action.DONE, "ok"),
    Code.PARTIAL_OK: Verdict(Action.DONE, "partial_ok"),
    Code.NO_PERMISSION: Verdict(Action.DEAD, "no_permission"),
    Code.INVALID_PARAMETER: Verdict(Action.ISOLATE, "invalid_parameter"),
    Code.INVALID_BATCH_SIZE: Verdict(Action.SPLIT, "invalid_batch_size"),
    # Names the offending event like a 40002: dead-letter that one (a hashing bug), send the rest.
    Code.PII_NOT_HASHED: Verdict(Action.ISOLATE, "pii_not_hashed"),
    Code.RATE_LIMITED: Verdict(Action.RETRY, "rate_limited", slows_down=True),
    Code.RATE_LIMITED_APP: Verdict(Action.RETRY, "rate_limited", slows_down=True),
    Code.RATE_LIMITED_SYSTEM: Verdict(Action.RETRY, "rate_limited", slows_down=True),
    Code.TOKEN_EXPIRED: Verdict(Action.HOLD, "token_expired"),
    Code.TOKEN_EMPTY: Verdict(Action.HOLD, "token_empty"),
    Code.TOKEN_INVALID: Verdict(Action.HOLD, "token_invalid"),
    # Meaning disputed: retried a few times (the tiers), then dead-lettered.
    Code.VALIDATION: Verdict(Action.RETRY, "validation_error"),
    Code.SERVER_ERROR: Verdict(Action.RETRY, "server_error"),
    Code.SERVER_TIMEOUT: Verdict(Action.RETRY, "server_timeout"),
    Code.SERVICE_UNAVAILABLE: Verdict(Action.RETRY, "service_unavailable"),
}

TRANSPORT = Verdict(Action.RETRY, "transport_error")
# HTTP 413: the body is over the API's size limit (TikTok does not document it): halve and
# resend like a 40061; a lone event that is still too large can never be sent.
TOO_LARGE = Verdict(Action.SPLIT, "payload_too_large")


def verdict_for_code(code: int) -> Verdict:
    known = _BY_CODE.get(code)
    if known is not None:
        return known
    if 51000 <= code < 53000:  # 51xxx / 52xxx: TikTok-side server errors
        return Verdict(Action.RETRY, "server_error")
    if code >= 50000:
        return Verdict(Action.RETRY, "server_error")
    # An unknown 4xxxx is a request problem we do not understand: keep it, don't loop on it.
    return Verdict(Action.DEAD, f"tiktok_{code}")


def error_info(reason: str, message: str, code: int | None = None,
               http_status: int | None = None) -> dict[str, Any]:
    """A failure as retry records keep it (`last_error`): reason, TikTok's code, HTTP status,
    message (redacted and bounded: it quotes the answer)."""
    return {"reason": reason, "code": code, "http_status": http_status, "message": redact(message, MAX_TEXT)}
