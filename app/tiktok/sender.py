"""The sender: POSTs request bodies to the Events API and says what became of every event.

One aiohttp session per worker (keep-alive), connect and total timeouts, a bounded number of
in-flight requests per pixel that shrinks on rate limits and grows back on success. The
response body code decides (errors come with HTTP 200); see app/outcomes.py. What it keeps of an
answer's text or of a failure's exception is redacted (app/tiktok/redact.py): answers can echo
the token.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp
import orjson

from app.settings import Pixel, Settings
from app.tiktok.outcomes import TOO_LARGE, TRANSPORT, Action, Verdict, error_info, verdict_for_code
from app.tiktok.redact import SECRETS, guard_logs, redact, remember

__all__ = ["Sender", "Delivery", "Answer"]

log = logging.getLogger(__name__)

# TikTok names the failing event of a 40002 as "Batch.<index>....".
_BAD_INDEX = re.compile(r"\bBatch\.(\d+)\b")
_HOLD_LOG_EVERY_S = 60.0


@dataclass
class Answer:
    """One POST's outcome."""

    verdict: Verdict
    code: int | None
    http_status: int | None
    message: str

    def error(self) -> dict:
        return error_info(self.verdict.reason, self.message, self.code, self.http_status)


@dataclass
class Delivery:
    """What became of one request body's events, after splitting and isolating."""

    accepted: int = 0
    requests: int = 0
    retry: list[tuple[dict, Answer]] = field(default_factory=list)   # bodies for the retry topic
    dead: list[tuple[dict, Answer]] = field(default_factory=list)    # bodies for the DLQ


class _Limiter:
    """In-flight requests for one pixel: halves on a rate limit, grows by one per success."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def slow_down(self) -> None:
        self.limit = max(1, self.limit // 2)

    def speed_up(self) -> None:
        if self.limit < self.ceiling:
            self.limit += 1


# observe(pixel code, events in the request, seconds, answer): called once per POST (metrics).
Observe = Callable[[str, int, float, Answer], None]


class Sender:
    def __init__(self, settings: Settings, observe: Observe | None = None) -> None:
        self.url = settings.track_url
        self.settings = settings
        self.observe = observe
        self._session: aiohttp.ClientSession | None = None
        self._limiters: dict[str, _Limiter] = {}
        self._hold_logged: dict[str, float] = {}
        # Seconds to wait after a rate limit before the next request to that pixel.
        self._backoff: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self.requests = 0
        self.rate_limited = 0
        # Answers can echo the token back (app/tiktok/redact.py): from here on, every text this
        # process keeps of them, and every log line it writes, is redacted.
        remember(settings)
        guard_logs()

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.http_total_timeout_s,
                                            sock_connect=self.settings.http_connect_timeout_s)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
                json_serialize=lambda o: orjson.dumps(o).decode())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def in_flight(self) -> dict[tuple[str], int]:
        """{(pixel code,): requests on the wire} (a gauge read at scrape time)."""
        return {(code,): lim.in_flight for code, lim in self._limiters.items()}

    def limiter(self, pixel_code: str) -> _Limiter:
        lim = self._limiters.get(pixel_code)
        if lim is None:
            lim = self._limiters[pixel_code] = _Limiter(self.settings.max_in_flight_per_pixel)
        return lim

    async def deliver(self, pixel: Pixel, body: dict) -> Delivery:
        """Send one body; split on 40061, isolate the bad events of a 40002 and send the rest."""
        result = Delivery()
        queue = [body]
        while queue:
            current = queue.pop()
            answer = await self.post(pixel, current)
            result.requests += 1
            data = current["data"]
            action = answer.verdict.action
            if action is Action.DONE:
                result.accepted += len(data)
            elif action in (Action.SPLIT, Action.ISOLATE) and len(data) > 1:
                index = _bad_index(answer.message, len(data)) if action is Action.ISOLATE else None
                if index is not None:
                    result.dead.append(({**current, "data": [data[index]]}, answer))
                    rest = data[:index] + data[index + 1:]
                    queue.append({**current, "data": rest})
                else:  # no usable index: bisect
                    half = len(data) // 2
                    queue += [{**current, "data": data[:half]}, {**current, "data": data[half:]}]
            elif action in (Action.RETRY, Action.HOLD):
                result.retry.append((current, answer))
            else:  # DEAD, or a lone event TikTok refused
                result.dead.append((current, answer))
        return result

    async def post(self, pixel: Pixel, body: dict) -> Answer:
        """One POST, never raising: every failure becomes an Answer."""
        await self.start()
        limiter = self.limiter(pixel.code)
        payload = orjson.dumps(body)
        token = pixel.token.reveal()
        SECRETS.add(token)  # a pixel the settings did not name (tests, tools) is known from now on
        headers = {"Access-Token": token, "Content-Type": "application/json"}
        async with limiter:
            wait = self._backoff.get(pixel.code, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.requests += 1
            started = time.monotonic()
            try:
                async with self._session.post(self.url, data=payload, headers=headers) as resp:
                    status, raw = resp.status, await resp.read()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                # str(e) can quote the answer: aiohttp cites a malformed status line in full.
                answer = Answer(TRANSPORT, None, None, redact(f"{type(e).__name__}: {e}", 500))
                self._observed(pixel.code, body, started, answer)
                return answer
        answer = _read_answer(status, raw)
        self._observed(pixel.code, body, started, answer)
        self._adapt(pixel.code, limiter, answer)
        return answer

    def _observed(self, pixel_code: str, body: dict, started: float, answer: Answer) -> None:
        if self.observe is not None:
            self.observe(pixel_code, len(body["data"]), time.monotonic() - started, answer)

    def _adapt(self, pixel_code: str, limiter: _Limiter, answer: Answer) -> None:
        if answer.verdict.slows_down:
            self.rate_limited += 1
            limiter.slow_down()
            # Back off before the next request to this pixel: doubles while the limit lasts.
            delay = min(5.0, max(0.1, self._delay.get(pixel_code, 0.0) * 2))
            self._delay[pixel_code] = delay
            self._backoff[pixel_code] = time.monotonic() + delay
        elif answer.verdict.action is Action.DONE:
            limiter.speed_up()
            self._delay.pop(pixel_code, None)
        elif answer.verdict.action is Action.HOLD:
            now = time.monotonic()
            if now - self._hold_logged.get(pixel_code, -1e9) >= _HOLD_LOG_EVERY_S:
                self._hold_logged[pixel_code] = now
                what = (f"TikTok refuses the access token (code {answer.code})" if answer.code is not None
                        else f"the Events API URL answers HTTP {answer.http_status}")
                log.error("%s for pixel %s (%s): events are kept on the retry tiers until this "
                          "is fixed", what, pixel_code, answer.verdict.reason)


def _read_answer(status: int, raw: bytes) -> Answer:
    if status != 200:
        if status == 429:
            return Answer(verdict_for_code(40100), None, status, f"HTTP {status}")
        if status == 413:
            return Answer(TOO_LARGE, None, status, f"HTTP {status}: request body too large")
        if 400 <= status < 500 and status != 408:
            # Wrong URL or a proxy refusing us: configuration, not the events. Keep them.
            return Answer(Verdict(Action.HOLD, "http_error"), None, status, f"HTTP {status}")
        return Answer(TRANSPORT, None, status, f"HTTP {status}: {redact(raw, 200)}")
    try:
        doc = orjson.loads(raw)
        code = doc["code"]
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError(code)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Answer(TRANSPORT, None, status, f"unreadable response: {redact(raw, 200)}")
    return Answer(verdict_for_code(code), code, status, redact(str(doc.get("message", "")), 1000))


def _bad_index(message: str, size: int) -> int | None:
    m = _BAD_INDEX.search(message)
    if m is None:
        return None
    index = int(m.group(1))
    return index if index < size else None
