"""Retry and dead-letter records, validated against the topic specs' value_schema."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.job.records import (
    MAX_ORIGINAL_BYTES,
    MAX_RECORD_BYTES,
    dead_letter,
    dead_letter_from_retry,
    encode,
    hash_original,
    retry_record,
)
from app.mapping.events import MappingConfig
from app.settings import SettingsError, load
from app.tiktok.outcomes import TRANSPORT, Action, Verdict, error_info
from app.tiktok.redact import SECRETS
from app.tiktok.sender import Answer

TOPICS = Path(__file__).resolve().parents[2] / "app" / "topics"
PIXEL = "CQ1PIXEL000000000"
HASHED_EMAIL = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
REQUEST = {"event_source": "web", "event_source_id": PIXEL, "test_event_code": "TEST123", "data": [
    {"event": "Purchase", "event_time": 1763634100, "event_id": "msg-98213",
     "user": {"ttclid": "E.C.P.abc", "email": HASHED_EMAIL},
     "properties": {"value": 46.0, "currency": "USD"}}]}
SOURCE = {"topic": "tracking-events", "partition": 3, "offset": 1041}


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((TOPICS / f"{name}.json").read_text())["value_schema"]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


RETRY = validator("tiktok-retry")
DLQ = validator("tiktok-dlq")


def valid(v: Draft202012Validator, record: dict) -> None:
    # Through JSON, as it travels on the topic.
    errors = [e.message for e in v.iter_errors(orjson.loads(orjson.dumps(record)))]
    assert errors == []


# ---------------------------------------------------------------- retry records

@pytest.mark.parametrize("answer", [
    Answer(Verdict(Action.RETRY, "server_error"), 50000, 200, "Internal error"),
    Answer(TRANSPORT, None, 502, "HTTP 502: <html>bad gateway</html>"),
    Answer(TRANSPORT, None, None, "ClientConnectorError: cannot connect"),
    Answer(Verdict(Action.HOLD, "token_invalid"), 40105, 200, "Access token is invalid."),
])
def test_retry_record_matches_the_schema(answer):
    record = retry_record(REQUEST, PIXEL, 1, 1763634130.0, 1763634100.5, answer.error())
    valid(RETRY, record)
    assert record == {"request": REQUEST, "pixel_code": PIXEL, "attempt": 1,
                      "not_before": 1763634130.0, "first_failed_at": 1763634100.5,
                      "last_error": {"reason": answer.verdict.reason, "code": answer.code,
                                     "http_status": answer.http_status,
                                     "message": answer.message}}


def test_the_retry_schema_is_not_vacuous():
    record = retry_record(REQUEST, PIXEL, 0, 1.0, 1.0, error_info("server_error", "x"))
    assert [e.validator for e in RETRY.iter_errors(record)] == ["minimum"]  # attempt >= 1
    record = retry_record({**REQUEST, "data": []}, PIXEL, 1, 1.0, 1.0, error_info("x", "y"))
    assert [e.validator for e in RETRY.iter_errors(record)] == ["minItems"]


def test_error_info():
    assert error_info("rate_limited", "Too many requests", 40100, 200) == {
        "reason": "rate_limited", "code": 40100, "http_status": 200,
        "message": "Too many requests"}
    assert error_info("transport_error", "timeout") == {
        "reason": "transport_error", "code": None, "http_status": None, "message": "timeout"}


def test_error_message_is_cut_at_2000_characters():
    info = error_info("server_error", "é" * 2001 + "tail", 50000, 200)
    assert info["message"] == "é" * 2000
    valid(RETRY, retry_record(REQUEST, PIXEL, 1, 0.0, 0.0, info))


# ---------------------------------------------------------------- dead letters

def test_decode_failure_keeps_utf8_original_as_text():
    raw = '{"event": "Order Completed", "name": "Zoë ✓", '.encode()
    record = dead_letter("invalid_json", "unexpected end of data", "decode", 1763634100.2,
                         source=SOURCE, original=raw)
    valid(DLQ, record)
    assert record == {
        "reason": "invalid_json", "message": "unexpected end of data", "stage": "decode",
        "attempts": 0, "first_failed_at": 1763634100.2, "last_failed_at": 1763634100.2,
        "source": SOURCE, "pixel_code": None,
        "original": '{"event": "Order Completed", "name": "Zoë ✓", ', "original_base64": False}


def test_non_utf8_original_is_base64():
    raw = b'{"event": "\xff\xfe"}'
    record = dead_letter("invalid_json", "str is not valid UTF-8", "decode", 5.0,
                         source=SOURCE, original=raw)
    valid(DLQ, record)
    assert record["original_base64"] is True
    assert record["original"] == "eyJldmVudCI6ICL//iJ9"
    assert base64.b64decode(record["original"]) == raw


def test_empty_original_is_empty_text():
    record = dead_letter("invalid_json", "empty", "decode", 5.0, original=b"")
    assert (record["original"], record["original_base64"]) == ("", False)
    valid(DLQ, record)


def test_send_failure_carries_request_and_code():
    record = dead_letter("no_permission", "No permission to operate pixel code: " + PIXEL, "send",
                         1763634100.2, attempts=1, pixel_code=PIXEL, code=40001, request=REQUEST)
    valid(DLQ, record)
    assert record == {
        "reason": "no_permission", "message": "No permission to operate pixel code: " + PIXEL,
        "stage": "send", "attempts": 1, "first_failed_at": 1763634100.2,
        "last_failed_at": 1763634100.2, "source": None, "pixel_code": PIXEL, "code": 40001,
        "request": REQUEST}


def test_optional_fields_are_left_out_when_not_given():
    record = dead_letter("no_route", "no pixel", "map", 9.0)
    valid(DLQ, record)
    assert set(record) == {"reason", "message", "stage", "attempts", "first_failed_at",
                           "last_failed_at", "source", "pixel_code"}


def test_dead_letter_message_is_cut_at_2000_characters():
    record = dead_letter("invalid_json", "x" * 5000, "decode", 1.0, original=b"{")
    assert record["message"] == "x" * 2000
    valid(DLQ, record)


def test_dead_letter_from_retry_keeps_the_history():
    retry = retry_record(REQUEST, PIXEL, 4, 1763641300.0, 1763634100.5,
                         error_info("server_error", "Internal error", 50000, 200))
    record = dead_letter_from_retry(retry, "retries_exhausted", "gave up after 4 sends",
                                    1763641301.0, code=50000)
    valid(DLQ, record)
    assert record == {
        "reason": "retries_exhausted", "message": "gave up after 4 sends", "stage": "retry",
        "attempts": 4, "first_failed_at": 1763634100.5, "last_failed_at": 1763641301.0,
        "source": None, "pixel_code": PIXEL, "code": 50000, "request": REQUEST}


# ---------------------------------------------------------------- no secret is written

SECRET = "tok-SECRET-records-9c4d"


def test_retry_records_and_dead_letters_are_written_without_secrets():
    SECRETS.add(SECRET)
    # last_error as any caller may build it, not only through error_info.
    retry = retry_record(REQUEST, PIXEL, 1, 1.0, 1.0, {
        "reason": "server_error", "code": 50000, "http_status": 200, "message": f"Internal error {SECRET}"})
    assert retry["last_error"] == {"reason": "server_error", "code": 50000, "http_status": 200,
                                   "message": "Internal error ***"}
    valid(RETRY, retry)
    dead = dead_letter("internal_error", f"ClientResponseError: b'HTTP/1.1 5O2 {SECRET}'", "map", 2.0)
    assert dead["message"] == "ClientResponseError: b'HTTP/1.1 5O2 ***'"
    exhausted = dead_letter_from_retry(retry, "retries_exhausted",
                                       f"transport_error: HTTP 502: <pre>Access-Token: {SECRET}</pre>", 3.0)
    assert exhausted["message"] == "transport_error: HTTP 502: <pre>Access-Token: ***</pre>"
    for record in (retry, dead, exhausted):
        assert all(SECRET.encode() not in raw for raw in encode(record))


def test_the_dlq_schema_is_not_vacuous():
    record = dead_letter("x", "y", "decode", 1.0)
    assert [e.validator for e in DLQ.iter_errors({**record, "stage": "elsewhere"})] == ["enum"]
    assert [e.validator for e in DLQ.iter_errors({**record, "extra": 1})] == [
        "additionalProperties"]
    del record["reason"]
    assert [e.validator for e in DLQ.iter_errors(record)] == ["required"]


# ---------------------------------------------------------------- records that must fit in Kafka

def test_a_record_that_fits_is_one_record():
    record = dead_letter("tiktok_40002", "bad", "send", 1.0, request=REQUEST)
    assert encode(record) == [orjson.dumps(record)]


def test_a_request_too_big_for_one_record_is_split_in_order():
    item = REQUEST["data"][0]
    data = [{**item, "event_id": f"e{i}", "properties": {"description": "d" * 1500}} for i in range(1000)]
    record = retry_record({**REQUEST, "data": data}, PIXEL, 1, 5.0, 1.0, error_info("server_error", "x"))
    assert len(orjson.dumps(record)) > MAX_RECORD_BYTES
    pieces = [orjson.loads(raw) for raw in encode(record)]
    assert [len(p["request"]["data"]) for p in pieces] == [500, 500]
    assert [d["event_id"] for p in pieces for d in p["request"]["data"]] == [f"e{i}" for i in range(1000)]
    for piece in pieces:
        assert {k: v for k, v in piece.items() if k != "request"} == {
            k: v for k, v in record.items() if k != "request"}
        assert piece["request"]["test_event_code"] == "TEST123"
        valid(RETRY, piece)
    assert all(len(raw) <= MAX_RECORD_BYTES for raw in encode(record))


def test_an_original_whose_escaping_would_not_fit_is_kept_as_base64():
    # 200 KB of control characters: orjson writes each as \u00XX, six bytes.
    original = b"\x01" * 200_000
    record = dead_letter("invalid_json", "x", "decode", 1.0, source=SOURCE, original=original)
    [raw] = encode(record)
    piece = orjson.loads(raw)
    assert len(raw) <= MAX_RECORD_BYTES
    assert base64.b64decode(piece["original"]) == original
    assert piece["original_base64"] is True and piece["original_truncated"] is False
    assert piece["original_bytes"] == 200_000
    valid(DLQ, piece)


def test_an_original_over_the_limit_keeps_its_first_bytes():
    original = b"{" + b"x" * 999_999
    [raw] = encode(dead_letter("too_large", "x", "decode", 1.0, source=SOURCE, original=original))
    piece = orjson.loads(raw)
    assert base64.b64decode(piece["original"]) == original[:MAX_ORIGINAL_BYTES]
    assert (piece["original_truncated"], piece["original_bytes"]) == (True, 1_000_000)
    valid(DLQ, piece)


def test_one_event_alone_over_the_limit_drops_its_request_but_keeps_the_reason():
    huge = {**REQUEST, "data": [{**REQUEST["data"][0], "properties": {"description": "d" * 950_000}}]}
    [raw] = encode(dead_letter("tiktok_40002", "bad", "send", 1.0, request=huge, pixel_code=PIXEL))
    piece = orjson.loads(raw)
    assert piece["request"] is None and piece["reason"] == "tiktok_40002"
    assert piece["message"].startswith("request of ") and piece["message"].endswith("bad")
    valid(DLQ, piece)


# ---------------------------------------------------------------- dlq_original = "hashed"

def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_with_dlq_original_hashed_an_invalid_currency_dead_letter_keeps_its_original_hashed():
    # Through the forwarder, as the worker makes it: the Segment event's email is hashed as TikTok
    # takes it (trimmed, lower case), its phone in E.164, its userId as is; the rest stays.
    from tests.job import test_forwarder as f

    settings = load({**f.ENV}, dlq_original="hashed")
    t = f.setup(settings)
    bad = {"type": "track", "event": "Order Completed", "messageId": "m-1", "timestamp": f.NOW - 30,
           "userId": "user_123",
           "context": {"traits": {"email": " Jane.Doe@Example.COM ", "phone": "+33 6 12 34 56 78",
                                  "firstName": "Jane"}, "ip": "203.0.113.7"},
           "properties": {"value": 10, "currency": "ZZZ"}}
    before, after = await f.run(t, f.Record(0, entries=[f.entry(bad, 10), f.entry(f.track("m-2"), 11)]))

    assert len(t.sender.bodies[0]["data"]) == 1  # its neighbour is sent
    [(role, key, record)] = t.write.records
    assert (role, key) == ("dlq", b"tracking-events")
    hashed = {**bad, "userId": sha("user_123"),
              "context": {"traits": {"email": sha("jane.doe@example.com"), "phone": sha("+33612345678"),
                                     "firstName": sha("jane")}, "ip": "203.0.113.7"}}
    assert record == f.dlq("invalid_currency",
                           "properties.currency: 'ZZZ' is not an ISO-4217 code TikTok accepts", "map",
                           f.failed_at(record, before, after), source=f.at_offset(10),
                           original=orjson.dumps(hashed).decode(), original_base64=False,
                           original_hashed=True)
    valid(DLQ, record)
    assert "Jane.Doe" not in orjson.dumps(record).decode()


def test_a_pii_value_that_cannot_be_hashed_is_removed_and_input_that_is_not_json_is_not_kept():
    # Any text is hashed as an email (as TikTok's normalisation does); a phone with no E.164 form
    # and a zip that is no text have no hash: they are removed, never kept raw.
    plan = MappingConfig().plan
    event = {"event": "Order Completed", "context": {"traits": {"email": "not an email", "phone": "12",
                                                                "zip": {"deep": ["x"]}}},
             "traits": {"email": "a@b.co"}, "properties": {"currency": "ZZZ"}}
    record = hash_original(dead_letter("invalid_currency", "x", "map", 1.0, source=SOURCE,
                                       original=orjson.dumps(event)), plan)
    assert orjson.loads(record["original"]) == {
        "event": "Order Completed", "context": {"traits": {"email": sha("not an email")}},
        "traits": {"email": sha("a@b.co")},
        "properties": {"currency": "ZZZ"}}
    assert (record["original_base64"], record["original_hashed"]) == (False, True)
    valid(DLQ, record)
    for raw in (b'{"context": {"traits": {"email": "jane@example.com"', b"\xff\xfe", b"[1, 2]"):
        record = hash_original(dead_letter("invalid_json", "x", "decode", 1.0, source=SOURCE, original=raw),
                               plan)
        assert record == {**dead_letter("invalid_json", "x", "decode", 1.0, source=SOURCE),
                          "original_hashed": True}
        valid(DLQ, record)
    # A record without an original (a TikTok request, hashed already) is left as it is.
    request = dead_letter("tiktok_40002", "x", "send", 1.0, request=REQUEST, pixel_code=PIXEL)
    assert hash_original(request, plan) is request


def test_dlq_original_is_raw_or_hashed(tmp_path):
    assert load({}).dlq_original == "raw"
    config = tmp_path / "ttbridge.toml"
    config.write_text('[ttbridge]\ndlq_original = "hashed"\n')
    assert load({"TTBRIDGE_CONFIG": str(config)}).dlq_original == "hashed"
    config.write_text('[ttbridge]\ndlq_original = "sha256"\n')
    with pytest.raises(SettingsError) as e:
        load({"TTBRIDGE_CONFIG": str(config)})
    assert str(e.value) == 'TTBRIDGE_CONFIG [ttbridge].dlq_original: expected "raw" or "hashed", got \'sha256\''


def test_with_dlq_original_hashed_the_intake_hashes_what_it_refuses():
    from aiokafka import TopicPartition

    from app.job.intake import Intake
    from app.job.metrics import Metrics
    from app.settings import mapping_config

    settings = load({}, dlq_original="hashed")
    intake = Intake(settings, mapping_config(settings), None, Metrics(), None)
    bad = {"type": "track", "event": 42, "context": {"traits": {"email": "Jane@Example.com"}}}
    writes, _ = intake.decode({TopicPartition("tracking-events", 0): [_msg("tracking-events", 5, orjson.dumps(bad))]},
                              1.0)
    [event_dlq] = [orjson.loads(v) for role, _, v in writes if role == "dlq"]
    assert event_dlq == {**dead_letter("invalid_event_name", event_dlq["message"], "decode", 1.0,
                                       source={"topic": "tracking-events", "partition": 0, "offset": 5}),
                         "original": orjson.dumps({**bad, "context": {"traits": {"email": sha("jane@example.com")}}}
                                                  ).decode(),
                         "original_base64": False, "original_hashed": True}


def _msg(topic: str, offset: int, value: bytes):
    from types import SimpleNamespace
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value, key=None, timestamp=0)


def test_a_batchs_identities_are_hashed_once_in_the_message():
    # mParticle: the identities are the batch's (`batch.user_identities.*`), hashed in the message.
    from app.mapping.spec import load_preset

    plan = MappingConfig(spec=load_preset("mparticle")).plan
    message = {"events": [{"event_type": "commerce_event", "data": {}}, 7],
               "user_identities": {"customer_id": "CUST-1001", "email": " Jane.Doe@Example.com ",
                                   "mobile_number": "+44 7700 900123"}, "ip": "203.0.113.4"}
    record = hash_original(dead_letter("invalid_event", "x", "decode", 1.0, source=SOURCE,
                                       original=orjson.dumps(message)), plan)
    assert orjson.loads(record["original"]) == {**message, "user_identities": {
        "customer_id": sha("CUST-1001"), "email": sha("jane.doe@example.com"), "mobile_number": sha("+447700900123")}}
