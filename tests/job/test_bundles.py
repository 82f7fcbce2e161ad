"""Bundles on the repartition topics: partitions as Kafka's default partitioner puts click IDs,
exact round trips, size limits, and malformed records."""
import itertools

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.job.bundles import MAX_BUNDLE_BYTES, Bundler, ClickBundle, partition_of, read_clicks, read_events

# Kafka's own test vectors for Utils.murmur2 (UtilsTest.testMurmur2), as Java's signed ints.
JAVA_MURMUR2 = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
                "a-little-bit-longer-string": -1486304829,
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, "abc": 479470107}


@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
@pytest.mark.parametrize("partitions", [1, 6, 7, 48])
def test_partition_is_the_java_clients(key, partitions):
    # Java: Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions
    assert partition_of(key, partitions) == (JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions


def test_partition_is_aiokafkas_for_the_same_key():
    partitioner, all_partitions = DefaultPartitioner(), list(range(6))
    for i in range(500):
        click_id = f"c-{i}-ünïcode"
        assert partition_of(click_id, 6) == partitioner(click_id.encode(), all_partitions, all_partitions)


def _records_by_partition(records):
    out = {}
    for role, key, value, partition in records:
        assert key is None
        out.setdefault((role, partition), []).append(value)
    return out


def test_events_go_to_their_clicks_partition_with_their_bytes_and_origin():
    bundler = Bundler(6)
    raws = {f"c{i}": orjson.dumps({"event": "Order Completed", "messageId": f"m{i}", "n": i}) for i in range(40)}
    for i, (click_id, raw) in enumerate(raws.items()):
        bundler.add_event(click_id, raw, 1700000000.5 + i, {"topic": "tracking-events", "partition": 2, "offset": i})
    records = bundler.records()
    by_tp = _records_by_partition(records)
    assert {role for role, _ in by_tp} == {"events-by-click-id"}
    seen = []
    for (_, partition), values in by_tp.items():
        assert len(values) == 1  # one record per partition per batch
        for entry in read_events(values[0]):
            assert partition_of(entry["click_id"], 6) == partition
            i = int(entry["click_id"][1:])
            assert entry["event"] == orjson.loads(raws[entry["click_id"]])
            assert entry["at"] == 1700000000.5 + i
            assert entry["source"] == {"topic": "tracking-events", "partition": 2, "offset": i}
            seen.append(i)
    assert sorted(seen) == list(range(40))
    assert bundler.records() == []  # records() empties the bundler


def test_events_without_click_id_spread_over_the_partitions():
    bundler = Bundler(3)
    for i in range(6):
        bundler.add_event(None, b'{"event":"Lead"}', 1.0, {"offset": i})
    by_tp = _records_by_partition(bundler.records())
    counts = {p: len(read_events(v[0])) for (_, p), v in by_tp.items()}
    assert counts == {0: 2, 1: 2, 2: 2}


def test_a_batch_too_big_for_one_record_is_split_keeping_every_event_in_order():
    bundler = Bundler(1)
    raw = orjson.dumps({"event": "Purchase", "blob": "x" * 100_000})  # ~100 KB each
    for i in range(20):
        bundler.add_event("same-click", raw, float(i), {"offset": i})
    records = bundler.records()
    # ~2 MB halved until each part fits: 20 -> 10 + 10 (~1 MB each) -> 5 + 5 + 5 + 5 (~500 KB).
    assert [len(read_events(value)) for _, _, value, _ in records] == [5, 5, 5, 5]
    assert all(len(value) <= MAX_BUNDLE_BYTES for _, _, value, _ in records)
    offsets = [e["source"]["offset"] for r in records for e in read_events(r[2])]
    assert offsets == list(range(20))


def test_one_event_larger_than_a_bundle_still_gets_a_record_of_its_own():
    bundler = Bundler(1)
    raw = orjson.dumps({"event": "Purchase", "blob": "x" * (MAX_BUNDLE_BYTES + 10)})
    bundler.add_event("c", raw, 1.0, {})
    [(_, _, value, _)] = bundler.records()
    assert read_events(value)[0]["event"] == orjson.loads(raw)


def test_clicks_round_trip_to_their_partition():
    bundler = Bundler(6)
    clicks = {f"click-{i}": {"ttclid": f"E.C.P.{i}", "clicked_at": 1700000000.0 + i} for i in range(30)}
    for click_id, record in clicks.items():
        bundler.add_click(click_id, record)
    bundler.add_click("click-0", {"ttp": "again"})  # the same click again, later: same partition
    pairs = []
    for (role, partition), values in _records_by_partition(bundler.records()).items():
        assert role == "clicks-by-click-id" and len(values) == 1
        bundle = read_clicks(values[0])
        assert bundle.expired == []
        for click_id, record in bundle.clicks:
            assert partition_of(click_id, 6) == partition
            pairs.append((click_id, record))
    assert sorted(pairs, key=str) == sorted([*clicks.items(), ("click-0", {"ttp": "again"})], key=str)
    zero = [r for c, r in pairs if c == "click-0"]
    assert zero == [clicks["click-0"], {"ttp": "again"}]  # in the order they were added


def test_expiries_are_a_bundle_of_their_own_on_each_clicks_partition():
    bundler = Bundler(6)
    ids = [f"old-{i}" for i in range(20)]
    for click_id in ids:
        bundler.add_expiry(click_id)
    bundles = {p: read_clicks(values[0]) for (_, p), values in _records_by_partition(bundler.records()).items()}
    assert {p: b.clicks for p, b in bundles.items()} == {p: [] for p in bundles}
    assert {p: b.expired for p, b in bundles.items()} == {
        p: [c for c in ids if partition_of(c, 6) == p] for p in bundles}


def test_a_malformed_bundle_raises_for_the_caller_to_dead_letter():
    with pytest.raises(orjson.JSONDecodeError):
        read_events(b"{not json")
    with pytest.raises(KeyError):
        read_events(b'{"clicks": []}')
    with pytest.raises(ValueError):
        read_events(b'{"events": ["not an object"]}')
    with pytest.raises(ValueError):
        read_events(b'{"events": {"click_id": "c"}}')
    with pytest.raises(KeyError):
        read_clicks(b'{"events": []}')
    with pytest.raises(ValueError):
        read_clicks(b'{"clicks": {"c": {}}}')
    assert read_clicks(b'{"expired": ["c"]}') == ClickBundle([], ["c"])


def test_a_shared_turn_spreads_events_without_click_id_across_batches():
    # One such event per intake poll must not always land on partition 0.
    turn = itertools.cycle(range(3))
    partitions = []
    for _ in range(6):
        bundler = Bundler(3, turn)
        bundler.add_event(None, b'{"event":"Lead"}', 1.0, {})
        [(_, _, _, partition)] = bundler.records()
        partitions.append(partition)
    assert partitions == [0, 1, 2, 0, 1, 2]
