"""The code -> Verdict table against the error table of TIKTOK_EVENTS_API.md, row by row."""
from __future__ import annotations

import pytest

from app.tiktok.outcomes import TRANSPORT, Action, Verdict, error_info, verdict_for_code
from app.tiktok.redact import SECRETS

RETRY, HOLD, DEAD = Action.RETRY, Action.HOLD, Action.DEAD


# (code, action, reason, slows_down): every code the API doc's table names.
@pytest.mark.parametrize("code, action, reason, slows_down", [
    (0, Action.DONE, "ok", False),                              # OK: done
    (20001, Action.DONE, "partial_ok", False),                  # partial OK: done, log data
    (40001, DEAD, "no_permission", False),                      # permanent
    (40002, Action.ISOLATE, "invalid_parameter", False),        # isolate the bad event
    (40061, Action.SPLIT, "invalid_batch_size", False),         # split and resend
    (40062, Action.ISOLATE, "pii_not_hashed", False),                 # permanent for the named event
    (40100, RETRY, "rate_limited", True),                       # rate limited: back off
    (40132, RETRY, "rate_limited", True),
    (61000, RETRY, "rate_limited", True),
    (40102, HOLD, "token_expired", False),                      # operator must act, keep data
    (40104, HOLD, "token_empty", False),
    (40105, HOLD, "token_invalid", False),
    (40700, RETRY, "validation_error", False),                  # a few retries, then DLQ
    (50000, RETRY, "server_error", False),                      # server error / timeout
    (50002, RETRY, "server_timeout", False),
    (60001, RETRY, "service_unavailable", False),               # maintenance
])
def test_documented_codes(code, action, reason, slows_down):
    assert verdict_for_code(code) == Verdict(action, reason, slows_down)


@pytest.mark.parametrize("code", [51000, 51001, 51234, 51999, 52000, 52500, 52999])
def test_51xxx_and_52xxx_are_retried_server_errors(code):
    assert verdict_for_code(code) == Verdict(RETRY, "server_error", False)


@pytest.mark.parametrize("code", [40000, 40003, 40063, 40101, 40999, 41000, 49999])
def test_unknown_4xxxx_is_dead_with_its_code(code):
    assert verdict_for_code(code) == Verdict(DEAD, f"tiktok_{code}", False)


def test_transport_failure_is_retried():
    assert TRANSPORT == Verdict(RETRY, "transport_error", False)


def test_only_rate_limits_slow_down():
    codes = [0, 20001, 40001, 40002, 40061, 40062, 40100, 40102, 40104, 40105, 40132, 40700,
             50000, 50002, 51000, 52000, 60001, 61000, 40999]
    assert {c for c in codes if verdict_for_code(c).slows_down} == {40100, 40132, 61000}


def test_error_info_keeps_the_message_redacted():
    SECRETS.add("tok-SECRET-outcomes-5e1f")
    assert error_info("server_error", "Internal error tok-SECRET-outcomes-5e1f", 50000, 200) == {
        "reason": "server_error", "code": 50000, "http_status": 200, "message": "Internal error ***"}
    assert error_info("transport_error", "HTTP 502: <pre>Access-Token: rotated-7</pre>")["message"] == \
        "HTTP 502: <pre>Access-Token: ***</pre>"
