"""topics/ specs: well-formed, examples agree with their schemas, and creation on the real broker."""
import jsonschema
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.job.topics import ROLES, create_topics, load_specs, read_spec
from app.settings import load


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
    assert specs["events-by-click-id"].name == "shop-events-by-click-id"
    # The join needs the clicks table and the events co-partitioned.
    assert specs["clicks-by-click-id"].partitions == specs["events-by-click-id"].partitions == 4


async def test_create_is_idempotent_and_reports_mismatch(kafka_bootstrap, unique):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TTBRIDGE_APP_ID": f"t{unique}"}
    for role, var in (("clicks", "CLICKS"), ("tracking-events", "EVENTS"), ("tiktok-retry", "RETRY"), ("tiktok-dlq", "DLQ")):
        env[f"TTBRIDGE_TOPIC_{var}"] = f"{role}-{unique}"
    settings = load(env)
    first = await create_topics(settings)
    assert sorted(first) == sorted([
        f"clicks-{unique}: created (6 partitions)", f"tracking-events-{unique}: created (6 partitions)",
        f"tiktok-retry-{unique}: created (6 partitions)", f"tiktok-dlq-{unique}: created (3 partitions)",
        f"tiktok-retry-{unique}-2: created (6 partitions)", f"tiktok-retry-{unique}-3: created (6 partitions)",
        f"tiktok-retry-{unique}-4: created (6 partitions)",
        f"t{unique}-clicks-by-click-id: created (6 partitions)", f"t{unique}-events-by-click-id: created (6 partitions)"])
    second = await create_topics(settings)
    assert all(line.endswith("exists (6 partitions)") or line.endswith("exists (3 partitions)") for line in second)
    assert len(second) == 9

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
