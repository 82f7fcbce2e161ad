"""Counters for /metrics (Prometheus text format) and the demo's summary.

Plain dict increments on the hot path; rendering happens only when scraped.
"""
from __future__ import annotations

from collections import Counter

__all__ = ["Metrics"]

_HELP = {
    "events_in": "tracking events read",
    "clicks_in": "clicks read (including landing pages recorded as clicks)",
    "events_joined": "events that found their click",
    "events_waited": "events sent without their click after waiting join_wait",
    "events_skipped": "events not sent on purpose, by reason (e.g. unmapped)",
    "events_sent": "TikTok events accepted by the Events API",
    "events_retrying": "TikTok events written to the retry topic",
    "dead_letters": "records written to the dead-letter topic, by reason",
    "requests": "requests sent to the Events API",
    "batches": "request bodies built by the forwarder",
    "clicks_expired": "clicks past the attribution window deleted from the table",
    "click_sweeps": "runs of the sweeper that deletes expired clicks",
}


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, n: int = 1, reason: str = "") -> None:
        self.counts[(name, reason)] += n

    def get(self, name: str, reason: str | None = None) -> int:
        if reason is not None:
            return self.counts[(name, reason)]
        return sum(v for (n, _), v in self.counts.items() if n == name)

    def snapshot(self) -> dict:
        """{name: n} for plain counters, {name: {reason: n}} for counters with reasons."""
        out: dict = {}
        labelled = {n for n, r in self.counts if r}
        for (name, reason), v in sorted(self.counts.items()):
            if name in labelled:
                out.setdefault(name, {})[reason or "unlabelled"] = v
            else:
                out[name] = v
        return out

    def render(self) -> str:
        lines = []
        for name in sorted({n for n, _ in self.counts} | set(_HELP)):
            metric = f"ttbridge_{name}_total"
            lines += [f"# HELP {metric} {_HELP.get(name, name)}", f"# TYPE {metric} counter"]
            rows = [(r, v) for (n, r), v in sorted(self.counts.items()) if n == name]
            for reason, v in rows or [("", 0)]:
                label = f'{{reason="{reason}"}}' if reason else ""
                lines.append(f"{metric}{label} {v}")
        return "\n".join(lines) + "\n"
