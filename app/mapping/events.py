"""One Segment-spec event + its recorded click -> TikTok Events API `data[]` items.

Pure and synchronous: no I/O, no clock (the caller passes `now`), no logging. Everything TikTok
would reject with 40002 (one bad event fails the whole batch) is refused here with a `Refusal`
carrying a machine-readable reason, so a refused event is dead-lettered alone, before sending.

Field sources are data (the tables below); code is kept for what a table can't say: precedence
between event and click, the attribution window, and derived fields (event_id, num_items).
The configuration (MappingConfig, DEFAULT_EVENT_MAP, the hashed user fields it binds to a
region) lives in app.mapping.config; MappingConfig and DEFAULT_EVENT_MAP are re-exported here.
"""
from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import orjson

from app.mapping.config import DAY_S, DEFAULT_EVENT_MAP, MappingConfig, is_seconds
from app.tiktok.facts import CONTENT_TYPES, CURRENCIES

__all__ = [
    "Refusal", "REASONS", "MappingConfig", "DEFAULT_EVENT_MAP", "tiktok_names", "click_id_of",
    "ttclid_from_url", "parse_timestamp", "map_event", "has_identifier",
]

REASONS = (
    "invalid_event",      # not a JSON object, or can't be serialised to derive an event_id
    "missing_event_name",  # a track event without `event`
    "invalid_event_name",  # `event` is not a string
    "missing_timestamp",  # neither `timestamp` nor `originalTimestamp`
    "invalid_timestamp",  # not ISO-8601/Unix time, before 2001 (1e9) or more than a day after now
    "stale_event",        # older than MappingConfig.max_event_age_s
    "invalid_value",      # properties.value/revenue/total not a number >= 0
    "invalid_currency",   # properties.currency not in TikTok's ISO-4217 list
    "invalid_price",      # a product's price not a number >= 0
    "invalid_quantity",   # a product's quantity not a number >= 0
    "invalid_num_items",  # properties.num_items not an integer >= 0
    "invalid_contents",   # products/contents not a list of objects, or a content_id/name not text
    "invalid_field",      # any other wrong type where TikTok wants a string or an object
)


class Refusal(Exception):
    """The event can never be sent as it is: dead-letter it with `reason`; retrying can't help."""

    retriable = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# event_time is Unix seconds: before 2001-09 (1e9) is a unit bug, more than a day ahead is a wrong
# clock or microseconds. The fake Events API draws the same lines.
_MIN_EVENT_TIME = 1e9
_MAX_FUTURE_S = DAY_S
# Above 2**53 a JSON number loses integer precision (and orjson can't write ints past 64 bits).
_MAX_NUMBER = 2.0 ** 53
_NUMERIC = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HTTP = ("http://", "https://")


def _get(obj: Any, keys: tuple[str, ...]) -> Any:
    # ~30 paths per event: one attribute lookup per level, no isinstance. Of the JSON types only
    # an object has .get; a string, list or number on the way means nothing is there.
    for key in keys:
        try:
            obj = obj.get(key)
        except AttributeError:
            return None
    return obj


# --------------------------------------------------------------------------- value converters
# Each returns the TikTok value, None when the source is empty, or raises ValueError saying why.

def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(v: Any) -> str | None:
    """A TikTok string field. Numbers become their plain form: TikTok refuses a numeric
    content_id or order_id with 40002 ("Not a valid string") and fails the whole batch."""
    if isinstance(v, str):
        return v.strip() or None
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a string, got {_shown(v)}")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"expected a string, got {_shown(v)}")
        # JSON decoders may deliver the ID 1234 as 1234.0.
        return str(int(v)) if v.is_integer() and abs(v) < _MAX_NUMBER else repr(v)
    return str(v)


def _number(v: Any) -> int | float | None:
    """A TikTok number >= 0; numeric strings ("46.00") are converted."""
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        if not _NUMERIC.fullmatch(s):
            raise ValueError(f"expected a number, got {_shown(v)}")
        v = float(s) if any(c in s for c in ".eE") else int(s)
    elif v is None:
        return None
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {_shown(v)}")
    if (isinstance(v, float) and not math.isfinite(v)) or not 0 <= v < _MAX_NUMBER:
        raise ValueError(f"expected a number from 0 to 2**53, got {_shown(v)}")
    return v


def _count(v: Any) -> int | None:
    n = _number(v)
    if isinstance(n, float):
        if not n.is_integer():
            raise ValueError(f"expected a whole number, got {_shown(v)}")
        return int(n)
    return n


def _currency(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"expected a currency code, got {_shown(v)}")
    code = v.strip().upper()
    if code and code not in CURRENCIES:
        raise ValueError(f"{_shown(v)} is not an ISO-4217 code TikTok accepts")
    return code or None


def _http(v: Any) -> str | None:
    # TikTok fails an event whose page URL lacks the scheme; such a URL is left out, not refused.
    if isinstance(v, str):
        v = v.strip()
        if v.startswith(_HTTP):
            return v
    return None


# --------------------------------------------------------------------------- field tables
# (TikTok field, source keys in order of preference, converter, reason when the converter refuses)
Table = tuple[tuple[str, tuple[str, ...], Callable[[Any], Any], str], ...]

_PROPERTIES: Table = (
    ("value", ("value", "revenue", "total"), _number, "invalid_value"),
    ("currency", ("currency",), _currency, "invalid_currency"),
    ("num_items", ("num_items",), _count, "invalid_num_items"),
    ("order_id", ("order_id",), _text, "invalid_field"),
    ("shop_id", ("shop_id",), _text, "invalid_field"),
    ("description", ("description",), _text, "invalid_field"),
    ("search_string", ("query", "search_string"), _text, "invalid_field"),
)
# Segment product fields first, then the TikTok names for producers that already send `contents`.
_CONTENT: Table = (
    ("content_id", ("product_id", "sku", "id", "content_id"), _text, "invalid_contents"),
    ("content_name", ("name", "content_name"), _text, "invalid_contents"),
    ("content_category", ("category", "content_category"), _text, "invalid_contents"),
    ("brand", ("brand",), _text, "invalid_contents"),
    ("price", ("price",), _number, "invalid_price"),
    ("quantity", ("quantity",), _number, "invalid_quantity"),
)
# Single-product events (Product Viewed/Added) carry the product in `properties` itself, where an
# `id` could mean anything: only product_id/sku make it a product.
_SINGLE_PRODUCT: Table = (
    ("content_id", ("product_id", "sku"), _text, "invalid_contents"),) + _CONTENT[1:]

_TTCLID_PATHS = (("properties", "ttclid"), ("context", "ttclid"))
_TTP_PATHS = (("properties", "ttp"), ("context", "ttp"), ("context", "cookies", "_ttp"))
_PAGE_URL_PATHS = (("context", "page", "url"), ("properties", "url"))
_REFERRER_PATHS = (("context", "page", "referrer"), ("properties", "referrer"))
# An explicit event_id first: it is how a producer makes the server event match the browser pixel's
# (TikTok merges pixel and API events sharing pixel+event+event_id). messageId is per message.
_EVENT_ID_PATHS = (("properties", "event_id"), ("properties", "eventId"), ("messageId",))
_LDU_PATHS = (("properties", "limited_data_use"), ("context", "limited_data_use"))
_CONTENT_TYPE_KEYS = ("content_type", "contentType")
_IDENTIFIERS = ("ttclid", "ttp", "email", "phone", "external_id")


def _fill(out: dict, source: dict, table: Table, where: str) -> dict:
    for name, keys, convert, reason in table:
        for key in keys:
            v = source.get(key)
            if v is None:
                continue
            try:
                v = convert(v)
            except ValueError as e:
                raise Refusal(reason, f"{where}.{key}: {e}") from None
            if v is not None:
                out[name] = v
                break
    return out


def _click_text(click: dict, key: str) -> str | None:
    # The click is our own record, checked when it was indexed: a bad field in it is left out
    # rather than refusing a conversion that is fine.
    try:
        return _text(click.get(key))
    except ValueError:
        return None


def _text_at(root: Any, paths: tuple[tuple[str, ...], ...]) -> str | None:
    """The first non-empty string at `paths`; a wrong type there refuses (we'd send it verbatim)."""
    for keys in paths:
        v = _get(root, keys)
        if v is None:
            continue
        try:
            v = _text(v)
        except ValueError as e:
            raise Refusal("invalid_field", f"{'.'.join(keys)}: {e}") from None
        if v:
            return v
    return None


# --------------------------------------------------------------------------- public functions

def tiktok_names(event: dict, config: MappingConfig) -> tuple[str, ...]:
    """The TikTok names for the event's `event`; () when unmapped or not a track call."""
    if not isinstance(event, dict):
        raise Refusal("invalid_event", f"expected a JSON object, got {type(event).__name__}")
    kind = event.get("type")
    if kind is not None and kind != "track":
        if isinstance(kind, str):
            return ()  # page/identify/screen/group calls are not conversions
        raise Refusal("invalid_field", f"type: expected a string, got {_shown(kind)}")
    name = event.get("event")
    if name is None or isinstance(name, str) and not name.strip():
        raise Refusal("missing_event_name", "event: a track event needs an event name")
    if not isinstance(name, str):
        raise Refusal("invalid_event_name", f"event: expected a string, got {_shown(name)}")
    return config.tiktok_names(name)


def click_id_of(event: dict, config: MappingConfig) -> str | None:
    """The tracker's own click ID: the first non-empty value at config.click_id_paths."""
    for keys in config.click_paths:
        try:
            value = _text(_get(event, keys))
        except ValueError:
            continue  # an object where the ID should be is no click ID; the event joins nothing
        if value:
            return value
    return None


def ttclid_from_url(url: Any) -> str | None:
    """The `ttclid` query parameter TikTok appends to an ad's landing-page URL."""
    if not isinstance(url, str) or "ttclid=" not in url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    for key, value in parse_qsl(query):
        if key == "ttclid" and value.strip():
            return value.strip()
    return None


def parse_timestamp(value: Any, where: str = "timestamp") -> float:
    """ISO-8601 (naive = UTC) or Unix time (> 1e11 taken as milliseconds) -> Unix seconds."""
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            if not _NUMERIC.fullmatch(text):
                raise Refusal("invalid_timestamp", f"{where}: {_shown(value)} is not ISO-8601 "
                              "or Unix time") from None
            seconds = float(text)
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            try:
                return moment.timestamp()
            except (OverflowError, ValueError):
                raise Refusal("invalid_timestamp", f"{where}: {_shown(value)} is out of range") \
                    from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        raise Refusal("invalid_timestamp", f"{where}: expected ISO-8601 or Unix time, got "
                      f"{_shown(value)}")
    if not math.isfinite(seconds):
        raise Refusal("invalid_timestamp", f"{where}: {_shown(value)} is not a time")
    return seconds / 1000 if seconds > 1e11 else seconds


def has_identifier(item_or_user: dict) -> bool:
    """Whether TikTok can attribute the event: a ttclid, _ttp or hashed PII, or IP + user agent."""
    user = item_or_user.get("user") if "event" in item_or_user else item_or_user
    if not isinstance(user, dict):
        return False
    return any(user.get(k) for k in _IDENTIFIERS) or bool(user.get("ip") and user.get("user_agent"))


def map_event(event: dict, click: dict | None, config: MappingConfig, now: float) -> list[dict]:
    """The `data[]` items for one source event and its click (or None); [] when unmapped.

    Raises Refusal when TikTok would reject the event. A one-to-many mapping gives items that
    share their nested user/page/properties dicts: treat the items as read-only.
    """
    names = tiktok_names(event, config)
    if not names:
        return []
    for part in ("properties", "context"):
        if not isinstance(event.get(part) or {}, dict):
            raise Refusal("invalid_field", f"{part}: expected an object, got {_shown(event[part])}")
    props = event.get("properties") or {}
    event_time = _event_time(event, config, now)
    properties = _properties(props, config)
    common: dict[str, Any] = {
        "event_time": int(event_time),
        "event_id": _event_id(event, properties.get("order_id")),
    }
    user = _user(event, click, _click_counts(click, event_time, config), config)
    if user:
        common["user"] = user
    if config.send_page_url:
        page = _page(event, click)
        if page:
            common["page"] = page
    if properties:
        common["properties"] = properties
    ldu = next((v for v in (_get(event, p) for p in _LDU_PATHS) if isinstance(v, bool)),
               config.limited_data_use)
    if ldu is not None:
        common["limited_data_use"] = ldu
    return [{"event": name, **common} for name in names]


# --------------------------------------------------------------------------- map_event's parts

def _event_time(event: dict, config: MappingConfig, now: float) -> float:
    where = "timestamp"
    value = event.get(where)
    if value is None or value == "":
        where = "originalTimestamp"
        value = event.get(where)
    if value is None or value == "":
        raise Refusal("missing_timestamp", "timestamp: missing (and no originalTimestamp)")
    seconds = parse_timestamp(value, where)
    if not _MIN_EVENT_TIME <= seconds <= now + _MAX_FUTURE_S:
        raise Refusal("invalid_timestamp", f"{where}: {_shown(value)} is before 2001 or more than "
                      "a day in the future")
    if config.max_event_age_s is not None and now - seconds > config.max_event_age_s:
        raise Refusal("stale_event", f"{where}: {_shown(value)} is older than "
                      f"{config.max_event_age_s:g} s")
    return seconds


def _event_id(event: dict, order_id: str | None) -> str:
    # Deterministic, so a re-send after a crash is dropped by TikTok's 48 h dedup on
    # pixel+event+event_id.
    event_id = _text_at(event, _EVENT_ID_PATHS)
    if event_id:
        return event_id
    if order_id:
        return f"{order_id}:{event['event'].strip()}"
    try:
        blob = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:  # only a hand-built dict can hold what JSON can't
        raise Refusal("invalid_event", f"cannot derive an event_id: {e}") from None
    return hashlib.sha256(blob).hexdigest()


def _click_counts(click: dict | None, event_time: float, config: MappingConfig) -> bool:
    """Whether the click's ttclid/_ttp may be attributed: clicked at most the window before.

    A click recorded after the event (clock skew between tracker and shop) still counts. A click
    without a usable clicked_at can't be shown to be in the window, so it doesn't.
    """
    clicked_at = click.get("clicked_at") if click else None
    if not is_seconds(clicked_at):
        return False
    try:
        clicked_at = float(clicked_at)
    except OverflowError:
        return False
    return math.isfinite(clicked_at) and event_time - clicked_at <= config.attribution_window_s


def _user(event: dict, click: dict | None, click_counts: bool, config: MappingConfig) -> dict:
    user: dict[str, Any] = {}
    for name, hasher, paths in config.hashed_user:
        for keys in paths:
            value = _get(event, keys)
            if value is None:
                continue
            try:
                hashed = hasher(value)
            except TypeError:
                continue  # unusable like an unparseable phone: left out, the event still goes
            if hashed:
                user[name] = hashed
                break
    ttclid = _text_at(event, _TTCLID_PATHS)
    ttp = _text_at(event, _TTP_PATHS)
    if click_counts:
        ttclid = ttclid or _click_text(click, "ttclid") or ttclid_from_url(click.get("url"))
        ttp = ttp or _click_text(click, "ttp")
    if not ttclid:
        ttclid = next(filter(None, (ttclid_from_url(_get(event, p)) for p in _PAGE_URL_PATHS)),
                      None)
    ip = _text_at(event, (("context", "ip"),))
    user_agent = _text_at(event, (("context", "userAgent"),))
    if click:
        ip = ip or _click_text(click, "ip")
        user_agent = user_agent or _click_text(click, "user_agent")
    locale = _text_at(event, (("context", "locale"),))
    for name, value in (("ttclid", ttclid), ("ttp", ttp), ("ip", ip),
                        ("user_agent", user_agent), ("locale", locale)):
        if value:
            user[name] = value
    return user


def _page(event: dict, click: dict | None) -> dict:
    url = next(filter(None, (_http(_get(event, p)) for p in _PAGE_URL_PATHS)), None)
    referrer = next(filter(None, (_http(_get(event, p)) for p in _REFERRER_PATHS)), None)
    if url is None and referrer is None and click:
        # The landing page of the click, when the conversion (a server postback) has no page.
        url, referrer = _http(click.get("url")), _http(click.get("referrer"))
    page = {}
    if url:
        page["url"] = url
    if referrer:
        page["referrer"] = referrer
    return page


def _properties(props: dict, config: MappingConfig) -> dict:
    out = _fill({}, props, _PROPERTIES, "properties")
    contents = _contents(props)
    if contents:
        out["contents"] = contents
        quantities = [c["quantity"] for c in contents if "quantity" in c]
        total = sum(quantities)
        if quantities and "num_items" not in out and float(total).is_integer():
            out["num_items"] = int(total)
    content_type = next((v for v in map(props.get, _CONTENT_TYPE_KEYS)
                         if isinstance(v, str) and v in CONTENT_TYPES), config.content_type)
    if content_type:
        out["content_type"] = content_type
    return out


def _contents(props: dict) -> list[dict] | None:
    where = "properties.products"
    products = props.get("products")
    if products is None:
        where = "properties.contents"
        products = props.get("contents")
    if products is None:
        if props.get("product_id") in (None, "") and props.get("sku") in (None, ""):
            return None
        item = _fill({}, props, _SINGLE_PRODUCT, "properties")
        return [item] if item else None
    if isinstance(products, dict):
        products = [products]  # one product sent as an object rather than a list of one
    if not isinstance(products, list):
        raise Refusal("invalid_contents", f"{where}: expected a list of products, got "
                      f"{_shown(products)}")
    contents = []
    for i, product in enumerate(products):
        if not isinstance(product, dict):
            raise Refusal("invalid_contents", f"{where}[{i}]: expected an object, got "
                          f"{_shown(product)}")
        item = _fill({}, product, _CONTENT, f"{where}[{i}]")
        if item:
            contents.append(item)
    return contents
