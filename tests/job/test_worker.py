"""The faust app as built for `ttbridge worker` (no broker needed to build it)."""
import pytest

from app.job import faust_internals
from app.job.worker import PAGES, build_app, healthz, metrics, readyz, stats
from app.settings import load


def test_the_click_table_opens_rocksdb_with_small_memtables_and_cache(tmp_path):
    # faust's defaults are 3 x 64 MB memtables and a 2 GB block cache per partition: with them a
    # worker holding 1M clicks peaked at 541 MB (bench, 2026-12-02); see bench/README.md.
    settings = load({"TIKTOK_ACCESS_TOKEN": "worker-test-token-000", "TIKTOK_PIXEL_CODE": "WORKERPIXEL",
                     "TTBRIDGE_DATA_DIR": str(tmp_path)})
    store = build_app(settings, run_retrier=False).ttbridge.clicks.table.data
    options = store.rocksdb_options
    assert (options.write_buffer_size, options.max_write_buffer_number, options.block_cache_size) == (
        4 << 20, 2, 8 << 20)
    db = faust_internals.rocksdb_partition(store, 0)  # opens it with exactly these options
    try:
        db.put(b"k", b"v")
        assert db.get(b"k") == b"v"
    finally:
        db.close()


class View:
    """What faust hands a page handler: the app, and json/text responses."""

    def __init__(self, app) -> None:
        self.app = app

    def json(self, value, status: int = 200):
        return status, value

    def text(self, value, content_type: str):
        return content_type, value


@pytest.fixture
def app(tmp_path):
    settings = load({"TIKTOK_ACCESS_TOKEN": "worker-test-token-000", "TIKTOK_PIXEL_CODE": "WORKERPIXEL",
                     "TTBRIDGE_DATA_DIR": str(tmp_path)})
    return build_app(settings, run_retrier=False)


async def test_the_pages_are_the_jobs_counters_and_readiness(app):
    view = View(app)
    assert set(PAGES) == {"/healthz", "/readyz", "/metrics", "/stats"}
    assert await healthz(view, None) == (200, {"status": "ok"})
    assert await readyz(view, None) == (503, {"ready": False, "recovered": False, "rebalancing": False})
    app.tables.recovery.completed.set()
    assert await readyz(view, None) == (200, {"ready": True, "recovered": True, "rebalancing": False})
    app.ttbridge.metrics.add("events_in", 3)
    app.ttbridge.metrics.add("dead_letters", reason="invalid_json")
    assert await stats(view, None) == (200, {"events_in": 3, "dead_letters": {"invalid_json": 1},
                                             "pending": 0})
    content_type, text = await metrics(view, None)
    assert content_type == "text/plain; version=0.0.4"
    assert "ttbridge_events_in_total 3.0\n" in text  # prometheus_client writes floats
    assert 'ttbridge_dead_letters_total{pixel="",reason="invalid_json"} 1.0\n' in text


def test_the_job_registers_its_agents_tasks_and_timer(app):
    assert sorted(agent.name for agent in app.agents.values()) == ["forward", "store_clicks"]
    job = app.ttbridge
    assert job.forwarder.lookup == job.clicks.read
    assert job.clicks.table is app.tables["clicks"]
