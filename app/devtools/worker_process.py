"""A worker in its own process, as a deployment runs it — for the demo, the end-to-end tests and
the benchmark. Start, wait until ready, read its counters, stop gracefully or kill it.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import aiohttp
import orjson

__all__ = ["WorkerProcess", "produce_json"]


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, loglevel: str = "warning",
                 args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.loglevel = loglevel
        self.args = args
        self.web = f"http://127.0.0.1:{env['TTBRIDGE_WEB_PORT']}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "worker", "--loglevel", self.loglevel, *self.args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    async def get(self, path: str) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as s:
            async with s.get(self.web + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status, await r.json(content_type=None)

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                status, _ = await self.get("/readyz")
                if status == 200:
                    return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout:.0f} s: {self.log_tail()}")

    async def stats(self) -> dict:
        return (await self.get("/stats"))[1]

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it overstays. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


async def produce_json(bootstrap: str, topic: str, values: list, key=None,
                       security: Mapping[str, Any] | None = None) -> None:
    """Produce values (dicts are JSON-encoded, bytes sent as they are), waiting for every ack.
    `security`: app.job.kafka_security.client_options, for a secured listener."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **(security or {}))
    await producer.start()
    try:
        futures = []
        for v in values:
            raw = v if isinstance(v, bytes) else orjson.dumps(v)
            k = key(v) if callable(key) else key
            futures.append(await producer.send(topic, raw, key=k.encode() if isinstance(k, str) else k))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
