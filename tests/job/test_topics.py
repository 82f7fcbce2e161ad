"""app/topics/ specs: well-formed, examples agree with their schemas, and creation on the real broker,
with the replication settings (TTBRIDGE_REPLICATION_FACTOR, TTBRIDGE_MIN_INSYNC_REPLICAS) on every
topic, faust's included."""
import json
import os
import subprocess
import sys

import jsonschema
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.devtools.kafka_local import free_port
from app.job.topics import ROLES, create_topics, load_specs, partition_count, read_spec, replication_problem
from app.job.worker import build_app
from app.settings import SettingsError, load


@pytest.mark.parametrize("role", ROLES)
def test_examples_match_the_schema(role):
    spec = read_spec(role)
    validator = jsonschema.Draft202012Validator(spec["value_schema"])
    assert spec["examples"]["good"], "each topic documents good examples"
    for value in spec["examples"]["good"]:
        assert list(validator.iter_errors(value)) == []
    assert spec["examples"]["bad"], "each topic documents bad examples"
    for bad in spec["examples"]["bad"]:
        if "raw" in bad:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(bad["raw"])
        elif role in ("clicks", "tiktok-dlq"):
            assert list(validator.iter_errors(bad["value"])), bad["why"]


def test_names_come_from_the_environment():
    specs = load_specs(load({"TTBRIDGE_TOPIC_EVENTS": "shop-events", "TTBRIDGE_APP_ID": "shop"}, partitions=4))
    assert specs["tracking-events"].name == "shop-events"
    assert specs["clicks-by-click-id"].name == "shop-clicks-by-click-id"
    assert "events-by-click-id" not in specs  # events are joined where they are read
    assert specs["clicks-by-click-id"].partitions == 4


async def test_create_is_idempotent_and_reports_mismatch(kafka_bootstrap, unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"t{unique}"}
    for role, var in (("clicks", "CLICKS"), ("tracking-events", "EVENTS"), ("tiktok-retry", "RETRY"), ("tiktok-dlq", "DLQ")):
        env[f"TTBRIDGE_TOPIC_{var}"] = f"{role}-{unique}"
    settings = load(env)
    warnings = []
    first = await create_topics(settings, warn=warnings.append)
    rf1 = "replication factor 1)"
    assert sorted(first) == sorted([
        f"clicks-{unique}: created (6 partitions, {rf1}", f"tracking-events-{unique}: created (6 partitions, {rf1}",
        f"tiktok-retry-{unique}: created (6 partitions, {rf1}", f"tiktok-dlq-{unique}: created (3 partitions, {rf1}",
        f"tiktok-retry-{unique}-2: created (6 partitions, {rf1}", f"tiktok-retry-{unique}-3: created (6 partitions, {rf1}",
        f"tiktok-retry-{unique}-4: created (6 partitions, {rf1}",
        f"t{unique}-clicks-by-click-id: created (6 partitions, {rf1}",
        f"t{unique}-__assignor-__leader: created (1 partitions, {rf1}"])
    second = await create_topics(settings, warn=warnings.append)
    assert sorted(second) == sorted(line.replace(": created (", ": exists (") for line in first)
    assert warnings == [], "one broker, replication factor 1: nothing to warn about"

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, f"tiktok-dlq-{unique}")])
        entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
        assert entries["retention.ms"] == "2592000000"
        await admin.create_topics([NewTopic(f"clicks-wrong-{unique}", 2, 1)])
    finally:
        await admin.close()
    wrong = load({**env, "TTBRIDGE_TOPIC_CLICKS": f"clicks-wrong-{unique}"})
    with pytest.raises(RuntimeError, match=f"clicks-wrong-{unique}: has 2 partitions, spec says 6"):
        await create_topics(wrong)


def test_replication_problem_decides_warning_and_refusal_by_broker_count():
    assert replication_problem(1, 1) is None
    assert replication_problem(3, 3) is None
    assert replication_problem(3, 5) is None
    assert replication_problem(2, 2) is None
    assert replication_problem(1, 3) == (
        "warn", "replication factor 1 on a cluster of 3 brokers: losing one broker loses topics' data; set "
                "TTBRIDGE_REPLICATION_FACTOR (e.g. 3) and TTBRIDGE_MIN_INSYNC_REPLICAS (e.g. 2)")
    assert replication_problem(1, 2)[0] == "warn"
    assert replication_problem(2, 1) == (
        "refuse", "replication factor 2 (TTBRIDGE_REPLICATION_FACTOR) is more than the 1 broker(s) of the "
                  "cluster: Kafka cannot place the copies; set it to at most 1")
    assert replication_problem(5, 3)[0] == "refuse"


def test_every_topic_gets_the_replication_settings(tmp_path):
    config = tmp_path / "ttbridge.toml"
    config.write_text('[[inputs]]\ntopic = "web-events"\n[[inputs]]\ntopic = "shop-events"\n')
    settings = load({"TTBRIDGE_REPLICATION_FACTOR": "3", "TTBRIDGE_MIN_INSYNC_REPLICAS": "2",
                     "TTBRIDGE_CONFIG": str(config), "TTBRIDGE_APP_ID": "shop"})
    specs = load_specs(settings)
    assert sorted(spec.name for spec in specs.values()) == sorted([
        "clicks", "tracking-events", "tiktok-retry", "tiktok-dlq", "web-events", "shop-events",
        "tiktok-retry-2", "tiktok-retry-3", "tiktok-retry-4", "shop-clicks-by-click-id",
        "shop-__assignor-__leader"])
    for spec in specs.values():
        assert spec.replication_factor == 3, spec.name
        assert spec.config["min.insync.replicas"] == "2", spec.name
    # The rest of each config is its spec's, untouched.
    assert specs["tiktok-dlq"].config == {"cleanup.policy": "delete", "retention.ms": "2592000000",
                                          "min.insync.replicas": "2"}
    # Unset: no min.insync.replicas of ours (the broker's default applies); the factor is 1.
    plain = load_specs(load({}))
    assert {spec.replication_factor for spec in plain.values()} == {1}
    assert not any("min.insync.replicas" in spec.config for spec in plain.values())


@pytest.mark.parametrize("env, message", [
    ({"TTBRIDGE_REPLICATION_FACTOR": "three"}, "TTBRIDGE_REPLICATION_FACTOR: expected an integer, got 'three'"),
    ({"TTBRIDGE_REPLICATION_FACTOR": "0"}, "TTBRIDGE_REPLICATION_FACTOR: expected an integer 1-32767, got 0"),
    ({"TTBRIDGE_REPLICATION_FACTOR": "40000"},
     "TTBRIDGE_REPLICATION_FACTOR: expected an integer 1-32767, got 40000"),
    ({"TTBRIDGE_MIN_INSYNC_REPLICAS": "2"},
     "TTBRIDGE_MIN_INSYNC_REPLICAS: expected 1 to TTBRIDGE_REPLICATION_FACTOR (1), got 2"),
    ({"TTBRIDGE_REPLICATION_FACTOR": "3", "TTBRIDGE_MIN_INSYNC_REPLICAS": "0"},
     "TTBRIDGE_MIN_INSYNC_REPLICAS: expected 1 to TTBRIDGE_REPLICATION_FACTOR (3), got 0"),
    ({"TTBRIDGE_MIN_INSYNC_REPLICAS": "x"}, "TTBRIDGE_MIN_INSYNC_REPLICAS: expected an integer, got 'x'"),
])
def test_replication_settings_are_checked(env, message):
    with pytest.raises(SettingsError) as e:
        load(env)
    assert str(e.value) == message


def test_faust_gets_the_replication_factor_and_its_topics_are_the_specs(tmp_path):
    settings = load({"TTBRIDGE_REPLICATION_FACTOR": "3", "TTBRIDGE_MIN_INSYNC_REPLICAS": "2",
                     "TTBRIDGE_DATA_DIR": str(tmp_path), "TTBRIDGE_APP_ID": "rf"}, partitions=4)
    app = build_app(settings, run_retrier=False)
    # What faust creates itself (none of ours: they exist by then) gets the factor from here.
    assert app.conf.topic_replication_factor == 3
    assert list(app.tables) == []  # no table of faust's, so no changelog of faust's
    assert load_specs(settings)["assignor-leader"].name == f"{app.conf.id}-__assignor-__leader"


async def test_created_with_the_configured_replication_and_min_insync_replicas(kafka_bootstrap, unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"rf{unique}",
           "TTBRIDGE_REPLICATION_FACTOR": "1", "TTBRIDGE_MIN_INSYNC_REPLICAS": "1"}
    for role, var in (("clicks", "CLICKS"), ("tracking-events", "EVENTS"), ("tiktok-retry", "RETRY"), ("tiktok-dlq", "DLQ")):
        env[f"TTBRIDGE_TOPIC_{var}"] = f"rf-{role}-{unique}"
    settings = load(env)
    warnings = []
    lines = await create_topics(settings, warn=warnings.append)
    specs = load_specs(settings)
    assert len(lines) == len(specs) == 9
    assert all(line.endswith(" partitions, replication factor 1)") for line in lines)
    assert warnings == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs.values()])}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.name)
                                                for s in specs.values()])
    finally:
        await admin.close()
    for spec in specs.values():
        assert {len(p["replicas"]) for p in topics[spec.name]["partitions"]} == {1}, spec.name
    entries = {r[3]: {e[0]: e[1] for e in r[4]} for c in configs for r in c.resources}  # (.., name, entries)
    assert {name: e["min.insync.replicas"] for name, e in entries.items()} == {s.name: "1" for s in specs.values()}
    # The clicks table's log keeps every click for the attribution window (7 days by default);
    # the clicks topic, its other source, at least that (its spec's 28 days).
    log = entries[f"rf{unique}-clicks-by-click-id"]
    assert (log["cleanup.policy"], log["retention.ms"]) == ("delete", "604800000")
    assert entries[env["TTBRIDGE_TOPIC_CLICKS"]]["retention.ms"] == "2419200000"

    # Asked for 2 copies once they all exist (on one broker, as a cluster mid-restart might look):
    # no refusal, since nothing needs creating, and each topic is reported, left as it is.
    again = await create_topics(load({**env, "TTBRIDGE_REPLICATION_FACTOR": "2"}), warn=warnings.append)
    assert sorted(again) == sorted(line.replace(": created (", ": exists (") for line in lines)
    assert sorted(warnings) == sorted(f"{s.name}: has replication factor 1, TTBRIDGE_REPLICATION_FACTOR says 2 "
                                      "(left as it is)" for s in specs.values())


async def test_an_existing_source_of_the_table_kept_shorter_than_the_window_is_warned_about(kafka_bootstrap,
                                                                                             unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"ret{unique}"}
    for role, var in (("clicks", "CLICKS"), ("tracking-events", "EVENTS"), ("tiktok-retry", "RETRY"), ("tiktok-dlq", "DLQ")):
        env[f"TTBRIDGE_TOPIC_{var}"] = f"ret-{role}-{unique}"
    log = f"ret{unique}-clicks-by-click-id"
    # Made by hand before ttbridge ever ran, with one day of retention and 2 days.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(log, 6, 1, topic_configs={"retention.ms": "86400000"}),
                                   NewTopic(env["TTBRIDGE_TOPIC_CLICKS"], 6, 1,
                                            topic_configs={"retention.ms": "172800000"})])
    finally:
        await admin.close()
    warnings = []
    await create_topics(load(env), warn=warnings.append)  # attribution_window_days 7
    assert sorted(warnings) == sorted(
        f"{topic}: retention.ms {ms} is shorter than the attribution window (604800000 ms, attribution_window_days "
        "7): clicks would expire from the clicks table's source before their window ends; raise it"
        for topic, ms in ((log, 86400000), (env["TTBRIDGE_TOPIC_CLICKS"], 172800000)))
    # Left as it is, and no warning once the window fits in it (one day, or half of one).
    for days in (1, 0.5):
        warnings.clear()
        await create_topics(load(env, attribution_window_days=days), warn=warnings.append)
        assert warnings == [], days


def _topics_cli(env: dict) -> subprocess.CompletedProcess:
    own = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TTBRIDGE_", "TIKTOK_"))}
    return subprocess.run([sys.executable, "-m", "app", "topics", "create"], env={**own, **env},
                          capture_output=True, text=True, timeout=120)


async def test_the_command_refuses_more_replicas_than_brokers_and_warns_not_on_one(kafka_bootstrap, unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"cli{unique}",
           "TTBRIDGE_TOPIC_CLICKS": f"cli-clicks-{unique}", "TTBRIDGE_TOPIC_EVENTS": f"cli-events-{unique}",
           "TTBRIDGE_TOPIC_RETRY": f"cli-retry-{unique}", "TTBRIDGE_TOPIC_DLQ": f"cli-dlq-{unique}"}
    refused = _topics_cli({**env, "TTBRIDGE_REPLICATION_FACTOR": "2"})
    assert refused.returncode == 1
    assert refused.stderr == ("ttbridge topics: replication factor 2 (TTBRIDGE_REPLICATION_FACTOR) is more than "
                              "the 1 broker(s) of the cluster: Kafka cannot place the copies; set it to at most 1\n")
    assert refused.stdout == ""
    assert await partition_count(kafka_bootstrap, f"cli-clicks-{unique}") is None, "nothing was created"
    done = _topics_cli(env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "one broker, replication factor 1: no warning"
    assert len(done.stdout.splitlines()) == 9


def test_an_unreachable_broker_is_one_line_and_under_json_logs_one_json_line():
    # aiokafka's own error for each refused server is not printed beside ttbridge's, which says
    # why; a worker logging JSON ends on a JSON line too (a log pipeline parses every line).
    port = free_port()  # nothing listens there
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    why = (f"cannot connect to Kafka over PLAINTEXT: 127.0.0.1:{port}: "
           f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})")
    done = _topics_cli(env)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"ttbridge topics: {why}\n")
    own = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TTBRIDGE_", "TIKTOK_"))}
    worker = subprocess.run([sys.executable, "-m", "app", "worker", "--log-format", "json"],
                            env={**own, **env, "TIKTOK_PIXEL_CODE": "P1", "TIKTOK_ACCESS_TOKEN": "secret-token"},
                            capture_output=True, text=True, timeout=120)
    assert (worker.returncode, worker.stdout) == (1, "")
    (line,) = worker.stderr.splitlines()
    record = json.loads(line)
    assert set(record) == {"time", "level", "logger", "message"}
    assert (record["level"], record["logger"], record["message"]) == ("CRITICAL", "ttbridge", f"ttbridge worker: {why}")
