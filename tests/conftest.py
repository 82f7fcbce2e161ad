"""Shared fixtures. One real Kafka broker for the whole run (or KAFKA_BOOTSTRAP_SERVERS)."""
from __future__ import annotations

import os
import uuid

import pytest

from app.devtools.fake_tiktok import FakeConfig, FakeTikTok
from app.devtools.kafka_local import Broker, free_port
from tests.support import PIXEL_A, PIXEL_B, TOKEN_A, TOKEN_B


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """host:port of a real broker. Started once, always stopped, even when tests fail."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    broker = Broker(tmp_path_factory.mktemp("kafka"), free_port(), free_port())
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker_handle(tmp_path_factory):
    """A broker of this test module's own, for tests that stop and restart it."""
    broker = Broker(tmp_path_factory.mktemp("kafka-own"), free_port(), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique():
    """A short unique suffix, so tests sharing the broker never share topics or groups."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def fake():
    fake = FakeTikTok(FakeConfig(tokens={TOKEN_A: frozenset({PIXEL_A}), TOKEN_B: frozenset({PIXEL_B})}))
    base = await fake.start("127.0.0.1", 0)
    fake.base_url = base
    yield fake
    await fake.stop()


@pytest.fixture
def stack_env(kafka_bootstrap, unique, tmp_path, monkeypatch):
    """Environment of a worker with its own topics, group, state dir and config file."""
    monkeypatch.setenv("E2E_TOKEN_A", TOKEN_A)
    monkeypatch.setenv("E2E_TOKEN_B", TOKEN_B)
    config = tmp_path / "ttbridge.toml"
    config.write_text(f"""
[ttbridge]
batch_window_s = 0.3
join_wait_s = 4
partitions = 6

[[pixels]]
code = "{PIXEL_A}"
token_env = "E2E_TOKEN_A"

[[pixels]]
code = "{PIXEL_B}"
token_env = "E2E_TOKEN_B"
test_event_code = "TEST777"

[routing]
path = "properties.site"
rules = {{ "shop-b" = "{PIXEL_B}" }}
default = "{PIXEL_A}"
""")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_CONFIG": str(config),
        "TTBRIDGE_APP_ID": f"e2e{unique}", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
        "TTBRIDGE_WEB_PORT": str(free_port()),
        "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}",
        "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}",
    }


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory):
    """A broker of its own with TLS and SASL listeners (tests/secured_kafka.py), started only
    for the tests that ask for it, once, and always stopped."""
    from tests import secured_kafka

    kafka = secured_kafka.start(tmp_path_factory.mktemp("kafka-secured"))
    try:
        yield kafka
    finally:
        kafka.broker.stop()
