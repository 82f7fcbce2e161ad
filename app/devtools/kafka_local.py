"""A real single-node Apache Kafka broker on tap, for development, tests, the demo and benchmarks.

The official jars come from Maven Central through `mvn` the first time and are cached outside
the repo (~/.cache/ttbridge/kafka-3.9.1). The broker runs in KRaft mode on 127.0.0.1, always with
a PLAINTEXT listener; tests of Kafka security add TLS and SASL listeners (SecuredListeners).
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from app.devtools.certificates import Certificates

__all__ = ["KAFKA_VERSION", "Broker", "BrokerError", "SecuredListeners", "fetch_jars", "register"]

KAFKA_VERSION = "3.9.1"
_ARTIFACTS = [
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
    ("ch.qos.reload4j", "reload4j", "1.2.25"),
]
CACHE_DIR = Path(os.environ.get("TTBRIDGE_CACHE_DIR", Path.home() / ".cache" / "ttbridge"))
DEFAULT_DATA_DIR = Path(".ttbridge") / "kafka"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped. The message says what to do."""


def _require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(f"{tool} is not installed: {install}")
    return path


def fetch_jars(cache_dir: Path = CACHE_DIR) -> Path:
    """The directory of Kafka's jars, fetched with Maven on first use."""
    home = cache_dir / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    mvn = _require("mvn", "install Maven (Debian/Ubuntu: apt-get install -y maven)")
    _require("java", "install Java 17+ (Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless)")
    home.mkdir(parents=True, exist_ok=True)
    deps = "\n".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in _ARTIFACTS)
    (home / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>ttbridge</groupId><artifactId>kafka-jars</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>\n")
    tmp = home / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {home} ...", file=sys.stderr)
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(home / "pom.xml"),
         "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
         f"-DoutputDirectory={tmp}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BrokerError(f"mvn could not fetch the Kafka jars:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)  # only a complete download counts as cached
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The SASL mechanisms the SASL listeners offer; every user can log in with each.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# What --add-scram and a JAAS line can carry without quoting rules of their own.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SecuredListeners:
    """Listeners beside PLAINTEXT, which the broker keeps for itself and its readiness probe.
    A port left None opens no such listener. TLS listeners present `certificates.broker`; the
    SSL one requires a client certificate signed by `certificates.ca` (mutual TLS, as Strimzi's
    and MSK's TLS authentication do), SASL_SSL does not."""

    certificates: Certificates | None = None
    ssl_port: int | None = None
    sasl_ssl_port: int | None = None
    sasl_plaintext_port: int | None = None
    # name -> password, for every mechanism in SASL_MECHANISMS. SCRAM credentials are written
    # when the log dir is first formatted: a restarted broker keeps the users it started with.
    users: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.ssl_port or self.sasl_ssl_port) and self.certificates is None:
            raise BrokerError("TLS listeners need certificates (app.devtools.certificates)")
        if (self.sasl_ssl_port or self.sasl_plaintext_port) and not self.users:
            raise BrokerError("SASL listeners need at least one user")
        for word in (*self.users, *self.users.values()):
            if not _PLAIN_WORD.fullmatch(word):
                raise BrokerError(f"SASL user names and passwords here are letters, digits, '.', '_' "
                                  f"or '-' (they go into --add-scram and JAAS lines), got {word!r}")

    def ports(self) -> dict[str, int]:
        """Listener name (= its security protocol) -> port, for those opened."""
        named = {"SSL": self.ssl_port, "SASL_SSL": self.sasl_ssl_port,
                 "SASL_PLAINTEXT": self.sasl_plaintext_port}
        return {name: port for name, port in named.items() if port}


@dataclass
class Broker:
    """One broker's files live in data_dir: server.properties, logs/, broker.pid, broker.log."""

    data_dir: Path = DEFAULT_DATA_DIR
    port: int = 9092
    controller_port: int | None = None
    secured: SecuredListeners | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener(self, protocol: str) -> str:
        """host:port of the secured listener for `protocol` (SSL, SASL_SSL, SASL_PLAINTEXT)."""
        ports = self.secured.ports() if self.secured else {}
        if protocol not in ports:
            raise BrokerError(f"this broker has no {protocol} listener (it has PLAINTEXT"
                              f"{''.join(', ' + p for p in ports)})")
        return f"127.0.0.1:{ports[protocol]}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def pid(self) -> int | None:
        """The running broker's pid, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, IndexError):
            return None
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, timeout: float = 90.0) -> str:
        """Format (first time only), start, and wait until it answers a metadata request."""
        if self.pid():
            port = int(self.pid_file.read_text().split()[1])
            self.port = port
            return self.bootstrap
        java = _require("java", "install Java 17+ (Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless)")
        classpath = str(fetch_jars() / "*")
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        cport = self.controller_port or free_port()
        props.write_text(_server_properties(self.data_dir / "logs", self.port, cport, self.secured))
        log4j = self.data_dir / "log4j.properties"
        log4j.write_text("log4j.rootLogger=WARN, file\nlog4j.appender.file=org.apache.log4j.FileAppender\n"
                         f"log4j.appender.file.File={self.data_dir / 'server.log'}\n"
                         "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
                         "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
        jvm = [java, "-Xmx512m", "-Xms256m", f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            # A restart keeps the formatted log dir: the broker's data survives `down`/`up`.
            fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                                        "-c", str(props), *_scram_users(self.secured)],
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting the KRaft log dir failed: {fmt.stderr[-2000:]}")
        with open(self.data_dir / "broker.log", "ab") as out:
            proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(f"{proc.pid} {self.port}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = (self.data_dir / "broker.log").read_text(errors="replace")[-2000:]
                raise BrokerError(f"the broker exited with {proc.returncode}:\n{tail}")
            if asyncio.run(_answers_metadata(self.bootstrap)):
                return self.bootstrap
            time.sleep(0.5)
        self.stop()
        raise BrokerError(f"the broker did not answer on {self.bootstrap} within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after timeout). True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests)."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
            self.pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child, so it doesn't linger as a zombie that "exists".
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _cluster_id() -> str:
    import base64
    # Kafka's own Uuid.randomUuid redraws ids that start with "-": the StorageTool's argument
    # parser would read one as an option (about 1 in 64 draws).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _server_properties(log_dir: Path, port: int, controller_port: int,
                       secured: SecuredListeners | None = None) -> str:
    ports = {"PLAINTEXT": port, **(secured.ports() if secured else {})}
    advertised = ",".join(f"{name}://127.0.0.1:{p}" for name, p in ports.items())
    protocols = ",".join(f"{name}:{name}" for name in ports)
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners={advertised},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
listener.security.protocol.map={protocols},CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# As in production: topics come from app/topics/ via `ttbridge topics create` (faust creates its own
# changelogs). Auto-creation would make any typo'd or early-read topic with 1 partition and
# silently break the click join's co-partitioning.
auto.create.topics.enable=false
{_security_properties(secured) if secured else ""}"""


def _security_properties(secured: SecuredListeners) -> str:
    """TLS and SASL settings of the secured listeners (the broker's own traffic stays PLAINTEXT)."""
    lines = []
    ports = secured.ports()
    certs = secured.certificates
    if certs is not None:
        # A PKCS#12 keystore and a PEM truststore (Kafka >= 2.7): no keytool step, no JKS files.
        lines += ["ssl.keystore.type=PKCS12", f"ssl.keystore.location={certs.broker}",
                  f"ssl.keystore.password={certs.broker_password}",
                  f"ssl.key.password={certs.broker_password}",
                  "ssl.truststore.type=PEM", f"ssl.truststore.location={certs.ca}"]
    if "SSL" in ports:
        lines.append("listener.name.ssl.ssl.client.auth=required")
    sasl = [name for name in ("SASL_SSL", "SASL_PLAINTEXT") if name in ports]
    if sasl:
        lines.append(f"sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}")
        plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in secured.users.items())
        for name in sasl:
            prefix = f"listener.name.{name.lower()}"
            if name == "SASL_SSL":
                lines.append(f"{prefix}.ssl.client.auth=none")
            # PLAIN's users live in its JAAS line; SCRAM's in the cluster metadata (_scram_users),
            # but each SCRAM mechanism still needs a (credential-less) login module here.
            lines.append(f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
                         f"PlainLoginModule required {plain_users};")
            for mechanism in ("scram-sha-256", "scram-sha-512"):
                lines.append(f"{prefix}.{mechanism}.sasl.jaas.config=org.apache.kafka.common.security."
                             "scram.ScramLoginModule required;")
    return "".join(line + "\n" for line in lines)


def _scram_users(secured: SecuredListeners | None) -> list[str]:
    """StorageTool arguments that create the SCRAM users with the cluster (KRaft keeps SCRAM
    credentials in its metadata; --add-scram writes them in the first metadata snapshot)."""
    if secured is None or not (secured.sasl_ssl_port or secured.sasl_plaintext_port):
        return []
    return [arg for mechanism in SASL_MECHANISMS if mechanism.startswith("SCRAM-")
            for name, pw in secured.users.items()
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={pw}]")]


async def _answers_metadata(bootstrap: str) -> bool:
    import logging

    from aiokafka import AIOKafkaClient

    # Refused connections are expected while the broker boots: not worth a log line each.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return True
    except Exception:
        return False
    finally:
        await client.close()


def register(subparsers) -> None:
    p = subparsers.add_parser("kafka", help="start, stop or inspect a local Apache Kafka 3.9.1 broker",
                              description="A real single-node Kafka broker (KRaft) on 127.0.0.1.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{up,down,status}")
    for name, help_ in (("up", "fetch the jars if needed, start the broker, wait until it answers"),
                        ("down", "stop the broker; leaves no process behind"),
                        ("status", "say whether a broker runs and where")):
        q = sub.add_parser(name, help=help_, description=help_)
        q.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help=f"broker state and logs (default: {DEFAULT_DATA_DIR})")
        if name == "up":
            q.add_argument("--port", type=int, default=9092, help="listener port (default: 9092)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    broker = Broker(args.data_dir, getattr(args, "port", 9092))
    try:
        if args.action == "up":
            print(broker.start())
        elif args.action == "down":
            print("stopped" if broker.stop() else "no broker was running")
        else:
            pid = broker.pid()
            if pid is None:
                print(f"no broker running (data dir {broker.data_dir})")
                return 1
            port = broker.pid_file.read_text().split()[1]
            print(f"broker running: pid {pid}, bootstrap 127.0.0.1:{port}, data dir {broker.data_dir}")
    except BrokerError as e:
        print(f"ttbridge kafka: {e}", file=sys.stderr)
        return 1
    return 0
