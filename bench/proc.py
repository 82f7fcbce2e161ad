"""What a process costs, read from /proc: CPU seconds (all threads) and memory (VmHWM, VmRSS).

The CPU shares say which process is the bottleneck of a phase: on two cores, a single-threaded
Python worker near 1.0 is CPU-bound, the in-process fake near 1.0 would mean the benchmark
measures itself.
"""
from __future__ import annotations

import os
import time

__all__ = ["cpu_seconds", "tree_cpu_seconds", "memory_mb", "CpuMeter", "TreeCpu"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the process (all its threads); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces: split after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the process and every descendant, including the children
    they already reaped (cutime, cstime): a worker that runs its stages in child processes is
    charged for all of them. None once the root is gone."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))  # field 4: ppid
    if pid not in stats:
        return None
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        fields = stats[p]
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime (fields 14-17)
        todo.extend(children.get(p, ()))
    return total / _TICK


def memory_mb(pid: int) -> dict[str, float]:
    """{"hwm": peak resident MB, "rss": resident MB now}; {} once the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    name, kb = line.split()[:2]
                    out["hwm" if name == "VmHWM:" else "rss"] = int(kb) / 1024
    except FileNotFoundError:
        pass
    return out


class CpuMeter:
    """CPU used by named processes between start() and stop(), in cores (1.0 = one core busy)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._start: dict[str, float | None] = {}
        self._t0 = 0.0

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        out = {}
        for name, pid in self.pids.items():
            end, begin = cpu_seconds(pid), self._start.get(name)
            if end is not None and begin is not None and wall > 0:
                out[name] = round((end - begin) / wall, 3)
        return out


class TreeCpu:
    """CPU seconds a process tree used between start() and stop() (see tree_cpu_seconds)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._begin: float | None = None

    def start(self) -> TreeCpu:
        self._begin = tree_cpu_seconds(self.pid)
        return self

    def stop(self) -> float | None:
        end = tree_cpu_seconds(self.pid)
        return None if end is None or self._begin is None else end - self._begin
