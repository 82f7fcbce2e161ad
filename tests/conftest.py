"""Shared fixtures. One real Kafka broker for the whole run (or KAFKA_BOOTSTRAP_SERVERS)."""
from __future__ import annotations

import os
import uuid

import pytest

from app.kafka_local import Broker, free_port


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
