"""Static checks of the deployment files: docker-compose.yml, Dockerfile,
.dockerignore and the Kubernetes manifests in k8s/ (with its components).

No Docker engine or cluster is needed: the files are parsed and checked
against the environment contract (the README's table, which keeps DESIGN.md's)
and the operational decisions (token only from a secret, RocksDB state on a
volume, probes, grace period, limits on every container, no service links, a
pinned image, a namespace, a NetworkPolicy, loopback-only ports in compose).
Where the tools are installed, kubernetes-validate checks the rendered
manifests against the Kubernetes schemas and kube-score lints them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DESIGN_MD = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "k8s"

README = ROOT / "README.md"
# The environment contract: the README's table ("Configuration"), which keeps
# every variable of DESIGN.md's ("Contracts" / "Environment") and adds those
# that landed since (Kafka security, TTBRIDGE_WEB_HOST).
README_ENV_MARKER = "Environment variables (the deployment contract)"
PACKAGE_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NAMESPACE = "ttbridge"
OWN_PREFIXES = ("TTBRIDGE_", "TIKTOK_", "KAFKA_")

# Environment variables faust-streaming 0.15 reads by itself (Settings
# env_name=... and faust/types/_env.py); set, they override the code's
# settings, so the deployment must never set them.
FAUST_ENV = frozenset(
    {
        "APP_DATADIR", "APP_TABLEDIR", "APP_DEBUG", "APP_ENV_PREFIX", "APP_ID_FORMAT",
        "APP_VERSION", "APP_STORE", "APP_KEY_SERIALIZER", "APP_VALUE_SERIALIZER",
        "APP_REPLY_CREATE_TOPIC", "APP_REPLY_EXPIRES", "APP_REPLY_TO_PREFIX",
        "APP_WEB_ENABLED", "TIMEZONE", "AGENT_SUPERVISOR", "BLOCKING_TIMEOUT",
        "BROKER_URL", "BROKER_CONSUMER_URL", "BROKER_PRODUCER_URL", "BROKER_API_VERSION",
        "BROKER_CHECK_CRCS", "BROKER_CLIENT_ID", "BROKER_COMMIT_EVERY",
        "BROKER_COMMIT_INTERVAL", "BROKER_COMMIT_LIVELOCK_SOFT_TIMEOUT",
        "BROKER_CREDENTIALS", "BROKER_HEARTBEAT_INTERVAL", "BROKER_MAX_POLL_INTERVAL",
        "BROKER_MAX_POLL_RECORDS", "BROKER_REBALANCE_TIMEOUT", "BROKER_REQUEST_TIMEOUT",
        "BROKER_SESSION_TIMEOUT", "BROKER_METADATA_MAX_AGE", "BROKER_CONNECTIONS_MAX_IDLE",
        "CONSUMER_API_VERSION", "CONSUMER_MAX_FETCH_SIZE", "CONSUMER_AUTO_OFFSET_RESET",
        "CONSUMER_GROUP_INSTANCE_ID", "PRODUCER_ACKS", "PRODUCER_API_VERSION",
        "PRODUCER_COMPRESSION_TYPE", "PRODUCER_LINGER", "PRODUCER_LINGER_MS",
        "PRODUCER_MAX_BATCH_SIZE", "PRODUCER_MAX_REQUEST_SIZE", "PRODUCER_REQUEST_TIMEOUT",
        "PRODUCER_THREADED", "RECOVERY_CONSISTENCY_CHECK", "STORE_CHECK_EXISTS",
        "PROCESSING_GUARANTEE", "STREAM_BUFFER_MAXSIZE", "STREAM_PROCESSING_TIMEOUT",
        "STREAM_RECOVERY_DELAY", "STREAM_WAIT_EMPTY", "TABLE_CLEANUP_INTERVAL",
        "TABLE_KEY_INDEX_SIZE", "TABLE_STANDBY_REPLICAS", "TOPIC_ALLOW_DECLARE",
        "TOPIC_DISABLE_LEADER", "TOPIC_PARTITIONS", "TOPIC_REPLICATION_FACTOR",
        "CACHE_URL", "STORE_URL", "WEB_BIND", "WEB_HOST", "WEB_PORT", "WEB_TRANSPORT",
        "NODE_CANONICAL_URL", "WORKER_REDIRECT_STDOUTS", "WORKER_REDIRECT_STDOUTS_LEVEL",
    }
)
FAUST_ENV_PREFIXES = ("FAUST_", "F_")  # F_WEB_PORT, FAUST_DATADIR, FAUST_LOOP, ...

WEB_PORT = 6066
DEFAULT_PARTITIONS = 6  # app/topics/ default; replicas beyond it sit idle
MIN_GRACE_SECONDS = 60
TTBRIDGE_SERVICES = ("topics", "worker", "fake-tiktok")

# ${TIKTOK_ACCESS_TOKEN} or ${TIKTOK_ACCESS_TOKEN:-}: a reference to the
# caller's environment, never a value or a default. Not ${...:?msg}: compose
# interpolates the whole file for every command, so `docker compose ps` or
# `down` would need the token.
TOKEN_REFERENCE = re.compile(r"\$\{TIKTOK_ACCESS_TOKEN(?::?-)?\}")


# --------------------------------------------------------------------------- helpers


def _is_faust_name(name: str) -> bool:
    return name in FAUST_ENV or name.startswith(FAUST_ENV_PREFIXES)


def assert_contract_names(names: Any, where: str) -> None:
    """Our namespaces (TTBRIDGE_/TIKTOK_/KAFKA_) only hold contract names; no faust names."""
    own = {n for n in names if n.startswith(OWN_PREFIXES)}
    assert own <= CONTRACT_ENV, f"{where}: not in the contract: {sorted(own - CONTRACT_ENV)}"
    faust = sorted(n for n in names if _is_faust_name(n))
    assert not faust, f"{where}: faust reads these itself and they override code: {faust}"


def _env_mapping(environment: Any) -> dict[str, Any]:
    """Compose `environment` as a dict (it may be a mapping or a KEY=VALUE list)."""
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return dict(environment)
    result: dict[str, Any] = {}
    for item in environment:
        key, sep, value = str(item).partition("=")
        result[key] = value if sep else None
    return result


def _compose_duration_seconds(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), value
    return sum(float(n) * units[u] for n, u in parts)


def design_env_names(text: str, marker: str = "Environment:") -> set[str]:
    """Variable names of the table that follows the line starting with `marker`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(marker))
    names: set[str] = set()
    in_table = False
    for line in lines[start + 1 :]:
        if not line.lstrip().startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        first_cell = line.strip().strip("|").split("|")[0]
        base = None
        for token in re.findall(r"`([^`]+)`", first_cell):
            if token.startswith("_") and base:  # `TTBRIDGE_TOPIC_CLICKS` / `_EVENTS`
                names.add(base.rsplit("_", 1)[0] + token)
            elif re.fullmatch(r"[A-Z][A-Z0-9_]*", token):
                names.add(token)
                base = token
    return names


CONTRACT_ENV = frozenset(design_env_names(README.read_text(), README_ENV_MARKER))


# Dockerfile ----------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    return instructions


def _substitute_args(value: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), value
    )


def final_stage(instructions: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """Base image (ARG defaults resolved) and instructions of the last stage."""
    global_args: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            key, _, value = args.partition("=")
            global_args[key.strip()] = value.strip().strip('"')
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    base = _substitute_args(instructions[last_from][1].split()[0], global_args)
    return base, instructions[last_from + 1 :]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, Any]:
    base, stage = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in stage:
        by_keyword.setdefault(keyword, []).append(args)
    env: dict[str, str] = {}
    for args in by_keyword.get("ENV", []):
        for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
            env[key] = value.strip('"')
    return {
        "base": base,
        "stage": stage,
        "by_keyword": by_keyword,
        "env": env,
        "entrypoint": _exec_form(by_keyword["ENTRYPOINT"][-1]),
        "cmd": _exec_form(by_keyword["CMD"][-1]) if "CMD" in by_keyword else [],
        "all_text": DOCKERFILE.read_text(),
    }


# compose -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def compose_argv(service: dict[str, Any], dockerfile: dict[str, Any]) -> list[str]:
    """The argv a container of this service runs (image ENTRYPOINT + command)."""
    entrypoint = service.get("entrypoint", dockerfile["entrypoint"])
    command = service.get("command", dockerfile["cmd"])
    if isinstance(entrypoint, str):
        entrypoint = entrypoint.split()
    if isinstance(command, str):
        command = command.split()
    return [str(part) for part in [*entrypoint, *command]]


# k8s -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    files = sorted([*K8S_DIR.glob("*.yaml"), *K8S_DIR.glob("*.yml")])
    assert files, "no manifests in k8s/"
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), path
            doc["__file__"] = path.name
            docs.append(doc)
    return docs


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        template = (doc.get("spec") or {}).get("template")
        if template:
            yield f"{doc['kind']}/{doc['metadata']['name']}", template["spec"]


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _configmaps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {cm["metadata"]["name"]: cm.get("data") or {} for cm in _of_kind(docs, "ConfigMap")}


def container_env(container: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Env names -> value (str) or valueFrom (dict), envFrom ConfigMaps included."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"only ConfigMap envFrom is expected: {source}"
        assert ref["name"] in configmaps, f"envFrom ConfigMap {ref['name']} not in k8s/"
        prefix = source.get("prefix", "")
        env.update({prefix + key: value for key, value in configmaps[ref["name"]].items()})
    for item in container.get("env", []):
        env[item["name"]] = item["valueFrom"] if "valueFrom" in item else item.get("value")
    return env


def k8s_argv(container: dict[str, Any], dockerfile: dict[str, Any]) -> list[str]:
    command = container.get("command", dockerfile["entrypoint"])
    args = container.get("args", [] if "command" in container else dockerfile["cmd"])
    return [str(part) for part in [*command, *args]]


def _probe_port(probe: dict[str, Any], container: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
    return int(port)


@pytest.fixture(scope="module")
def statefulset(k8s_docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(k8s_docs, "StatefulSet")


@pytest.fixture(scope="module")
def worker_container(statefulset: dict[str, Any], dockerfile: dict[str, Any]) -> dict[str, Any]:
    workers = [
        c
        for c in statefulset["spec"]["template"]["spec"]["containers"]
        if k8s_argv(c, dockerfile) == ["ttbridge", "worker"]
    ]
    assert len(workers) == 1, "the StatefulSet must run exactly one `ttbridge worker` container"
    return workers[0]


# =========================================================================== contract


def test_the_readme_contract_keeps_design_md_s() -> None:
    assert {"KAFKA_BOOTSTRAP_SERVERS", "TIKTOK_ACCESS_TOKEN", "TTBRIDGE_WEB_PORT", "TTBRIDGE_WEB_HOST",
            "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD"} <= CONTRACT_ENV
    if not DESIGN_MD.is_file():
        pytest.skip(f"{DESIGN_MD} not present")
    design = design_env_names(DESIGN_MD.read_text())
    assert design and design <= CONTRACT_ENV, sorted(design - CONTRACT_ENV)


def test_design_table_parser() -> None:
    text = (
        "Environment:\n| variable | default | meaning |\n|---|---|---|\n"
        "| `A_B` | `x` | y |\n| `T_TOPIC_C` / `_D` | `c` / `d` | z |\n\nafter\n| `NOT_ME` |\n"
    )
    assert design_env_names(text) == {"A_B", "T_TOPIC_C", "T_TOPIC_D"}


# =========================================================================== compose


def test_compose_has_the_four_services(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "topics", "worker", "fake-tiktok"}


def test_kafka_is_single_node_kraft_3_9_1(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert "build" not in kafka
    env = {k: str(v) for k, v in _env_mapping(kafka["environment"]).items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"], "the image requires CLUSTER_ID in KRaft mode"
    node_id = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1 and voters[0].startswith(f"{node_id}@")
    voter_port = voters[0].rsplit(":", 1)[1]
    listeners = env["KAFKA_LISTENERS"].split(",")
    assert any(l.startswith(f"{controller}://") and l.endswith(f":{voter_port}") for l in listeners)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert any(l.startswith("PLAINTEXT://") and l.endswith(":9092") for l in listeners)
    for listener in listeners:
        name = listener.split("://")[0]
        assert f"{name}:" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], name
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"


def test_kafka_healthcheck(services: dict[str, Any]) -> None:
    check = services["kafka"]["healthcheck"]
    test = check["test"] if isinstance(check["test"], str) else " ".join(check["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in test
    assert "--bootstrap-server localhost:9092" in test
    assert not check.get("disable", False)


def test_ttbridge_services_share_the_built_image(services: dict[str, Any]) -> None:
    images = set()
    for name in TTBRIDGE_SERVICES:
        service = services[name]
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert Path(context) == Path("."), name
        if not isinstance(build, str):
            assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        images.add(service.get("image"))
    assert len(images) == 1


def test_topics_is_a_one_shot_before_the_worker(services: dict[str, Any], dockerfile: dict[str, Any]) -> None:
    topics = services["topics"]
    assert compose_argv(topics, dockerfile) == ["ttbridge", "topics", "create"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "profiles" not in topics


def test_worker_service(services: dict[str, Any], compose: dict[str, Any], dockerfile: dict[str, Any]) -> None:
    worker = services["worker"]
    assert compose_argv(worker, dockerfile) == ["ttbridge", "worker"]
    assert "profiles" not in worker
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert _compose_duration_seconds(worker["stop_grace_period"]) >= MIN_GRACE_SECONDS

    env = _env_mapping(worker["environment"])
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert str(env["TTBRIDGE_WEB_PORT"]) == str(WEB_PORT)
    # the demo works by overriding TIKTOK_API_URL from the shell
    assert str(env["TIKTOK_API_URL"]).startswith("${TIKTOK_API_URL")

    # RocksDB state on a named volume mounted at TTBRIDGE_DATA_DIR
    data_dir = env["TTBRIDGE_DATA_DIR"]
    mounts = {}
    for volume in worker["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        mounts[target] = source
    assert data_dir in mounts, "TTBRIDGE_DATA_DIR must be on a volume"
    assert mounts[data_dir] in (compose.get("volumes") or {}), "use a named volume"
    # same directory as the image's (owned by its non-root user)
    assert data_dir == dockerfile["env"]["TTBRIDGE_DATA_DIR"]

    ports = [str(p if not isinstance(p, dict) else p["target"]) for p in worker["ports"]]
    assert any(p == str(WEB_PORT) or p.endswith(f":{WEB_PORT}") for p in ports)

    check = worker["healthcheck"]
    test = check["test"] if isinstance(check["test"], str) else " ".join(check["test"])
    assert "/healthz" in test and f":{WEB_PORT}/" in test


def test_fake_tiktok_is_demo_only(services: dict[str, Any], compose_text: str, dockerfile: dict[str, Any]) -> None:
    fake = services["fake-tiktok"]
    assert fake["profiles"] == ["demo"]
    argv = compose_argv(fake, dockerfile)
    assert argv[:2] == ["ttbridge", "fake-tiktok"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8099"
    assert "--access-token" in argv and "--pixel" in argv
    # the top comment tells how to point the worker at it
    header = compose_text.split("\nservices:")[0]
    assert "TIKTOK_API_URL=http://fake-tiktok:8099" in header
    assert "--profile demo" in header


def test_compose_env_names_are_the_contract(services: dict[str, Any], compose_text: str) -> None:
    for name in TTBRIDGE_SERVICES:
        env = _env_mapping(services[name].get("environment"))
        assert "env_file" not in services[name], name
        assert_contract_names(env, name)
    # names interpolated from the caller's shell
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", compose_text))
    assert_contract_names(referenced, "docker-compose.yml ${...}")


def test_compose_token_is_only_a_reference(services: dict[str, Any], compose_text: str) -> None:
    worker_env = _env_mapping(services["worker"]["environment"])
    # No value: passed through from the caller's shell when set, absent otherwise.
    assert "TIKTOK_ACCESS_TOKEN" in worker_env and worker_env["TIKTOK_ACCESS_TOKEN"] is None
    # Nothing in the file needs the token to be set: `docker compose ps/down` work without it.
    assert not re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?", compose_text), "no ${VAR:?...} anywhere"
    for name, service in services.items():
        env = _env_mapping(service.get("environment"))
        if env.get("TIKTOK_ACCESS_TOKEN") is not None:
            assert TOKEN_REFERENCE.fullmatch(str(env["TIKTOK_ACCESS_TOKEN"])), name
        command = service.get("command") or []
        if isinstance(command, list) and "--access-token" in command:
            value = str(command[command.index("--access-token") + 1])
            assert TOKEN_REFERENCE.fullmatch(value), f"{name}: literal --access-token"


# =========================================================================== Dockerfile


def test_dockerfile_base_and_install(dockerfile: dict[str, Any]) -> None:
    assert dockerfile["base"] == "python:3.11-slim"
    assert "pip install --no-cache-dir ." in dockerfile["all_text"]


def test_dockerfile_runs_as_non_root(dockerfile: dict[str, Any]) -> None:
    users = dockerfile["by_keyword"].get("USER")
    assert users, "the final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", "")
    assert user.isdigit(), "numeric USER, so Kubernetes runAsNonRoot can verify it"


def test_dockerfile_entrypoint_cmd_expose(dockerfile: dict[str, Any]) -> None:
    assert dockerfile["entrypoint"] == ["ttbridge"]
    assert dockerfile["cmd"] == ["worker"]
    exposed = {p.split("/")[0] for args in dockerfile["by_keyword"]["EXPOSE"] for p in args.split()}
    assert str(WEB_PORT) in exposed


def test_dockerfile_data_dir_owned_by_the_user(dockerfile: dict[str, Any]) -> None:
    data_dir = dockerfile["env"]["TTBRIDGE_DATA_DIR"]
    runs = " ".join(dockerfile["by_keyword"]["RUN"])
    assert "chown" in runs and data_dir in runs
    assert_contract_names(dockerfile["env"], "Dockerfile ENV")


def test_the_wheel_carries_the_topic_specs_and_the_installed_package_reads_them(tmp_path: Path) -> None:
    # The image installs the wheel (no checkout beside it): `ttbridge topics create` must find its
    # specs inside the package, as every worker does at start-up.
    import zipfile

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("ttbridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    specs = {f"app/topics/{p.name}" for p in (ROOT / "app" / "topics").glob("*.json")}
    assert specs == {"app/topics/clicks.json", "app/topics/internal.json", "app/topics/tiktok-dlq.json",
                     "app/topics/tiktok-retry.json", "app/topics/tracking-events.json"}
    assert specs <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    own = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TTBRIDGE_", "TIKTOK_"))}
    read = subprocess.run([sys.executable, "-c", "from app.job.topics import specs_dir, read_spec; "
                           "print(specs_dir()); print(read_spec('clicks')['partitions'])"],
                          cwd=tmp_path, env={**own, "PYTHONPATH": str(site)}, capture_output=True, text=True,
                          timeout=60)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == [str(site / "app" / "topics"),
                                   str(json.loads((ROOT / "app" / "topics" / "clicks.json").read_text())["partitions"])]


def test_dockerignore() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            candidates = {pattern, pattern.removeprefix("**/")}
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, c) for c in candidates for p in prefixes):
                result = not negate
        return result

    for path in (".venv/bin/python", ".git/HEAD", ".ttbridge/v1/tables", "app/__pycache__/x.pyc",
                 ".pytest_cache/v", ".mypy_cache/x", ".ruff_cache/x"):
        assert ignored(path), path
    for path in ("pyproject.toml", "app/__init__.py", "app/tiktok.py", "app/topics/clicks.json",
                 "README.md"):
        assert not ignored(path), path


# =========================================================================== k8s


def test_kustomization_lists_every_manifest(k8s_docs: list[dict[str, Any]]) -> None:
    kustomization = _one(k8s_docs, "Kustomization")
    files = {doc["__file__"] for doc in k8s_docs if doc["kind"] != "Kustomization"}
    assert set(kustomization["resources"]) == files


def test_k8s_env_names_are_the_contract(k8s_docs: list[dict[str, Any]]) -> None:
    configmaps = _configmaps(k8s_docs)
    for name, data in configmaps.items():
        assert_contract_names(data, f"ConfigMap/{name}")
    for where, pod in _pod_specs(k8s_docs):
        for container in _containers(pod):
            assert_contract_names(container_env(container, configmaps), f"{where}/{container['name']}")


def test_k8s_token_only_from_a_secret(k8s_docs: list[dict[str, Any]], worker_container: dict[str, Any]) -> None:
    for name, data in _configmaps(k8s_docs).items():
        assert "TIKTOK_ACCESS_TOKEN" not in data, name
    for secret in _of_kind(k8s_docs, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), "token created out of band"
    for where, pod in _pod_specs(k8s_docs):
        for container in _containers(pod):
            for item in container.get("env", []):
                if item["name"] == "TIKTOK_ACCESS_TOKEN":
                    assert "value" not in item, where
                    assert item["valueFrom"]["secretKeyRef"]["name"], where
                    assert item["valueFrom"]["secretKeyRef"]["key"], where
            for arg in [*container.get("command", []), *container.get("args", [])]:
                assert "access-token" not in str(arg), where
    names = [item["name"] for item in worker_container.get("env", [])]
    assert "TIKTOK_ACCESS_TOKEN" in names, "the worker needs the token (from the Secret)"


def test_statefulset_worker(
    k8s_docs: list[dict[str, Any]], statefulset: dict[str, Any], worker_container: dict[str, Any],
    dockerfile: dict[str, Any],
) -> None:
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    assert 1 <= spec["replicas"] <= DEFAULT_PARTITIONS
    assert "idle" in (K8S_DIR / statefulset["__file__"]).read_text(), "comment on scaling past partitions"
    assert pod["terminationGracePeriodSeconds"] >= MIN_GRACE_SECONDS

    ports = {p["containerPort"] for p in worker_container["ports"]}
    assert WEB_PORT in ports
    live, ready = worker_container["livenessProbe"], worker_container["readinessProbe"]
    assert live["httpGet"]["path"] == "/healthz" and _probe_port(live, worker_container) == WEB_PORT
    assert ready["httpGet"]["path"] == "/readyz" and _probe_port(ready, worker_container) == WEB_PORT
    if "startupProbe" in worker_container:
        startup = worker_container["startupProbe"]
        assert startup["httpGet"]["path"] == "/healthz"
        assert _probe_port(startup, worker_container) == WEB_PORT

    resources = worker_container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]

    env = container_env(worker_container, _configmaps(k8s_docs))
    assert str(env["TTBRIDGE_WEB_PORT"]) == str(WEB_PORT)
    data_dir = env["TTBRIDGE_DATA_DIR"]
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in worker_container["volumeMounts"]}
    assert mounts.get(data_dir) in claims, "TTBRIDGE_DATA_DIR must be on the volumeClaimTemplate"

    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(dockerfile["by_keyword"]["USER"][-1].split(":")[0])
    assert security.get("fsGroup"), "the non-root user must be able to write the volume"


def test_data_volume_claim_is_sized_for_the_whole_clicks_table(
    k8s_docs: list[dict[str, Any]], statefulset: dict[str, Any], worker_container: dict[str, Any],
) -> None:
    # Every pod keeps all of clicks-by-click-id in RocksDB under TTBRIDGE_DATA_DIR: the claim
    # must exist, request a size, and say how to size it and what a new pod does first.
    data_dir = container_env(worker_container, _configmaps(k8s_docs))["TTBRIDGE_DATA_DIR"]
    mounted = {m["mountPath"]: m["name"] for m in worker_container["volumeMounts"]}[data_dir]
    claim = next(t for t in statefulset["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == mounted)
    size = str(claim["spec"]["resources"]["requests"]["storage"])
    assert re.fullmatch(r"[1-9][0-9]*(Mi|Gi|Ti)", size), size
    text = (K8S_DIR / statefulset["__file__"]).read_text()
    for words in ("clicks/day", "attribution_window_days", "compaction", "catches up", "/readyz"):
        assert words in text, f"the claim's sizing comment names {words!r}"


def test_headless_metrics_service(k8s_docs: list[dict[str, Any]], statefulset: dict[str, Any]) -> None:
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _of_kind(k8s_docs, "Service")}
    service = services[statefulset["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert WEB_PORT in {p["port"] for p in service["spec"]["ports"]}
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(WEB_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()


def test_pod_disruption_budget(k8s_docs: list[dict[str, Any]], statefulset: dict[str, Any]) -> None:
    pdb = _one(k8s_docs, "PodDisruptionBudget")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


def test_topics_job(k8s_docs: list[dict[str, Any]], dockerfile: dict[str, Any]) -> None:
    job = _one(k8s_docs, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    assert k8s_argv(container, dockerfile) == ["ttbridge", "topics", "create"]
    env = container_env(container, _configmaps(k8s_docs))
    assert {"KAFKA_BOOTSTRAP_SERVERS", "TTBRIDGE_TOPIC_CLICKS", "TTBRIDGE_TOPIC_EVENTS"} <= set(env)
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_containers_run_ttbridge_commands(k8s_docs: list[dict[str, Any]], dockerfile: dict[str, Any]) -> None:
    for where, pod in _pod_specs(k8s_docs):
        for container in _containers(pod):
            argv = k8s_argv(container, dockerfile)
            assert argv[0] == "ttbridge", where
            assert argv[1] in {"worker", "topics", "retry-worker", "fake-tiktok"}, where
            assert container["image"].split(":")[0].split("/")[-1] == "ttbridge", where


# =========================================================================== hardening (issue 14)


def test_compose_publishes_ports_on_loopback_only(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_a_worker_without_the_token_stops_at_once_in_one_line(tmp_path: Path) -> None:
    # What compose's pass-through gives a worker whose caller did not export the token.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TIKTOK_PIXEL_CODE": "CQ1PIXEL"}
    done = subprocess.run([sys.executable, "-m", "app", "worker"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("ttbridge: configuration error: TIKTOK_ACCESS_TOKEN: required when "
                           "TIKTOK_PIXEL_CODE is set\n")


def _k8s_resources(k8s_docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in k8s_docs if doc["kind"] != "Kustomization"]


def test_everything_is_in_the_namespace(k8s_docs: list[dict[str, Any]]) -> None:
    assert _one(k8s_docs, "Kustomization")["namespace"] == NAMESPACE
    namespace = _one(k8s_docs, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in _k8s_resources(k8s_docs):
        if doc["kind"] != "Namespace":  # also right when applied with -f, without kustomize
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


def test_every_pod_has_no_service_links(k8s_docs: list[dict[str, Any]]) -> None:
    pods = list(_pod_specs(k8s_docs))
    assert {where for where, _ in pods} == {"StatefulSet/ttbridge", "Job/ttbridge-topics"}
    for where, pod in pods:
        assert pod.get("enableServiceLinks") is False, where


def test_every_container_has_requests_and_limits(k8s_docs: list[dict[str, Any]]) -> None:
    count = 0
    for where, pod in _pod_specs(k8s_docs):
        for container in _containers(pod):
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                have = set(resources.get(kind) or {})
                assert {"cpu", "memory", "ephemeral-storage"} <= have, f"{where}/{container['name']} {kind}: {have}"
            count += 1
    assert count == 3  # the worker, its init container, the topics Job


def test_the_worker_s_tmp_fits_its_ephemeral_storage_limit(worker_container: dict[str, Any],
                                                           statefulset: dict[str, Any]) -> None:
    def mib(quantity: str) -> float:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
        return int(number) * (1024 if unit == "Gi" else 1)

    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    tmp = mib(volumes["tmp"]["emptyDir"]["sizeLimit"])
    assert tmp < mib(worker_container["resources"]["limits"]["ephemeral-storage"])


def test_images_are_pinned_to_the_package_version(k8s_docs: list[dict[str, Any]]) -> None:
    (image,) = _one(k8s_docs, "Kustomization")["images"]
    assert (image["name"], str(image["newTag"])) == ("ttbridge", PACKAGE_VERSION)
    for where, pod in _pod_specs(k8s_docs):
        for container in _containers(pod):
            name, _, tag = container["image"].rpartition(":")
            assert (name, tag) == ("ttbridge", PACKAGE_VERSION), f"{where}/{container['name']}: {container['image']}"
            # The registry is asked each time a pod starts: a node's cached copy of a private
            # image is never used without the pull secret (kube-score's rule).
            assert container["imagePullPolicy"] == "Always"


def test_the_network_policy_covers_every_pod_and_lets_in_the_web_port_only(k8s_docs: list[dict[str, Any]]) -> None:
    policy = _one(k8s_docs, "NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for where, _ in _pod_specs(k8s_docs):
        doc = next(d for d in _k8s_resources(k8s_docs) if f"{d['kind']}/{d['metadata']['name']}" == where)
        assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), where
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports == [{"port": WEB_PORT, "protocol": "TCP"}]
    egress = [p for rule in policy["spec"]["egress"] for p in rule["ports"]]
    assert {"port": 443, "protocol": "TCP"} in egress  # the Events API
    assert {"port": 53, "protocol": "UDP"} in egress
    kafka_port = int(_configmaps(k8s_docs)["ttbridge"]["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert any(p["port"] <= kafka_port <= p.get("endPort", p["port"]) for p in egress), "the brokers"


# components (optional: ServiceMonitor, KEDA) ---------------------------------


COMPONENTS = K8S_DIR / "components"


def _component_docs(name: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((COMPONENTS / name).glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_the_service_monitor_scrapes_the_metrics_service(k8s_docs: list[dict[str, Any]]) -> None:
    docs = _component_docs("service-monitor")
    assert _one(docs, "Component")["resources"] == ["servicemonitor.yaml"]
    monitor = _one(docs, "ServiceMonitor")
    service = _one([d for d in k8s_docs if d["kind"] == "Service"], "Service")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_keda_scales_the_statefulset_up_to_the_partition_count(k8s_docs: list[dict[str, Any]],
                                                               statefulset: dict[str, Any]) -> None:
    docs = _component_docs("keda")
    component = _one(docs, "Component")
    assert component["resources"] == ["scaledobject.yaml"]
    (patch,) = component["patches"]
    assert patch["target"] == {"kind": "StatefulSet", "name": "ttbridge"}
    assert yaml.safe_load(patch["patch"]) == [{"op": "remove", "path": "/spec/replicas"}]
    scaled = _one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                "name": statefulset["metadata"]["name"]}
    config = _configmaps(k8s_docs)["ttbridge"]
    app_id = config["TTBRIDGE_APP_ID"]
    events = json.loads((ROOT / "app" / "topics" / "tracking-events.json").read_text())["partitions"]
    triggers = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]): t for t in scaled["spec"]["triggers"]}
    # The events are joined where the intake reads them: its group's lag is the whole backlog.
    assert set(triggers) == {(f"{app_id}-intake", config["TTBRIDGE_TOPIC_EVENTS"])}
    for trigger in triggers.values():
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert scaled["spec"]["maxReplicaCount"] == events, "workers beyond the partition count sit idle"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


# Strimzi KafkaTopics (generated from app/topics/*.json) ----------------------------

STRIMZI_DIR = COMPONENTS / "strimzi-topics"
# What the committed manifests were generated with (kustomization.yaml says so): a production
# cluster's replication, for the default names and partitions.
STRIMZI_ENV = {"TTBRIDGE_REPLICATION_FACTOR": "3", "TTBRIDGE_MIN_INSYNC_REPLICAS": "2"}
# The KafkaTopic fields of Strimzi's CRD (kafka.strimzi.io v1beta2, packaging/install/
# cluster-operator/043-Crd-kafkatopic.yaml): kubernetes-validate has no schema for it.
KAFKA_TOPIC_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"}, "kind": {"const": "KafkaTopic"},
        "metadata": {"type": "object", "required": ["name", "labels"], "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                     "maxLength": 253},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "required": ["strimzi.io/cluster"],
                       "additionalProperties": {"type": "string"}}}},
        "spec": {"type": "object", "required": ["partitions", "replicas", "config"], "additionalProperties": False,
                 "properties": {"partitions": {"type": "integer", "minimum": 1},
                                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                                "config": {"type": "object", "additionalProperties": {"type": "string"}},
                                "topicName": {"type": "string"}}},
    },
}


def _strimzi_command(*args: str) -> subprocess.CompletedProcess:
    own = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TTBRIDGE_", "TIKTOK_"))}
    return subprocess.run([sys.executable, "-m", "app", "topics", "strimzi", *args], cwd=ROOT,
                          env={**own, **STRIMZI_ENV}, capture_output=True, text=True, timeout=60)


def test_committed_kafka_topics_are_what_the_generator_writes_from_topics_json() -> None:
    done = _strimzi_command("--cluster", "my-cluster")
    assert done.returncode == 0, done.stderr
    committed = (STRIMZI_DIR / "kafkatopics.yaml").read_text()
    assert committed == done.stdout, (
        "k8s/components/strimzi-topics/kafkatopics.yaml drifted from app/topics/*.json; regenerate it: "
        "TTBRIDGE_REPLICATION_FACTOR=3 TTBRIDGE_MIN_INSYNC_REPLICAS=2 ttbridge topics strimzi "
        "--cluster my-cluster > k8s/components/strimzi-topics/kafkatopics.yaml")
    assert "\n".join(line for line in (STRIMZI_DIR / "kustomization.yaml").read_text().splitlines()
                     if "TTBRIDGE_" in line or "ttbridge topics strimzi" in line).split() == [
        "#", "TTBRIDGE_REPLICATION_FACTOR=3", "TTBRIDGE_MIN_INSYNC_REPLICAS=2", "\\", "#", "ttbridge", "topics",
        "strimzi", "--cluster", "my-cluster", ">", "kafkatopics.yaml"], "the command it documents is the one checked"


def test_kafka_topics_match_the_specs_and_strimzi_s_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from app.job.topics import load_specs
    from app.settings import load

    docs = [doc for doc in yaml.safe_load_all((STRIMZI_DIR / "kafkatopics.yaml").read_text()) if doc]
    for doc in docs:
        assert list(jsonschema.Draft202012Validator(KAFKA_TOPIC_SCHEMA).iter_errors(doc)) == [], doc
    topics = {doc["spec"].get("topicName", doc["metadata"]["name"]): doc for doc in docs}
    specs = {spec.name: spec for spec in load_specs(load(STRIMZI_ENV)).values()}
    assert set(topics) == set(specs) and len(docs) == len(specs)
    # The four documented topics, straight from their JSON: partitions and config.
    for role in ("clicks", "tracking-events", "tiktok-retry", "tiktok-dlq"):
        spec = json.loads((ROOT / "app" / "topics" / f"{role}.json").read_text())
        doc = topics[spec["name"]]
        assert doc["spec"] == {"partitions": spec["partitions"], "replicas": 3,
                               "config": {**spec["config"], "min.insync.replicas": "2"}}, role
    for doc in docs:
        assert doc["spec"]["replicas"] == 3 and doc["spec"]["config"]["min.insync.replicas"] == "2"
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "my-cluster"
    internal = json.loads((ROOT / "app" / "topics" / "internal.json").read_text())["topics"]
    for spec in internal:
        assert topics[spec["name"].format(app_id="ttbridge")]["spec"]["partitions"] == spec["partitions"]
    # faust's assignor topic has '_' in its name, which Kubernetes names may not hold.
    assert topics["ttbridge-__assignor-__leader"]["metadata"]["name"] == "ttbridge-assignor-leader"


def test_kafka_topics_render_into_the_kafka_cluster_s_namespace() -> None:
    kustomization = yaml.safe_load((STRIMZI_DIR / "kustomization.yaml").read_text())
    # Not a Component of the base: the Topic Operator watches the Kafka cluster's namespace.
    assert kustomization["kind"] == "Kustomization" and kustomization["resources"] == ["kafkatopics.yaml"]
    docs = _kustomize(STRIMZI_DIR)
    if docs is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    assert {doc["kind"] for doc in docs} == {"KafkaTopic"}
    assert {doc["metadata"]["namespace"] for doc in docs} == {kustomization["namespace"]} == {"kafka"}


# the real tools, where installed ------------------------------------------------


def _tool(name: str) -> str | None:
    """A tool's path: on PATH, or next to this interpreter (a venv's bin/, where pip
    puts kube-score and kustomize), so `.venv/bin/python -m pytest` finds them too."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _kustomize(directory: Path) -> list[dict[str, Any]] | None:
    """`kustomize build` (or `kubectl kustomize`) of a directory, or None without either."""
    if kustomize := _tool("kustomize"):
        argv = [kustomize, "build", str(directory)]
    elif kubectl := _tool("kubectl"):
        argv = [kubectl, "kustomize", str(directory)]
    else:
        return None
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The manifests as kustomize renders them: the base plus both components."""
    overlay = tmp_path_factory.mktemp("overlay")
    base = os.path.relpath(K8S_DIR, overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{base}/components/keda, {base}/components/service-monitor]\n")
    docs = _kustomize(overlay)
    if docs is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    return docs


def test_kustomize_renders_base_and_components(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == ["ConfigMap", "Job", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "ScaledObject",
                     "Service", "ServiceMonitor", "StatefulSet"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
    assert "replicas" not in _one(rendered, "StatefulSet")["spec"], "KEDA owns the replica count"


# CRDs have no schema in kubernetes-validate's set.
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject"}


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0", "1.37.0"])
def test_manifests_are_valid_for_kubernetes(rendered: list[dict[str, Any]], version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    for doc in rendered:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_kube_score_finds_nothing_critical(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    kube_score = _tool("kube-score")
    if not kube_score:
        pytest.skip("kube-score is not installed "
                    "(go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0)")
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all([d for d in rendered if d["kind"] not in CUSTOM_KINDS]))
    done = subprocess.run([kube_score, "score", "--output-format", "ci", str(path)], capture_output=True,
                          text=True, timeout=120)
    critical = [line for line in done.stdout.splitlines() if line.startswith("[CRITICAL]")]
    assert not critical, "\n".join(critical)
    assert done.returncode == 0, done.stdout + done.stderr
