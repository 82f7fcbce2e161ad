"""The forwarder's rounds in the background (app/forwarder.py), without a broker: a round whose
delivery fails leaves its record unacked (faust's commit stops there and the next owner re-reads
it) and frees its slot, so the next round is delivered and acked."""
import logging
import time
from types import SimpleNamespace

import orjson

from app.job.forwarder import ROUNDS_IN_FLIGHT, Forwarder
from app.job.metrics import Metrics
from app.settings import load, mapping_config
from app.tiktok.sender import Delivery

NOW = time.time()


class Record:
    """A faust event as the forward agent gets it: a bundle of one event without a click ID."""

    def __init__(self, offset: int, message_id: str) -> None:
        event = {"type": "track", "event": "Order Completed", "messageId": message_id,
                 "timestamp": NOW - 30, "context": {"traits": {"email": f"{message_id}@example.com"}},
                 "properties": {"value": 10, "currency": "EUR"}}
        entry = {"click_id": None, "at": NOW, "source": {"topic": "tracking-events", "partition": 0,
                                                          "offset": offset}, "event": event}
        self.key, self.value = None, orjson.dumps({"events": [entry]})
        self.message = SimpleNamespace(topic="events-by-click-id", partition=0, offset=offset,
                                       timestamp=NOW, tp=("events-by-click-id", 0))
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class Sender:
    def __init__(self) -> None:
        self.fail, self.bodies = True, []

    async def deliver(self, pixel, body) -> Delivery:
        if self.fail:
            raise RuntimeError("a bug in delivery")
        self.bodies.append(body)
        return Delivery(accepted=len(body["data"]), requests=1)


async def test_a_failed_delivery_leaves_its_round_unacked_and_the_next_round_goes_out(caplog):
    settings = load({"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": "token-1"})
    written = []

    async def write(records):
        written.extend(records)

    sender = Sender()
    forwarder = Forwarder(settings, mapping_config(settings), None, sender, write, Metrics())
    first, second = Record(0, "m-0"), Record(1, "m-1")

    with caplog.at_level(logging.ERROR, logger="app.job.forwarder"):
        await forwarder.handle([first])
        await forwarder.drain()
    assert not first.acked
    assert [r.getMessage() for r in caplog.records] == [
        "a delivery failed; its events stay unacked and are re-read after a restart or rebalance"]
    assert forwarder._slots._value == ROUNDS_IN_FLIGHT  # the slot came back

    sender.fail = False
    await forwarder.handle([second])
    await forwarder.drain()
    assert second.acked and not first.acked
    assert [[item["event_id"] for item in body["data"]] for body in sender.bodies] == [["m-1"]]
    assert written == []  # nothing for the retry topic or the DLQ
