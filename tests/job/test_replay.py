"""Where `ttbridge replay` sends a dead letter (the moves after a fix run in test_delivery_faults),
and the command's answers: one line and exit 1 when the DLQ topic is missing or no broker answers,
--limit, progress on stderr."""
import base64
import io
import os
import subprocess
import sys

import orjson
from aiokafka import AIOKafkaConsumer

from app.devtools.kafka_local import free_port
from app.devtools.worker_process import produce_json
from app.job.records import dead_letter, encode, retry_record
from app.job.replay import Filter, _target, replay
from app.settings import load
from app.tiktok.outcomes import error_info
from tests.support import create_topic, wait_for

SETTINGS = load({"TTBRIDGE_TOPIC_RETRY": "r"})
SOURCE = {"topic": "tracking-events", "partition": 0, "offset": 7}
BODY = {"event_source": "web", "event_source_id": "P1", "data": [{"event": "Purchase", "event_time": 1, "event_id": "x"}]}


def test_a_dead_request_goes_back_to_the_first_retry_tier_due_now():
    record = dead_letter("server_error", "x", "retry", 5.0, attempts=4, first_failed_at=1.0, pixel_code="P1",
                         request=BODY)
    topic, key, value = _target(SETTINGS, record, 100.0)
    assert (topic, key) == ("r", b"P1")
    assert orjson.loads(value) == retry_record(BODY, "P1", 1, 100.0, 1.0, error_info(
        "replayed", "replayed from the DLQ after server_error"))


def test_an_original_goes_back_to_its_source_topic_as_it_was():
    raw = b"\xff not utf-8"
    record = dead_letter("invalid_json", "x", "decode", 5.0, source=SOURCE, original=raw)
    assert _target(SETTINGS, record, 100.0) == ("tracking-events", None, raw)


def test_what_was_cut_to_fit_is_never_replayed():
    [raw] = encode(dead_letter("too_large", "x", "decode", 5.0, source=SOURCE, original=b"x" * 1_000_000))
    assert _target(SETTINGS, orjson.loads(raw), 100.0) is None
    [raw] = encode(dead_letter("tiktok_40002", "x", "send", 5.0, pixel_code="P1", request={
        **BODY, "data": [{**BODY["data"][0], "description": "d" * 950_000}]}))
    assert _target(SETTINGS, orjson.loads(raw), 100.0) is None
    # ...while a complete original re-encoded as base64 still is.
    [raw] = encode(dead_letter("invalid_json", "x", "decode", 5.0, source=SOURCE, original=b"\x01" * 200_000))
    assert _target(SETTINGS, orjson.loads(raw), 100.0) == ("tracking-events", None, b"\x01" * 200_000)
    assert base64.b64decode(orjson.loads(raw)["original"]) == b"\x01" * 200_000


# --------------------------------------------------------------------------- the command, on the real broker

def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "replay", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_a_missing_dlq_topic_fails_in_one_line(kafka_bootstrap, unique):
    done = run_cli({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_TOPIC_DLQ": f"dlq-missing-{unique}"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"ttbridge replay: topic 'dlq-missing-{unique}' does not exist on {kafka_bootstrap} "
                           "(TTBRIDGE_TOPIC_DLQ names it; `ttbridge topics create` makes it)\n")


def test_an_unreachable_broker_fails_in_one_line():
    port = free_port()  # nothing listens there
    done = run_cli({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"ttbridge replay: cannot connect to Kafka over PLAINTEXT: 127.0.0.1:{port}: "
                           f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})\n")


def test_a_limit_of_zero_is_refused():
    done = run_cli({}, "--limit", "0")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "ttbridge replay: error: argument --limit: expected a whole number >= 1, got '0'"


async def dead_letters_on_a_dlq(bootstrap: str, unique: str, n: int) -> dict:
    """A DLQ of one partition holding n dead letters of original input (they go back to their
    source topic) and one record that is no dead letter at all."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}",
           "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}"}
    for topic in (env["TTBRIDGE_TOPIC_DLQ"], env["TTBRIDGE_TOPIC_EVENTS"]):
        await create_topic(bootstrap, topic)
    source = {"topic": env["TTBRIDGE_TOPIC_EVENTS"], "partition": 0, "offset": 0}
    records = [raw for i in range(n) for raw in encode(dead_letter(
        "invalid_json", "x", "decode", 5.0, source={**source, "offset": i}, original=f"{{bad {i}".encode()))]
    await produce_json(bootstrap, env["TTBRIDGE_TOPIC_DLQ"], [*records, b"[not a dead letter]"])
    return env


async def test_limit_stops_after_n_and_progress_goes_to_its_own_stream(kafka_bootstrap, unique):
    env = await dead_letters_on_a_dlq(kafka_bootstrap, unique, 25)
    out, progress = io.StringIO(), io.StringIO()
    summary = await replay(load(env), Filter(frozenset({"invalid_json"})), out=out, progress=progress,
                           progress_every=4, limit=10)
    assert (summary.scanned, summary.matched, summary.to_source, summary.to_retry, summary.limited) == (
        10, 10, 10, 0, True)
    assert progress.getvalue() == "".join(f"replay: scanned {i}/26, matched {i}\n" for i in (4, 8))
    assert out.getvalue() == (f"scanned 10, matched 10 (stopped at --limit 10): moved 0 to retry-{unique}, "
                              "10 to their source topic; 0 cannot be replayed; by reason {'invalid_json': 10}\n")
    moved = await read_raw(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], 10)
    assert moved == [f"{{bad {i}".encode() for i in range(10)]  # the first ten, as they were


async def test_the_command_dry_runs_a_limit_and_reports_what_is_no_dead_letter(kafka_bootstrap, unique):
    env = await dead_letters_on_a_dlq(kafka_bootstrap, unique, 3)
    done = run_cli(env, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        *(f"would move 0:{i} reason=invalid_json pixel=None -> events-{unique}" for i in range(3)),
        f"scanned 4, matched 3: would move 0 to retry-{unique}, 3 to their source topic; 0 cannot be "
        "replayed; by reason {'invalid_json': 3}; 1 not a dead letter (not a JSON object)"]
    assert all(line.startswith("replay: scanned ") for line in done.stderr.splitlines()), done.stderr
    done = run_cli(env, "--dry-run", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"scanned 2, matched 2 (stopped at --limit 2): would move 0 to retry-{unique}, 2 to their source "
        "topic; 0 cannot be replayed; by reason {'invalid_json': 2}")
    assert await read_raw(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], 0) == []  # a dry run moves nothing


async def read_raw(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out: list[bytes] = []
    try:
        async def enough():
            batch = await consumer.getmany(timeout_ms=500)
            out.extend(m.value for msgs in batch.values() for m in msgs)
            return len(out) >= expect
        await wait_for(enough, 30, f"{expect} records on {topic}")
        out.extend(m.value for msgs in (await consumer.getmany(timeout_ms=1000)).values() for m in msgs)
    finally:
        await consumer.stop()
    return out


async def test_a_dead_letter_whose_original_is_hashed_is_not_replayed_and_is_counted(kafka_bootstrap, unique):
    from app.job.records import hash_original
    from app.mapping.events import MappingConfig

    event = {"type": "track", "event": "Order Completed", "context": {"traits": {"email": "jane@example.com"}},
             "properties": {"currency": "ZZZ"}}
    hashed = hash_original(dead_letter("invalid_currency", "x", "map", 5.0, source=SOURCE,
                                       original=orjson.dumps(event)), MappingConfig().plan)
    assert _target(SETTINGS, hashed, 100.0) is None
    env = await dead_letters_on_a_dlq(kafka_bootstrap, unique, 2)
    source = {"topic": env["TTBRIDGE_TOPIC_EVENTS"], "partition": 0, "offset": 9}
    await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_DLQ"], [
        raw for i in range(3) for raw in encode({**hashed, "source": {**source, "offset": 9 + i}})])
    out = io.StringIO()
    summary = await replay(load(env), Filter(), out=out, progress=io.StringIO())
    assert (summary.scanned, summary.matched, summary.to_source, summary.unreplayable, summary.hashed) == (
        6, 5, 2, 3, 3)
    assert out.getvalue() == (
        f"scanned 6, matched 5: moved 0 to retry-{unique}, 2 to their source topic; 3 cannot be replayed "
        "(3 with their original stored hashed); by reason {'invalid_json': 2, 'invalid_currency': 3}; "
        "1 not a dead letter (not a JSON object)\n")
    # Only the two raw originals went back to the input topic.
    assert await read_raw(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"], 2) == [b"{bad 0", b"{bad 1"]
