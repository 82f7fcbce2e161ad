"""One message through the pure functions the intake and the forwarder call, in their order:
what ttbridge will make of it (the unit fuzz tests check it; bench/fuzz.py predicts each marker's
outcome with it and compares with what the worker did)."""
from __future__ import annotations

from app.mapping.decode import DECODE_REASONS, click_from_landing, decode_object
from app.mapping.events import (
    REASONS,
    SKIP_REASONS,
    MappingConfig,
    Refusal,
    Skip,
    click_id_of,
    events_of,
    has_identifier,
    map_event,
    skip_reason,
    tiktok_names,
)
from app.mapping.sources import for_source
from app.tiktok.requests import request_bodies

__all__ = ["DOCUMENTED", "one_message"]

DOCUMENTED = set(REASONS) | set(DECODE_REASONS) | {"too_large", "no_identifier"}
MAX_BYTES = 256 * 1024


def one_message(raw: bytes, click: dict | None, mapping: MappingConfig, now: float) -> tuple:
    """One message through the pure functions the intake and forwarder call, in their order:
    ("sent", body) | ("skipped", reason) | ("dead", reason); any other exception propagates."""
    try:
        doc = decode_object(raw, MAX_BYTES)
        for event in events_of(doc, mapping):
            if isinstance(event, Refusal):
                raise event
            names = tiktok_names(event, mapping)
            click_from_landing(event, mapping)
            if not names:
                return "skipped", skip_reason(event, mapping)
            click_id_of(event, mapping)
            items = map_event(event, click, mapping, now)
            if not items:
                return "skipped", "unmapped"
            if not has_identifier(items[0]):
                return "dead", "no_identifier"
            [body] = request_bodies(("web", "PIXFUZZ", None), for_source(items, "web"))
            return "sent", body
    except Refusal as r:
        assert r.reason in DOCUMENTED, (r.reason, r.message)
        assert r.message
        return "dead", r.reason
    except Skip as s:
        assert s.reason in SKIP_REASONS
        return "skipped", s.reason
    return "skipped", "no_events"
