"""The one redaction: known secrets and Access-Token values out, length bounded. Exact outputs."""
from __future__ import annotations

import logging
import uuid

import pytest

from app.settings import load
from app.tiktok.redact import MASK, MAX_TEXT, SECRETS, Redactor, guard_logs, redact, remember

TOKEN = "tok-SECRET-1a2b3c"
r = Redactor([TOKEN])


def unique_secret() -> str:
    # The process-wide set only grows: a fresh value per test keeps the tests independent.
    return f"tok-SECRET-{uuid.uuid4().hex}"


@pytest.mark.parametrize("text, expected", [
    # A configured token anywhere, labelled or not.
    (f"Internal error {TOKEN}, please try again later.", "Internal error ***, please try again later."),
    (f"Access token is invalid (Access-Token: {TOKEN})", "Access token is invalid (Access-Token: ***)"),
    (f"<pre>POST /x\nAccess-Token: {TOKEN}\nContent-Type: application/json</pre>",
     "<pre>POST /x\nAccess-Token: ***\nContent-Type: application/json</pre>"),
    (f"b'HTTP/1.1 5O2 {TOKEN}'", "b'HTTP/1.1 5O2 ***'"),
    (f"{TOKEN}{TOKEN}", "******"),
    # The value of anything header-like, configured or not (a rotated token, another pixel's).
    ("Access-Token: other-token-9", "Access-Token: ***"),
    ("x-access-token:other-token-9\r\n", "x-access-token:***\r\n"),
    ('{"access_token": "other-token-9", "pixel": "P"}', '{"access_token": "***", "pixel": "P"}'),
    ('{\\"Access-Token\\": \\"other-token-9\\"}', '{\\"Access-Token\\": \\"***\\"}'),
    ("GET /x?access_token=other-token-9&pixel=P", "GET /x?access_token=***&pixel=P"),
    ("ACCESS TOKEN = other-token-9;", "ACCESS TOKEN = ***;"),
    # Text that only talks about tokens is left alone.
    ("Access token is invalid.", "Access token is invalid."),
    ("Access-Token header is empty.", "Access-Token header is empty."),
    ("TikTok refuses the access token (code 40105)", "TikTok refuses the access token (code 40105)"),
    ("", ""),
])
def test_redaction(text, expected):
    assert r(text) == expected
    assert r(expected) == expected  # idempotent: a redacted text passes again unchanged


def test_a_secret_is_also_found_json_escaped_and_percent_encoded():
    odd = Redactor(["tok/é+1"])
    assert odd('{"message": "tok/\\u00e9+1"} and tok%2F%C3%A9%2B1 and tok/é+1') == \
        '{"message": "***"} and *** and ***'


def test_the_longest_secret_is_taken_out_whole_and_empty_ones_are_ignored():
    assert Redactor(["abc", "abcdef", ""])("abcdef abc abd") == "*** *** abd"
    assert Redactor([""])("a b") == "a b"


def test_length_is_bounded_after_redaction():
    assert r("x" * 5000) == "x" * MAX_TEXT == "x" * 2000
    assert r("é" * 3000, 10) == "é" * 10
    assert r(f"{TOKEN} tail", 5) == "*** t"
    assert r("y" * 50_000, None) == "y" * 50_000
    # Cut after redacting, so a token across the bound leaves no piece of itself behind.
    assert r("x" * 190 + TOKEN + "y" * 50, 200) == "x" * 190 + "***" + "y" * 7


def test_bytes_are_read_as_utf8():
    assert r(b"<h1>502</h1>" + TOKEN.encode() + b" \xff", 200) == "<h1>502</h1>*** \ufffd"


def test_a_token_cut_by_the_read_ahead_leaves_no_fragment():
    # A long text is read only so far (limit + 8192 + the longest secret) before redaction. With
    # 813 tokens before it, the 814th straddles that point: 12 of its 15 characters are read.
    # Redaction shrinks each token to 3 characters, which would pull that fragment into the 4000
    # kept; it is dropped instead.
    secret = "tok-SECRET-abcd"
    assert len(secret) == 15
    out = Redactor([secret])(secret * 814 + "tail", 4000)
    assert out == MASK * 813


def test_remember_adds_every_secret_of_the_settings():
    token, password = unique_secret(), unique_secret()
    settings = load({"TIKTOK_PIXEL_CODE": "PIXREDACT1", "TIKTOK_ACCESS_TOKEN": token,
                     "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
                     "KAFKA_SASL_USERNAME": "ttbridge", "KAFKA_SASL_PASSWORD": password})
    assert redact(f"{token} {password}") == f"{token} {password}"
    remember(settings)
    assert redact(f"{token} {password}") == "*** ***"


def test_guard_logs_redacts_messages_arguments_and_tracebacks(caplog):
    secret = unique_secret()
    SECRETS.add(secret)
    guard_logs()
    factory = logging.getLogRecordFactory()
    guard_logs()  # once is enough: no second wrapper
    assert logging.getLogRecordFactory() is factory
    log = logging.getLogger("tests.redact")
    with caplog.at_level(logging.INFO, logger="tests.redact"):
        log.info("the answer was %r", f"Internal error {secret}")
        log.info(f"Access-Token: {secret}")
        log.info("nothing to hide here: %s", 42)
        try:
            raise RuntimeError(f"Bad status line {secret}")
        except RuntimeError:
            log.exception("sending failed")
    assert [rec.getMessage() for rec in caplog.records] == [
        "the answer was 'Internal error ***'", "Access-Token: ***", "nothing to hide here: 42",
        "sending failed"]
    assert secret not in caplog.text
    assert "RuntimeError: Bad status line ***" in caplog.text
    # A traceback that needed redacting is kept as text only: a handler rendering exc_info itself
    # would print the secret again.
    assert caplog.records[-1].exc_info is None and "Traceback" in caplog.records[-1].exc_text
