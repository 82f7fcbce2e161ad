"""Where `ttbridge replay` sends a dead letter (the moves themselves run in test_delivery_faults)."""
import base64

import orjson

from app.job.records import dead_letter, encode, retry_record
from app.job.replay import _target
from app.settings import load
from app.tiktok.outcomes import error_info

SETTINGS = load({"TTBRIDGE_TOPIC_RETRY": "r"})
SOURCE = {"topic": "tracking-events", "partition": 0, "offset": 7}
BODY = {"event_source": "web", "event_source_id": "P1", "data": [{"event": "Purchase", "event_time": 1, "event_id": "x"}]}


def test_a_dead_request_goes_back_to_the_first_retry_tier_due_now():
    record = dead_letter("server_error", "x", "retry", 5.0, attempts=4, first_failed_at=1.0, pixel_code="P1",
                         request=BODY)
    topic, key, value = _target(SETTINGS, record, 100.0)
    assert (topic, key) == ("r", b"P1")
    assert orjson.loads(value) == retry_record(BODY, "P1", 1, 100.0, 1.0, error_info(
        "replayed", "replayed from the DLQ after server_error"))


def test_an_original_goes_back_to_its_source_topic_as_it_was():
    raw = b"\xff not utf-8"
    record = dead_letter("invalid_json", "x", "decode", 5.0, source=SOURCE, original=raw)
    assert _target(SETTINGS, record, 100.0) == ("tracking-events", None, raw)


def test_what_was_cut_to_fit_is_never_replayed():
    [raw] = encode(dead_letter("too_large", "x", "decode", 5.0, source=SOURCE, original=b"x" * 1_000_000))
    assert _target(SETTINGS, orjson.loads(raw), 100.0) is None
    [raw] = encode(dead_letter("tiktok_40002", "x", "send", 5.0, pixel_code="P1", request={
        **BODY, "data": [{**BODY["data"][0], "description": "d" * 950_000}]}))
    assert _target(SETTINGS, orjson.loads(raw), 100.0) is None
    # ...while a complete original re-encoded as base64 still is.
    [raw] = encode(dead_letter("invalid_json", "x", "decode", 5.0, source=SOURCE, original=b"\x01" * 200_000))
    assert _target(SETTINGS, orjson.loads(raw), 100.0) == ("tracking-events", None, b"\x01" * 200_000)
    assert base64.b64decode(orjson.loads(raw)["original"]) == b"\x01" * 200_000
