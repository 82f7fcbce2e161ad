"""The fuzz suite at unit level: hostile tracking events and clicks (tests/fuzz/strategies.py)
through the intake's decode, the mapping, request building and the strict fake's check. Seeded (derandomize) and bounded: CI runs the same examples every time.

Properties:
1. Nothing raises but Refusal or Skip, and a Refusal's reason is a documented one.
2. Every item the mapping emits, in the request the forwarder builds, passes the fake's check.
3. A poison message or entry never changes its neighbours' outcomes: a poll of many messages,
   through the real Intake.decode and Forwarder, gives exactly the union of what each message
   gives alone (the same requests' items, dead letters, skips), and no internal_error.
"""
from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import orjson
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.devtools.fake_tiktok import check_request
from app.job.forwarder import Forwarder
from app.job.intake import Intake
from app.job.metrics import Metrics
from app.mapping.decode import CLICK_SKIP_REASONS, decode_click
from app.mapping.events import (
    Refusal,
)
from app.settings import load, mapping_config
from tests.fuzz import strategies as fz
from tests.fuzz.pipeline import one_message
from tests.job.test_forwarder import Clicks, Sender, Writer

ENV = {"TIKTOK_PIXEL_CODE": "PIXFUZZ", "TIKTOK_ACCESS_TOKEN": "token-fuzz"}
SETTINGS = load(ENV, join_wait_s=0.0)
MAPPING = mapping_config(SETTINGS)
FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


@FUZZ
@given(message=fz.messages(), click=fz.clicks())
def test_hostile_messages_only_refuse_or_skip_and_what_is_sent_passes_the_fake(message, click):
    kind, raw, _ = message
    valid_click, click_raw = click
    try:
        _, stored = decode_click(click_raw, fz.MAX_BYTES)
    except Refusal as r:  # junk may still be a usable click; a valid one is never refused
        assert r.reason in CLICK_SKIP_REASONS
        assert not valid_click
        stored = None
    now = fz.NOW
    outcome = one_message(raw, stored, MAPPING, now)
    if outcome[0] == "sent":
        assert check_request(outcome[1], now=now) == (0, "OK"), (kind, raw[:300])
        orjson.dumps(outcome[1])  # what the sender is given can be written
    if kind == "valid":
        assert outcome[0] == "sent", outcome
    if kind in ("oversize",):
        assert outcome == ("dead", "too_large")


# --------------------------------------------------------------------------- poison neighbours

def msg(offset: int, raw: bytes, topic: str = "tracking-events"):
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=raw, timestamp=0, key=None)


def run_poll(events: list[tuple[int, bytes]], clicks: dict) -> dict:
    """A poll of `events` (offset, bytes) through the real Intake.decode and then the real
    Forwarder (clicks already stored; join_wait 0): what came of them, without the clock."""
    metrics = Metrics()
    intake = Intake(SETTINGS, MAPPING, None, metrics, None)
    writes, _ = intake.decode({TopicPartition("tracking-events", 0): [msg(o, raw) for o, raw in events]},
                              fz.NOW)
    dead = [w[2] for w in writes if w[0] == "dlq"]
    sender, writer = Sender(fail=False), Writer()
    forwarder = Forwarder(SETTINGS, MAPPING, Clicks(clicks), sender, writer, metrics)

    async def forward() -> None:
        await forwarder.handle(intake._round)
        await forwarder.drain()
    asyncio.run(forward())
    records = [orjson.loads(v) for v in dead] + [r for role, _, r in writer.records if role == "dlq"]
    for r in records:
        assert r["reason"] != "internal_error", r
        del r["first_failed_at"], r["last_failed_at"]
    for body in sender.bodies:
        assert check_request(body, now=fz.NOW) == (0, "OK")
    skipped = {r: n for (name, r), n in metrics.counts.items() if name == "events_skipped" and n}
    return {"sent": sorted(orjson.dumps(item) for body in sender.bodies for item in body["data"]),
            "dead": sorted(orjson.dumps(r) for r in records), "skipped": skipped,
            "retry": [r for role, _, r in writer.records if role == "retry"]}


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(poll=st.lists(fz.messages(valid_share=0.5), min_size=2, max_size=12))
def test_a_poison_message_never_changes_its_neighbours_outcomes(poll):
    events = [(i, raw) for i, (_, raw, _) in enumerate(poll)]
    clicks = {c: {"ttclid": f"E.C.P.{c}", "clicked_at": fz.NOW - 60} for _, _, c in poll
              if c is not None and random.Random(c).random() < 0.7}
    together = run_poll(events, clicks)
    alone = [run_poll([e], clicks) for e in events]
    assert together["sent"] == sorted(x for a in alone for x in a["sent"])
    assert together["dead"] == sorted(x for a in alone for x in a["dead"])
    summed: dict = {}
    for a in alone:
        for reason, n in a["skipped"].items():
            summed[reason] = summed.get(reason, 0) + n
    assert together["skipped"] == summed
    assert together["retry"] == []
    # Every valid message is sent, whatever its neighbours are.
    valid_ids = {orjson.loads(raw)["messageId"] for kind, raw, _ in poll if kind == "valid"}
    sent_ids = {orjson.loads(x)["event_id"] for x in together["sent"]}
    assert valid_ids <= sent_ids
