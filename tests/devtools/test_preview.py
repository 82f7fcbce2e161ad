"""`ttbridge map`: one line out per message in, with the worker's own decisions."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import orjson

NOW = time.time()
STAMP = int(NOW) - 3600


def run_map(lines: list, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    stdin = b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)
    return subprocess.run([sys.executable, "-m", "app", "map", *args], input=stdin, capture_output=True,
                          timeout=60, env=env)


def out_lines(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr.decode()
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


ORDER = {"type": "track", "event": "Order Completed", "messageId": "m1", "timestamp": STAMP, "userId": "u1",
         "properties": {"click_id": "c1", "order_id": "o1", "value": 46, "currency": "usd",
                        "products": [{"product_id": "p1", "price": 23, "quantity": 2}]},
         "context": {"ip": "203.0.113.4", "userAgent": "UA", "traits": {"phone": "07700 900123"}}}


def test_every_kind_of_outcome_one_line_each():
    done = run_map([ORDER, {"type": "page", "name": "Home"}, {"type": "track", "event": "Video Paused"},
                    b"{nope", {"type": "track", "event": "Signed Up", "timestamp": STAMP},
                    {"type": "track", "event": "Order Completed", "timestamp": STAMP, "userId": "u",
                     "properties": {"currency": "XBT"}}, b"", b"[1]"],
                   "--preset", "segment", "--default-region", "GB")
    assert out_lines(done) == [
        {"data": [{"event": "Purchase", "event_time": STAMP, "event_id": "m1",
                   "user": {"external_id": sha("u1"), "phone": sha("+447700900123"), "ip": "203.0.113.4",
                            "user_agent": "UA"},
                   "properties": {"value": 46, "currency": "USD", "order_id": "o1",
                                  "contents": [{"content_id": "p1", "price": 23, "quantity": 2}], "num_items": 2}}]},
        {"skipped": "not_a_conversion"},
        {"skipped": "unmapped"},
        {"refused": "invalid_json", "message": "unexpected character, expected a string key: line 1 column 2 (char 1)"},
        {"refused": "no_identifier", "message": "no ttclid, ttp, email, phone, external_id, or IP with user "
                                                "agent: TikTok cannot attribute it"},
        {"refused": "invalid_currency", "message": "properties.currency: 'XBT' is not an ISO-4217 code TikTok accepts"},
        {"refused": "not_an_object", "message": "expected a JSON object, got list"},
    ]  # the empty line is no message


def test_a_click_is_joined_to_every_message(tmp_path):
    click = tmp_path / "click.json"
    click.write_bytes(orjson.dumps({"click_id": "c1", "ttclid": "E.C.P.abc", "ttp": "ttp-1",
                                    "timestamp": STAMP - 60, "url": "https://shop.example/?ttclid=E.C.P.abc"}))
    signup = {"type": "track", "event": "Signed Up", "messageId": "s1", "timestamp": STAMP}
    done = run_map([signup, {**signup, "messageId": "s2"}], "--preset", "segment", "--click", str(click))
    assert out_lines(done) == [
        {"data": [{"event": "CompleteRegistration", "event_time": STAMP, "event_id": f"s{i}",
                   "user": {"ttclid": "E.C.P.abc", "ttp": "ttp-1"},
                   "page": {"url": "https://shop.example/?ttclid=E.C.P.abc"}}]} for i in (1, 2)]


def test_a_mapping_file_of_ones_own_over_a_preset(tmp_path):
    own = tmp_path / "shop.toml"
    own.write_text('extends = "segment"\n[events]\n"Quote Requested" = ["Lead", "Contact"]\n'
                   '[user]\nexternal_id = ["properties.customer"]\n')
    done = run_map([{"type": "track", "event": "Quote Requested", "messageId": "q1", "timestamp": STAMP,
                     "userId": "ignored", "properties": {"customer": "C-7"}}], "--config", str(own))
    user = {"external_id": sha("C-7")}
    assert out_lines(done) == [{"data": [
        {"event": "Lead", "event_time": STAMP, "event_id": "q1", "user": user},
        {"event": "Contact", "event_time": STAMP, "event_id": "q1", "user": user}]}]


def test_a_wrong_mapping_file_is_one_line_and_exit_2(tmp_path):
    own = tmp_path / "bad.toml"
    own.write_text('[user]\nemial = ["traits.email"]\n')
    done = run_map([ORDER], "--config", str(own))
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.decode() == (f"ttbridge: configuration error: --config {own}: user.emial: unknown key "
                                    "(did you mean 'email'?)\n")
    done = run_map([ORDER], "--click", str(tmp_path / "missing.json"), "--preset", "segment")
    assert done.returncode == 2
    assert done.stderr.decode().startswith(f"ttbridge: configuration error: --click {tmp_path / 'missing.json'}: "
                                           "cannot read it")


def test_now_pins_the_clock_that_event_age_is_judged_by():
    fixed = 1795168800  # 2026-11-20T10:00:00Z
    signup = {"type": "track", "event": "Signed Up", "messageId": "s1", "timestamp": "2026-11-20T10:00:00Z",
              "userId": "u1"}
    item = {"event": "CompleteRegistration", "event_time": fixed, "event_id": "s1", "user": {"external_id": sha("u1")}}
    assert out_lines(run_map([signup], "--preset", "segment", "--now", str(fixed + 30))) == [{"data": [item]}]
    # The worker's default limit (max_event_age_days = 7) applies with --preset too ...
    week = 7 * 86400
    assert out_lines(run_map([signup], "--preset", "segment", "--now", str(fixed + week + 1))) == [
        {"refused": "stale_event", "message": "timestamp: '2026-11-20T10:00:00Z' is older than 604800 s"}]
    assert out_lines(run_map([signup], "--preset", "segment", "--now", str(fixed + week))) == [{"data": [item]}]
    # ... and against the clock without --now.
    old = {**signup, "timestamp": "2020-01-01T00:00:00Z"}
    assert out_lines(run_map([old], "--preset", "segment")) == [
        {"refused": "stale_event", "message": "timestamp: '2020-01-01T00:00:00Z' is older than 604800 s"}]
    done = run_map([signup], "--preset", "segment", "--now", "soon")
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.decode().endswith("ttbridge map: error: argument --now: expected Unix seconds, got 'soon'\n")


def test_a_batch_prints_one_line_per_event_and_an_empty_one_says_so():
    stamp_ms = STAMP * 1000
    batch = {"events": [{"event_type": "screen_view", "data": {"timestamp_unixtime_ms": stamp_ms}},
                        {"event_type": "commerce_event",
                         "data": {"timestamp_unixtime_ms": stamp_ms, "source_message_id": "e1",
                                  "product_action": {"action": "add_to_cart"}}}],
             "user_identities": {"customer_id": "C-1"}}
    done = run_map([batch, {"events": []}], "--preset", "mparticle")
    assert out_lines(done) == [
        {"skipped": "not_a_conversion"},
        {"data": [{"event": "AddToCart", "event_time": STAMP, "event_id": "e1", "user": {"external_id": sha("C-1")}}]},
        {"skipped": "no_events"},  # the worker counts it as events_skipped{reason="no_events"}
    ]
