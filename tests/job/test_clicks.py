"""The clicks table (app/job/clicks.py) on the real broker. The bulk restore writes exactly what
the changelog holds (puts, overwrites, tombstones) with each partition's offset, resumes from
that offset, and leaves the store alone when the broker cannot be reached; a worker started on a
restored store (or one left to faust's recovery) joins a conversion with a click it never
indexed itself."""
import asyncio
import dataclasses
import logging
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.devtools.worker_process import WorkerProcess, produce_json
from app.job import faust_internals
from app.job.bundles import partition_of
from app.job.clicks import restore_before_start, restore_table
from app.job.topics import create_topics
from app.job.worker import build_app
from app.settings import load
from tests.job.test_intake import purchase
from tests.support import PIXEL_A, TOKEN_A, create_topic, wait_accepted

PARTITIONS = 3
NOW = time.time()


@pytest.fixture
def settings(kafka_bootstrap, unique, tmp_path):
    return load({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"restore-{unique}",
                 "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
                 "TIKTOK_PIXEL_CODE": PIXEL_A, "TIKTOK_ACCESS_TOKEN": TOKEN_A}, partitions=PARTITIONS)


@pytest.fixture
def clicks(settings):
    """The worker's clicks (app.job.clicks.Clicks, its table not started)."""
    return build_app(settings, run_retrier=False).ttbridge.clicks


@pytest.fixture
def clicks_table(clicks, unique):
    """The clicks table (not started) and its changelog topic's name."""
    assert clicks.table.changelog_topic.get_topic_name() == f"restore-{unique}-clicks-changelog"
    return clicks.table, f"restore-{unique}-clicks-changelog"


async def write_changelog(bootstrap: str, topic: str, entries: list[tuple[str, dict | None]]) -> None:
    """Entries as the click store writes them: JSON key and value, the click ID's partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for click_id, record in entries:
            value = None if record is None else orjson.dumps(record)
            await producer.send_and_wait(topic, value, key=orjson.dumps(click_id),
                                         partition=partition_of(click_id, PARTITIONS))
    finally:
        await producer.stop()


def contents(table) -> dict[int, dict[bytes, bytes]]:
    """Every partition's RocksDB as faust will open it, offset key included."""
    store, out = table.data, {}
    for p in range(PARTITIONS):
        db = faust_internals.rocksdb_partition(store, p)
        try:
            out[p] = dict(db.items())
        finally:
            db.close()
    return out


def expected(entries: list[tuple[str, dict | None]], offsets: dict[int, int]) -> dict[int, dict[bytes, bytes]]:
    """What the partitions must hold after applying `entries` in order, and their last offsets."""
    out = {p: {} for p in range(PARTITIONS)}
    for click_id, record in entries:
        part = out[partition_of(click_id, PARTITIONS)]
        if record is None:
            part.pop(orjson.dumps(click_id), None)
        else:
            part[orjson.dumps(click_id)] = orjson.dumps(record)
    for p, offset in offsets.items():
        out[p][b"__faust\x00offset__"] = str(offset).encode()
    return out


def last_offsets(entries: list[tuple[str, dict | None]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for click_id, _ in entries:
        p = partition_of(click_id, PARTITIONS)
        counts[p] = counts.get(p, 0) + 1
    return {p: n - 1 for p, n in counts.items()}


async def test_restore_writes_the_changelog_and_resumes_from_its_offsets(kafka_bootstrap, clicks_table):
    table, topic = clicks_table
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    first = [(f"c{i}", {"ttclid": f"t{i}", "clicked_at": 1_700_000_000 + i}) for i in range(40)]
    first += [("c3", {"ttclid": "t3-again", "clicked_at": 1_700_000_100}), ("c5", None)]
    await write_changelog(kafka_bootstrap, topic, first)

    applied = await restore_table(kafka_bootstrap, table.data, topic, PARTITIONS)

    assert sum(applied.values()) == 42
    assert applied == {p: n + 1 for p, n in last_offsets(first).items()}
    assert contents(table) == expected(first, last_offsets(first))

    # A second start reads only what came since: 2 records, the rest stays.
    more = [("c7", None), ("c40", {"ttclid": "t40", "clicked_at": 1_700_000_040})]
    await write_changelog(kafka_bootstrap, topic, more)
    applied = await restore_table(kafka_bootstrap, table.data, topic, PARTITIONS)
    assert sum(applied.values()) == 2
    assert contents(table) == expected(first + more, last_offsets(first + more))

    # Nothing new: nothing read, nothing changed.
    assert sum((await restore_table(kafka_bootstrap, table.data, topic, PARTITIONS)).values()) == 0
    assert contents(table) == expected(first + more, last_offsets(first + more))


async def test_a_first_start_finds_no_changelog_and_does_not_wait_for_one(kafka_bootstrap, clicks_table):
    table, topic = clicks_table
    # aiokafka would wait for a missing topic's metadata for its whole request timeout (40 s).
    applied = await asyncio.wait_for(restore_table(kafka_bootstrap, table.data, topic, PARTITIONS), 20)
    assert applied == {0: 0, 1: 0, 2: 0}
    assert contents(table) == {p: {} for p in range(PARTITIONS)}


async def test_a_changelog_with_other_partitions_is_not_restored(kafka_bootstrap, clicks_table):
    table, topic = clicks_table
    await create_topic(kafka_bootstrap, topic, PARTITIONS - 1)
    with pytest.raises(ValueError, match=f"{topic} has 2 partitions, the table 3"):
        await restore_table(kafka_bootstrap, table.data, topic, PARTITIONS)
    assert contents(table) == {p: {} for p in range(PARTITIONS)}


def test_an_unreachable_broker_leaves_the_store_to_fausts_recovery(clicks, settings, caplog):
    with caplog.at_level(logging.WARNING, logger="app.job.clicks"):
        restore_before_start(clicks, dataclasses.replace(settings, bootstrap_servers="127.0.0.1:1"))
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"bulk restore of {clicks.table.changelog_topic.get_topic_name()} failed"]
    assert contents(clicks.table) == {p: {} for p in range(PARTITIONS)}


@pytest.mark.parametrize("args", [(), ("--no-bulk-restore",)], ids=["bulk", "faust-recovery"])
async def test_a_worker_on_a_restored_table_joins_a_click_it_never_indexed(kafka_bootstrap, fake, stack_env, tmp_path, args):
    env = {**stack_env, "TIKTOK_API_URL": fake.base_url}
    settings = load(env)
    await create_topics(settings)
    app_id, n = env["TTBRIDGE_APP_ID"], settings.partitions
    changelog = f"{app_id}-clicks-changelog"
    await create_topic(kafka_bootstrap, changelog, n)
    # Only on the changelog, as a previous worker's click store left it: never on the clicks topic.
    clicks = [(f"clk-{i}", {"ttclid": f"E.C.P.restored-{i}", "ttp": f"ttp-{i}", "clicked_at": NOW - 60})
              for i in range(30)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for click_id, record in clicks:
            await producer.send_and_wait(changelog, orjson.dumps(record), key=orjson.dumps(click_id),
                                         partition=partition_of(click_id, n))
    finally:
        await producer.stop()
    worker = WorkerProcess(env, tmp_path / "worker.log", loglevel="info", args=args)
    worker.start()
    try:
        await worker.wait_ready()
        await produce_json(kafka_bootstrap, env["TTBRIDGE_TOPIC_EVENTS"],
                           [purchase("after-restore", "clk-0"), purchase("after-restore-29", "clk-29")])
        await wait_accepted(fake, 2, "the two conversions")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    users = {a["event"]["event_id"]: a["event"]["user"] for a in fake.accepted}
    assert {k: (u["ttclid"], u["ttp"]) for k, u in users.items()} == {
        "after-restore": ("E.C.P.restored-0", "ttp-0"), "after-restore-29": ("E.C.P.restored-29", "ttp-29")}
    restored = f"app.job.clicks: restored 30 clicks from {changelog}" in (tmp_path / "worker.log").read_text()
    assert restored == (args == ())
