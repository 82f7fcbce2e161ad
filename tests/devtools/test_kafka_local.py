"""The broker on tap is real: produce and consume through it, and it leaves nothing behind."""
import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.devtools.kafka_local import Broker, free_port
from tests.support import create_topic


async def test_produce_and_consume_on_the_real_broker(kafka_bootstrap, unique):
    topic = f"roundtrip-{unique}"
    await create_topic(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                group_id=f"g-{unique}")
    await consumer.start()
    try:
        got = []
        while len(got) < 3:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            got += [m.value for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    assert got == [b"v0", b"v1", b"v2"]


def _java_pids(data_dir) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"kafka.Kafka {data_dir}"], capture_output=True, text=True)
    return out.stdout.split()


def test_cli_up_status_down_leaves_no_process(tmp_path):
    data_dir = tmp_path / "broker"
    port = free_port()
    env = dict(os.environ)
    run = lambda *a: subprocess.run([sys.executable, "-m", "app", "kafka", *a, "--data-dir", str(data_dir)],
                                    capture_output=True, text=True, env=env, timeout=180)
    up = run("up", "--port", str(port))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"127.0.0.1:{port}"
    status = run("status")
    assert status.returncode == 0 and f"bootstrap 127.0.0.1:{port}" in status.stdout
    assert _java_pids(data_dir)
    down = run("down")
    assert down.returncode == 0 and down.stdout.strip() == "stopped"
    assert _java_pids(data_dir) == []
    after = run("status")
    assert after.returncode == 1 and "no broker running" in after.stdout


def test_restart_keeps_data(tmp_path):
    broker = Broker(tmp_path / "b", free_port(), free_port())
    broker.start()
    try:
        async def produce():
            await create_topic(broker.bootstrap, "kept")
            p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await p.start()
            await p.send_and_wait("kept", b"survives")
            await p.stop()
        asyncio.run(produce())
        broker.stop()
        assert broker.pid() is None
        broker.start()

        async def consume():
            c = AIOKafkaConsumer("kept", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
            await c.start()
            try:
                return (await asyncio.wait_for(c.getone(), 30)).value
            finally:
                await c.stop()
        assert asyncio.run(consume()) == b"survives"
    finally:
        broker.stop()


def test_missing_java_is_named(monkeypatch, tmp_path):
    from app.devtools import kafka_local
    monkeypatch.setattr(kafka_local.shutil, "which", lambda tool: None)
    with pytest.raises(kafka_local.BrokerError, match="java is not installed: install Java 17"):
        Broker(tmp_path, free_port()).start()


def test_cluster_ids_never_start_with_a_dash(monkeypatch):
    # A dash-led id reads as an option to Kafka's StorageTool, and formatting fails.
    import uuid

    from app.devtools import kafka_local
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x00" * 16)])
    monkeypatch.setattr(kafka_local.uuid, "uuid4", lambda: next(draws))
    assert kafka_local._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
    monkeypatch.undo()
    assert all(not kafka_local._cluster_id().startswith("-") for _ in range(2000))
