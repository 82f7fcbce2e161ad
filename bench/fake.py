"""The Events API receivers the benchmark runs: the faithful fake in this process (its request
handling shares the benchmark's event loop) or in a subprocess (`python -m app fake-tiktok
--record PATH`), and the counting receiver (bench/receiver.py) in a subprocess.

The fakes give `accepted()` (the fake's count of accepted events) and `drain()` (what arrived
since the last drain: event_id, received_at, whether the event carried a ttclid, i.e. joined its
click). Draining often keeps the in-process fake's memory flat on long runs. Every receiver gives
`tally()`: events accepted, joined and the last arrival so far, all the throughput phases need.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import aiohttp
import orjson

from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
from app.devtools.kafka_local import free_port
from bench.load import PIXEL, TOKEN

__all__ = ["Arrival", "Tally", "InProcessFake", "SubprocessFake", "CountingReceiver", "make_fake"]


class Arrival(NamedTuple):
    event_id: str
    received_at: float
    joined: bool


class Tally(NamedTuple):
    accepted: int
    joined: int
    last_at: float | None


class _Tallied:
    """A fake's running tally, kept up by every drain() (whoever drains)."""

    _accepted = _joined = 0
    _last_at: float | None = None

    def _count(self, arrivals: list[Arrival]) -> list[Arrival]:
        if arrivals:
            self._accepted += len(arrivals)
            self._joined += sum(a.joined for a in arrivals)
            self._last_at = max(self._last_at or 0.0, max(a.received_at for a in arrivals))
        return arrivals

    async def tally(self) -> Tally:
        self.drain()
        return Tally(self._accepted, self._joined, self._last_at)


def _arrival(entry: dict) -> Arrival:
    event = entry["event"]
    return Arrival(event.get("event_id", ""), entry["received_at"], "ttclid" in event.get("user", {}))


class InProcessFake(_Tallied):
    mode = "in-process"

    def __init__(self) -> None:
        self.fake = FakeTikTok(FakeConfig(tokens={TOKEN: frozenset({PIXEL})}))
        self.pid = os.getpid()
        self.url = ""

    async def start(self) -> str:
        self.url = await self.fake.start("127.0.0.1", 0)
        return self.url

    async def stats(self) -> dict:
        return self.fake.stats()

    async def accepted(self) -> int:
        return self.fake.stats()["events_accepted"]

    async def set_latency(self, ms: float) -> None:
        self.fake.config.latency_ms = ms

    def drain(self) -> list[Arrival]:
        got, self.fake.accepted = self.fake.accepted, []
        return self._count([_arrival(e) for e in got])

    async def stop(self) -> None:
        await self.fake.stop()


class SubprocessFake(_Tallied):
    mode = "subprocess"

    def __init__(self, workdir: Path) -> None:
        self.record = workdir / f"fake-{time.monotonic_ns()}.jsonl"
        self.log = self.record.with_suffix(".log")
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.url = ""
        self._offset = 0
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        port = free_port()
        return await _spawn(self, "fake-tiktok", port, [
            "-m", "app", "fake-tiktok", "--port", str(port), "--access-token", TOKEN, "--pixel", PIXEL,
            "--record", str(self.record)])

    async def stats(self) -> dict:
        async with self._session.get(self.url + "/stats") as r:
            return await r.json(loads=orjson.loads)

    async def accepted(self) -> int:
        return (await self.stats())["events_accepted"]

    async def set_latency(self, ms: float) -> None:
        async with self._session.post(self.url + "/control", data=orjson.dumps({"latency_ms": ms})) as r:
            r.raise_for_status()

    def drain(self) -> list[Arrival]:
        try:
            with open(self.record, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # only whole lines: the fake flushes once per request
        self._offset += end
        return self._count([_arrival(orjson.loads(line)) for line in chunk[:end].splitlines() if line])

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class CountingReceiver:
    """bench/receiver.py in its own process: counts, checks the shape, validates nothing else."""

    mode = "counting"

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / f"receiver-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        port = free_port()
        return await _spawn(self, "bench.receiver", port, ["-m", "bench.receiver", "--port", str(port)])

    async def stats(self) -> dict:
        async with self._session.get(self.url + "/stats") as r:
            return await r.json(loads=orjson.loads)

    async def accepted(self) -> int:
        return (await self.stats())["events_accepted"]

    async def tally(self) -> Tally:
        s = await self.stats()
        return Tally(s["events_accepted"], s["joined"], s["last_received_at"])

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_fake(mode: str, workdir: Path) -> InProcessFake | SubprocessFake:
    return InProcessFake() if mode == "in-process" else SubprocessFake(workdir)


async def _spawn(receiver, name: str, port: int, args: list[str]) -> str:
    """Start `receiver` (a subprocess receiver with `log`, `stats()`) as `python args` from the
    repository root, and wait until it answers; its URL."""
    with open(receiver.log, "wb") as log:
        receiver.proc = subprocess.Popen([sys.executable, *args], cwd=Path(__file__).resolve().parents[1],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
    receiver.pid = receiver.proc.pid
    receiver.url = f"http://127.0.0.1:{port}"
    receiver._session = aiohttp.ClientSession()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if receiver.proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {receiver.log.read_text(errors='replace')[-2000:]}")
        try:
            await receiver.stats()
            return receiver.url
        except (aiohttp.ClientError, OSError):
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{name} did not answer within 30 s")
