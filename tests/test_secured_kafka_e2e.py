"""End to end over SASL_SSL (SCRAM-SHA-512, the broker's CA verified) and over SSL (a client
certificate, its key encrypted): a worker process creates its topics, joins a conversion to its
click and delivers it to the fake Events API, every client of it on the secured listener;
restarted on an empty state dir, it catches up the clicks table from its topic over the same
listener and joins again. The password (and the key's password) never reaches its log."""
import time

import pytest

from app.devtools.kafka_local import free_port
from app.devtools.worker_process import WorkerProcess, produce_json
from app.job.kafka_security import client_options
from app.settings import load
from tests.secured_kafka import PASSWORD
from tests.support import PIXEL_A, TOKEN_A, wait_accepted


def conversion(i: int, now: float) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": f"secured-{i}", "timestamp": now - 5,
            "properties": {"click_id": "c-secured", "order_id": i, "value": 10, "currency": "EUR"}}


@pytest.mark.parametrize("protocol, mechanism, client_certificate", [
    ("SASL_SSL", "SCRAM-SHA-512", False), ("SSL", None, True), ("SASL_PLAINTEXT", "SCRAM-SHA-256", False),
    ("SASL_SSL", "PLAIN", False)], ids=["sasl_ssl", "ssl", "sasl_plaintext_scram256", "sasl_ssl_plain"])
async def test_a_worker_delivers_over_a_secured_listener(secured_kafka, fake, unique, tmp_path, protocol,
                                                         mechanism, client_certificate):
    config = tmp_path / "ttbridge.toml"
    config.write_text("[ttbridge]\nbatch_window_s = 0.2\njoin_wait_s = 4\npartitions = 3\n")
    env = {**secured_kafka.env(protocol, mechanism, client_certificate=client_certificate),
           "TTBRIDGE_CONFIG": str(config),
           "TIKTOK_API_URL": fake.base_url, "TIKTOK_ACCESS_TOKEN": TOKEN_A, "TIKTOK_PIXEL_CODE": PIXEL_A,
           "TTBRIDGE_APP_ID": f"sec{unique}", "TTBRIDGE_DATA_DIR": str(tmp_path / "state"),
           "TTBRIDGE_WEB_PORT": str(free_port()),
           "TTBRIDGE_TOPIC_CLICKS": f"clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"events-{unique}",
           "TTBRIDGE_TOPIC_RETRY": f"retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"dlq-{unique}"}
    settings = load(env)
    security = client_options(settings)
    now = time.time()
    log = tmp_path / "worker.log"

    worker = WorkerProcess(env, log, loglevel="info")
    worker.start()  # it creates the topics itself, over the secured listener
    try:
        await worker.wait_ready()
        await produce_json(settings.bootstrap_servers, settings.topic_clicks,
                           [{"click_id": "c-secured", "ttclid": "E.C.P.secured", "timestamp": now - 60}],
                           key=lambda c: c["click_id"], security=security)
        await produce_json(settings.bootstrap_servers, settings.topic_events, [conversion(1, now)],
                           security=security)
        await wait_accepted(fake, 1, f"the conversion over {protocol}", timeout=60)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # A fresh state dir: the catch-up reads the clicks table's topics (its own consumer).
    restarted = WorkerProcess({**env, "TTBRIDGE_DATA_DIR": str(tmp_path / "state-2")}, log, loglevel="info")
    restarted.start()
    try:
        await restarted.wait_ready()
        await produce_json(settings.bootstrap_servers, settings.topic_events, [conversion(2, now)],
                           security=security)
        await wait_accepted(fake, 2, "the second conversion, joined from the restored table", timeout=60)
    finally:
        assert restarted.stop() == 0, restarted.log_tail()

    assert [(a["pixel_code"], a["event"]["event_id"], a["event"]["user"]) for a in fake.accepted] == [
        (PIXEL_A, "secured-1", {"ttclid": "E.C.P.secured"}),
        (PIXEL_A, "secured-2", {"ttclid": "E.C.P.secured"})]
    text = log.read_text(errors="replace")
    assert f"caught up 1 clicks from clicks-{unique} and sec{unique}-clicks-by-click-id" in text
    # No client fell back or kept retrying: the intake, the retry tiers and the clicks table all got in.
    for failure in ("the intake failed", "retry tier", "catching up the clicks table", "following",
                    "Unable connect", "Traceback"):
        assert failure not in text, failure
    assert PASSWORD not in text and secured_kafka.certs.client_key_password not in text
