"""Topic specs (topics/*.json) and `ttbridge topics create`.

The specs are the one source of truth for partitions, retention and schemas; the environment
only renames topics. Creation is idempotent: an existing topic with the right partition count is
fine, a mismatch is reported and left alone (adding partitions would move keys between
partitions and break the click join's co-partitioning).
"""
from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson

from app.job.kafka_security import client_options, why_unreachable
from app.settings import Settings, input_topics

__all__ = ["TopicSpec", "specs_dir", "load_specs", "retry_tier_topic", "create_topics", "partition_count",
           "register"]

ROLES = ("clicks", "tracking-events", "tiktok-retry", "tiktok-dlq")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


def specs_dir() -> Path:
    """topics/ next to the package (a checkout or the Docker image's /app), or in the cwd."""
    if os.environ.get("TTBRIDGE_TOPICS_DIR"):
        return Path(os.environ["TTBRIDGE_TOPICS_DIR"])
    beside = Path(__file__).resolve().parents[2] / "topics"
    return beside if beside.is_dir() else Path.cwd() / "topics"


def read_spec(role: str) -> dict:
    return orjson.loads((specs_dir() / f"{role}.json").read_bytes())


def retry_tier_topic(settings: Settings, tier: int) -> str:
    """Tier 1 is TTBRIDGE_TOPIC_RETRY itself (where replay writes); tier N is "<name>-N"."""
    return settings.topic_retry if tier == 1 else f"{settings.topic_retry}-{tier}"


def load_specs(settings: Settings) -> dict[str, TopicSpec]:
    """Role → TopicSpec with the names in force: clicks, tracking-events, tiktok-retry, tiktok-dlq,
    plus the two repartition topics ("clicks-by-click-id", "events-by-click-id")."""
    names = {"clicks": settings.topic_clicks, "tracking-events": settings.topic_events,
             "tiktok-retry": settings.topic_retry, "tiktok-dlq": settings.topic_dlq}
    out = {}
    for role in ROLES:
        doc = read_spec(role)
        out[role] = TopicSpec(names[role], doc["partitions"], doc["replication_factor"], doc["config"])
    # Further input topics ([[inputs]]) are tracking-event topics like the first.
    events = out["tracking-events"]
    for input_ in input_topics(settings):
        if input_.topic != events.name:
            out[f"input:{input_.topic}"] = TopicSpec(input_.topic, events.partitions,
                                                     events.replication_factor, events.config)
    # One topic per retry tier: every record in a tier has the same delay, so records sit in
    # order of due time and a long tier never holds up a short one. Tier 1 is the named topic.
    retry = out["tiktok-retry"]
    for tier in range(2, len(settings.retry_tiers_s) + 1):
        out[f"tiktok-retry-{tier}"] = TopicSpec(retry_tier_topic(settings, tier), retry.partitions,
                                                retry.replication_factor, retry.config)
    internal = read_spec("internal")["topics"]
    for doc in internal:
        role = doc["name"].removeprefix("{app_id}-")
        # settings.partitions wins so tests and operators can size the join in one place.
        out[role] = TopicSpec(doc["name"].format(app_id=settings.app_id), settings.partitions,
                              doc["replication_factor"], doc["config"])
    return out


async def create_topics(settings: Settings, specs: dict[str, TopicSpec] | None = None) -> list[str]:
    """Create missing topics. Returns one line per topic saying what happened; raises
    RuntimeError listing every partition-count mismatch, or saying why no broker let us in."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

    specs = specs or load_specs(settings)
    names = [s.name for s in specs.values()]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=15000,
                                **client_options(settings))
    try:
        await admin.start()
    except KafkaConnectionError:
        # The first contact of `topics create` and of a starting worker: say why (a wrong
        # password, an unknown CA), not just that no server answered.
        await admin.close()
        raise RuntimeError(await why_unreachable(settings)) from None
    try:
        before = await _partition_counts(admin, names)
        missing = [s for s in specs.values() if s.name not in before]
        if missing:
            try:
                await admin.create_topics([NewTopic(s.name, s.partitions, s.replication_factor,
                                                    topic_configs=dict(s.config)) for s in missing])
            except TopicAlreadyExistsError:
                pass  # another worker raced us to it: the check below still applies
        after = await _partition_counts(admin, names, expect_all=True)
    finally:
        await admin.close()
    lines, mismatches = [], []
    for spec in specs.values():
        has = after.get(spec.name)
        if has != spec.partitions:
            mismatches.append(f"{spec.name}: has {has} partitions, spec says {spec.partitions} "
                              "(left as it is: fix it by hand, on purpose)")
        else:
            lines.append(f"{spec.name}: {'exists' if spec.name in before else 'created'} ({has} partitions)")
    if mismatches:
        raise RuntimeError("; ".join(mismatches))
    return lines


async def partition_count(bootstrap: str, topic: str, security: Mapping[str, Any] | None = None) -> int | None:
    """The partition count of `topic`, or None when it does not exist (without creating it, and
    without waiting for it to appear as a consumer's metadata requests would). `security`:
    app.job.kafka_security.client_options."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **(security or {}))
    await admin.start()
    try:
        return (await _partition_counts(admin, [topic])).get(topic)
    finally:
        await admin.close()


async def _partition_counts(admin, names: list[str], expect_all: bool = False,
                            settle_s: float = 15.0) -> dict[str, int]:
    """Partition count of each named topic that exists. A topic just created may be missing from
    metadata or answer LEADER_NOT_AVAILABLE for a moment: wait for it rather than misreport it."""
    unknown_topic = 3
    deadline = asyncio.get_running_loop().time() + settle_s
    while True:
        # Metadata for ALL topics: naming them would make a broker with auto-create on create them.
        meta = [t for t in await admin.describe_topics(None) if t["topic"] in names]
        settling = [t for t in meta if t["error_code"] not in (0, unknown_topic)]
        complete = not expect_all or len(meta) == len(set(names))
        if (complete and not settling) or asyncio.get_running_loop().time() > deadline:
            return {t["topic"]: len(t["partitions"]) for t in meta if t["error_code"] == 0}
        await asyncio.sleep(0.2)


def register(subparsers) -> None:
    p = subparsers.add_parser("topics", help="create ttbridge's topics from the specs in topics/",
                              description="Create topics idempotently from topics/*.json.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{create}")
    sub.add_parser("create", help="create missing topics; report partition-count mismatches")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from app.settings import load
    try:
        for line in asyncio.run(create_topics(load())):
            print(line)
    except RuntimeError as e:
        print(f"ttbridge topics: {e}", file=sys.stderr)
        return 1
    return 0
