"""Request bodies for the Events API's track endpoint (POST /open_api/v1.3/event/track/).

One body per destination (event source + pixel or event set + test event code) and per
`batch_max` events: the test event code is top-level, so events with different codes never
share a request, and more than 1000 events in one request fails all of them (40061).
"""
from __future__ import annotations

from typing import Iterator

from app.tiktok.facts import MAX_BATCH

__all__ = ["Destination", "request_bodies"]

# (event_source, event_source_id, test_event_code or None)
Destination = tuple[str, str, str | None]


def request_bodies(destination: Destination, items: list[dict],
                   batch_max: int = MAX_BATCH) -> Iterator[dict]:
    """The bodies carrying `items` (TikTok data[] items) to `destination`, in order."""
    source, source_id, test_event_code = destination
    for i in range(0, len(items), batch_max):
        body = {"event_source": source, "event_source_id": source_id, "data": items[i:i + batch_max]}
        if test_event_code:
            body["test_event_code"] = test_event_code
        yield body
