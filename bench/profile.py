"""Sampling the worker with py-spy during a phase, and reading the samples back as hot spots.

py-spy attaches to the running worker (no code change) and writes collapsed stacks
("frame;frame;frame count" per line). It pauses the worker for each sample: `--nonblocking` costs
less but, on this worker, truncated or mixed up about a third of the stacks. `hot_spots`
turns them into the functions that own the most samples (self) and those under which the most
samples fall (total), as shares of all samples taken while the worker was busy.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "hot_spots", "format_hot_spots", "py_spy"]


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record --format raw` on one pid from start() until stop() (SIGINT: py-spy then
    writes what it has)."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen | None = None

    def start(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.out.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--format", "raw", "--nolineno",
             "--rate", str(self.rate), "--output", str(self.out)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def stop(self) -> Path | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None
        return self.out if self.out.exists() else None


# Frames every busy stack passes through (the event loop, the interpreter's entry, the worker's
# main): ranked by total they only say "the worker was busy", so `total` leaves them out.
_PLUMBING = ("(asyncio/", "(<frozen runpy>)", "(threading.py)", "(selectors.py)", "(mode/worker.py)",
             "(mode/threads.py)", "(app/__main__.py)", "(app/cli.py)", "_main (app/worker.py)")


def _function(frame: str) -> str:
    # "forward (app/forwarder.py)" -> as it is; py-spy already shortened the path.
    return frame.strip()


def hot_spots(raw: str, top: int = 10) -> dict:
    """{"samples": n, "self": [(function, share)], "total": [(function, share)]} from py-spy's
    raw (collapsed) output. A function that recurses counts once per sample in `total`; event
    loop plumbing is left out of `total` (see _PLUMBING)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            if not any(p in f for p in _PLUMBING):
                under[f] += n
    share = (lambda c: [(f, round(v / samples, 4)) for f, v in c.most_common(top)]) if samples else (lambda c: [])
    return {"samples": samples, "self": share(own), "total": share(under)}


def format_hot_spots(spots: dict, title: str) -> str:
    lines = [f"{title}: {spots['samples']} samples",
             f"  {'self %':>7}  function (file)"]
    lines += [f"  {100 * s:7.1f}  {f}" for f, s in spots["self"]]
    lines += [f"  {'total %':>7}  function (file)"]
    lines += [f"  {100 * s:7.1f}  {f}" for f, s in spots["total"]]
    return "\n".join(lines)
