"""The worker's logging: repeated errors rate-limited (app.job.logs.RateLimit), and the JSON
format (one object per line, redacted)."""
import io
import json
import logging

import pytest

from app.job.logs import JsonFormatter, RateLimit, install
from app.tiktok.redact import MASK, SECRETS

TOKEN = "logs-test-token-8d1c5e0a77"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logger():
    """A logger of its own under `aiokafka.`, writing plain messages to a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("aiokafka.test_logs")
    root.propagate = False
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.stream = stream
    root.handler = handler
    yield root
    root.removeHandler(handler)
    root.propagate = True


def lines(logger) -> list[str]:
    return logger.stream.getvalue().splitlines()


def test_the_first_passes_then_one_per_interval_with_the_count(logger):
    clock = Clock()
    logger.handler.addFilter(RateLimit(10.0, clock=clock))
    for i in range(413):  # one burst, within the first interval
        logger.error("Unable connect to node with id %s: %s", i % 3, "refused")
        clock.now += 0.01
    clock.now = 1010.0  # the interval is over: the next one passes, counting the 412 dropped
    logger.error("Unable connect to node with id %s: %s", 2, "refused")
    clock.now = 1015.0
    logger.error("Unable connect to node with id %s: %s", 1, "refused")  # dropped: within 10 s
    clock.now = 1031.0
    logger.error("Unable connect to node with id %s: %s", 0, "refused")
    assert lines(logger) == [
        "aiokafka.test_logs ERROR Unable connect to node with id 0: refused",
        "aiokafka.test_logs ERROR Unable connect to node with id 2: refused (and 412 more like it in 10 s)",
        "aiokafka.test_logs ERROR Unable connect to node with id 0: refused (and 1 more like it in 21 s)"]


def test_kinds_are_counted_apart_and_quiet_ones_are_not_limited(logger):
    clock = Clock()
    logger.handler.addFilter(RateLimit(10.0, clock=clock))
    other = logging.getLogger("aiokafka.test_logs.conn")  # a child: its records reach the handler
    for _ in range(3):
        logger.error("metadata %s failed", "x")
        other.error("metadata %s failed", "y")   # same template, another logger: its own kind
        logger.warning("coordinator %s dead", "1")
        logger.info("fetching %s", "p0")          # below WARNING: never limited
        logging.getLogger("aiokafka.test_logs").error("metadata failed")  # another template
    assert lines(logger) == [
        "aiokafka.test_logs ERROR metadata x failed",
        "aiokafka.test_logs.conn ERROR metadata y failed",
        "aiokafka.test_logs WARNING coordinator 1 dead",
        "aiokafka.test_logs INFO fetching p0",
        "aiokafka.test_logs ERROR metadata failed",
        "aiokafka.test_logs INFO fetching p0",
        "aiokafka.test_logs INFO fetching p0"]
    limit = RateLimit(10.0, clock=clock)
    # Not one of the limited loggers (aiokafka, faust, mode, app.job): every record passes.
    assert [limit.filter(record("not limited", name="app.settings")) for _ in range(3)] == [True] * 3


def test_a_quiet_interval_lets_the_next_one_through_without_a_count(logger):
    clock = Clock()
    logger.handler.addFilter(RateLimit(10.0, clock=clock))
    logger.error("broker %s gone", 1)
    clock.now += 60
    logger.error("broker %s gone", 1)
    assert lines(logger) == ["aiokafka.test_logs ERROR broker 1 gone"] * 2


def record(msg: str, *args, exc_info=None, name="aiokafka.conn", level=logging.ERROR) -> logging.LogRecord:
    r = logging.LogRecord(name, level, "conn.py", 1, msg, args, exc_info)
    r.created, r.msecs = 1767225600.25, 250.0  # 2026-01-01T00:00:00.250Z
    return r


def test_the_json_line_has_exactly_these_keys():
    line = JsonFormatter().format(record("Unable connect to node with id %s: %s", 1, "refused"))
    assert "\n" not in line
    assert json.loads(line) == {"time": "2026-01-01T00:00:00.250Z", "level": "ERROR", "logger": "aiokafka.conn",
                                "message": "Unable connect to node with id 1: refused"}


def test_a_traceback_is_one_line_and_the_token_is_redacted():
    SECRETS.add(TOKEN)
    try:
        raise ConnectionError(f"answer quoted Access-Token: {TOKEN}")
    except ConnectionError:
        import sys
        exc_info = sys.exc_info()
    line = JsonFormatter().format(record("sending with %s failed", TOKEN, exc_info=exc_info))
    assert "\n" not in line and TOKEN not in line
    parsed = json.loads(line)
    assert set(parsed) == {"time", "level", "logger", "message", "exception"}
    assert parsed["message"] == f"sending with {MASK} failed"
    exception = parsed["exception"].splitlines()
    assert exception[0] == "Traceback (most recent call last):"
    assert exception[-1] == f"ConnectionError: answer quoted Access-Token: {MASK}"


def test_install_formats_and_limits_every_root_handler(logger):
    clock = Clock()
    install("json", logger=logger)
    filters = [f for f in logger.handler.filters if isinstance(f, RateLimit)]
    assert len(filters) == 1
    install("json", logger=logger)  # again (faust replaced the handlers): still one filter
    assert [f for f in logger.handler.filters if isinstance(f, RateLimit)] == filters
    filters[0].clock = clock
    for _ in range(50):
        logger.error("Unable to update metadata from %s", [0])
    clock.now += 10
    logger.error("Unable to update metadata from %s", [0])
    assert [json.loads(line)["message"] for line in lines(logger)] == [
        "Unable to update metadata from [0]", "Unable to update metadata from [0] (and 49 more like it in 10 s)"]
