"""Topic specs (app/topics/*.json) and `ttbridge topics create`.

The specs are the one source of truth for partitions, retention and schemas; the environment
only renames topics and sets the replication of all of them (TTBRIDGE_REPLICATION_FACTOR,
TTBRIDGE_MIN_INSYNC_REPLICAS), faust's own topics included: they are created here too, before
faust would create them its own way. `ttbridge topics strimzi` writes the same topics as Strimzi
KafkaTopic resources. Creation is idempotent: an existing topic with the right partition count is
fine, a mismatch is reported and left alone (adding partitions would move click IDs between
partitions of the clicks table's log, whose per-partition offsets every worker's table stores).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson

from app.job.kafka_security import client_options, why_unreachable
from app.settings import Settings, input_topics

__all__ = ["TopicSpec", "specs_dir", "load_specs", "retry_tier_topic", "create_topics", "partition_count",
           "partition_counts", "faust_topics", "replication_problem", "strimzi_topics", "register"]

ROLES = ("clicks", "tracking-events", "tiktok-retry", "tiktok-dlq")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


def specs_dir() -> Path:
    """app/topics/, shipped inside the package (a wheel and the image carry it), unless
    TTBRIDGE_TOPICS_DIR names an operator's own copy."""
    if os.environ.get("TTBRIDGE_TOPICS_DIR"):
        return Path(os.environ["TTBRIDGE_TOPICS_DIR"])
    return Path(__file__).resolve().parents[1] / "topics"


def read_spec(role: str) -> dict:
    return orjson.loads((specs_dir() / f"{role}.json").read_bytes())


def retry_tier_topic(settings: Settings, tier: int) -> str:
    """Tier 1 is TTBRIDGE_TOPIC_RETRY itself (where replay writes); tier N is "<name>-N"."""
    return settings.topic_retry if tier == 1 else f"{settings.topic_retry}-{tier}"


def faust_topics(settings: Settings) -> dict[str, tuple[str, int, dict[str, str]]]:
    """Role → (name, partitions, config) of the topics faust would create itself: the leader
    topic of its partition assignor (ttbridge has no faust table, so no changelog). Created here
    first, so it gets the replication settings like every other topic."""
    return {"assignor-leader": (f"{settings.app_id}-__assignor-__leader", 1, {})}


def load_specs(settings: Settings) -> dict[str, TopicSpec]:
    """Role → TopicSpec with the names in force: clicks, tracking-events, tiktok-retry, tiktok-dlq,
    further input topics ("input:<topic>"), the retry tiers ("tiktok-retry-<n>"), the
    clicks table's log ("clicks-by-click-id") and faust's own ("assignor-leader"). Every one has the replication settings in force."""
    names = {"clicks": settings.topic_clicks, "tracking-events": settings.topic_events,
             "tiktok-retry": settings.topic_retry, "tiktok-dlq": settings.topic_dlq}
    rf = settings.replication_factor
    # Unset: the broker's own min.insync.replicas (Kafka's default is 1).
    isr = {} if settings.min_insync_replicas is None else {"min.insync.replicas": str(settings.min_insync_replicas)}
    out = {}
    for role in ROLES:
        doc = read_spec(role)
        out[role] = TopicSpec(names[role], doc["partitions"], rf, {**doc["config"], **isr})
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
        out[role] = TopicSpec(doc["name"].format(app_id=settings.app_id), settings.partitions, rf,
                              {**doc["config"], **isr})
    # The clicks table (app.job.clicks) is sourced from the clicks topic and its own log,
    # clicks-by-click-id: both keep every click for the attribution window, the table's whole
    # lifetime (for a topic ttbridge did not create, create_topics checks it).
    window_ms = int(settings.attribution_window_days * 86400 * 1000)
    clicks = out["clicks"].config
    clicks["retention.ms"] = str(max(int(clicks["retention.ms"]), window_ms))  # others may read it longer
    out["clicks-by-click-id"].config["retention.ms"] = str(window_ms)
    for role, (name, partitions, config) in faust_topics(settings).items():
        out[role] = TopicSpec(name, partitions, rf, {**config, **isr})
    return out


def replication_problem(replication_factor: int, brokers: int) -> tuple[str, str] | None:
    """("refuse" | "warn", the line to say) when the replication factor does not suit a cluster
    of `brokers` brokers, else None."""
    if replication_factor > brokers:
        return ("refuse", f"replication factor {replication_factor} (TTBRIDGE_REPLICATION_FACTOR) is more "
                          f"than the {brokers} broker(s) of the cluster: Kafka cannot place the copies; "
                          f"set it to at most {brokers}")
    if replication_factor == 1 and brokers > 1:
        return ("warn", f"replication factor 1 on a cluster of {brokers} brokers: losing one broker loses "
                        "topics' data; set TTBRIDGE_REPLICATION_FACTOR (e.g. 3) and TTBRIDGE_MIN_INSYNC_REPLICAS "
                        "(e.g. 2)")
    return None


def _warn(line: str) -> None:
    print(f"ttbridge topics: warning: {line}", file=sys.stderr)


@contextmanager
def _first_contact_errors_unlogged():
    """Drops the Kafka client's WARNING-and-above records while it is active (its debug records,
    which tests read, still pass): the error raised after a failed first contact says why."""
    def below_warning(record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING
    loggers = [logging.getLogger(name) for name in ("aiokafka", "aiokafka.conn", "aiokafka.admin.client")]
    for logger in loggers:
        logger.addFilter(below_warning)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(below_warning)


async def create_topics(settings: Settings, specs: dict[str, TopicSpec] | None = None,
                        warn: Callable[[str], None] = _warn) -> list[str]:
    """Create missing topics. Returns one line per topic saying what happened; raises
    RuntimeError listing every partition-count mismatch, saying why no broker let us in, or
    refusing a replication factor above the broker count. A replication factor of 1 on several
    brokers, an existing topic replicated otherwise than the settings say, or an existing clicks
    table's log kept for less than the attribution window, is `warn`ed about (one line each; by
    default on stderr)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

    specs = specs or load_specs(settings)
    names = [s.name for s in specs.values()]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=15000,
                                **client_options(settings))
    try:
        # aiokafka logs each refused bootstrap server at ERROR, then raises; the line raised
        # here says it all (and why), so a failed first contact prints one line, not two.
        with _first_contact_errors_unlogged():
            await admin.start()
    except KafkaConnectionError:
        # The first contact of `topics create` and of a starting worker: say why (a wrong
        # password, an unknown CA), not just that no server answered.
        await admin.close()
        raise RuntimeError(await why_unreachable(settings)) from None
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        before = await _layout(admin, names)
        missing = [s for s in specs.values() if s.name not in before]
        problem = replication_problem(settings.replication_factor, brokers)
        # Only creation needs the copies placed: a broker down for a rolling restart must not stop
        # a worker whose topics all exist.
        if problem and problem[0] == "refuse" and missing:
            raise RuntimeError(problem[1])
        if problem and problem[0] == "warn":
            warn(problem[1])
        if missing:
            try:
                await admin.create_topics([NewTopic(s.name, s.partitions, s.replication_factor,
                                                    topic_configs=dict(s.config)) for s in missing])
            except TopicAlreadyExistsError:
                pass  # another worker raced us to it: the check below still applies
        after = await _layout(admin, names, expect_all=True)
        # The clicks table's sources, checked whenever they exist, not only when `before` saw
        # them: a topic made a moment ago (by hand, or by another worker) may be missing from
        # that metadata yet.
        for role in ("clicks", "clicks-by-click-id"):
            source = specs.get(role)
            if source and source.name in after:
                await _check_table_retention(admin, source.name, settings, warn)
    finally:
        await admin.close()
    lines, mismatches = [], []
    for spec in specs.values():
        has, replicas = after.get(spec.name, (None, None))
        if spec.name in before and replicas != spec.replication_factor:
            # Changing it is a partition reassignment (kafka-reassign-partitions.sh), not ours to do.
            warn(f"{spec.name}: has replication factor {replicas}, TTBRIDGE_REPLICATION_FACTOR says "
                 f"{spec.replication_factor} (left as it is)")
        if has != spec.partitions:
            mismatches.append(f"{spec.name}: has {has} partitions, spec says {spec.partitions} "
                              "(left as it is: fix it by hand, on purpose)")
        else:
            lines.append(f"{spec.name}: {'exists' if spec.name in before else 'created'} ({has} partitions, "
                         f"replication factor {replicas})")
    if mismatches:
        raise RuntimeError("; ".join(mismatches))
    return lines


async def _check_table_retention(admin, topic: str, settings: Settings, warn: Callable[[str], None]) -> None:
    """Warn when a source of the clicks table (the clicks topic, its log) keeps records for less
    than the attribution window: a worker catching up (a new pod, a lost volume) would rebuild a
    table missing the older clicks, and their late conversions would go unjoined (a worker that
    keeps its data dir keeps them). Left as it is: the operator may have reasons, and retention
    is theirs to change."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    window_ms = int(settings.attribution_window_days * 86400 * 1000)
    response = (await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]))[0]
    error_code, error_message, _type, _name, entries = response.resources[0][:5]
    if error_code:
        warn(f"{topic}: could not read retention.ms ({error_message or f'error {error_code}'}) "
             f"to compare it with the attribution window ({window_ms} ms)")
        return
    retention = {entry[0]: entry[1] for entry in entries}.get("retention.ms")
    # -1 keeps records forever; no value at all leaves the broker's default, which we cannot see.
    if retention is not None and 0 <= int(retention) < window_ms:
        warn(f"{topic}: retention.ms {retention} is shorter than the attribution window ({window_ms} ms, "
             f"attribution_window_days {settings.attribution_window_days:g}): clicks would expire from the "
             "clicks table's source before their window ends; raise it")


async def partition_count(bootstrap: str, topic: str, security: Mapping[str, Any] | None = None) -> int | None:
    """The partition count of `topic`, or None when it does not exist (without creating it, and
    without waiting for it to appear as a consumer's metadata requests would). `security`:
    app.job.kafka_security.client_options."""
    return (await partition_counts(bootstrap, [topic], security)).get(topic)


async def partition_counts(bootstrap: str, topics: list[str],
                           security: Mapping[str, Any] | None = None) -> dict[str, int]:
    """partition_count of each of `topics` that exists, in one admin connection."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **(security or {}))
    await admin.start()
    try:
        return await _partition_counts(admin, topics)
    finally:
        await admin.close()


async def _partition_counts(admin, names: list[str]) -> dict[str, int]:
    return {name: partitions for name, (partitions, _) in (await _layout(admin, names)).items()}


async def _layout(admin, names: list[str], expect_all: bool = False,
                  settle_s: float = 15.0) -> dict[str, tuple[int, int]]:
    """(partition count, replication factor) of each named topic that exists. A topic just
    created may be missing from metadata or answer LEADER_NOT_AVAILABLE for a moment: wait for it
    rather than misreport it."""
    unknown_topic = 3
    deadline = asyncio.get_running_loop().time() + settle_s
    while True:
        # Metadata for ALL topics: naming them would make a broker with auto-create on create them.
        meta = [t for t in await admin.describe_topics(None) if t["topic"] in names]
        settling = [t for t in meta if t["error_code"] not in (0, unknown_topic)]
        complete = not expect_all or len(meta) == len(set(names))
        if (complete and not settling) or asyncio.get_running_loop().time() > deadline:
            return {t["topic"]: (len(t["partitions"]), max(len(p["replicas"]) for p in t["partitions"]))
                    for t in meta if t["error_code"] == 0}
        await asyncio.sleep(0.2)


STRIMZI_API_VERSION = "kafka.strimzi.io/v1beta2"


def _resource_name(topic: str) -> str:
    """A Kubernetes resource name (DNS-1123 subdomain) for a topic name, which may hold '_' and
    capitals that Kubernetes refuses."""
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.-]+", "-", topic.lower())).strip("-.")
    return name[:253].rstrip("-.")


def strimzi_topics(settings: Settings, cluster: str) -> str:
    """Every topic of load_specs as a Strimzi KafkaTopic, as one YAML stream. Written by hand (the
    scalars JSON-quoted, which YAML reads as they are): PyYAML is not a dependency of the job."""
    q = lambda value: orjson.dumps(value).decode()  # noqa: E731
    docs, seen = [], {}
    for spec in load_specs(settings).values():
        name = _resource_name(spec.name)
        if name in seen:
            raise ValueError(f"topics {seen[name]!r} and {spec.name!r} would both be KafkaTopic {name!r}")
        seen[name] = spec.name
        lines = [f"apiVersion: {STRIMZI_API_VERSION}", "kind: KafkaTopic", "metadata:", f"  name: {q(name)}",
                 "  labels:", f"    strimzi.io/cluster: {q(cluster)}", "    app.kubernetes.io/part-of: ttbridge",
                 "spec:"]
        if name != spec.name:  # Strimzi's advice: topicName only when metadata.name cannot be it
            lines.append(f"  topicName: {q(spec.name)}")
        lines += [f"  partitions: {spec.partitions}", f"  replicas: {spec.replication_factor}",
                  "  config:" if spec.config else "  config: {}"]
        lines += [f"    {key}: {q(value)}" for key, value in sorted(spec.config.items())]
        docs.append("\n".join(lines) + "\n")
    return "---\n".join(docs)


def register(subparsers) -> None:
    p = subparsers.add_parser("topics", help="create ttbridge's topics from the specs in app/topics/",
                              description="Create topics idempotently from app/topics/*.json, or print them as "
                                          "Strimzi KafkaTopic resources.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{create,strimzi}")
    sub.add_parser("create", help="create missing topics; report partition-count mismatches")
    strimzi = sub.add_parser(
        "strimzi", help="print every topic as a Strimzi KafkaTopic (YAML)",
        description="Print every topic ttbridge and faust use as a Strimzi KafkaTopic (YAML on stdout): "
                    "names, partitions and configs from app/topics/*.json and the environment, replicas from "
                    "TTBRIDGE_REPLICATION_FACTOR, min.insync.replicas from TTBRIDGE_MIN_INSYNC_REPLICAS.")
    strimzi.add_argument("--cluster", default="my-cluster",
                         help="the Strimzi Kafka cluster (label strimzi.io/cluster; default: my-cluster)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from app.settings import load
    if args.action == "strimzi":
        sys.stdout.write(STRIMZI_HEADER + strimzi_topics(load(), args.cluster))
        return 0
    try:
        for line in asyncio.run(create_topics(load())):
            print(line)
    except RuntimeError as e:
        print(f"ttbridge topics: {e}", file=sys.stderr)
        return 1
    return 0


STRIMZI_HEADER = "# Generated by `ttbridge topics strimzi` from app/topics/*.json: do not edit, regenerate.\n"
