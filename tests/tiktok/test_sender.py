"""The sender over real HTTP: against the fake Events API, and a scripted server for answers the
fake never gives (garbage bodies, 40002 without an index). Each test shows where every event ends
up: accepted, `retry` or `dead`, and how many requests it took."""
from __future__ import annotations

import logging
import socket
import time

import orjson
import pytest
from aiohttp import web

from app.devtools.fake_tiktok import ECHO_FORMS, FakeConfig, FakeTikTok
from app.settings import Pixel, Secret, load
from app.tiktok.facts import TRACK_PATH
from app.tiktok.outcomes import TRANSPORT, Action, Verdict
from app.tiktok.sender import Answer, Sender

TOKEN = "s3cr3t-access-token-7f3a9c0e51d2"
PIXEL = "CPIXELSENDER00000001"
OTHER_PIXEL = "CPIXELSENDER00000002"  # exists, but TOKEN may not send to it
HASHED_EMAIL = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
NOW = int(time.time())


def event(i: int, **fields) -> dict:
    item = {
        "event": "Purchase", "event_time": NOW - 60, "event_id": f"order-{i}",
        "user": {"ttclid": f"E.C.P.click{i}", "email": HASHED_EMAIL},
        "properties": {"contents": [{"content_id": f"SKU{i}", "price": 25.0, "quantity": 2}],
                       "currency": "USD", "value": 50.0},
    }
    item.update(fields)
    return item


def numeric_content_id(i: int) -> dict:
    # Built raw, bypassing the mapping (which would turn 123 into "123").
    return event(i, properties={"contents": [{"content_id": 123, "price": 1.0, "quantity": 1}],
                                "currency": "USD", "value": 1.0})


def body(*items: dict, pixel: str = PIXEL) -> dict:
    return {"event_source": "web", "event_source_id": pixel, "data": list(items)}


def pixel(code: str = PIXEL, token: str = TOKEN) -> Pixel:
    return Pixel(code, Secret(token))


def assert_token_hidden(*answers: Answer) -> None:
    for answer in answers:
        assert TOKEN not in answer.message
        assert TOKEN not in repr(answer)
        assert TOKEN not in str(answer.error())


@pytest.fixture
async def fake():
    server = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, seed=1))
    server.base = await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


@pytest.fixture
async def sender(fake):
    s = Sender(load({}, api_url=fake.base))
    yield s
    await s.close()


class Scripted:
    """A stand-in Events API: answers with `reply(body) -> (status, bytes)`, records requests."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.requests: list[tuple[dict, bytes]] = []  # (headers, raw body)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append((dict(request.headers), raw))
        status, payload = self.reply(raw)
        return web.Response(status=status, body=payload)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(TRACK_PATH, self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def scripted():
    """scripted(reply) -> (Scripted, Sender pointed at it); everything is stopped afterwards."""
    started = []

    async def make(reply):
        server = Scripted(reply)
        s = Sender(load({}, api_url=await server.start()))
        started.append((server, s))
        return server, s

    yield make
    for server, s in started:
        await s.close()
        await server.stop()


def tiktok_json(code: int, message: str = "") -> bytes:
    return orjson.dumps({"code": code, "message": message, "request_id": "r", "data": {}})


# ---------------------------------------------------------------- accepted

async def test_valid_batch_is_accepted_exactly_as_sent(fake, sender):
    sent = body(event(0), event(1), event(2))
    delivery = await sender.deliver(pixel(), sent)
    assert (delivery.accepted, delivery.requests, delivery.retry, delivery.dead) == (3, 1, [], [])
    assert [entry["event"] for entry in fake.accepted] == sent["data"]
    assert {(e["pixel_code"], e["event_source"], e["test_event_code"]) for e in fake.accepted} == {
        (PIXEL, "web", None)}
    assert fake.stats()["requests"] == 1
    assert sender.requests == 1


async def test_test_event_code_travels_at_top_level(fake, sender):
    sent = {**body(event(0)), "test_event_code": "TEST123"}
    delivery = await sender.deliver(pixel(), sent)
    assert delivery.accepted == 1
    assert fake.accepted[0]["test_event_code"] == "TEST123"


async def test_success_returns_the_ok_answer(fake, sender):
    answer = await sender.post(pixel(), body(event(0)))
    assert answer == Answer(Verdict(Action.DONE, "ok"), 0, 200, "OK")


# ---------------------------------------------------------------- 40002: isolate, resend the rest

async def test_one_bad_event_is_isolated_and_the_rest_resent(fake, sender):
    good0, bad, good2 = event(0), numeric_content_id(1), event(2)
    delivery = await sender.deliver(pixel(), body(good0, bad, good2))

    assert delivery.accepted == 2
    assert delivery.requests == 2
    assert delivery.retry == []
    assert len(delivery.dead) == 1
    dead_body, answer = delivery.dead[0]
    assert dead_body == body(bad)
    assert answer.code == 40002
    assert answer.verdict == Verdict(Action.ISOLATE, "invalid_parameter")
    assert answer.message == "Batch.1.properties.contents.0.content_id: Not a valid string."
    assert [entry["event"] for entry in fake.accepted] == [good0, good2]
    assert fake.stats()["requests"] == 2


async def test_two_bad_events_are_both_isolated(fake, sender):
    good0, bad1, good2 = event(0), numeric_content_id(1), event(2)
    bad3 = event(3, event_id=98213)  # numeric event_id: 40002 too
    delivery = await sender.deliver(pixel(), body(good0, bad1, good2, bad3))

    assert delivery.accepted == 2
    assert delivery.requests == 3  # bad1 named, then bad3 (now at index 2), then the good two
    assert delivery.retry == []
    assert [d for d, _ in delivery.dead] == [body(bad1), body(bad3)]
    assert [a.code for _, a in delivery.dead] == [40002, 40002]
    assert [a.message for _, a in delivery.dead] == [
        "Batch.1.properties.contents.0.content_id: Not a valid string.",
        "Batch.2.event_id: Not a valid string (must not be empty).",
    ]
    assert [entry["event"] for entry in fake.accepted] == [good0, good2]


async def test_a_lone_bad_event_is_dead_after_one_request(fake, sender):
    bad = numeric_content_id(0)
    delivery = await sender.deliver(pixel(), body(bad))
    assert (delivery.accepted, delivery.requests, delivery.retry) == (0, 1, [])
    assert [(d, a.code) for d, a in delivery.dead] == [(body(bad), 40002)]


@pytest.mark.parametrize("message", ["Invalid parameter.", "Batch.7.event: out of range index"])
async def test_40002_without_a_usable_index_bisects(scripted, message):
    def reply(raw):
        data = orjson.loads(raw)["data"]
        if any(item["event_id"] == "bad" for item in data):
            return 200, tiktok_json(40002, message)
        return 200, tiktok_json(0, "OK")

    server, s = await scripted(reply)
    a, b, bad, c = event(0), event(1), event(2, event_id="bad"), event(3)
    delivery = await s.deliver(pixel(), body(a, b, bad, c))

    assert delivery.accepted == 3
    assert delivery.requests == 5
    assert delivery.retry == []
    assert [(d, ans.code) for d, ans in delivery.dead] == [(body(bad), 40002)]
    sent = [orjson.loads(raw)["data"] for _, raw in server.requests]
    assert sent == [[a, b, bad, c], [bad, c], [c], [bad], [a, b]]


# ---------------------------------------------------------------- 40061: split

async def test_1001_events_are_split_and_all_accepted(fake, sender):
    items = [event(i) for i in range(1001)]
    delivery = await sender.deliver(pixel(), body(*items))

    assert delivery.accepted == 1001
    assert delivery.requests == 3  # 1001 refused with 40061, then 500 + 501
    assert (delivery.retry, delivery.dead) == ([], [])
    assert fake.stats()["requests"] == 3
    assert fake.stats()["rejections"] == {"40061": 1}
    assert sorted(e["event"]["event_id"] for e in fake.accepted) == sorted(
        item["event_id"] for item in items)
    assert len(fake.accepted) == 1001


async def test_a_body_over_the_size_limit_is_halved_until_it_fits():
    # HTTP 413 (aiohttp's own answer above client_max_size): split like 40061.
    server = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}, max_body_bytes=30_000))
    base = await server.start("127.0.0.1", 0)
    s = Sender(load({}, api_url=base))
    try:
        items = [event(i, properties={"description": "d" * 900}) for i in range(40)]
        delivery = await s.deliver(pixel(), body(*items))
        # 44 KB refused, then 2 x 22 KB accepted
        assert (delivery.accepted, delivery.requests, delivery.retry, delivery.dead) == (40, 3, [], [])
        assert sorted(e["event"]["event_id"] for e in server.accepted) == sorted(i["event_id"] for i in items)
        # One event alone over the limit can never be sent: dead-lettered with the reason.
        delivery = await s.deliver(pixel(), body(event(99, properties={"description": "d" * 30_000})))
        [(dead_body, answer)] = delivery.dead
        assert (answer.verdict.reason, answer.http_status, len(dead_body["data"])) == ("payload_too_large", 413, 1)
    finally:
        await s.close()
        await server.stop()


# ---------------------------------------------------------------- permanent refusals: dead

async def test_pixel_not_allowed_is_dead(fake, sender):
    sent = body(event(0), event(1), pixel=OTHER_PIXEL)
    delivery = await sender.deliver(pixel(OTHER_PIXEL), sent)
    assert (delivery.accepted, delivery.requests, delivery.retry) == (0, 1, [])
    assert len(delivery.dead) == 1
    dead_body, answer = delivery.dead[0]
    assert dead_body == sent
    assert (answer.verdict, answer.code, answer.http_status) == (
        Verdict(Action.DEAD, "no_permission"), 40001, 200)
    assert fake.accepted == []
    assert_token_hidden(answer)


async def test_raw_email_is_dead_40062(fake, sender):
    raw = event(0, user={"email": "alice@example.com"})
    delivery = await sender.deliver(pixel(), body(raw))
    assert (delivery.accepted, delivery.requests, delivery.retry) == (0, 1, [])
    [(dead_body, answer)] = delivery.dead
    assert dead_body == body(raw)
    assert answer.code == 40062
    assert answer.verdict == Verdict(Action.ISOLATE, "pii_not_hashed")
    assert answer.message == "Batch.0.user.email: Must be SHA-256 hashed (64 lowercase hex characters)."


# ---------------------------------------------------------------- token refused: hold, log once

async def test_unknown_token_is_held_for_retry_and_logged_once(fake, caplog):
    caplog.set_level(logging.ERROR, logger="app.tiktok.sender")
    s = Sender(load({}, api_url=fake.base))
    wrong = "wrong-token-" + TOKEN
    try:
        sent = body(event(0), event(1))
        first = await s.deliver(pixel(token=wrong), sent)
        second = await s.deliver(pixel(token=wrong), sent)
    finally:
        await s.close()

    for delivery in (first, second):
        assert (delivery.accepted, delivery.requests, delivery.dead) == (0, 1, [])
        [(kept, answer)] = delivery.retry
        assert kept == sent  # HOLD keeps the whole body
        assert (answer.verdict, answer.code) == (Verdict(Action.HOLD, "token_invalid"), 40105)
        assert wrong not in answer.message and TOKEN not in answer.message
    records = [r for r in caplog.records if r.name == "app.tiktok.sender"]
    assert len(records) == 1
    text = records[0].getMessage()
    assert records[0].levelno == logging.ERROR
    assert PIXEL in text and "40105" in text
    assert wrong not in text and TOKEN not in text
    assert fake.accepted == []


async def test_expired_tokens_are_held(fake, sender):
    fake.config.tokens_expired = True
    delivery = await sender.deliver(pixel(), body(event(0)))
    [(_, answer)] = delivery.retry
    assert (answer.verdict, answer.code) == (Verdict(Action.HOLD, "token_expired"), 40102)
    assert (delivery.accepted, delivery.dead) == (0, [])


# ---------------------------------------------------------------- transient failures: retry

async def test_server_error_code_is_retried(fake, sender):
    fake.config.fail_share = 1.0
    sent = body(event(0), event(1))
    delivery = await sender.deliver(pixel(), sent)
    assert (delivery.accepted, delivery.requests, delivery.dead) == (0, 1, [])
    [(kept, answer)] = delivery.retry
    assert kept == sent
    assert (answer.verdict, answer.code, answer.http_status) == (
        Verdict(Action.RETRY, "server_error"), 50000, 200)
    assert answer.error() == {"reason": "server_error", "code": 50000, "http_status": 200,
                              "message": "Internal error, please try again later."}


async def test_http_502_is_a_transport_failure(fake, sender):
    fake.config.http_502_share = 1.0
    sent = body(event(0))
    delivery = await sender.deliver(pixel(), sent)
    assert (delivery.accepted, delivery.requests, delivery.dead) == (0, 1, [])
    [(kept, answer)] = delivery.retry
    assert kept == sent
    assert (answer.verdict, answer.code, answer.http_status) == (TRANSPORT, None, 502)
    assert answer.verdict == Verdict(Action.RETRY, "transport_error")
    assert answer.message.startswith("HTTP 502: ")
    assert_token_hidden(answer)


# ---------------------------------------------------------------- answers echoing the token

ECHOED = {
    "html_502": Answer(TRANSPORT, None, 502, "HTTP 502: <html><body><h1>502 Bad Gateway</h1><pre>POST "
                       f"{TRACK_PATH}\nAccess-Token: ***\nContent-Type: application/json</pre></body></html>"),
    "json_500": Answer(Verdict(Action.RETRY, "server_error"), 50000, 200,
                       "Internal error ***, please try again later."),
    "json_401": Answer(Verdict(Action.HOLD, "token_invalid"), 40105, 200,
                       "Access token is invalid (Access-Token: ***)"),
    "reason_phrase": Answer(TRANSPORT, None, 502, "HTTP 502: <html><body><h1>502 Bad Gateway</h1></body></html>"),
    # aiohttp quotes the malformed status line in its error, token and all.
    "status_line": Answer(TRANSPORT, None, None, "ClientResponseError: 400, message=\"Bad status line:\\n  "
                          "Invalid status code:\\n\\n  b'HTTP/1.1 5O2 ***'\\n              ^\", url='{url}'"),
    "plain_text": Answer(TRANSPORT, None, 200, "unreadable response: upstream refused the request\n"
                         "Access-Token: ***\n"),
}


@pytest.mark.parametrize("form", ECHO_FORMS)
async def test_an_answer_echoing_the_token_is_kept_without_it(fake, sender, form):
    fake.config.echo_token = form
    sent = body(event(0))
    delivery = await sender.deliver(pixel(), sent)
    [(kept, answer)] = delivery.retry
    assert (kept, delivery.accepted, delivery.dead) == (sent, 0, [])
    expected = ECHOED[form]
    assert answer == Answer(expected.verdict, expected.code, expected.http_status,
                            expected.message.format(url=sender.url))
    assert_token_hidden(answer)
    assert fake.stats()["requests"] == 1


async def test_a_token_across_the_kept_length_leaves_no_piece_of_itself(scripted):
    # The old cut (the first 200 bytes, then nothing) kept the token's first 10 characters.
    _, s = await scripted(lambda raw: (502, b"x" * 190 + TOKEN.encode() + b"y" * 50))
    answer = await s.post(pixel(), body(event(0)))
    assert answer == Answer(TRANSPORT, None, 502, "HTTP 502: " + "x" * 190 + "***" + "y" * 7)


async def test_connection_refused_is_retried_without_raising():
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = Sender(load({}, api_url=f"http://127.0.0.1:{port}"))
    try:
        sent = body(event(0))
        delivery = await s.deliver(pixel(), sent)
    finally:
        await s.close()
    assert (delivery.accepted, delivery.requests, delivery.dead) == (0, 1, [])
    [(kept, answer)] = delivery.retry
    assert kept == sent
    assert (answer.verdict, answer.code, answer.http_status) == (TRANSPORT, None, None)
    assert answer.verdict.reason == "transport_error"
    assert answer.message.startswith("ClientConnectorError")
    assert_token_hidden(answer)


async def test_timeout_is_retried_without_raising(fake):
    fake.config.latency_ms = 500
    s = Sender(load({}, api_url=fake.base, http_total_timeout_s=0.1))
    try:
        delivery = await s.deliver(pixel(), body(event(0)))
    finally:
        await s.close()
    [(_, answer)] = delivery.retry
    assert (answer.verdict, answer.code, answer.http_status) == (TRANSPORT, None, None)
    assert (delivery.accepted, delivery.requests, delivery.dead) == (0, 1, [])


async def test_rate_limit_slows_down_and_halves_in_flight(fake, sender):
    fake.config.rate_limit_qps = 1
    limiter = sender.limiter(PIXEL)
    assert limiter.limit == 4  # max_in_flight_per_pixel's default

    ok = await sender.post(pixel(), body(event(0)))
    assert ok.code == 0 and limiter.limit == 4

    limited = await sender.post(pixel(), body(event(1)))
    assert limited.verdict == Verdict(Action.RETRY, "rate_limited", slows_down=True)
    assert limited.code == 40100
    assert limiter.limit == 2
    assert sender.rate_limited == 1

    delivery = await sender.deliver(pixel(), body(event(2)))
    [(_, answer)] = delivery.retry
    assert answer.code == 40100 and answer.verdict.slows_down
    assert limiter.limit == 1
    await sender.post(pixel(), body(event(3)))
    assert limiter.limit == 1  # never below one
    assert sender.rate_limited == 3
    assert fake.stats()["rate_limited"] == 3
    assert limiter.in_flight == 0


async def test_success_grows_the_limit_back_by_one(fake, sender):
    limiter = sender.limiter(PIXEL)
    limiter.slow_down()
    limiter.slow_down()
    assert limiter.limit == 1
    await sender.post(pixel(), body(event(0)))
    assert limiter.limit == 2
    await sender.post(pixel(), body(event(1)))
    await sender.post(pixel(), body(event(2)))
    await sender.post(pixel(), body(event(3)))
    assert limiter.limit == 4  # capped at the ceiling


async def test_backoff_grows_with_repeated_rate_limits(fake, sender):
    # sender.py: "Back off before the next request to this pixel: grows with repeated limits."
    fake.config.rate_limit_qps = 1
    assert (await sender.post(pixel(), body(event(0)))).code == 0
    assert (await sender.post(pixel(), body(event(1)))).code == 40100   # backoff starts: 0.1 s
    started = time.monotonic()
    assert (await sender.post(pixel(), body(event(2)))).code == 40100   # waited 0.1 s, limited again
    first_wait = time.monotonic() - started
    started = time.monotonic()
    assert (await sender.post(pixel(), body(event(3)))).code == 40100
    second_wait = time.monotonic() - started
    assert first_wait >= 0.09
    assert second_wait >= 0.18, f"backoff did not grow: {first_wait:.3f}s then {second_wait:.3f}s"


async def test_http_429_counts_as_a_rate_limit(scripted):
    _, s = await scripted(lambda raw: (429, b"slow down"))
    answer = await s.post(pixel(), body(event(0)))
    assert answer == Answer(Verdict(Action.RETRY, "rate_limited", slows_down=True), None, 429,
                            "HTTP 429")
    assert s.limiter(PIXEL).limit == 2


# ---------------------------------------------------------------- odd answers

async def test_garbage_200_response_is_retried_as_unreadable(scripted):
    _, s = await scripted(lambda raw: (200, b"<html>not json</html>"))
    sent = body(event(0))
    delivery = await s.deliver(pixel(), sent)
    assert (delivery.accepted, delivery.requests, delivery.dead) == (0, 1, [])
    [(kept, answer)] = delivery.retry
    assert kept == sent
    assert answer == Answer(TRANSPORT, None, 200, "unreadable response: <html>not json</html>")


@pytest.mark.parametrize("payload", [b"[]", b'"ok"', b"{}", b'{"code": "0"}', b'{"code": true}',
                                     b"\xff\xfe"])
async def test_json_without_an_integer_code_is_unreadable(scripted, payload):
    _, s = await scripted(lambda raw: (200, payload))
    answer = await s.post(pixel(), body(event(0)))
    assert (answer.verdict, answer.code, answer.http_status) == (TRANSPORT, None, 200)
    assert answer.message.startswith("unreadable response: ")


async def test_http_404_holds_the_events(scripted):
    _, s = await scripted(lambda raw: (404, b"no such route"))
    sent = body(event(0))
    delivery = await s.deliver(pixel(), sent)
    [(kept, answer)] = delivery.retry
    assert kept == sent
    assert answer == Answer(Verdict(Action.HOLD, "http_error"), None, 404, "HTTP 404")


async def test_the_token_reaches_the_server_but_no_answer(scripted):
    for payload in (tiktok_json(0, "OK"), tiktok_json(40105, "Access token is invalid."),
                    b"garbage"):
        server, s = await scripted(lambda raw, p=payload: (200, p))
        sent = body(event(0))
        answer = await s.post(pixel(), sent)
        [(headers, raw)] = server.requests
        assert headers["Access-Token"] == TOKEN  # as is: no "Bearer"
        assert headers["Content-Type"] == "application/json"
        assert orjson.loads(raw) == sent
        assert TOKEN.encode() not in raw
        assert_token_hidden(answer)
