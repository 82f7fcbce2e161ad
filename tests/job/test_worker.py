"""The faust app as built for `ttbridge worker` (no broker needed to build it)."""
import pytest

from app.job.worker import PAGES, build_app, healthz, metrics, readyz, stats
from app.settings import load


def test_the_click_table_is_a_rocksdb_in_the_data_dir(tmp_path):
    settings = load({"TIKTOK_ACCESS_TOKEN": "worker-test-token-000", "TIKTOK_PIXEL_CODE": "WORKERPIXEL",
                     "TTBRIDGE_DATA_DIR": str(tmp_path)})
    clicks = build_app(settings, run_retrier=False).ttbridge.clicks
    clicks.open()
    try:
        assert clicks.path == tmp_path / "clicks"
        assert clicks.read("nope") is None and clicks.offsets(clicks.topic, 2) == {0: 0, 1: 0}
    finally:
        clicks.close()


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
    page = {"ready": False, "recovered": False, "clicks_caught_up": False, "rebalancing": False}
    assert await readyz(view, None) == (503, page)
    app.tables.recovery.completed.set()
    assert await readyz(view, None) == (503, {**page, "recovered": True})
    app.ttbridge.clicks.caught_up = True
    assert await readyz(view, None) == (200, {**page, "ready": True, "recovered": True, "clicks_caught_up": True})
    app.ttbridge.clicks.following = False  # the follower failed: joins would miss new clicks
    assert await readyz(view, None) == (503, {**page, "recovered": True})
    app.ttbridge.clicks.following = True
    app.ttbridge.metrics.add("events_in", 3)
    app.ttbridge.metrics.add("dead_letters", reason="invalid_json")
    assert await stats(view, None) == (200, {"events_in": 3, "dead_letters": {"invalid_json": 1},
                                             "pending": 0})
    content_type, text = await metrics(view, None)
    assert content_type == "text/plain; version=0.0.4"
    assert "ttbridge_events_in_total 3.0\n" in text  # prometheus_client writes floats
    assert 'ttbridge_dead_letters_total{pixel="",reason="invalid_json"} 1.0\n' in text


def test_the_job_registers_its_tasks_and_timer_and_no_agent(app):
    # The input is read by the intake's own consumer and joined in the same process (app.job.intake).
    assert list(app.agents) == []
    job = app.ttbridge
    assert job.forwarder.lookup == job.clicks.read
    assert job.intake.forwarder is job.forwarder
    assert list(app.tables) == []  # the clicks table is ttbridge's own (app.job.clicks)
