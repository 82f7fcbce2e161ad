"""Bundles on the join's two topics: partitions as Kafka's default partitioner puts click IDs,
exact round trips (each event's own bytes, even those too deep to nest in a JSON bundle), size
limits, one undecodable entry refused alone, and malformed
records."""
import itertools

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.job.bundles import (
    EVENTS_FRAME,
    MAX_BUNDLE_BYTES,
    Bundler,
    event_of,
    events_value,
    partition_of,
    read_clicks,
    read_events,
)
from app.mapping.decode import decode_object
from app.mapping.events import Refusal

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
            raw = raws[entry["click_id"]]
            assert entry == {"click_id": f"c{i}", "at": 1700000000.5 + i, "bytes": len(raw), "raw": raw,
                             "source": {"topic": "tracking-events", "partition": 2, "offset": i}}
            assert bytes(entry["raw"]) == raw  # its own bytes, not a re-serialisation
            assert event_of(entry) == orjson.loads(raw) and entry["event"] == orjson.loads(raw)
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
    assert len(value) > MAX_BUNDLE_BYTES
    assert bytes(read_events(value)[0]["raw"]) == raw


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


@pytest.mark.parametrize("value", [b"{not json", b'{"clicks": []}', b'{"events": []}', b""])
def test_a_record_without_the_frame_is_not_an_events_bundle(value):
    with pytest.raises(ValueError) as e:
        read_events(value)
    assert str(e.value) == "not an events bundle (no ttbridge-events/2 frame)"
    with pytest.raises(KeyError):
        read_clicks(b'{"events": []}')
    with pytest.raises(ValueError):
        read_clicks(b'{"clicks": {"c": {}}}')
    with pytest.raises(KeyError):  # the sweeper's expiry bundles are gone: it deletes locally
        read_clicks(b'{"expired": ["c"]}')


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


# --------------------------------------------------------------------------- the framed events bundle

def test_an_events_bundle_is_its_header_then_each_events_own_bytes():
    first = b'{"event":"Order Completed","messageId":"m1"}'
    second = b'{\n  "event": "Lead",\n  "name": "J\xc3\xbcrgen \\u2028 \\"x\\""\n}'  # as produced: newlines, UTF-8, escapes
    bundler = Bundler(1)
    bundler.add_event("c-1", first, 1700000000.25, {"topic": "tracking-events", "partition": 4, "offset": 7})
    bundler.add_event(None, second, 1700000001.0, {"topic": "tracking-events", "partition": 0, "offset": 9})
    [(role, key, value, partition)] = bundler.records()
    assert (role, key, partition) == ("events-by-click-id", None, 0)
    assert value == (b"ttbridge-events/2\n"
                     b'{"events":[{"click_id":"c-1","at":1700000000.25,'
                     b'"source":{"topic":"tracking-events","partition":4,"offset":7},"bytes":44},'
                     b'{"click_id":null,"at":1700000001.0,'
                     b'"source":{"topic":"tracking-events","partition":0,"offset":9},"bytes":%d}]}\n' % len(second)
                     + first + second)
    assert value.startswith(EVENTS_FRAME)
    entries = read_events(value)
    assert [bytes(e["raw"]) for e in entries] == [first, second]
    assert [event_of(e) for e in entries] == [orjson.loads(first), orjson.loads(second)]


@pytest.mark.parametrize("depth", [1022, 1023, 1024])
def test_an_event_the_intake_accepts_at_orjsons_depth_limit_comes_out_of_its_bundle(depth):
    # 1,022-1,024 levels: the intake's decode reads it, and so does the forwarder, because the
    # bundle does not nest it. In the JSON bundle (3 levels of wrapper) it could not be read.
    lists = depth - 1
    raw = b'{"event":"Order Completed","messageId":"deep","nest":' + b"[" * lists + b"]" * lists + b"}"
    decode_object(raw, len(raw))  # what the intake checks
    with pytest.raises(orjson.JSONDecodeError, match="depth limit exceeded"):
        orjson.loads(b'{"events":[{"event":' + raw + b"}]}")
    valid = b'{"event":"Lead","messageId":"m-2"}'
    bundler = Bundler(1)
    for i, r in enumerate((valid, raw, valid)):
        bundler.add_event("c", r, 1.0, {"offset": i})
    [(_, _, value, _)] = bundler.records()
    first, deep, last = (event_of(e) for e in read_events(value))
    assert first == last == orjson.loads(valid)
    assert (deep["event"], deep["messageId"], depth_of(deep)) == ("Order Completed", "deep", depth)


def depth_of(doc) -> int:
    """Levels of nesting of a parsed document whose containers hold at most one container each
    (== and repr recurse, and Python's recursion limit is below 1,024)."""
    depth = 0
    while isinstance(doc, (dict, list)):
        depth += 1
        doc = next((v for v in (doc.values() if isinstance(doc, dict) else doc) if isinstance(v, (dict, list))), None)
    return depth


def refusal(raw: bytes) -> tuple[str, str]:
    """What the intake's decode says of `raw`: (reason, message)."""
    with pytest.raises(Refusal) as r:
        decode_object(raw, len(raw) + 1)
    return r.value.reason, r.value.message


def test_an_undecodable_entry_is_refused_alone_as_the_intake_would_refuse_it():
    good = [orjson.dumps({"event": "Lead", "messageId": f"m-{i}"}) for i in range(3)]
    bad = [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"', b'{"a": 1e400}', b""]
    value = events_value([({"click_id": None, "at": 1.0, "source": {"offset": i}}, raw)
                          for i, raw in enumerate([good[0], *bad[:3], good[1], *bad[3:], good[2]])])
    outcomes = []
    for entry in read_events(value):
        try:
            outcomes.append(event_of(entry))
        except Refusal as r:
            outcomes.append((r.reason, r.message))
    assert outcomes == [orjson.loads(good[0]), *map(refusal, bad[:3]), orjson.loads(good[1]),
                        *map(refusal, bad[3:]), orjson.loads(good[2])]
    assert [o[0] for o in outcomes if isinstance(o, tuple)] == [
        "invalid_json", "not_an_object", "invalid_json", "not_an_object", "invalid_json", "invalid_json"]


@pytest.mark.parametrize("value, error", [
    (EVENTS_FRAME + b'{"events":[]}', "without the end of its header"),
    (EVENTS_FRAME + b"{not json\n", "unexpected character"),
    (EVENTS_FRAME + b'{"events":[{"bytes":3}]}\n{}', "frames 3 bytes of events, the record has 2"),
    (EVENTS_FRAME + b'{"events":[{"bytes":1}]}\n{}', "frames 1 bytes of events, the record has 2"),
    (EVENTS_FRAME + b'{"events":[{"bytes":"2"}]}\n{}', "an entry's bytes must be a count, got '2'"),
    (EVENTS_FRAME + b'{"events":[{"bytes":-1}]}\n{}', "an entry's bytes must be a count, got -1"),
    (EVENTS_FRAME + b'{"events":[{"bytes":true}]}\n{}', "an entry's bytes must be a count, got True"),
    (EVENTS_FRAME + b'{"events":{"bytes":2}}\n{}', "a bundle's events must be a list of objects"),
    (EVENTS_FRAME + b'{"events":[2]}\n{}', "a bundle's events must be a list of objects"),
    (EVENTS_FRAME + b'{"events":[{"click_id":"c"}]}\n', "'bytes'"),
    (EVENTS_FRAME + b'{"clicks":[]}\n', "'events'"),
])
def test_a_framed_bundle_whose_header_does_not_frame_its_bytes_raises_for_the_caller(value, error):
    # The header is ttbridge's own: when it is wrong no entry's bounds can be trusted, so the
    # record is dead-lettered whole (app.job.forwarder).
    with pytest.raises((ValueError, KeyError)) as e:
        read_events(value)
    assert error in str(e.value)
