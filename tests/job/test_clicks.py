"""The clicks table (app/job/clicks.py) on the real broker. It holds exactly what the clicks topic
and the bundles on clicks-by-click-id say (a click seen again merges, never losing a field),
with each partition's offset in the same write; a catch-up resumes from those offsets; a crash
loses only what it can read again; a bad click is refused and counted; junk on the log costs
only itself; the sweep deletes only expired clicks; a worker started on a fresh data dir joins
conversions with clicks that only its topics hold."""
import asyncio
import dataclasses
import logging
import subprocess
import sys
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.bundles import Bundler, partition_of
from app.job.clicks import Clicks, catch_up_before_start
from app.job.metrics import Metrics
from app.job.topics import create_topics
from app.settings import load
from tests.job.test_intake import purchase
from tests.support import PIXEL_A, TOKEN_A, create_topic, read_all, wait_accepted, wait_for

PARTITIONS = 3
NOW = time.time()


@pytest.fixture
def settings(kafka_bootstrap, unique, tmp_path):
    return load({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"clk-{unique}",
                 "TTBRIDGE_TOPIC_CLICKS": f"clk-{unique}-clicks", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
                 "TIKTOK_PIXEL_CODE": PIXEL_A, "TIKTOK_ACCESS_TOKEN": TOKEN_A}, partitions=PARTITIONS)


@pytest.fixture
def clicks(settings):
    table = Clicks(settings)
    table.open()
    yield table
    table.close()


async def write_bundles(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    """(partition, value) records, as the intake writes them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, value in values:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


def bundles(entries: list[tuple[str, dict]]) -> list[tuple[int, bytes]]:
    """The entries as the intake's Bundler writes them: one record per partition."""
    bundler = Bundler(PARTITIONS)
    for click_id, record in entries:
        bundler.add_click(click_id, record)
    return [(p, value) for _, _, value, p in bundler.records()]


def contents(clicks: Clicks) -> dict[bytes, bytes]:
    return dict(clicks.db.items())


def expected(entries: list[tuple[str, dict]], offsets: dict[str, dict[int, int]]) -> dict[bytes, bytes]:
    """The table's keys after these entries, in order, with these last offsets per topic."""
    out = {}
    for click_id, record in entries:
        key = b"c" + click_id.encode()
        old = orjson.loads(out[key]) if key in out else {}
        if old and record["clicked_at"] < old["clicked_at"]:  # the later click's fields win
            old, record = record, old
        out[key] = orjson.dumps({**old, **{k: v for k, v in record.items() if v}})
    out.update({f"o{topic}:{p}".encode(): str(o).encode()
                for topic, last in offsets.items() for p, o in last.items()})
    return out


async def test_catch_up_applies_the_bundles_and_resumes_from_its_offsets(kafka_bootstrap, clicks):
    await create_topic(kafka_bootstrap, clicks.topic, PARTITIONS)
    first = [(f"c{i}", {"ttclid": f"t{i}", "clicked_at": 1_700_000_000 + i}) for i in range(40)]
    await write_bundles(kafka_bootstrap, clicks.topic, bundles(first))
    # A second, later record of c3 (its landing page): its fields win, the others stay; one of c5
    # older than the first only fills its gaps.
    again = [("c3", {"ttclid": "t3-again", "url": "https://shop.example/?ttclid=t3-again",
                     "clicked_at": 1_700_000_100}), ("c5", {"ttp": "ttp-5", "ttclid": "t5-older", "clicked_at": 1})]
    await write_bundles(kafka_bootstrap, clicks.topic, bundles(again))
    offsets = {p: 0 for p in range(PARTITIONS)}
    for p in {partition_of(c, PARTITIONS) for c, _ in again}:
        offsets[p] = 1

    assert await clicks.catch_up() == 42 and clicks.caught_up
    assert contents(clicks) == expected(first + again, {clicks.topic: offsets})
    assert clicks.read("c5") == {"ttclid": "t5", "ttp": "ttp-5", "clicked_at": 1_700_000_005}
    assert clicks.read("c3")["ttclid"] == "t3-again" and clicks.read("nope") is None

    # A second start reads only what came since.
    more = [("c40", {"ttclid": "t40", "clicked_at": 1_700_000_040})]
    await write_bundles(kafka_bootstrap, clicks.topic, bundles(more))
    offsets[partition_of("c40", PARTITIONS)] += 1
    assert await clicks.catch_up() == 1
    assert contents(clicks) == expected(first + again + more, {clicks.topic: offsets})
    assert clicks.offsets(clicks.topic, PARTITIONS) == {p: o + 1 for p, o in offsets.items()}
    # Nothing new: nothing read, nothing changed.
    assert await clicks.catch_up() == 0
    assert contents(clicks) == expected(first + again + more, {clicks.topic: offsets})


_CATCH_UP_AND_DIE = """
import asyncio, os, sys
from app.job.clicks import Clicks
from app.settings import load
settings = load({"KAFKA_BOOTSTRAP_SERVERS": sys.argv[1], "TTBRIDGE_APP_ID": sys.argv[2],
                 "TTBRIDGE_DATA_DIR": sys.argv[3], "TTBRIDGE_TOPIC_CLICKS": sys.argv[5],
                 "TIKTOK_PIXEL_CODE": "P", "TIKTOK_ACCESS_TOKEN": "t"},
                partitions=int(sys.argv[4]))
table = Clicks(settings)
table.open()
print(asyncio.run(table.catch_up()), flush=True)
os._exit(0)  # as a SIGKILL would: no close, no flush
"""


async def test_a_crash_loses_unflushed_clicks_with_their_offsets_and_the_topic_restores_them(
        kafka_bootstrap, settings, unique):
    # The table writes without a write-ahead log (the topic is its log): what a crash loses is
    # a tail of clicks *and* the offsets that cover them, so a restart re-reads exactly that.
    await create_topic(kafka_bootstrap, Clicks(settings).topic, PARTITIONS)
    entries = [(f"k{i}", {"ttclid": f"t{i}", "clicked_at": 1_700_000_000 + i}) for i in range(300)]
    table = Clicks(settings)
    await write_bundles(kafka_bootstrap, table.topic, bundles(entries[:200]) + bundles(entries[200:]))
    died = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _CATCH_UP_AND_DIE, kafka_bootstrap,
                                   settings.app_id, str(settings.data_dir), str(PARTITIONS),
                                    settings.topic_clicks],
                                   capture_output=True, text=True, timeout=120)
    assert died.returncode == 0 and died.stdout.split() == ["300"], died.stderr
    table.open()
    try:
        left = contents(table)
        # Nothing was flushed: no click and no offset survived, so nothing claims to be applied.
        assert left == {} and table.offsets(table.topic, PARTITIONS) == {p: 0 for p in range(PARTITIONS)}
        assert await table.catch_up() == 300
        offsets = {table.topic: {p: int(p in {partition_of(c, PARTITIONS) for c, _ in entries[200:]})
                                 for p in range(PARTITIONS)}}
        assert contents(table) == expected(entries, offsets)
    finally:
        table.close()
    # A clean close flushes: the next open has every click and offset without the topic.
    table.open()
    try:
        assert contents(table) == expected(entries, offsets) and await table.catch_up() == 0
    finally:
        table.close()


async def test_the_table_reads_the_clicks_topic_itself_and_counts_what_it_refuses(kafka_bootstrap, clicks, caplog):
    # The tracker's own topic, with a partition count of its own (every partition is read), and
    # the table's log with a landing page the intake derived from a tracking event.
    await create_topic(kafka_bootstrap, clicks.source, 2)
    await create_topic(kafka_bootstrap, clicks.topic, PARTITIONS)
    raw = [(0, orjson.dumps({"click_id": "r1", "ttclid": "E.C.P.r1", "ttp": "ttp-r1", "timestamp": 1_700_000_000,
                             "ip": "203.0.113.9", "user_agent": "UA"})),
           (1, orjson.dumps({"click_id": "r2", "url": "https://shop.example/?ttclid=E.C.P.r2",
                             "timestamp": "2023-11-14T22:13:21Z"})),
           (1, b"click_id=r3&ttclid=x"),                                     # not JSON
           (0, orjson.dumps({"ttclid": "E.C.P.x", "timestamp": 1_700_000_000})),  # no click_id
           (1, orjson.dumps({"click_id": "r4", "ip": 7, "timestamp": 1_700_000_000})),
           (0, orjson.dumps({"click_id": "r5", "timestamp": "yesterday"})),
           (0, orjson.dumps({"click_id": "r1", "url": "https://shop.example/later", "timestamp": 1_700_000_500}))]
    await write_bundles(kafka_bootstrap, clicks.source, raw)
    landing = [("r2", {"ttclid": "E.C.P.r2-landing", "url": "https://shop.example/p?ttclid=E.C.P.r2-landing",
                       "clicked_at": 1_700_000_600})]
    await write_bundles(kafka_bootstrap, clicks.topic, bundles(landing))
    with caplog.at_level(logging.WARNING, logger="app.job.clicks"):
        assert await clicks.catch_up() == 4
    assert clicks.read("r1") == {"ttclid": "E.C.P.r1", "ttp": "ttp-r1", "ip": "203.0.113.9", "user_agent": "UA",
                                 "url": "https://shop.example/later", "clicked_at": 1_700_000_500.0}
    assert clicks.read("r2") == {"ttclid": "E.C.P.r2-landing", "url": "https://shop.example/p?ttclid=E.C.P.r2-landing",
                                 "clicked_at": 1_700_000_600}
    assert [clicks.read(c) for c in ("r3", "r4", "r5")] == [None, None, None]
    assert clicks.offsets(clicks.source, 2) == {0: 4, 1: 3}
    # Counted once, by reason, for the metrics (clicks_in counts every record read).
    assert dict(clicks.tally) == {("clicks_in", ""): 7, ("clicks_refused", "invalid_json"): 1,
                                  ("clicks_refused", "missing_click_id"): 1,
                                  ("clicks_refused", "invalid_click"): 1, ("clicks_refused", "invalid_timestamp"): 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith(f"refused 4 click(s) of {clicks.source} (")
    assert "; the first at partition " in warnings[0]
    metrics = Metrics()
    clicks.report(metrics)
    assert clicks.tally == {} and metrics.counts[("clicks_refused", "invalid_json")] == 1
    assert metrics.counts[("clicks_in", "")] == 7


async def test_junk_on_the_topic_costs_only_itself(kafka_bootstrap, clicks, caplog):
    await create_topic(kafka_bootstrap, clicks.topic, PARTITIONS)
    good = [("g1", {"ttclid": "t1", "clicked_at": NOW}), ("g2", {"ttclid": "t2", "clicked_at": NOW})]
    p = partition_of("g1", PARTITIONS)
    await write_bundles(kafka_bootstrap, clicks.topic, [
        (p, b"not json"), (p, b'{"clicks": 7}'),
        (p, orjson.dumps({"clicks": [["g1", good[0][1]], 17, ["x"], [3, {"clicked_at": 1}], ["g3", 5]]})),
        # g1 again without a clicked_at: it cannot be merged, and must not stop the follower
        (p, orjson.dumps({"clicks": [["g1", {"ttp": "no-time"}]]})),
        *bundles(good[1:])])
    with caplog.at_level(logging.ERROR, logger="app.job.clicks"):
        assert await clicks.catch_up() == 2
    assert clicks.read("g1") == good[0][1] and clicks.read("g2") == good[1][1] and clicks.read("g3") is None
    assert [r.getMessage().split(" on ")[0] for r in caplog.records] == [
        "ignoring a malformed record", "ignoring a malformed record"] + ["ignoring a malformed click in the record"] * 5


async def test_a_first_start_finds_no_topic_and_does_not_wait_for_one(clicks):
    # aiokafka would wait for a missing topic's metadata for its whole request timeout (40 s).
    assert await asyncio.wait_for(clicks.catch_up(), 20) == 0
    assert clicks.caught_up and contents(clicks) == {}


async def test_a_topic_with_other_partitions_is_refused(kafka_bootstrap, clicks):
    await create_topic(kafka_bootstrap, clicks.topic, PARTITIONS - 1)
    with pytest.raises(ValueError, match=f"{clicks.topic} has 2 partitions, the settings say 3"):
        await clicks.catch_up()
    assert not clicks.caught_up and contents(clicks) == {}


def test_an_unreachable_broker_leaves_the_catch_up_to_the_follower(settings, caplog):
    table = Clicks(dataclasses.replace(settings, bootstrap_servers="127.0.0.1:1"))
    with caplog.at_level(logging.WARNING, logger="app.job.clicks"):
        catch_up_before_start(table)
    try:
        assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
            f"catching up the clicks table from {table.source} and {table.topic} failed"]
        assert not table.caught_up and contents(table) == {}
    finally:
        table.close()


async def test_the_follower_catches_up_and_reports_what_it_stored(kafka_bootstrap, clicks):
    await create_topic(kafka_bootstrap, clicks.topic, PARTITIONS)
    entries = [(f"f{i}", {"ttclid": f"t{i}", "clicked_at": NOW}) for i in range(10)]
    await write_bundles(kafka_bootstrap, clicks.topic, bundles(entries[:5]))
    # It follows both of the table's topics: until the clicks topic exists, it waits for it.
    stored: list[str] = []
    follower = asyncio.ensure_future(clicks.follow(stored.extend))
    await asyncio.sleep(2)
    assert stored == [] and not follower.done()
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await create_topic(kafka_bootstrap, clicks.source, 1)
    tracker = [(0, orjson.dumps({"click_id": "f10", "ttclid": "t10", "timestamp": NOW}))]
    await write_bundles(kafka_bootstrap, clicks.source, tracker)
    entries.append(("f10", {"ttclid": "t10", "clicked_at": NOW}))
    stored: list[str] = []
    follower = asyncio.ensure_future(clicks.follow(stored.extend))
    try:
        async def caught_up():
            return clicks.caught_up and len(stored) == 6
        await wait_for(caught_up, 20, "the follower to catch up")
        await write_bundles(kafka_bootstrap, clicks.topic, bundles(entries[5:10]))

        async def all_stored():
            return len(stored) == 11
        await wait_for(all_stored, 20, "the later clicks")
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    assert sorted(stored) == sorted(c for c, _ in entries)
    assert {c: clicks.read(c) for c, _ in entries} == dict(entries)


async def test_bad_clicks_are_counted_skips_and_their_neighbours_conversions_reach_tiktok_joined(
        kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    settings = load(env)
    await create_topics(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log", loglevel="info")
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, settings.topic_clicks, [
            {"click_id": "ok-1", "ttclid": "E.C.P.ok1", "timestamp": NOW - 30},
            b"click_id=ok-2&ttclid=E.C.P.x",                              # not JSON
            {"ttclid": "E.C.P.anonymous", "timestamp": NOW - 30},           # no click_id
            {"click_id": "bad-ip", "ip": 7, "timestamp": NOW - 30},         # a field of the wrong type
            {"click_id": "ok-2", "ttclid": "E.C.P.ok2", "timestamp": NOW - 30}])

        async def all_read():
            return (await worker.stats()).get("clicks_in") == 5
        await wait_for(all_read, 30, "the five records of the clicks topic")
        await produce_json(kafka_bootstrap, settings.topic_events,
                           [purchase("conv-1", "ok-1"), purchase("conv-2", "ok-2")])
        await wait_accepted(fake, 2, "the conversions of the good clicks")
        stats = await worker.stats()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert {a["event"]["event_id"]: a["event"]["user"]["ttclid"] for a in fake.accepted} == {
        "conv-1": "E.C.P.ok1", "conv-2": "E.C.P.ok2"}
    # Where the bad ones went: counted by reason (every worker would count them alike), logged
    # once per fetch, and nowhere else: the dead-letter topic has nothing.
    assert stats["clicks_refused"] == {"invalid_json": 1, "missing_click_id": 1, "invalid_click": 1}
    assert stats["clicks_stored"] == 2 and "dead_letters" not in stats
    assert await read_all(kafka_bootstrap, settings.topic_dlq, 0, timeout=1) == []
    assert f"refused 3 click(s) of {settings.topic_clicks} (" in (tmp_path / "worker.log").read_text()


def test_the_sweep_deletes_only_clicks_past_the_attribution_window(clicks):
    window = clicks.window_s
    fetched = {TopicPartition(clicks.topic, 0): [dataclasses.make_dataclass("R", ["offset", "value"])(
        0, orjson.dumps({"clicks": [["old", {"clicked_at": NOW - window - 60}],
                                    ["young", {"clicked_at": NOW - window + 3600}],
                                    ["undated", {"ttclid": "t"}]]}))]}
    assert sorted(clicks.apply(fetched)) == ["old", "undated", "young"]
    assert clicks.sweep() == 2  # a click of unknown age can't be in the window either
    assert contents(clicks) == {b"cyoung": orjson.dumps({"clicked_at": NOW - window + 3600}),
                                f"o{clicks.topic}:0".encode(): b"0"}
    assert clicks.sweep() == 0


async def test_a_fresh_worker_joins_clicks_only_the_topics_hold(kafka_bootstrap, fake, stack_env, tmp_path):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    settings = load(env)
    await create_topics(settings)
    # Landing pages on clicks-by-click-id, as an earlier worker's intake left them, and the
    # tracker's clicks on the clicks topic: a worker with an empty data dir reads both.
    await produce_json(kafka_bootstrap, settings.topic_clicks, [
        {"click_id": "trk-0", "ttclid": "E.C.P.tracked-0", "ttp": "ttp-t0", "timestamp": NOW - 30}])
    table = Clicks(settings)
    entries = [(f"clk-{i}", {"ttclid": f"E.C.P.restored-{i}", "ttp": f"ttp-{i}", "clicked_at": NOW - 60})
               for i in range(30)]
    bundler = Bundler(settings.partitions)
    for click_id, record in entries:
        bundler.add_click(click_id, record)
    await write_bundles(kafka_bootstrap, table.topic, [(p, value) for _, _, value, p in bundler.records()])
    worker = WorkerProcess(env, tmp_path / "worker.log", loglevel="info")
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"],
                           [purchase("after-restore", "clk-0"), purchase("after-restore-29", "clk-29"),
                            purchase("after-restore-trk", "trk-0")])
        await wait_accepted(fake, 3, "the three conversions")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    users = {a["event"]["event_id"]: a["event"]["user"] for a in fake.accepted}
    assert {k: (u["ttclid"], u["ttp"]) for k, u in users.items()} == {
        "after-restore": ("E.C.P.restored-0", "ttp-0"), "after-restore-29": ("E.C.P.restored-29", "ttp-29"),
        "after-restore-trk": ("E.C.P.tracked-0", "ttp-t0")}
    assert (f"app.job.clicks: caught up 31 clicks from {table.source} and {table.topic}"
            in (tmp_path / "worker.log").read_text())
