"""The faust/mode/aiokafka private names ttbridge relies on (app/job/faust_internals.py): each
still exists and does what the module says, on the pinned versions — and nowhere else in app/
uses a private name of theirs. An upgrade that moves one of them fails here first."""
import contextvars
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from faust.stores.rocksdb import Store
from faust.streams import _current_event
from faust.transport.producer import ProducerBuffer

from app.job import faust_internals
from app.job.worker import build_app
from app.settings import load

REPO = Path(__file__).resolve().parents[2]


def test_the_versions_these_were_written_against_are_installed_and_pinned():
    pins = (REPO / "pyproject.toml").read_text()
    for package, pinned in (("faust-streaming", "0.15.3"), ("mode-streaming", "0.7.1"),
                            ("aiokafka", "0.14.0")):
        assert version(package) == pinned
        assert f'"{package}=={pinned}"' in pins


# A private attribute of a faust/mode/aiokafka object, or a private import from them.
PRIVATE = re.compile(r"from (faust|mode|aiokafka)[\w.]* import [^\n]*\b_[a-z]"
                     r"|\.(_get|_encode_key|_decode_value|_ensure_producer|_client|_current_event"
                     r"|_schedule_shutdown|_setup_spinner_handler|_db_for_partition)\b"
                     r"|producer\.buffer\b|\.(recovery|rocksdb_options|partition_path|offset_key)\b")


def private_uses() -> dict[str, int]:
    counts = {str(f.relative_to(REPO)): len(PRIVATE.findall(f.read_text()))
              for f in (REPO / "app").rglob("*.py")}
    return {f: n for f, n in counts.items() if n}


def test_private_names_appear_only_in_the_internals_module():
    uses = private_uses()
    assert set(uses) == {"app/job/faust_internals.py"}
    assert uses["app/job/faust_internals.py"] >= 8  # the pattern sees what it is meant to see


def test_the_current_event_is_a_contextvar_the_rocksdb_store_reads():
    assert isinstance(_current_event, contextvars.ContextVar)
    import faust.stores.rocksdb as rocksdb
    assert rocksdb.current_event.__module__ == "faust.streams"  # what Store reads the partition from


@pytest.fixture
def app(tmp_path):
    settings = load({"TIKTOK_PIXEL_CODE": "INTERNALS", "TIKTOK_ACCESS_TOKEN": "internals-token-0",
                     "TTBRIDGE_DATA_DIR": str(tmp_path)}, partitions=2)
    return build_app(settings, run_retrier=False)


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = type("M", (), {"partition": partition})()


def test_a_read_sees_only_the_partition_of_its_event(app):
    table = app.ttbridge.clicks.table
    store = table.data
    assert isinstance(store, Store)
    db = store._db_for_partition(1)
    db.put(store._encode_key("c-1"), store._encode_value({"ttclid": "E.C.P.1"}))
    assert faust_internals.read_in_partition_of(_Event(1), table, "c-1") == {"ttclid": "E.C.P.1"}
    assert faust_internals.read_in_partition_of(_Event(0), table, "c-1") is None
    assert _current_event.get(None) is None  # reset after the read


def test_the_store_layout_the_bulk_restore_writes(app):
    store = app.ttbridge.clicks.table.data
    assert faust_internals.rocksdb_offset_key(store) == b"__faust\x00offset__"
    db = faust_internals.rocksdb_partition(store, 1)
    try:
        db.put(faust_internals.rocksdb_offset_key(store), b"41")
    finally:
        db.close()
    assert store.persisted_offset(type("TP", (), {"topic": "x", "partition": 1})()) == 41
    assert str(store.partition_path(1)).endswith("-1.db")


def test_the_changelog_bundle_allowance_is_the_producer_buffers_limit(app):
    assert isinstance(app.producer.buffer, ProducerBuffer)
    assert ProducerBuffer.max_messages == 100
    assert app.producer.buffer.max_messages == app.ttbridge.settings.batch_max + 100


def test_draining_changelog_writes_is_the_producer_buffers_flush():
    # drain_changelog_writes relies on ProducerBuffer.flush draining the queue without acks.
    import inspect

    from faust.transport.producer import ProducerBuffer
    assert inspect.iscoroutinefunction(ProducerBuffer.flush)
    assert "message_sent" in inspect.getsource(ProducerBuffer.flush_atmost)


def test_recovery_completed_is_the_recovery_services_event(app):
    assert faust_internals.recovery_completed(app) is False
    app.tables.recovery.completed.set()
    assert faust_internals.recovery_completed(app) is True
