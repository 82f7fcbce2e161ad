"""ttbridge's job written as a Quix Streams 3.28 application, the way its documentation suggests:
`python -m bench.peers.quix_app --bootstrap B --clicks T --events T --url URL --state-dir D`.

- clicks (keyed by click ID, murmur2 as Kafka's Java client and aiokafka partition) go into a
  Quix state store through `join_asof`; the store has a changelog topic, like ttbridge's table;
- conversions are parsed, re-keyed by click ID with `group_by` (a repartition topic, partitioned
  with murmur2 too, so that it is co-partitioned with the clicks), joined with the latest click
  of their key (a left join: conversions without a click, or whose click has not been read yet,
  go on without it — Quix does not wait for a late click as ttbridge does for join_wait_s),
  mapped with ttbridge's own mapping (app.mapping), and
- POSTed by a batching sink: each checkpoint (commit_interval 1 s) flushes what each partition
  gathered, up to 1,000 events per request; the offsets are committed once the sink succeeded
  (Quix's at-least-once checkpointing). A non-zero answer makes Quix back off and retry.

Events that are not JSON or that the mapping refuses are dropped (counted in the log at exit).
"""
from __future__ import annotations

import argparse
import logging
import time

import orjson
import requests
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from app.mapping.decode import decode_click
from app.mapping.events import MappingConfig, Refusal, Skip, map_event
from app.tiktok.facts import TRACK_PATH
from bench.load import PIXEL, TOKEN

__all__ = ["build", "main"]

BATCH = 1000
MAX_CLICK_BYTES = 1 << 20
log = logging.getLogger("quix-peer")
dropped = {"bad_json": 0, "bad_click": 0, "refused": 0}


class TikTokSink(BatchingSink):
    """POSTs a checkpoint's events, 1,000 per request; raising keeps the offsets uncommitted."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url.rstrip("/") + TRACK_PATH
        self.session: requests.Session | None = None

    def setup(self) -> None:
        self.session = requests.Session()
        self.session.headers.update({"Access-Token": TOKEN, "Content-Type": "application/json"})

    def write(self, batch: SinkBatch) -> None:
        for chunk in batch.iter_chunks(BATCH):
            body = orjson.dumps({"event_source": "web", "event_source_id": PIXEL,
                                 "data": [item.value for item in chunk]})
            r = self.session.post(self.url, data=body, timeout=30)
            if r.status_code != 200 or orjson.loads(r.content).get("code") != 0:
                raise SinkBackpressureError(retry_after=1.0)


def parse_click(raw: bytes) -> dict | None:
    try:
        return decode_click(raw, MAX_CLICK_BYTES)[1]
    except Refusal:
        dropped["bad_click"] += 1
        return None


def parse_event(raw: bytes) -> dict | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        dropped["bad_json"] += 1
        return None
    click_id = (doc.get("properties") or {}).get("click_id") if isinstance(doc, dict) else None
    return {"event": doc, "click_id": click_id if isinstance(click_id, str) else None}


def by_click_id(value: dict) -> str:
    # Conversions without a click ID still need a key: their own message ID finds no click.
    return value["click_id"] or f"no-click:{value['event'].get('messageId', '')}"


def build(app: Application, clicks_topic: str, events_topic: str, url: str) -> None:
    mapping = MappingConfig(default_region="GB")

    def to_items(value: dict) -> list[dict]:
        try:
            return map_event(value["event"], value.get("click"), mapping, time.time())
        except (Refusal, Skip):
            dropped["refused"] += 1
            return []

    clicks = app.dataframe(app.topic(clicks_topic, key_deserializer="str", value_deserializer="bytes"))
    clicks = clicks.apply(parse_click).filter(lambda v: v is not None)
    events = app.dataframe(app.topic(events_topic, key_deserializer="bytes", value_deserializer="bytes"))
    events = events.apply(parse_event).filter(lambda v: v is not None)
    events = events.group_by(by_click_id, name="by-click-id", key_serializer="str", key_deserializer="str")
    joined = events.join_asof(clicks, how="left", on_merge=lambda left, right: {**left, "click": right})
    joined.apply(to_items, expand=True).sink(TikTokSink(url))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.quix_app", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--clicks", required=True, help="clicks topic, keyed by click ID")
    p.add_argument("--events", required=True, help="conversions topic")
    p.add_argument("--url", required=True, help="base URL of the Events API")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--group", default="quix-peer")
    args = p.parse_args(argv)
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      commit_interval=1.0, state_dir=args.state_dir, loglevel="WARNING",
                      # murmur2 like the clicks' producer: the repartition topic is co-partitioned
                      # with the clicks topic (librdkafka's default, crc32, would not be).
                      producer_extra_config={"partitioner": "murmur2_random"})
    build(app, args.clicks, args.events, args.url)
    try:
        app.run()
    finally:
        log.warning("quix peer dropped %s", dropped)


if __name__ == "__main__":
    main()
