"""A local fake of the TikTok Events API (v1.3 /event/track/), at least as strict as TikTok.

Tests, the demo and the benchmark point the sender at this server instead of TikTok, so it has to
refuse everything TikTok would refuse (it reads the same tables in app.tiktok.facts as the mapping does)
and answer the way TikTok answers: HTTP 200 with a body code for API errors, and now and then a
gateway's HTML 5xx when faults are switched on.

- check_request(): pure validation of one parsed request body; property-based tests elsewhere call
  it to prove that what they emit would pass. It and its rules live in app.devtools.fake_tiktok_rules and
  are re-exported here.
- FakeTikTok: the aiohttp server (faults, tokens, rate limit, dedup, recording, /stats, /control).
- register(): the `fake-tiktok` CLI sub-command.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import IO, Any, Callable

import orjson
from aiohttp import web

from app.devtools.fake_tiktok_rules import INVALID_PARTNER, _is_number, check_request
from app.tiktok.facts import TRACK_PATH, Code

__all__ = ["check_request", "FakeConfig", "FakeTikTok", "register", "main", "DEMO_TOKEN",
           "DEMO_PIXEL", "INVALID_PARTNER", "ECHO_FORMS"]

DEMO_TOKEN = "demo-token"
DEMO_PIXEL = "DEMOPIXEL0000000000"


# --------------------------------------------------------------------------- the server

@dataclass
class FakeConfig:
    """How the fake behaves. The fault fields can also be changed at runtime via POST /control."""

    # token -> the pixel codes (event_source_id values) it may send to
    tokens: dict[str, frozenset[str]] = field(
        default_factory=lambda: {DEMO_TOKEN: frozenset({DEMO_PIXEL})})
    # The shares are disjoint slices of all track requests, drawn in order: 502, 503, 50000.
    fail_share: float = 0.0          # answer body code 50000 (HTTP 200)
    http_502_share: float = 0.0      # answer a gateway's HTTP 502 with an HTML body
    http_503_share: float = 0.0      # likewise HTTP 503
    latency_ms: float = 0.0          # added to every track request, before anything else
    rate_limit_qps: float | None = None  # per token, sliding 1 s window; over it -> 40100
    tokens_expired: bool = False     # every known token answers 40102
    record_path: str | None = None   # JSON lines, one per accepted (non-duplicate) event
    dedup_window_s: float = 48 * 3600  # TikTok drops pixel+event+event_id repeats for 48 h
    seed: int | None = None          # for the fault draws, so a benchmark run can be replayed
    # The real request size limit is unconfirmed; aiohttp answers 413 above this.
    max_body_bytes: int = 8 * 1024 * 1024
    # Answer every track request with its own Access-Token echoed back, in one of ECHO_FORMS, the
    # way gateways' error pages and some API messages quote the request. None: never. Set on the
    # config object or by --echo-token (not by /control, whose answer lists its settings).
    echo_token: str | None = None


_GATEWAY_PAGES = {
    502: "<html><body><h1>502 Bad Gateway</h1></body></html>",
    503: "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
}


# Where an echoed token can sit: an HTML 502 page listing the request headers, a JSON 50000
# message, a 40105 (TikTok's 401) message, the reason phrase of a 502, a malformed status line
# (the HTTP client's error quotes it), a plain-text body with HTTP 200.
ECHO_FORMS = ("html_502", "json_500", "json_401", "reason_phrase", "status_line", "plain_text")


def _share(value: Any) -> float:
    if not (_is_number(value) and 0 <= value <= 1):
        raise ValueError("must be a number between 0 and 1")
    return float(value)


def _latency(value: Any) -> float:
    if not (_is_number(value) and 0 <= value <= 600_000):
        raise ValueError("must be a number of milliseconds from 0 to 600000")
    return float(value)


def _qps(value: Any) -> float | None:
    if value is not None and not (_is_number(value) and value > 0):
        raise ValueError("must be a number > 0, or null for no limit")
    return None if value is None else float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


# What POST /control may change, each with its validator.
_CONTROLS: dict[str, Callable[[Any], Any]] = {
    "fail_share": _share, "http_502_share": _share, "http_503_share": _share,
    "latency_ms": _latency, "rate_limit_qps": _qps, "tokens_expired": _flag,
}


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


class FakeTikTok:
    """The fake Events API: config, counters, dedup state and accepted events, all in memory."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        config = config or FakeConfig()
        # A copy, so /control changes stay in this fake and never leak into the caller's config.
        self.config = replace(config, tokens=dict(config.tokens))
        self._random = random.Random(config.seed)
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._record: IO[bytes] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget counters, accepted events, dedup and rate-limit state (not the record file)."""
        self.accepted: list[dict[str, Any]] = []
        # Size of every accepted request and the last accepted body, as received (demo, tests).
        self.batch_sizes: list[int] = []
        self.last_body: dict[str, Any] | None = None
        self._counters: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        # Dedup: key -> first-seen time, plus the keys in arrival order so expiry pops from the
        # front in O(1) instead of scanning a dict that grows with every benchmark event.
        self._seen: dict[tuple[str, str, str], float] = {}
        self._seen_order: deque[tuple[float, tuple[str, str, str]]] = deque()
        self._rate_windows: dict[str, deque[float]] = {}

    def stats(self) -> dict[str, Any]:
        """Counters. `rejections` counts every non-zero body code answered, 40100 and 50000 too."""
        return {
            "requests": self._counters["requests"],
            "events_accepted": self._counters["events_accepted"],
            "duplicates": self._counters["duplicates"],
            "rejections": dict(self._rejections),
            "http_errors": self._counters["http_errors"],
            "rate_limited": self._counters["rate_limited"],
        }

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in _CONTROLS}

    # ---- lifecycle

    @property
    def app(self) -> web.Application:
        """One app for callers that serve it themselves (aiohttp's TestServer, web.run_app)."""
        if self._app is None:
            self._app = self.make_app()
        return self._app

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(TRACK_PATH, self._track)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/control", self._control)
        app.router.add_post("/reset", self._reset)
        app.router.add_get("/health", self._health)
        app.on_cleanup.append(self._close_record)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in the running event loop; returns the base URL with the port actually bound."""
        if self.config.record_path:
            self._record_file()  # an unwritable path fails here, not as HTTP 500s later
        # A fresh app each time: an aiohttp app cannot be set up again once it was cleaned up.
        # access_log=None: a line per request would swamp the benchmark's output and its CPU.
        # shutdown_timeout: a handler still held by latency_ms when the fake stops is cancelled
        # after a moment (its client sees the connection drop) instead of aiohttp's 60 s wait.
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        bound_port = self._runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        return f"http://{shown_host}:{bound_port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # runs on_cleanup, which closes the record file
            self._runner = None
        await self._close_record()

    def _record_file(self) -> IO[bytes]:
        if self._record is None:
            self._record = open(self.config.record_path, "ab")  # kept open; closed on cleanup
        return self._record

    async def _close_record(self, _app: web.Application | None = None) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None

    # ---- track endpoint

    def _answer(self, code: int, message: str) -> web.Response:
        if code != Code.OK:
            self._rejections[str(code)] += 1
        # API errors come back with HTTP 200, exactly like TikTok: only the body code tells.
        return _json({"code": code, "message": message, "request_id": uuid.uuid4().hex,
                      "data": {}})

    def _draw_fault(self) -> int | None:
        config = self.config
        draw = self._random.random()
        for share, fault in ((config.http_502_share, 502), (config.http_503_share, 503),
                             (config.fail_share, Code.SERVER_ERROR)):
            if draw < share:
                return fault
            draw -= share
        return None

    def _over_rate_limit(self, token: str) -> bool:
        qps = self.config.rate_limit_qps
        if qps is None:
            return False
        now = time.monotonic()
        window = self._rate_windows.setdefault(token, deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= qps:
            return True  # a refused request does not use up capacity
        window.append(now)
        return False

    def _is_duplicate(self, key: tuple[str, str, str], now: float) -> bool:
        window_s = self.config.dedup_window_s
        while self._seen_order and now - self._seen_order[0][0] >= window_s:
            first_seen, old_key = self._seen_order.popleft()
            if self._seen.get(old_key) == first_seen:
                del self._seen[old_key]
        if key in self._seen:
            return True  # the window runs from the first sighting: a repeat does not extend it
        self._seen[key] = now
        self._seen_order.append((now, key))
        return False

    def _accept(self, body: dict[str, Any]) -> None:
        now = time.time()
        self.batch_sizes.append(len(body["data"]))
        self.last_body = body
        source_id = body["event_source_id"]
        lines = []
        for event in body["data"]:
            event_id = event.get("event_id")
            # Without event_id TikTok falls back to _ttp matching, which we do not imitate.
            key = (source_id, event["event"], event_id)
            if event_id is not None and self._is_duplicate(key, now):
                self._counters["duplicates"] += 1
                continue
            entry = {"pixel_code": source_id, "event_source": body["event_source"],
                     "test_event_code": body.get("test_event_code"), "received_at": now,
                     "event": event}
            self.accepted.append(entry)
            lines.append(orjson.dumps(entry))
        self._counters["events_accepted"] += len(lines)
        if lines and self.config.record_path:
            record = self._record_file()
            record.write(b"\n".join(lines) + b"\n")
            record.flush()  # per request, so a reader sees whole requests as they land

    async def _track(self, request: web.Request) -> web.StreamResponse:
        self._counters["requests"] += 1
        config = self.config
        # 1. Injected faults come first: a gateway fails before TikTok looks at the request.
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000)
        if config.echo_token is not None:
            return await self._echo(config.echo_token, request)
        fault = self._draw_fault()
        if fault in _GATEWAY_PAGES:
            self._counters["http_errors"] += 1
            return web.Response(status=fault, text=_GATEWAY_PAGES[fault], content_type="text/html")
        if fault == Code.SERVER_ERROR:
            return self._answer(Code.SERVER_ERROR, "Internal error, please try again later.")
        # 2. Token.
        token = request.headers.get("Access-Token", "")
        if not token:
            return self._answer(Code.TOKEN_EMPTY, "Access-Token header is empty.")
        pixels_allowed = config.tokens.get(token)
        if pixels_allowed is None:
            return self._answer(Code.TOKEN_INVALID, "Access token is invalid.")
        if config.tokens_expired:
            return self._answer(Code.TOKEN_EXPIRED, "Access token has expired.")
        # 3. Rate limit, per token.
        if self._over_rate_limit(token):
            self._counters["rate_limited"] += 1
            return self._answer(Code.RATE_LIMITED, "Too many requests, please retry later.")
        # 4-5. Body.
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._answer(Code.INVALID_PARAMETER, "Request body is not valid JSON.")
        code, message = check_request(body, pixels_allowed)
        if code != Code.OK:
            return self._answer(code, message)
        # 6. Accepted (duplicates included: TikTok answers OK and silently drops them).
        self._accept(body)
        return self._answer(Code.OK, "OK")

    async def _echo(self, form: str, request: web.Request) -> web.StreamResponse:
        if form not in ECHO_FORMS:
            raise ValueError(f"echo_token: {form!r} is not one of {', '.join(ECHO_FORMS)}")
        await request.read()  # the whole request in, as a gateway reads it before it answers
        token = request.headers.get("Access-Token", "")
        if form == "json_500":
            return self._answer(Code.SERVER_ERROR, f"Internal error {token}, please try again later.")
        if form == "json_401":
            return self._answer(Code.TOKEN_INVALID, f"Access token is invalid (Access-Token: {token})")
        if form == "plain_text":
            return web.Response(text=f"upstream refused the request\nAccess-Token: {token}\n")
        self._counters["http_errors"] += 1
        if form == "html_502":
            return web.Response(status=502, content_type="text/html", text=(
                f"<html><body><h1>502 Bad Gateway</h1><pre>POST {TRACK_PATH}\nAccess-Token: {token}\n"
                "Content-Type: application/json</pre></body></html>"))
        if form == "reason_phrase":
            return web.Response(status=502, reason=f"Bad Gateway {token}", text=_GATEWAY_PAGES[502],
                                content_type="text/html")
        # status_line: aiohttp only writes valid ones, so the bytes go out by hand; the response
        # returned after them is never sent (the connection is closed).
        if request.transport is not None:
            request.transport.write(f"HTTP/1.1 5O2 {token}\r\nContent-Length: 0\r\n\r\n".encode())
            request.transport.close()
        return web.Response(status=502)

    # ---- test and demo routes

    async def _stats(self, _request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _control(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": "body is not valid JSON"}, status=400)
        if not isinstance(changes, dict):
            return _json({"error": "body must be a JSON object"}, status=400)
        new_values = {}
        # Validate everything before changing anything, so a bad request changes nothing.
        for name, value in changes.items():
            if name not in _CONTROLS:
                return _json({"error": f"{name}: unknown setting"}, status=400)
            try:
                new_values[name] = _CONTROLS[name](value)
            except ValueError as exc:
                return _json({"error": f"{name}: {exc}"}, status=400)
        for name, value in new_values.items():
            setattr(self.config, name, value)
        return _json(self.settings())

    async def _reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return _json(self.stats())

    async def _health(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok"})


# --------------------------------------------------------------------------- CLI

def _arg(validate: Callable[[Any], Any]) -> Callable[[str], Any]:
    """Turn a /control validator into an argparse type, so both reject the same values."""
    def parse(text: str) -> Any:
        return validate(float(text))
    parse.__name__ = validate.__name__.lstrip("_")  # argparse names it in its error message
    return parse


def register(subparsers: Any) -> None:
    """Add the `fake-tiktok` sub-command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "fake-tiktok", help="Run a local fake of the TikTok Events API (tests, demo, benchmark).",
        description="Serve a fake TikTok Events API that is at least as strict as TikTok. "
                    "Stats at GET /stats, faults changed at runtime via POST /control.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8099, help="port to bind, 0 for any free one "
                        "(default: %(default)s)")
    parser.add_argument("--access-token", dest="access_tokens", action="append", metavar="T",
                        help=f"an accepted Access-Token; repeatable (default: {DEMO_TOKEN})")
    parser.add_argument("--pixel", dest="pixels", action="append", metavar="P",
                        help="a pixel code every listed token may send to; repeatable "
                             f"(default: {DEMO_PIXEL})")
    parser.add_argument("--fail-share", type=_arg(_share), default=0.0,
                        help="share of requests answering code 50000 (0..1)")
    parser.add_argument("--http-502-share", type=_arg(_share), default=0.0,
                        help="share of requests answering HTTP 502 with HTML (0..1)")
    parser.add_argument("--http-503-share", type=_arg(_share), default=0.0,
                        help="share of requests answering HTTP 503 with HTML (0..1)")
    parser.add_argument("--latency-ms", type=_arg(_latency), default=0.0,
                        help="milliseconds added to each track request")
    parser.add_argument("--rate-limit-qps", type=_arg(_qps), default=None,
                        help="requests per second per token before code 40100 (default: none)")
    parser.add_argument("--record", metavar="PATH", default=None,
                        help="append each accepted event to this JSON-lines file")
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault draws")
    parser.add_argument("--echo-token", choices=ECHO_FORMS, default=None,
                        help="answer every request with its Access-Token echoed back in this form")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    pixels = frozenset(args.pixels or [DEMO_PIXEL])
    config = FakeConfig(
        tokens={token: pixels for token in (args.access_tokens or [DEMO_TOKEN])},
        fail_share=args.fail_share, http_502_share=args.http_502_share,
        http_503_share=args.http_503_share, latency_ms=args.latency_ms,
        rate_limit_qps=args.rate_limit_qps, record_path=args.record, seed=args.seed,
        echo_token=args.echo_token)
    try:
        asyncio.run(_serve(FakeTikTok(config), args.host, args.port))
    except OSError as exc:  # the port is taken, or the record file cannot be opened
        print(f"fake-tiktok: cannot start on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(fake: FakeTikTok, host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        base_url = await fake.start(host, port)
        # One line, the URL last, so scripts can read it; never a token.
        print(f"fake-tiktok listening on {base_url}", flush=True)
        await stopping.wait()
    finally:
        await fake.stop()
