"""One source event + its recorded click -> TikTok Events API `data[]` items.

Pure and synchronous: no I/O, no clock (the caller passes `now`), no logging. Everything TikTok
would reject with 40002 (one bad event fails the whole batch) is refused here with a `Refusal`
carrying a machine-readable reason, so a refused event is dead-lettered alone, before sending.

Where each field comes from is data: the input shape's compiled spec (config.plan, from
app.mapping.spec). Code is kept for what a spec doesn't say: precedence between the event and its
click, the attribution window, and derived fields (event_id, num_items, value).
"""
from __future__ import annotations

import hashlib
import math
import sys
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.mapping.compiled import compile_map
from app.mapping.config import DEFAULT_EVENT_MAP, MappingConfig, is_seconds
from app.mapping.spec import Field, Plan
from app.mapping.values import Refusal, cookie, get, parse_timestamp, shown, text, ttclid_from_url

__all__ = [
    "Refusal", "Skip", "REASONS", "events_of", "SKIP_REASONS", "MappingConfig", "DEFAULT_EVENT_MAP", "tiktok_names",
    "click_id_of", "test_event_code_of", "ttclid_from_url", "parse_timestamp", "map_event",
    "has_identifier", "skip_reason",
]

REASONS = (
    "invalid_event",      # not a JSON object, or can't be serialised to derive an event_id
    "missing_event_name",  # a conversion without a name where the spec says it is
    "invalid_event_name",  # the name is not a string
    "missing_timestamp",  # no time at any of the spec's timestamp paths
    "invalid_timestamp",  # not ISO-8601/Unix time, or before 2001 (1e9)
    "future_event",       # more than MappingConfig.max_future_s after now (clock skew allowed)
    "stale_event",        # older than MappingConfig.max_event_age_s
    "invalid_value",      # value not a number >= 0
    "invalid_currency",   # currency not in TikTok's ISO-4217 list
    "invalid_price",      # a product's price not a number >= 0
    "invalid_quantity",   # a product's quantity not a number >= 0
    "invalid_num_items",  # num_items not an integer >= 0
    "invalid_contents",   # products/contents not a list of objects, or a content_id/name not text
    "invalid_field",      # any other wrong type where TikTok wants a string or an object
    "unmapped_event",     # event.unmapped = "refuse" (redtrack): a name the [events] table lacks
)
SKIP_REASONS = (
    "unmapped",           # a conversion whose name is not in the spec's event table
    "not_a_conversion",   # a kind the spec does not forward (e.g. Segment page/identify calls)
    "no_user_identity",   # the spec forwards only events with an email, phone or external_id
    "excluded",           # with event.unmapped = "refuse": a name the [events] table maps to []
    "no_events",          # a batch (spec with event.batch) whose array is empty
)


class Skip(Exception):
    """The event is not sent, on purpose: counted with `reason`, never dead-lettered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# event_time is Unix seconds: before 2001-09 (1e9) is a unit bug. Ahead of now by more than the
# allowed clock skew (max_future_s) is a wrong clock or unit. The fake Events API draws the same lines.
_MIN_EVENT_TIME = 1e9
# An app event's advertising and vendor IDs identify its device (app.mapping.devices).
_IDENTIFIERS = ("ttclid", "ttp", "email", "phone", "external_id", "idfa", "gaid", "idfv")
_IDENTITY = ("email", "phone", "external_id")


def _dotted(keys: tuple[str, ...]) -> str:
    return ".".join(keys)


def _click_text(click: dict, key: str) -> str | None:
    # The click is our own record, checked when it was indexed: a bad field in it is left out
    # rather than refusing a conversion that is fine.
    try:
        return text(click.get(key))
    except ValueError:
        return None


# --------------------------------------------------------------------------- public functions

def events_of(doc: dict, config: MappingConfig) -> list[dict | Refusal]:
    """The events one message carries: itself, or for a spec with `batch` each element of that
    array as its own event (its keys, and the rest of the message under "batch"). An element
    that is not an object is a Refusal of its own: its neighbours go on."""
    path = config.plan.batch_path
    if path is None:
        return [doc]
    events = doc.get(path[0])
    if not isinstance(events, list):
        return [Refusal("missing_event_name" if events is None else "invalid_field",
                        f"{path[0]}: expected a list of events, got {shown(events)}")]
    batch = {k: v for k, v in doc.items() if k != path[0]}
    return [{**e, "batch": batch} if isinstance(e, dict) else
            Refusal("invalid_event", f"{path[0]}[{i}]: expected an object, got {shown(e)}")
            for i, e in enumerate(events)]


def tiktok_names(event: dict, config: MappingConfig) -> tuple[str, ...]:
    """The TikTok names for the event; () when unmapped or not a conversion (skip_reason says)."""
    if not isinstance(event, dict):
        raise Refusal("invalid_event", f"expected a JSON object, got {type(event).__name__}")
    plan = config.plan
    if plan.kind_path is not None and not _is_conversion(event, plan):
        return ()
    name = None
    for keys in plan.name_paths:
        name = get(event, keys)
        if name is not None and not (isinstance(name, str) and not name.strip()):
            break
    where = _dotted(keys)
    if (name is None or isinstance(name, str) and not name.strip()) and plan.name_default:
        name, where = plan.name_default, f"{where} (missing, read as {plan.name_default!r})"
    if name is None or isinstance(name, str) and not name.strip():
        raise Refusal("missing_event_name", f"{_dotted(plan.name_paths[0])}: the event has no name")
    if not isinstance(name, str):
        raise Refusal("invalid_event_name", f"{where}: expected a string, got {type(name).__name__}")
    names = config.tiktok_names(name)
    if not names and plan.refuse_unmapped and not config.listed(name):
        # A conversion the operator has not mapped yet: dead-lettered, so that a replay sends it
        # once the [events] table names it, rather than counted and gone.
        raise Refusal("unmapped_event", f"{where}: {shown(name)} is not in the [events] table "
                      "(map it to a TikTok event, or to [] to stop sending it)")
    return names


def _is_conversion(event: dict, plan: Plan) -> bool:
    kind = get(event, plan.kind_path)
    if kind is None:
        kind = plan.kind_default
    if isinstance(kind, str):
        return kind in plan.kinds
    if kind is None:
        return False
    raise Refusal("invalid_field", f"{_dotted(plan.kind_path)}: expected a string, got {shown(kind)}")


def skip_reason(event: dict, config: MappingConfig) -> str:
    """Why tiktok_names gave (): the event's kind is not forwarded, or its name is unmapped."""
    plan = config.plan
    if plan.kind_path is None or _is_conversion(event, plan):
        # Under unmapped = "refuse" an unlisted name was refused: () means the table said [].
        return "excluded" if plan.refuse_unmapped else "unmapped"
    return "not_a_conversion"


def click_id_of(event: dict, config: MappingConfig) -> str | None:
    """The tracker's own click ID: the first non-empty value at the spec's click ID paths."""
    for keys in config.plan.click_id_paths:
        try:
            value = text(get(event, keys))
        except ValueError:
            continue  # an object where the ID should be is no click ID; the event joins nothing
        if value:
            return value
    return None


def test_event_code_of(event: dict, config: MappingConfig) -> str | None:
    """The event's own test event code (it goes in the request, so such events batch apart)."""
    for keys in config.plan.test_event_code_paths:
        v = get(event, keys)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def dropped_identifiers(event: dict, user: dict, config: MappingConfig) -> list[str]:
    """The identities TikTok matches on (email, phone, external_id) that the event carries but
    its TikTok user lacks: a value normalisation could not use (a phone without country code and
    no default region, a blank email). Match quality's missed chances, for the metrics; three
    dict lookups when nothing was dropped."""
    if "email" in user and "phone" in user and "external_id" in user:
        return []
    out = []
    for f in config.plan.hashed_user:
        if f.name in user or f.name not in _IDENTITY or f.constant is not None:
            continue
        for keys in f.paths:
            if get(event, keys) not in (None, "", [], {}):
                out.append(f.name)
                break
    return out


def has_identifier(item_or_user: dict) -> bool:
    """Whether TikTok can attribute the event: a ttclid, _ttp, hashed PII, a device ID, IP + user
    agent, or (a CRM event) its TikTok lead ID."""
    user = item_or_user.get("user") if "event" in item_or_user else item_or_user
    lead = item_or_user.get("lead") if "event" in item_or_user else None
    if isinstance(lead, dict) and lead.get("lead_id"):
        return True
    if not isinstance(user, dict):
        return False
    for key in _IDENTIFIERS:  # a loop, not any(genexpr): once per event, and usually the first hits
        if user.get(key):
            return True
    return bool(user.get("ip") and user.get("user_agent"))


def map_event(event: dict, click: dict | None, config: MappingConfig, now: float) -> list[dict]:
    """The `data[]` items for one source event and its click (or None); [] when unmapped.

    Raises Refusal when TikTok would reject the event, Skip when the spec says not to send it.
    A one-to-many mapping gives items that share their nested user/page/properties dicts: treat
    the items as read-only.
    """
    fast = config._compiled
    if fast is None:
        fast = compile_map(config, sys.modules[__name__])
        object.__setattr__(config, "_compiled", fast)
    items = fast(event, click, now)
    return interpret(event, click, config, now) if items is None else items


def interpret(event: dict, click: dict | None, config: MappingConfig, now: float) -> list[dict]:
    """map_event as the spec's interpreter: the reference, and what runs wherever the compiled
    function (app.mapping.compiled) leaves an event to it — every Refusal and Skip is raised here."""
    names = tiktok_names(event, config)
    if not names:
        return []
    plan = config.plan
    for keys in plan.objects:
        part = get(event, keys)
        if part is not None and not isinstance(part, dict):
            raise Refusal("invalid_field", f"{_dotted(keys)}: expected an object, got {shown(part)}")
    event_time = _event_time(event, plan, config, now)
    user = _user(event, click, _click_counts(click, event_time, config), plan)
    if plan.require_identity and not any(user.get(k) for k in _IDENTITY):
        raise Skip("no_user_identity")
    properties = _properties(event, plan, config)
    common: dict[str, Any] = {
        "event_time": int(event_time),
        "event_id": _event_id(event, plan, properties.get("order_id")),
    }
    if user:
        common["user"] = user
    if config.send_page_url:
        page = _page(event, click, plan)
        if page:
            common["page"] = page
    if properties:
        common["properties"] = properties
    if plan.app:  # app events (an [app] table); which sources take it: app.mapping.sources
        app = plan.app.fill({}, event)
        if app:
            common["app"] = app
    if plan.lead:  # CRM events (a [lead] table)
        lead = plan.lead.fill({}, event)
        if lead:
            common["lead"] = lead
    ldu = next((v for v in (get(event, p) for p in plan.limited_data_use_paths) if isinstance(v, bool)),
               config.limited_data_use)
    if ldu is not None:
        common["limited_data_use"] = ldu
    return [{"event": name, **common} for name in names]


# --------------------------------------------------------------------------- map_event's parts

def _event_time(event: dict, plan: Plan, config: MappingConfig, now: float) -> float:
    where, value = _dotted(plan.timestamp_paths[0]), None
    for keys in plan.timestamp_paths:
        value = get(event, keys)
        if value is not None and value != "":
            where = _dotted(keys)
            break
    if value is None or value == "":
        raise Refusal("missing_timestamp", f"{where}: missing (and no "
                      f"{' or '.join(map(_dotted, plan.timestamp_paths[1:])) or 'other time'})")
    seconds = parse_timestamp(value, where, plan.timestamp_unit)
    if seconds < _MIN_EVENT_TIME:
        raise Refusal("invalid_timestamp", f"{where}: {shown(value)} is before 2001")
    if seconds > now + config.max_future_s:
        # Never sent: TikTok may refuse it with 40002, which fails its whole batch.
        raise Refusal("future_event", f"{where}: {shown(value)} is {seconds - now:.0f} s in the future "
                      f"(more than max_future_s, {config.max_future_s:g} s)")
    if config.max_event_age_s is not None and now - seconds > config.max_event_age_s:
        raise Refusal("stale_event", f"{where}: {shown(value)} is older than "
                      f"{config.max_event_age_s:g} s")
    return seconds


def _event_id(event: dict, plan: Plan, order_id: str | None) -> str:
    # Deterministic, so a re-send after a crash is dropped by TikTok's 48 h dedup on
    # pixel+event+event_id.
    for keys in plan.event_id_paths:
        v = get(event, keys)
        if v is None:
            continue
        try:
            v = text(v)
        except ValueError as e:
            raise Refusal("invalid_field", f"{_dotted(keys)}: {e}") from None
        if v:
            return v
    if order_id:
        name = next((n for n in (get(event, k) for k in plan.name_paths) if isinstance(n, str) and n.strip()),
                    plan.name_default)
        return f"{order_id}:{name.strip()}"
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


def _user(event: dict, click: dict | None, click_counts: bool, plan: Plan) -> dict:
    user: dict[str, Any] = {}
    for f in plan.hashed_user:
        # An unusable value (like an unparseable phone) is left out: the event still goes.
        hashed = f.read(event)
        if hashed:
            user[f.name] = hashed
    ttclid = plan.ttclid.read(event)
    ttp = plan.ttp.read(event)
    for keys in plan.cookie_paths if not (ttclid and ttp) else ():
        jar = get(event, keys)
        ttclid = ttclid or cookie(jar, "ttclid")
        ttp = ttp or cookie(jar, "_ttp")
    if click_counts:
        ttclid = ttclid or _click_text(click, "ttclid") or ttclid_from_url(click.get("url"))
        ttp = ttp or _click_text(click, "ttp")
    if not ttclid:
        ttclid = next(filter(None, (ttclid_from_url(get(event, p)) for p in plan.ttclid_urls)), None)
        if not ttclid and plan.page_referrer.paths:
            ttclid = _same_site_referrer_ttclid(event, plan)
    if ttclid:
        user["ttclid"] = ttclid
    if ttp:
        user["ttp"] = ttp
    for f in plan.plain_user:
        v = f.read(event)
        if v is None and click and f.name in ("ip", "user_agent"):
            v = _click_text(click, f.name)
        if v:
            user[f.name] = v
    return user


def _same_site_referrer_ttclid(event: dict, plan: Plan) -> str | None:
    """The ttclid in the page's referrer when the referrer is on the page's own host: the user
    came back from a page of the same site whose URL had it. TikTok's own server-side tag does
    this, after the page URL (tiktok/gtm-template-eapi, template.js getTtclidFromUrl)."""
    referrer = plan.page_referrer.read(event)  # the page's referrer field: http(s) only
    if referrer is None or "ttclid=" not in referrer:
        return None  # the common case, one lookup per path: the rest runs only for a ttclid
    host = _host(plan.page_url.read(event))
    return ttclid_from_url(referrer) if host is not None and host == _host(referrer) else None


def _host(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url.strip()).hostname  # lowercased; None for a URL without one
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None


def _page(event: dict, click: dict | None, plan: Plan) -> dict:
    url = plan.page_url.read(event)
    referrer = plan.page_referrer.read(event)
    if url is None and referrer is None and click:
        # The landing page of the click, when the conversion (a server postback) has no page.
        url, referrer = plan.page_url.convert(click.get("url")), plan.page_url.convert(click.get("referrer"))
    page = {}
    if url:
        page["url"] = url
    if referrer:
        page["referrer"] = referrer
    return page


def _properties(event: dict, plan: Plan, config: MappingConfig) -> dict:
    out = plan.properties.fill({}, event)
    contents = _contents(event, plan)
    if contents:
        out["contents"] = contents
        quantities = [c["quantity"] for c in contents if "quantity" in c]
        total = sum(quantities)
        if quantities and "num_items" not in out and float(total).is_integer():
            out["num_items"] = int(total)
        if plan.value_from_contents and "value" not in out and all("price" in c for c in contents):
            # TikTok's own server-side template does this: the order total from its lines.
            value = sum(c["price"] * c.get("quantity", 1) for c in contents)
            out["value"] = round(value, 2) if isinstance(value, float) else value
    if "content_type" not in out and config.content_type:
        out["content_type"] = config.content_type
    if plan.description_from_name and "description" not in out:
        name = next((n for n in (get(event, k) for k in plan.name_paths) if isinstance(n, str)), None)
        if name and name.strip():
            out["description"] = name.strip()
    return out


def _contents(event: dict, plan: Plan) -> list[dict] | None:
    products, where = None, ""
    for keys in plan.contents_paths:
        products = get(event, keys)
        if products is not None:
            where = _dotted(keys)
            break
    if products is None:
        if plan.columns_path is not None:
            return _columns(event, plan)
        if plan.single_path is None:
            return None
        holder = get(event, plan.single_path)
        if not isinstance(holder, dict) or all(holder.get(k) in (None, "") for k in plan.single_when):
            return None
        item = plan.single_item.fill({}, holder, _dotted(plan.single_path) + ".")
        return [item] if item else None
    if isinstance(products, dict):
        products = [products]  # one product sent as an object rather than a list of one
    if not isinstance(products, list):
        raise Refusal("invalid_contents", f"{where}: expected a list of products, got "
                      f"{shown(products)}")
    contents = []
    for i, product in enumerate(products):
        if not isinstance(product, dict):
            raise Refusal("invalid_contents", f"{where}[{i}]: expected an object, got "
                          f"{shown(product)}")
        item = plan.item.fill({}, product, f"{where}[{i}].")
        if item:
            contents.append(item)
    return contents


def _columns(event: dict, plan: Plan) -> list[dict] | None:
    """Products as parallel arrays (Tealium's product_id[], product_unit_price[], ...): item i
    takes element i of each item field's array; a single value is an array of one."""
    holder = get(event, plan.columns_path)
    if not isinstance(holder, dict):
        return None
    where = _dotted(plan.columns_path) + "."
    columns: list[tuple[Field, tuple[str, ...] | None, list]] = []
    for f in plan.item:
        if f.constant is not None:
            columns.append((f, None, []))
            continue
        for keys in f.paths:
            column = get(holder, keys)
            if column is not None:
                columns.append((f, keys, column if isinstance(column, list) else [column]))
                break
    contents = []
    for i in range(max((len(c) for _, _, c in columns), default=0)):
        item, found = {}, False
        for f, keys, column in columns:
            if keys is None:
                item[f.name] = f.constant
                continue
            try:
                v = f.convert(column[i] if i < len(column) else None)
            except ValueError as e:
                raise Refusal(f.reason, f"{where}{_dotted(keys)}[{i}]: {e}") from None
            if v is not None:
                item[f.name], found = v, True
        if found:
            contents.append(item)
    return contents or None
