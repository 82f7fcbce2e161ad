"""Bundles of the clicks table's log: partitions as Kafka's default partitioner puts click IDs,
exact round trips in order, size limits, and malformed records."""
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.job.bundles import MAX_BUNDLE_BYTES, Bundler, partition_of, read_clicks

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


def test_clicks_too_big_for_one_record_are_split_keeping_every_click_in_order():
    bundler = Bundler(1)
    for i in range(20):
        bundler.add_click("same-click", {"url": f"https://shop.example/{i}?" + "x" * 100_000, "clicked_at": float(i)})
    records = bundler.records()
    # ~2 MB halved until each part fits: 20 -> 10 + 10 (~1 MB each) -> 5 + 5 + 5 + 5 (~500 KB).
    assert [len(read_clicks(value)) for _, _, value, _ in records] == [5, 5, 5, 5]
    assert all(len(value) <= MAX_BUNDLE_BYTES for _, _, value, _ in records)
    assert [r["clicked_at"] for _, _, v, _ in records for _, r in read_clicks(v)] == [float(i) for i in range(20)]


def test_one_click_larger_than_a_bundle_still_gets_a_record_of_its_own():
    bundler = Bundler(1)
    record = {"url": "https://shop.example/?" + "x" * (MAX_BUNDLE_BYTES + 10), "clicked_at": 1.0}
    bundler.add_click("c", record)
    [(_, _, value, _)] = bundler.records()
    assert len(value) > MAX_BUNDLE_BYTES and read_clicks(value) == [["c", record]]


def test_clicks_round_trip_to_their_partition():
    bundler = Bundler(6)
    clicks = {f"click-{i}": {"ttclid": f"E.C.P.{i}", "clicked_at": 1700000000.0 + i} for i in range(30)}
    for click_id, record in clicks.items():
        bundler.add_click(click_id, record)
    bundler.add_click("click-0", {"ttp": "again"})  # the same click again, later: same partition
    pairs = []
    for (role, partition), values in _records_by_partition(bundler.records()).items():
        assert role == "clicks-by-click-id" and len(values) == 1
        for click_id, record in read_clicks(values[0]):
            assert partition_of(click_id, 6) == partition
            pairs.append((click_id, record))
    assert sorted(pairs, key=str) == sorted([*clicks.items(), ("click-0", {"ttp": "again"})], key=str)
    zero = [r for c, r in pairs if c == "click-0"]
    assert zero == [clicks["click-0"], {"ttp": "again"}]  # in the order they were added


@pytest.mark.parametrize("value, error", [(b"{not json", orjson.JSONDecodeError), (b'{"events": []}', KeyError),
                                          (b'{"clicks": {}}', ValueError), (b"[]", TypeError)])
def test_a_record_that_is_not_a_clicks_bundle_raises_for_the_caller(value, error):
    # The follower (app.job.clicks) logs and skips it; here: it is never read as clicks.
    with pytest.raises(error):
        read_clicks(value)
