"""Settings: environment variables (deployment) plus one optional TOML file (pixels, routing,
event mapping, windows). Loaded once at start-up and validated; a wrong value, an unknown key in
the file or an unknown TTBRIDGE_* variable raises SettingsError with one line naming it and what
is expected.

faust reads env names like BROKER_URL and WEB_PORT itself and lets them override code, so every
setting of ours lives under our own names (DESIGN.md's contract table).
"""
from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from app.mapping.config import MappingConfig

__all__ = ["Secret", "Pixel", "Routing", "Input", "KafkaSecurity", "Settings", "SettingsError", "load",
           "input_topics", "mapping_config", "mapping_configs"]


class SettingsError(ValueError):
    """A setting is wrong. The message is one line meant for the operator."""


class Secret:
    """A value that must never be printed: repr, str and format all hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __reduce__(self):  # pickling would carry the value into places we do not control
        raise TypeError("Secret cannot be pickled")


@dataclass(frozen=True)
class Pixel:
    """One destination, with its own token: a pixel (web), an app (its TikTok App ID) or an event
    set (offline/crm). Its event_source decides what its events may carry (app.mapping.sources)."""

    code: str
    token: Secret
    event_source: str = "web"
    test_event_code: str | None = None


@dataclass(frozen=True)
class Routing:
    """Which pixel an event goes to: by the value at `path` (dotted), else `default`."""

    path: str | None = None
    rules: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Mechanisms aiokafka has, but only with code of the operator's own: a token provider for
# OAUTHBEARER (fetching and refreshing tokens from their identity provider), Kerberos for GSSAPI.
_UNSUPPORTED_SASL = {"OAUTHBEARER": "it needs a token provider for your identity provider",
                     "GSSAPI": "it needs Kerberos set up for the process"}


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of ttbridge connects: the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and
    KAFKA_SSL_* variables, checked here as a whole (a variable that would be ignored is an error:
    it means the protocol is not what the operator thinks). app/job/kafka_security.py turns them
    into client options."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret = Secret("")
    ssl_cafile: str | None = None      # None: the system's CAs (MSK, Confluent Cloud)
    ssl_certfile: str | None = None    # a client certificate (mutual TLS), with ssl_keyfile
    ssl_keyfile: str | None = None     # None: the key is in ssl_certfile
    ssl_key_password: Secret = Secret("")
    ssl_check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def __post_init__(self) -> None:
        protocol = self.protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise SettingsError("KAFKA_SECURITY_PROTOCOL: expected PLAINTEXT, SSL, SASL_PLAINTEXT or "
                                f"SASL_SSL, got {protocol!r}")
        sasl_set = {"KAFKA_SASL_MECHANISM": self.sasl_mechanism, "KAFKA_SASL_USERNAME": self.sasl_username,
                    "KAFKA_SASL_PASSWORD": self.sasl_password}
        ssl_set = {"KAFKA_SSL_CAFILE": self.ssl_cafile, "KAFKA_SSL_CERTFILE": self.ssl_certfile,
                   "KAFKA_SSL_KEYFILE": self.ssl_keyfile, "KAFKA_SSL_KEY_PASSWORD": self.ssl_key_password,
                   "KAFKA_SSL_CHECK_HOSTNAME": not self.ssl_check_hostname}
        for applies, given, needs in ((self.sasl, sasl_set, "SASL_PLAINTEXT or SASL_SSL"),
                                      (self.tls, ssl_set, "SSL or SASL_SSL")):
            for var, value in given.items():
                if value and not applies:
                    raise SettingsError(f"{var}: set, but KAFKA_SECURITY_PROTOCOL is {protocol} "
                                        f"(it is used with {needs})")
        if self.sasl:
            mechanism = self.sasl_mechanism
            if not mechanism:
                raise SettingsError(f"KAFKA_SASL_MECHANISM: required when KAFKA_SECURITY_PROTOCOL is "
                                    f"{protocol} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
            if mechanism in _UNSUPPORTED_SASL:
                raise SettingsError(f"KAFKA_SASL_MECHANISM: {mechanism} is not supported "
                                    f"({_UNSUPPORTED_SASL[mechanism]}); use PLAIN, SCRAM-SHA-256 or "
                                    "SCRAM-SHA-512")
            if mechanism not in SASL_MECHANISMS:
                raise SettingsError("KAFKA_SASL_MECHANISM: expected PLAIN, SCRAM-SHA-256 or "
                                    f"SCRAM-SHA-512, got {mechanism!r}")
            for var, value in (("KAFKA_SASL_USERNAME", self.sasl_username),
                               ("KAFKA_SASL_PASSWORD", self.sasl_password)):
                if not value:
                    raise SettingsError(f"{var}: required when KAFKA_SECURITY_PROTOCOL is {protocol}")
        for var in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
            path = ssl_set[var]
            if path and not os.path.isfile(path):
                raise SettingsError(f"{var}: file {path!r} does not exist")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise SettingsError("KAFKA_SSL_KEYFILE: set without KAFKA_SSL_CERTFILE, the client "
                                "certificate it is the key of")
        if self.ssl_key_password and not self.ssl_certfile:
            raise SettingsError("KAFKA_SSL_KEY_PASSWORD: set without KAFKA_SSL_CERTFILE (it decrypts "
                                "the client certificate's key)")


# Inputs above this cannot travel whole in a dead-letter record under Kafka's default 1 MiB limit.
MAX_MESSAGE_BYTES = 512 * 1024
# Kafka's rule for topic names; app ids too, since they prefix the internal topics' names.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TTBRIDGE_WHERE = "TTBRIDGE_CONFIG [ttbridge]"


@dataclass(frozen=True)
class Input:
    """An input topic of tracking events and the shape its messages have: a preset, a mapping
    file over it, or a mapping file alone (unless it `extends` a preset); segment if neither."""

    topic: str
    preset: str | None = None
    mapping_file: str | None = None


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    api_url: str = "https://business-api.tiktok.com"
    pixels: Mapping[str, Pixel] = field(default_factory=dict)
    routing: Routing = field(default_factory=Routing)
    config_path: str | None = None
    topic_clicks: str = "clicks"
    topic_events: str = "tracking-events"
    topic_retry: str = "tiktok-retry"
    topic_dlq: str = "tiktok-dlq"
    app_id: str = "ttbridge"
    data_dir: str = "./.ttbridge"
    web_port: int = 6066
    # The address the web server binds: all interfaces, as a container's probes and scrapes need.
    web_host: str = "0.0.0.0"
    # From the TOML file's [ttbridge] table (documented in README.md).
    partitions: int = 6
    batch_window_s: float = 1.0
    batch_max: int = 1000
    join_wait_s: float = 60.0
    attribution_window_days: float = 7.0
    max_event_age_days: float = 7.0
    # Allowed clock skew: events further ahead are refused (future_event); checked by MappingConfig.
    max_future_s: float = 300.0
    max_message_bytes: int = 256 * 1024
    default_region: str | None = None
    retry_tiers_s: tuple[float, ...] = (30.0, 300.0, 1800.0, 7200.0)
    http_connect_timeout_s: float = 5.0
    http_total_timeout_s: float = 30.0
    max_in_flight_per_pixel: int = 4
    shutdown_timeout_s: float = 30.0
    # How long the group waits for a silent (crashed) worker before its partitions move.
    session_timeout_s: float = 30.0
    # How often clicks past the attribution window are deleted from the local store.
    sweep_interval_s: float = 3600.0
    # The [events] table: source event name -> TikTok name(s); merged over the defaults.
    event_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # None: where the input shape's preset says the click ID is.
    click_id_paths: tuple[str, ...] | None = None
    # The shape of TTBRIDGE_TOPIC_EVENTS: a preset (app/mapping/presets) and/or a mapping file of
    # one's own (app/mapping/spec.py), when [[inputs]] does not list the input topics.
    preset: str | None = None
    mapping_file: str | None = None
    # [[inputs]]: several input topics, each with its shape. Empty: TTBRIDGE_TOPIC_EVENTS alone.
    inputs: tuple[Input, ...] = ()
    # Passed to the mapping (MappingConfig): sent on every event unless the event says otherwise.
    limited_data_use: bool | None = None
    content_type: str | None = None
    # False leaves page url/referrer out of what is sent (they can carry PII in query strings).
    send_page_url: bool = True
    # What a dead letter keeps of an input that never mapped: "raw" (replayable) or "hashed"
    # (PII fields hashed; not replayable as input). app.job.records.hash_original.
    dlq_original: str = "raw"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # Every topic ttbridge or faust creates (app/job/topics.py): copies of each partition, and
    # how many must have a write before it is acknowledged (None: the broker's default).
    replication_factor: int = 1
    min_insync_replicas: int | None = None

    def __post_init__(self) -> None:
        if not self.broker_urls:
            raise SettingsError("KAFKA_BOOTSTRAP_SERVERS: expected comma-separated host:port, "
                                f"got {self.bootstrap_servers!r}")
        if not self.api_url.startswith(("http://", "https://")):
            raise SettingsError(f"TIKTOK_API_URL: expected an http(s) URL, got {self.api_url!r}")
        seen: dict[str, str] = {}
        for var, attr in _TOPIC_VARS.items():
            topic = getattr(self, attr)
            if not _TOPIC_NAME.fullmatch(topic):
                raise SettingsError(f"{var}: expected a Kafka topic name (at most 249 letters, digits, "
                                    f"'.', '_' or '-'), got {topic!r}")
            if topic in seen:  # one topic in two roles would mix clicks, events, retries, dead letters
                raise SettingsError(f"{var}: {topic!r} is already {seen[topic]}")
            seen[topic] = var
        for i, input_ in enumerate(self.inputs, 1):
            if input_.topic in seen and input_.topic != self.topic_events:
                raise SettingsError(f"TTBRIDGE_CONFIG [[inputs]] #{i}.topic: {input_.topic!r} is already "
                                    f"{seen[input_.topic]}")
        if not _TOPIC_NAME.fullmatch(self.app_id):
            raise SettingsError("TTBRIDGE_APP_ID: expected letters, digits, '.', '_' or '-' (it "
                                f"prefixes topic names), got {self.app_id!r}")
        if not 1 <= self.web_port <= 65535:
            raise SettingsError(f"TTBRIDGE_WEB_PORT: expected a port 1-65535, got {self.web_port}")
        if not re.fullmatch(r"[A-Za-z0-9.:_-]+", self.web_host):
            raise SettingsError(f"TTBRIDGE_WEB_HOST: expected an IP address or host name, got {self.web_host!r}")
        # Kafka keeps a replication factor in 16 bits.
        if not 1 <= self.replication_factor <= 32767:
            raise SettingsError("TTBRIDGE_REPLICATION_FACTOR: expected an integer 1-32767, got "
                                f"{self.replication_factor}")
        isr = self.min_insync_replicas
        if isr is not None and not 1 <= isr <= self.replication_factor:
            # More than the copies there are: every write with acks=all would be refused.
            raise SettingsError(f"TTBRIDGE_MIN_INSYNC_REPLICAS: expected 1 to TTBRIDGE_REPLICATION_FACTOR "
                                f"({self.replication_factor}), got {isr}")

        def wrong(name: str, expected: str) -> SettingsError:
            value = getattr(self, name)
            shown = list(value) if isinstance(value, tuple) else value  # as the file writes it
            return SettingsError(f"{_TTBRIDGE_WHERE}.{name}: expected {expected}, got {shown!r}")

        # partitions: the join's topics need one; max_in_flight_per_pixel = 0 would never send.
        for name in ("partitions", "max_in_flight_per_pixel"):
            if not getattr(self, name) >= 1:
                raise wrong(name, "an integer >= 1")
        # 0 is meaningful here: send each batch at once, don't wait for a late click.
        for name in ("batch_window_s", "join_wait_s"):
            if not getattr(self, name) >= 0:
                raise wrong(name, "a number >= 0")
        # 0 has no use: every event too old, every request timed out, no time to shut down, a
        # group that never holds, a sweep that never stops.
        for name in ("max_event_age_days", "http_connect_timeout_s", "http_total_timeout_s",
                     "shutdown_timeout_s", "session_timeout_s", "sweep_interval_s"):
            if not getattr(self, name) > 0:
                raise wrong(name, "a number > 0")
        if not 0 < self.attribution_window_days <= 28:
            raise wrong("attribution_window_days", "more than 0 and at most 28 (TikTok's limit)")
        if not 1 <= self.batch_max <= 1000:
            raise wrong("batch_max", "1-1000 (TikTok's limit)")
        if not 1024 <= self.max_message_bytes <= MAX_MESSAGE_BYTES:
            raise wrong("max_message_bytes", f"1024-{MAX_MESSAGE_BYTES} (a dead letter holding the "
                                             "message must fit in one Kafka record)")
        if self.dlq_original not in ("raw", "hashed"):
            raise wrong("dlq_original", '"raw" or "hashed"')
        if not self.retry_tiers_s or not all(t >= 0 for t in self.retry_tiers_s):
            raise wrong("retry_tiers_s", "a non-empty list of delays >= 0 seconds")
        if self.routing.default and self.routing.default not in self.pixels:
            raise SettingsError(f"TTBRIDGE_CONFIG [routing].default: pixel {self.routing.default!r} "
                                f"is not configured ({_configured(self.pixels)})")
        for value, code in self.routing.rules.items():
            if code not in self.pixels:
                raise SettingsError(f"TTBRIDGE_CONFIG [routing.rules].{value!r}: pixel {code!r} is "
                                    f"not configured ({_configured(self.pixels)})")

    @property
    def track_url(self) -> str:
        from app.tiktok.facts import TRACK_PATH
        return self.api_url.rstrip("/") + TRACK_PATH

    @property
    def broker_urls(self) -> list[str]:
        return ["kafka://" + hp.strip() for hp in self.bootstrap_servers.split(",") if hp.strip()]


def _configured(pixels: Mapping[str, Pixel]) -> str:
    return "configured: " + ", ".join(map(repr, pixels)) if pixels else "no pixel is configured"


_ENV_FIELDS = {
    "KAFKA_BOOTSTRAP_SERVERS": "bootstrap_servers",
    "TIKTOK_API_URL": "api_url",
    "TTBRIDGE_CONFIG": "config_path",
    "TTBRIDGE_TOPIC_CLICKS": "topic_clicks",
    "TTBRIDGE_TOPIC_EVENTS": "topic_events",
    "TTBRIDGE_TOPIC_RETRY": "topic_retry",
    "TTBRIDGE_TOPIC_DLQ": "topic_dlq",
    "TTBRIDGE_APP_ID": "app_id",
    "TTBRIDGE_DATA_DIR": "data_dir",
    "TTBRIDGE_WEB_HOST": "web_host",
}
_TOPIC_VARS = {var: attr for var, attr in _ENV_FIELDS.items() if attr.startswith("topic_")}

# Every TTBRIDGE_* variable ttbridge reads, here or elsewhere. load() refuses any other: a
# misspelled one would otherwise be ignored and its default used without a word.
_KNOWN_ENV = frozenset({
    "TTBRIDGE_CONFIG", "TTBRIDGE_TOPIC_CLICKS", "TTBRIDGE_TOPIC_EVENTS", "TTBRIDGE_TOPIC_RETRY",
    "TTBRIDGE_TOPIC_DLQ", "TTBRIDGE_APP_ID", "TTBRIDGE_DATA_DIR", "TTBRIDGE_WEB_PORT",
    "TTBRIDGE_WEB_HOST", "TTBRIDGE_REPLICATION_FACTOR", "TTBRIDGE_MIN_INSYNC_REPLICAS",
    "TTBRIDGE_TOPICS_DIR",  # app/job/topics.py: where the topic specs are
    "TTBRIDGE_CACHE_DIR",   # app/devtools/kafka_local.py: where the local Kafka is downloaded
})


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (default: os.environ) and the TOML file it names.

    `overrides` win over both; tests use them to shorten windows and delays.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, attr in _ENV_FIELDS.items():
        if env.get(name):
            values[attr] = env[name].strip()
    if env.get("TTBRIDGE_WEB_PORT"):
        values["web_port"] = _int(env["TTBRIDGE_WEB_PORT"], "TTBRIDGE_WEB_PORT")
    for name, attr in (("TTBRIDGE_REPLICATION_FACTOR", "replication_factor"),
                       ("TTBRIDGE_MIN_INSYNC_REPLICAS", "min_insync_replicas")):
        if env.get(name, "").strip():
            values[attr] = _int(env[name].strip(), name)

    toml = _read_toml(values.get("config_path"))
    values.update(_from_toml(toml))
    # After the file: a token_env in TTBRIDGE_* gets its own, clearer line from _from_toml.
    _known_variables(env)
    pixels: dict[str, Pixel] = dict(values.pop("pixels", {}))
    token = env.get("TIKTOK_ACCESS_TOKEN", "").strip()
    pixel_code = env.get("TIKTOK_PIXEL_CODE", "").strip()
    if pixel_code:
        if not token:
            raise SettingsError("TIKTOK_ACCESS_TOKEN: required when TIKTOK_PIXEL_CODE is set")
        pixels[pixel_code] = Pixel(pixel_code, Secret(token), "web",
                                   env.get("TIKTOK_TEST_EVENT_CODE", "").strip() or None)
    values["pixels"] = pixels
    routing = values.get("routing") or Routing()
    if routing.default is None and len(pixels) == 1:
        routing = Routing(routing.path, routing.rules, next(iter(pixels)))
    values["routing"] = routing
    values["kafka_security"] = _kafka_security(env)
    values.update(overrides)
    settings = Settings(**values)
    mapping_configs(settings)  # a wrong mapping value fails here, at start-up, not in the worker
    return settings


_KAFKA_SECURITY_ENV = {
    "KAFKA_SASL_USERNAME": "sasl_username", "KAFKA_SSL_CAFILE": "ssl_cafile",
    "KAFKA_SSL_CERTFILE": "ssl_certfile", "KAFKA_SSL_KEYFILE": "ssl_keyfile",
}


def _kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    values: dict[str, Any] = {attr: env[var].strip() for var, attr in _KAFKA_SECURITY_ENV.items()
                              if env.get(var, "").strip()}
    # Kafka's own clients read protocol and mechanism names in any case; so do we.
    for var, attr in (("KAFKA_SECURITY_PROTOCOL", "protocol"), ("KAFKA_SASL_MECHANISM", "sasl_mechanism")):
        if env.get(var, "").strip():
            values[attr] = env[var].strip().upper()
    for var, attr in (("KAFKA_SASL_PASSWORD", "sasl_password"), ("KAFKA_SSL_KEY_PASSWORD", "ssl_key_password")):
        # Only a line ending is cut (a secret file written by `echo` has one); a password may
        # well begin or end with a space.
        if env.get(var, "").rstrip("\r\n"):
            values[attr] = Secret(env[var].rstrip("\r\n"))
    raw = env.get("KAFKA_SSL_CHECK_HOSTNAME", "").strip()
    if raw:
        if raw.lower() not in ("true", "false"):
            raise SettingsError(f"KAFKA_SSL_CHECK_HOSTNAME: expected true or false, got {raw!r}")
        values["ssl_check_hostname"] = raw.lower() == "true"
    return KafkaSecurity(**values)


def _known_variables(env: Mapping[str, str]) -> None:
    for name in sorted(env):
        if name.startswith("TTBRIDGE_") and name not in _KNOWN_ENV:
            # Compared without the prefix all share, which alone would make every name "close".
            hint = _hint(name.removeprefix("TTBRIDGE_"),
                         [n.removeprefix("TTBRIDGE_") for n in _KNOWN_ENV], "TTBRIDGE_".__add__)
            raise SettingsError(f"{name}: unknown variable ({hint})")


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None


def _hint(key: str, known: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """The known name closest to a misspelled `key`, else all of them."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"did you mean {show(close[0])}?"
    return "known: " + ", ".join(map(show, sorted(known)))


def _read_toml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"TTBRIDGE_CONFIG: file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"TTBRIDGE_CONFIG: {path!r} is not valid TOML: {e}") from None


# [ttbridge] values: each key is a Settings field; its function checks the type and converts.
# Ranges are checked in Settings.__post_init__, mapping values by MappingConfig (see load()).

def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{where}: expected an integer, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{where}: expected true or false, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where}: expected a string, got {value!r}")
    return value


def _dlq_original(value: Any, where: str) -> str:
    if value not in ("raw", "hashed"):
        raise SettingsError(f"{where}: expected \"raw\" or \"hashed\", got {value!r}")
    return value


def _delays(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(not isinstance(v, bool) and isinstance(v, (int, float))
                                              and math.isfinite(v) for v in value):
        raise SettingsError(f"{where}: expected a list of seconds, got {value!r}")
    return tuple(float(v) for v in value)


def _dotted_paths(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where}: expected a list of dotted paths, got {value!r}")
    return tuple(value)


def _region(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) != 2:
        raise SettingsError(f"{where}: expected a two-letter region such as \"GB\", got {value!r}")
    return value.upper()


def _preset(value: Any, where: str) -> str:
    from app.mapping.spec import PRESETS

    if value not in PRESETS:
        raise SettingsError(f"{where}: {value!r} is not a preset ({_hint(str(value), PRESETS, repr)})")
    return value


_TTBRIDGE_KEYS: dict[str, Callable[[Any, str], Any]] = {
    "partitions": _integer, "batch_window_s": _number, "batch_max": _integer,
    "join_wait_s": _number, "attribution_window_days": _number, "max_event_age_days": _number,
    "max_future_s": _number,
    "max_message_bytes": _integer, "default_region": _region, "retry_tiers_s": _delays,
    "http_connect_timeout_s": _number, "http_total_timeout_s": _number,
    "max_in_flight_per_pixel": _integer, "shutdown_timeout_s": _number,
    "session_timeout_s": _number, "sweep_interval_s": _number, "click_id_paths": _dotted_paths,
    "limited_data_use": _flag, "content_type": _text, "send_page_url": _flag,
    "dlq_original": _dlq_original,
    "preset": _preset, "mapping_file": _text,
}
_TABLES = {"ttbridge": "[ttbridge]", "pixels": "[[pixels]]", "routing": "[routing]", "events": "[events]",
           "inputs": "[[inputs]]"}
_INPUT_KEYS = ("topic", "preset", "mapping_file")
_PIXEL_KEYS = ("code", "token_env", "event_source", "test_event_code")
_ROUTING_KEYS = ("path", "rules", "default")


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise SettingsError(f"TTBRIDGE_CONFIG {_TABLES[name]}: expected a table, got {value!r}")
    return value


def _known_keys(table: dict[str, Any], known: Iterable[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise SettingsError(f"{where}.{key}: unknown key ({_hint(key, known)})")


def _from_toml(doc: dict[str, Any]) -> dict[str, Any]:
    """The TOML file's tables → Settings fields. Unknown keys are errors, not silently ignored."""
    out: dict[str, Any] = {}
    for key in doc:
        if key in _TTBRIDGE_KEYS:  # written above the [ttbridge] header, or without one
            raise SettingsError(f"TTBRIDGE_CONFIG: {key!r} is outside any table "
                                "(it belongs in [ttbridge])")
        if key not in _TABLES:
            raise SettingsError(f"TTBRIDGE_CONFIG: unknown table {key!r} "
                                f"({_hint(key, _TABLES, _TABLES.get)})")
    ttbridge = _table(doc, "ttbridge")
    _known_keys(ttbridge, _TTBRIDGE_KEYS, _TTBRIDGE_WHERE)
    for key, value in ttbridge.items():
        out[key] = _TTBRIDGE_KEYS[key](value, f"{_TTBRIDGE_WHERE}.{key}")
    entries = doc.get("pixels", [])
    if not isinstance(entries, list) or not all(isinstance(p, dict) for p in entries):
        raise SettingsError("TTBRIDGE_CONFIG [[pixels]]: expected an array of tables, one "
                            "[[pixels]] per pixel")
    pixels: dict[str, Pixel] = {}
    for i, p in enumerate(entries, 1):
        where = f"TTBRIDGE_CONFIG [[pixels]] #{i}"
        _known_keys(p, _PIXEL_KEYS, where)
        code, token_env = p.get("code"), p.get("token_env")
        if not isinstance(code, str) or not code:
            raise SettingsError(f"{where}.code: required, the pixel code")
        if code in pixels:
            raise SettingsError(f"{where}.code: pixel {code!r} is configured twice")
        # Tokens come from the environment, named here, so the file can be committed.
        if not isinstance(token_env, str) or not token_env:
            raise SettingsError(f"{where}.token_env: required, the environment variable holding "
                                "the pixel's token")
        if token_env.startswith("TTBRIDGE_"):  # load() refuses TTBRIDGE_* names it does not know
            raise SettingsError(f"{where}.token_env: {token_env!r} is in ttbridge's own namespace; "
                                "name the token's variable otherwise, e.g. TIKTOK_TOKEN_SHOP_A")
        if not os.environ.get(token_env, "").strip():
            raise SettingsError(f"{where}.token_env: environment variable {token_env} is not set")
        source = p.get("event_source", "web")
        if source not in ("web", "app", "offline", "crm"):
            raise SettingsError(f"{where}.event_source: expected web, app, offline or crm, "
                                f"got {source!r}")
        test_code = p.get("test_event_code")
        if test_code is not None:
            _text(test_code, f"{where}.test_event_code")
        pixels[code] = Pixel(code, Secret(os.environ[token_env].strip()), source, test_code)
    if pixels:
        out["pixels"] = pixels
    if "routing" in doc:
        out["routing"] = _routing(_table(doc, "routing"))
    if "inputs" in doc:
        out["inputs"] = _inputs(doc["inputs"])
        for key in ("preset", "mapping_file", "click_id_paths"):
            if key in ttbridge:
                raise SettingsError(f"{_TTBRIDGE_WHERE}.{key}: with [[inputs]], say it per input")
        if "events" in doc:
            raise SettingsError("TTBRIDGE_CONFIG [events]: with [[inputs]], each input's mapping_file "
                                "holds its [events]")
    if "events" in doc:
        events = {}
        for name, target in _table(doc, "events").items():
            names = [target] if isinstance(target, str) else target
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise SettingsError(f"TTBRIDGE_CONFIG [events].{name!r}: expected a TikTok event "
                                    f"name or a list of them, got {target!r}")
            events[name] = tuple(names)
        out["event_map"] = events
    return out


def _inputs(entries: Any) -> tuple[Input, ...]:
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SettingsError("TTBRIDGE_CONFIG [[inputs]]: expected an array of tables, one [[inputs]] "
                            "per input topic")
    out: list[Input] = []
    for i, e in enumerate(entries, 1):
        where = f"TTBRIDGE_CONFIG [[inputs]] #{i}"
        _known_keys(e, _INPUT_KEYS, where)
        topic = e.get("topic")
        if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic):
            raise SettingsError(f"{where}.topic: required, a Kafka topic name, got {topic!r}")
        if any(other.topic == topic for other in out):
            raise SettingsError(f"{where}.topic: {topic!r} is listed twice")
        preset = _preset(e["preset"], f"{where}.preset") if "preset" in e else None
        mapping_file = e.get("mapping_file")
        if mapping_file is not None:
            _text(mapping_file, f"{where}.mapping_file")
        out.append(Input(topic, preset, mapping_file))
    return tuple(out)


def _routing(r: dict[str, Any]) -> Routing:
    where = "TTBRIDGE_CONFIG [routing]"
    _known_keys(r, _ROUTING_KEYS, where)
    path, rules, default = r.get("path"), r.get("rules", {}), r.get("default")
    if path is not None and (not isinstance(path, str) or not all(path.split("."))):
        raise SettingsError(f"{where}.path: expected a dotted path such as \"properties.site\", "
                            f"got {path!r}")
    if not isinstance(rules, dict):
        raise SettingsError(f"{where}.rules: expected a table of value = pixel code, got {rules!r}")
    for value, code in rules.items():
        if not isinstance(code, str):
            raise SettingsError(f"TTBRIDGE_CONFIG [routing.rules].{value!r}: expected a pixel "
                                f"code, got {code!r}")
    if rules and path is None:  # the rules would never be looked at
        raise SettingsError(f"{where}.rules: needs [routing].path, the event field whose value "
                            "picks a rule")
    if default is not None and not isinstance(default, str):
        raise SettingsError(f"{where}.default: expected a pixel code, got {default!r}")
    return Routing(path, dict(rules), default)


# MappingConfig names its settings like the [ttbridge] keys, except the event map.
_MAPPING_WHERE = {"events": "[events]"}


def input_topics(settings: Settings) -> tuple[Input, ...]:
    """The input topics and their shapes: [[inputs]], or TTBRIDGE_TOPIC_EVENTS alone."""
    return settings.inputs or (Input(settings.topic_events, settings.preset, settings.mapping_file),)


def mapping_configs(settings: Settings) -> dict[str, MappingConfig]:
    """Input topic -> the mapping that reads it (validated: SettingsError naming the key)."""
    return {i.topic: _mapping_for(settings, i) for i in input_topics(settings)}


def mapping_config(settings: Settings) -> MappingConfig:
    """The mapping of the first input topic (TTBRIDGE_TOPIC_EVENTS unless [[inputs]] says)."""
    return _mapping_for(settings, input_topics(settings)[0])


def _mapping_for(settings: Settings, input_: Input) -> MappingConfig:
    from app.mapping.config import MappingConfig
    from app.mapping.spec import SpecError, load_preset, merge, resolve

    spec = load_preset(input_.preset or "segment")
    if input_.mapping_file:
        where = f"TTBRIDGE_CONFIG mapping_file {input_.mapping_file}"
        try:
            with open(input_.mapping_file, "rb") as f:
                own = tomllib.load(f)
        except OSError as e:
            raise SettingsError(f"{where}: cannot read it ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{where}: not valid TOML ({e})") from None
        try:
            if "extends" in own and input_.preset is not None:
                raise SpecError(f"extends: the input already names preset {input_.preset!r}; say it once")
            # Over the input's preset, over the one it extends, or on its own.
            spec = merge(spec, own) if input_.preset is not None else resolve(own)
        except SpecError as e:
            raise SettingsError(f"{where}: {e}") from None
    doc: dict[str, Any] = {"spec": spec,
                           "attribution_window_s": settings.attribution_window_days * 86400,
                           "max_event_age_s": settings.max_event_age_days * 86400,
                           "max_future_s": settings.max_future_s,
                           "limited_data_use": settings.limited_data_use,
                           "content_type": settings.content_type,
                           "send_page_url": settings.send_page_url}
    if settings.click_id_paths is not None:
        doc["click_id_paths"] = list(settings.click_id_paths)
    if settings.default_region:
        doc["default_region"] = settings.default_region
    if settings.event_map:
        doc["events"] = {k: list(v) for k, v in settings.event_map.items()}
    try:
        return MappingConfig.from_dict(doc)
    except ValueError as e:
        key, _, why = str(e).partition(": ")
        table, dot, name = key.partition(".")
        if input_.mapping_file and key not in _TTBRIDGE_KEYS and not (table == "events" and settings.event_map):
            raise SettingsError(f"TTBRIDGE_CONFIG mapping_file {input_.mapping_file}: {e}") from None
        if input_.preset not in (None, "segment") and key not in _TTBRIDGE_KEYS and table != "events":
            raise SettingsError(f"preset {input_.preset}: {e}") from None  # a bug in a shipped preset
        where = f"[{table}].{name}" if dot and table == "events" else _MAPPING_WHERE.get(key, f"[ttbridge].{key}")
        raise SettingsError(f"TTBRIDGE_CONFIG {where}: {why}") from None
