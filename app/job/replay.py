"""`ttbridge replay`: send dead-lettered records through again, after their cause is fixed.

Reads the DLQ from the start to its end as it is when the command starts (no consumer group, no
commits): it never deletes, edits or moves offsets of the DLQ. A record holding a TikTok request
goes to the first retry tier, due now; a record holding original input (it never mapped) goes
back to the topic it came from. Replaying twice is safe: event_ids are stable, so TikTok drops
what it already has.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.job.kafka_security import client_options, why_unreachable
from app.job.records import retry_record
from app.job.topics import partition_count
from app.settings import Settings
from app.tiktok.outcomes import error_info

__all__ = ["Filter", "ReplayError", "Summary", "replay", "register"]


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
    hashed: int = 0                         # of unreplayable: originals stored hashed (dlq_original)
    unreadable: int = 0                     # not a JSON object: not a dead letter of ours
    limited: bool = False                   # stopped at --limit
    by_reason: dict[str, int] = field(default_factory=dict)


class ReplayError(Exception):
    """Replay cannot start or go on; the message is one line for the operator."""


async def replay(settings: Settings, flt: Filter, dry_run: bool = False, out=sys.stdout,
                 progress_every: int = 10_000, *, limit: int | None = None, progress=None,
                 progress_interval_s: float = 1.0, stall_s: float = 60.0) -> Summary:
    """Move matching dead letters (at most `limit`). `out` gets the dry run's lines and the
    summary; `progress` (default: stderr) a line every `progress_every` records scanned or every
    `progress_interval_s`, whichever comes first. Raises ReplayError when the DLQ topic does not
    exist, no broker can be reached, or reading stops advancing for `stall_s`."""
    from aiokafka.errors import KafkaConnectionError

    progress = sys.stderr if progress is None else progress
    summary = Summary()
    try:
        partitions = await partition_count(settings.bootstrap_servers, settings.topic_dlq,
                                           client_options(settings))
    except KafkaConnectionError:
        raise ReplayError(await why_unreachable(settings)) from None
    if not partitions:
        raise ReplayError(f"topic {settings.topic_dlq!r} does not exist on {settings.bootstrap_servers} "
                          "(TTBRIDGE_TOPIC_DLQ names it; `ttbridge topics create` makes it)")
    tps = [TopicPartition(settings.topic_dlq, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                group_id=None, **client_options(settings))
    producer = None
    try:
        await consumer.start()
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
        next_report = time.monotonic() + progress_interval_s
        advanced_at, positions = time.monotonic(), None
        while remaining and not summary.limited:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            # aiokafka's consumer retries a lost broker for ever, silently: bound the wait.
            now_positions = {tp: await consumer.position(tp) for tp in remaining}
            if batches or now_positions != positions:
                advanced_at, positions = time.monotonic(), now_positions
            elif time.monotonic() - advanced_at > stall_s:
                raise ReplayError(f"reading {settings.topic_dlq} made no progress for {stall_s:.0f} s "
                                  f"({await why_unreachable(settings)}){_sent(summary, dry_run)}")
            for tp, messages in batches.items():
                for msg in messages:
                    if msg.offset >= remaining[tp] or summary.limited:
                        continue  # dead-lettered after we started, or past --limit
                    summary.scanned += 1
                    record = _matching(msg.value, flt, summary)
                    if record is not None:
                        target = _target(settings, record, now)
                        reason = record.get("reason", "?")
                        summary.by_reason[reason] = summary.by_reason.get(reason, 0) + 1
                        if target is None:
                            summary.unreplayable += 1
                            summary.hashed += bool(record.get("original_hashed") and not record.get("request"))
                        elif target[0] == settings.topic_retry:
                            summary.to_retry += 1
                        else:
                            summary.to_source += 1
                        if dry_run:
                            where = target[0] if target else (
                                "nowhere (original stored hashed: not the input any more)"
                                if record.get("original_hashed") else "nowhere (no request and no original)")
                            print(f"would move {tp.partition}:{msg.offset} reason={reason} "
                                  f"pixel={record.get('pixel_code')} -> {where}", file=out)
                        elif target is not None:
                            futures.append(await producer.send(target[0], target[2], key=target[1]))
                        summary.limited = limit is not None and summary.matched >= limit
                    if summary.scanned % progress_every == 0:
                        _report(summary, total, progress)
                        next_report = time.monotonic() + progress_interval_s
            if time.monotonic() >= next_report:
                _report(summary, total, progress)
                next_report = time.monotonic() + progress_interval_s
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    remaining.pop(tp)
        await asyncio.gather(*futures)
    except KafkaConnectionError:
        raise ReplayError(await why_unreachable(settings) + _sent(summary, dry_run)) from None
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    verb = "would move" if dry_run else "moved"
    print(f"scanned {summary.scanned}, matched {summary.matched}"
          f"{f' (stopped at --limit {limit})' if summary.limited else ''}: {verb} {summary.to_retry} to "
          f"{settings.topic_retry}, {summary.to_source} to their source topic; "
          f"{summary.unreplayable} cannot be replayed"
          f"{f' ({summary.hashed} with their original stored hashed)' if summary.hashed else ''}"
          f"; by reason {summary.by_reason}"
          f"{f'; {summary.unreadable} not a dead letter (not a JSON object)' if summary.unreadable else ''}",
          file=out)
    return summary


def _matching(value: bytes, flt: Filter, summary: Summary) -> dict | None:
    """The dead letter in `value` if the filter takes it (counted as matched)."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        summary.unreadable += 1
        return None
    if not flt.matches(record):
        return None
    summary.matched += 1
    return record


def _sent(summary: Summary, dry_run: bool) -> str:
    n = summary.to_retry + summary.to_source
    return f"; {n} record(s) had been sent on (replaying them again is safe)" if n and not dry_run else ""


def _report(summary: Summary, total: int, progress) -> None:
    print(f"replay: scanned {summary.scanned}/{total}, matched {summary.matched}", file=progress, flush=True)


def _target(settings: Settings, record: dict, now: float) -> tuple[str, bytes | None, bytes] | None:
    """(topic, key, value) a dead letter goes back to, or None."""
    if record.get("request") and record.get("pixel_code"):
        retry = retry_record(record["request"], record["pixel_code"], 1, now,
                             record.get("first_failed_at", now),
                             error_info("replayed", f"replayed from the DLQ after {record.get('reason')}"))
        return settings.topic_retry, record["pixel_code"].encode(), orjson.dumps(retry)
    # A hashed original (dlq_original = "hashed") is not what the producer sent: sending it
    # back as input would map hashes as if they were raw emails and phones.
    if record.get("original_hashed") or record.get("original") is None:
        return None
    if record.get("source") and not record.get("original_truncated"):
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


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="send dead-lettered events through again, after a fix",
                              description=__doc__)
    p.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    p.add_argument("--pixel", help="only this pixel code")
    p.add_argument("--since", type=_time, help="only records dead-lettered at or after (ISO-8601, UTC if naive)")
    p.add_argument("--until", type=_time, help="only records dead-lettered before (ISO-8601)")
    p.add_argument("--limit", type=_positive, metavar="N",
                   help="move at most N matching records, then stop (in the order they are read)")
    p.add_argument("--dry-run", action="store_true", help="print what would move; write nothing")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from aiokafka.errors import KafkaError

    from app.settings import load

    flt = Filter(frozenset(args.reason), args.pixel, args.since, args.until)
    settings = load()
    # aiokafka logs each failed connection attempt besides raising; the one line below says why.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(replay(settings, flt, args.dry_run, limit=args.limit))
    except ReplayError as e:
        print(f"ttbridge replay: {e}", file=sys.stderr)
        return 1
    except KafkaError as e:  # the broker failed us mid-way: say so in one line, never a traceback
        print(f"ttbridge replay: Kafka failed: {e} (replaying what was already sent is safe)",
              file=sys.stderr)
        return 1
    return 0
