"""Settings: environment variables (deployment) plus one optional TOML file (pixels, routing,
event mapping, windows). Loaded once at start-up and validated; a wrong value raises
SettingsError with one line naming the variable and what is expected.

faust reads env names like BROKER_URL and WEB_PORT itself and lets them override code, so every
setting of ours lives under our own names (DESIGN.md's contract table).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from app.mapping.config import MappingConfig

__all__ = ["Secret", "Pixel", "Routing", "Settings", "SettingsError", "load", "mapping_config"]


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
    """One destination: a pixel (web) or event set (offline/crm) with its own token."""

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


# Inputs above this cannot travel whole in a dead-letter record under Kafka's default 1 MiB limit.
MAX_MESSAGE_BYTES = 512 * 1024


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
    # From the TOML file's [ttbridge] table (documented in README.md).
    partitions: int = 6
    batch_window_s: float = 1.0
    batch_max: int = 1000
    join_wait_s: float = 60.0
    attribution_window_days: float = 7.0
    max_event_age_days: float = 7.0
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
    click_id_paths: tuple[str, ...] = ("properties.click_id", "context.click_id")

    def __post_init__(self) -> None:
        if not 1 <= self.web_port <= 65535:
            raise SettingsError(f"TTBRIDGE_WEB_PORT: expected a port 1-65535, got {self.web_port}")
        if not 0 < self.attribution_window_days <= 28:
            raise SettingsError("attribution_window_days: expected more than 0 and at most 28 "
                                f"(TikTok's limit), got {self.attribution_window_days}")
        if not 1 <= self.batch_max <= 1000:
            raise SettingsError(f"batch_max: expected 1-1000 (TikTok's limit), got {self.batch_max}")
        for name in ("batch_window_s", "join_wait_s", "max_event_age_days", "shutdown_timeout_s",
                     "http_connect_timeout_s", "http_total_timeout_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name}: expected a number >= 0, got {getattr(self, name)}")
        if not 1024 <= self.max_message_bytes <= MAX_MESSAGE_BYTES:
            raise SettingsError(f"max_message_bytes: expected 1024-{MAX_MESSAGE_BYTES} (a dead letter "
                                f"holding the message must fit in one Kafka record), got {self.max_message_bytes}")
        if not self.retry_tiers_s or any(t < 0 for t in self.retry_tiers_s):
            raise SettingsError("retry_tiers_s: expected a non-empty list of delays >= 0 seconds")
        if self.routing.default and self.routing.default not in self.pixels:
            raise SettingsError(f"routing.default: pixel {self.routing.default!r} is not configured")
        for value, code in self.routing.rules.items():
            if code not in self.pixels:
                raise SettingsError(f"routing.rules.{value}: pixel {code!r} is not configured")

    @property
    def track_url(self) -> str:
        from app.tiktok.facts import TRACK_PATH
        return self.api_url.rstrip("/") + TRACK_PATH

    @property
    def broker_urls(self) -> list[str]:
        return ["kafka://" + hp.strip() for hp in self.bootstrap_servers.split(",") if hp.strip()]


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
}

_TOML_NUMBERS = {
    "partitions": int, "batch_window_s": float, "batch_max": int, "join_wait_s": float,
    "attribution_window_days": float, "max_event_age_days": float, "max_message_bytes": int,
    "http_connect_timeout_s": float, "http_total_timeout_s": float,
    "max_in_flight_per_pixel": int, "shutdown_timeout_s": float, "session_timeout_s": float,
    "sweep_interval_s": float,
}


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
    if "api_url" in values and not values["api_url"].startswith(("http://", "https://")):
        raise SettingsError(f"TIKTOK_API_URL: expected an http(s) URL, got {values['api_url']!r}")

    toml = _read_toml(values.get("config_path"))
    values.update(_from_toml(toml))
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
    values.update(overrides)
    return Settings(**values)


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None


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


def _from_toml(doc: dict[str, Any]) -> dict[str, Any]:
    """The TOML file's tables → Settings fields. Unknown keys are errors, not silently ignored."""
    out: dict[str, Any] = {}
    known = {"ttbridge", "pixels", "routing", "events"}
    for key in doc:
        if key not in known:
            raise SettingsError(f"TTBRIDGE_CONFIG: unknown table [{key}] (expected one of {sorted(known)})")
    for key, value in doc.get("ttbridge", {}).items():
        where = f"TTBRIDGE_CONFIG [ttbridge].{key}"
        if key in _TOML_NUMBERS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(f"{where}: expected a number, got {value!r}")
            out[key] = _TOML_NUMBERS[key](value)
        elif key == "retry_tiers_s":
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
                raise SettingsError(f"{where}: expected a list of seconds, got {value!r}")
            out[key] = tuple(float(v) for v in value)
        elif key == "click_id_paths":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"{where}: expected a list of dotted paths, got {value!r}")
            out[key] = tuple(value)
        elif key == "default_region":
            if not isinstance(value, str) or len(value) != 2:
                raise SettingsError(f"{where}: expected a two-letter region such as \"GB\", got {value!r}")
            out[key] = value.upper()
        else:
            raise SettingsError(f"{where}: unknown setting")
    pixels = {}
    for i, p in enumerate(doc.get("pixels", [])):
        where = f"TTBRIDGE_CONFIG [[pixels]] #{i + 1}"
        code, token_env = p.get("code"), p.get("token_env")
        if not isinstance(code, str) or not code:
            raise SettingsError(f"{where}: 'code' (the pixel code) is required")
        # Tokens come from the environment, named here, so the file can be committed.
        if not isinstance(token_env, str) or not os.environ.get(token_env, "").strip():
            raise SettingsError(f"{where}: 'token_env' must name a set environment variable holding the token")
        source = p.get("event_source", "web")
        if source not in ("web", "app", "offline", "crm"):
            raise SettingsError(f"{where}: event_source must be web, app, offline or crm, got {source!r}")
        pixels[code] = Pixel(code, Secret(os.environ[token_env].strip()), source, p.get("test_event_code"))
    if pixels:
        out["pixels"] = pixels
    if "routing" in doc:
        r = doc["routing"]
        out["routing"] = Routing(r.get("path"), dict(r.get("rules", {})), r.get("default"))
    if "events" in doc:
        events = {}
        for name, target in doc["events"].items():
            names = (target,) if isinstance(target, str) else tuple(target)
            if not all(isinstance(n, str) for n in names):
                raise SettingsError(f"TTBRIDGE_CONFIG [events].{name!r}: expected a TikTok event name or a list of them")
            events[name] = names
        out["event_map"] = events
    return out


def mapping_config(settings: Settings) -> MappingConfig:
    """The mapping's configuration from the settings (validated: SettingsError naming the key)."""
    from app.mapping.config import MappingConfig

    doc = {"click_id_paths": list(settings.click_id_paths),
           "attribution_window_s": settings.attribution_window_days * 86400,
           "max_event_age_s": settings.max_event_age_days * 86400}
    if settings.default_region:
        doc["default_region"] = settings.default_region
    if settings.event_map:
        doc["events"] = {k: list(v) for k, v in settings.event_map.items()}
    try:
        return MappingConfig.from_dict(doc)
    except ValueError as e:
        raise SettingsError(f"TTBRIDGE_CONFIG {e}") from None
