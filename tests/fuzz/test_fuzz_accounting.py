"""bench/fuzz.py's accounting (the Kafka-level run's verdict) on hand-made outcomes: it finds a
lost marker, one counted twice, a valid event dead-lettered, an outcome not as predicted, and
junk clicks not refused (and counted) exactly as predicted."""
from collections import Counter
from types import SimpleNamespace

from app.settings import load
from bench.fuzz import account

SETTINGS = load({})
EVENTS = [("valid_joined", "m-0", b"{}", "c-m-0"), ("valid_no_click", "m-1", b"{}", None),
          ("truncated", "m-2", b"{", None), ("wrong_type", "m-3", b"{}", None)]
PREDICTED = [("sent", ("m-0", "Purchase")), ("sent", ("m-1", "Purchase")), ("dead", "invalid_json"),
             ("skipped", "not_a_conversion")]
WHERE = {(0, i): m for i, (_, m, _, _) in enumerate(EVENTS)}


def fake(*event_ids: str, duplicates: int = 0):
    accepted = [{"event": {"event_id": e, "event": "Purchase"}} for e in event_ids]
    return SimpleNamespace(accepted=accepted, stats=lambda: {"duplicates": duplicates})


def dead(reason: str, offset: int) -> dict:
    return {"reason": reason, "source": {"topic": SETTINGS.topic_events, "partition": 0, "offset": offset}}


def verdict(fake_, dlq, skipped=1, refusable=None, refused=None) -> dict:
    """`refusable`: the junk clicks' refusals by reason as predicted; `refused`: as the worker
    counted them (clicks_refused)."""
    stats = {"events_skipped": {"not_a_conversion": skipped}}
    if refused is not None:
        stats["clicks_refused"] = refused
    junk = [(None, b"junk")] * sum((refusable or {}).values())
    return account(EVENTS, PREDICTED, WHERE, fake_, dlq, stats, junk, Counter(refusable or {}), SETTINGS,
                   alive=True, health=200, seconds=1.0)


def test_every_marker_accounted_for_is_ok():
    r = verdict(fake("m-0", "m-1"), [dead("invalid_json", 2)])
    assert (r["ok"], r["sent"], r["dead_lettered"], r["skipped"], r["lost"], r["double"]) == (True, 2, 1, 1, 0, 0)


def test_lost_double_and_valid_dead_lettered_fail_the_run():
    r = verdict(fake("m-0"), [dead("invalid_json", 2), dead("invalid_json", 2)])
    assert (r["ok"], r["lost"], r["double"], r["examples"]["lost"], r["examples"]["double"]) == (
        False, 1, 1, ["m-1"], ["m-2"])
    r = verdict(fake("m-0"), [dead("invalid_json", 2), dead("invalid_currency", 1)])
    assert (r["ok"], r["valid_dead_lettered"], r["examples"]["valid_dead"]) == (False, 1, [("m-1", "invalid_currency")])
    assert r["not_as_predicted"] == 1


def test_a_skip_the_worker_did_not_count_fails_the_run():
    assert verdict(fake("m-0", "m-1"), [dead("invalid_json", 2)], skipped=0)["ok"] is False


def test_junk_clicks_pass_only_when_the_worker_refused_each_as_predicted_and_dead_lettered_none():
    ok = verdict(fake("m-0", "m-1"), [dead("invalid_json", 2)], refusable={"invalid_json": 2, "invalid_click": 1},
                 refused={"invalid_json": 2, "invalid_click": 1, "unlabelled": 0})
    assert ok["ok"] and ok["junk_clicks_refused"] == {"invalid_json": 2, "invalid_click": 1}
    assert not verdict(fake("m-0", "m-1"), [dead("invalid_json", 2)], refusable={"invalid_json": 2},
                       refused={"invalid_json": 1})["ok"]
    click_dead = {"reason": "invalid_json", "source": {"topic": SETTINGS.topic_clicks, "partition": 0, "offset": 0}}
    r = verdict(fake("m-0", "m-1"), [dead("invalid_json", 2), click_dead], refusable={"invalid_json": 1},
                refused={"invalid_json": 1})
    assert (r["ok"], r["clicks_dead_lettered"]) == (False, 1)
