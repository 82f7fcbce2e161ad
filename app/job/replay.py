"""`ttbridge replay`: send dead-lettered records through again, after their cause is fixed.

Reads the DLQ from the start to its end as it is when the command starts (no consumer group, no
commits): it never deletes, edits or moves offsets of the DLQ. A record holding a TikTok request
goes to the first retry tier, due now; a record holding original input (it never mapped) goes
back to the topic it came from. Replaying twice is safe: event_ids are stable, so TikTok drops
what it already has.
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.job.kafka_security import client_options
from app.job.records import retry_record
from app.job.topics import partition_count
from app.settings import Settings
from app.tiktok.outcomes import error_info

__all__ = ["Filter", "replay", "register"]


@dataclass(frozen=True)
class Filter:
    reasons: frozenset[str] = frozenset()   # empty: any reason
    pixel: str | None = None
    since: float | None = None              # on last_failed_at, Unix seconds
    until: float | None = None

    def matches(self, record: dict) -> bool:
        if self.reasons and record.get("reason") not in self.reasons:
            return False
        if self.pixel is not None and record.get("pixel_code") != self.pixel:
            return False
        at = record.get("last_failed_at", 0)
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


@dataclass
class Summary:
    scanned: int = 0
    matched: int = 0
    to_retry: int = 0
    to_source: int = 0
    unreplayable: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


async def replay(settings: Settings, flt: Filter, dry_run: bool = False, out=sys.stdout,
                 progress_every: int = 10_000) -> Summary:
    summary = Summary()
    partitions = await partition_count(settings.bootstrap_servers, settings.topic_dlq, client_options(settings))
    if not partitions:
        print(f"topic {settings.topic_dlq} not found", file=out)
        return summary
    tps = [TopicPartition(settings.topic_dlq, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                group_id=None, **client_options(settings))
    await consumer.start()
    producer = None
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # The end as of now: records dead-lettered while we replay are not chased.
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values()) - sum((await consumer.beginning_offsets(tps)).values())
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        if not dry_run:
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                        **client_options(settings))
            await producer.start()
        futures = []
        now = time.time()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batches.items():
                for msg in messages:
                    if msg.offset >= remaining[tp]:
                        continue  # dead-lettered after we started
                    summary.scanned += 1
                    record = orjson.loads(msg.value)
                    if flt.matches(record):
                        target = _target(settings, record, now)
                        summary.matched += 1
                        reason = record.get("reason", "?")
                        summary.by_reason[reason] = summary.by_reason.get(reason, 0) + 1
                        if target is None:
                            summary.unreplayable += 1
                        elif target[0] == settings.topic_retry:
                            summary.to_retry += 1
                        else:
                            summary.to_source += 1
                        if dry_run:
                            where = target[0] if target else "nowhere (no request and no original)"
                            print(f"would move {tp.partition}:{msg.offset} reason={reason} "
                                  f"pixel={record.get('pixel_code')} -> {where}", file=out)
                        elif target is not None:
                            futures.append(await producer.send(target[0], target[2], key=target[1]))
                    if summary.scanned % progress_every == 0:
                        print(f"scanned {summary.scanned}/{total}, matched {summary.matched}", file=out)
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    remaining.pop(tp)
        await asyncio.gather(*futures)
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    verb = "would move" if dry_run else "moved"
    print(f"scanned {summary.scanned}, matched {summary.matched}: {verb} {summary.to_retry} to "
          f"{settings.topic_retry}, {summary.to_source} to their source topic; "
          f"{summary.unreplayable} cannot be replayed; by reason {summary.by_reason}", file=out)
    return summary


def _target(settings: Settings, record: dict, now: float) -> tuple[str, bytes | None, bytes] | None:
    """(topic, key, value) a dead letter goes back to, or None."""
    if record.get("request") and record.get("pixel_code"):
        retry = retry_record(record["request"], record["pixel_code"], 1, now,
                             record.get("first_failed_at", now),
                             error_info("replayed", f"replayed from the DLQ after {record.get('reason')}"))
        return settings.topic_retry, record["pixel_code"].encode(), orjson.dumps(retry)
    if "original" in record and record.get("source") and not record.get("original_truncated"):
        import base64
        raw = record["original"]
        value = base64.b64decode(raw) if record.get("original_base64") else raw.encode()
        return record["source"]["topic"], None, value
    return None


def _time(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="send dead-lettered events through again, after a fix",
                              description=__doc__)
    p.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    p.add_argument("--pixel", help="only this pixel code")
    p.add_argument("--since", type=_time, help="only records dead-lettered at or after (ISO-8601, UTC if naive)")
    p.add_argument("--until", type=_time, help="only records dead-lettered before (ISO-8601)")
    p.add_argument("--dry-run", action="store_true", help="print what would move; write nothing")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from app.settings import load

    flt = Filter(frozenset(args.reason), args.pixel, args.since, args.until)
    asyncio.run(replay(load(), flt, args.dry_run))
    return 0
