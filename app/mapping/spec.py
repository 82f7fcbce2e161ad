"""A mapping spec: where, in one input shape, each TikTok field comes from. Data, not code.

A spec is a TOML document (the shipped presets are app/mapping/presets/<name>.toml; a user's
file extends or overrides one, or stands alone). It is validated once, with one line naming the
key that is wrong, and compiled into a `Plan`: tuples of key paths and converter functions that
app.mapping.events only executes. The tables of a spec:

  [event]       where the name, kind, time, event_id, click ID, test event code are; filters;
                `batch`: a message carrying an array of events (mParticle's batches) is read as
                one event per element, each with the rest of the message under `batch.`;
                `cookies`: Cookie header strings (or objects of cookies) whose `_ttp` and
                `ttclid` count after the event's own ttp/ttclid fields, before the click's;
                `name_default`: the name of an event that carries none; `unmapped = "refuse"`:
                a name the [events] table lacks is refused (unmapped_event), not skipped
  [events]      source event name -> TikTok standard name(s) (one to many; [] = never send)
  [user]        TikTok user field -> source paths (hashed, or as the field needs)
  [page]        url / referrer -> source paths (http(s) only)
  [properties]  TikTok property -> source paths
  [contents]    the array of items (`from`), one product held by the event itself (`single`),
                products as parallel arrays in one object (`columns`: Tealium's product_id[],
                product_unit_price[] ...), and [contents.item] content field -> paths inside an
                item (with `columns`, inside that object: item i takes element i of each)
  [app]         app events: app_id, app_name, app_version -> source paths (an [app] table lets
                [events] map to TikTok's app event names: InstallApp, LaunchAPP, Checkout ...)
  [lead]        CRM events: lead_id, lead_event_source -> source paths; a CRM event set's own
                event names are listed in [event] custom_events so that [events] may map to them

[user] also takes the app events' device IDs: idfa, idfv, gaid, att_status (app.mapping.devices).

A field is `field = ["path.one", "path.two"]` (first non-empty wins, converted as the TikTok
field needs) or `field = { from = [...], as = "<transform>" }`, or `{ as = "constant",
value = ... }`. Paths are dotted keys. A key that itself holds a dot is quoted:
`data.custom_flags."TikTok.URL"` (mParticle's custom flags). A key may end in `[field=value]`,
a step into an array to its first object whose `field` is `value`:
`context.externalId[type=tiktokExternalId].id` (RudderStack's typed external IDs).
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any, Callable, Mapping

from app.mapping import devices, values
from app.mapping.normalise import (
    hash_email,
    hash_external_id,
    hash_first_name,
    hash_last_name,
    hash_phone,
    hash_zip_code,
)
from app.tiktok.facts import APP_EVENTS, STANDARD_EVENTS

__all__ = ["Plan", "Field", "PRESETS", "load_preset", "merge", "compile_spec", "SpecError"]

PRESETS = ("segment", "rudderstack", "mparticle", "commanders_act", "tealium", "redtrack")


class SpecError(ValueError):
    """A spec that cannot be compiled; the message starts with the key it is about."""


Path = tuple[str, ...]
Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Field:
    """One TikTok field: the first source path with a usable value wins."""

    name: str
    paths: tuple[Path, ...]
    convert: Convert
    reason: str            # the Refusal reason when the converter refuses a value
    hashed: bool = False   # a hash function: a wrong type leaves the field out, never refuses
    constant: Any = None   # as = "constant": the value itself (paths are empty)
    # read(root, where="") -> the TikTok value or None; raises values.Refusal(reason) when the
    # converter refuses (a hashed field leaves an unusable value out instead). Generated once.
    read: Callable[..., Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read", _reader(self))


# A field is read on every event for every path until one gives a value: ~60 lookups per event,
# the mapping's largest cost when each is a loop over keys in a function call. So each field's
# reader is generated as straight-line code, one chained lookup per path
# (`(root.get("context") or E).get("traits") ...`), which is what a hand-written mapping would
# be. A step that is not an object (a string, a list, a [field=value] pick) makes that chain
# raise AttributeError and is read by the general values.get, with the same result.
_E: dict = {}


def _reader(f: Field) -> Callable[..., Any]:
    if f.constant is not None:
        constant = f.convert(f.constant) if f.hashed else f.constant
        return lambda root, where="": constant
    names: dict[str, Any] = {"E": _E, "get": values.get, "Refusal": values.Refusal}
    lines = ["def read(root, where=''):", *_field_code(f, 0, names, "return v", "    "), "    return None"]
    exec("\n".join(lines), names)  # noqa: S102 - our own source, from validated spec paths
    return names["read"]


def _field_code(f: Field, n: int, names: dict[str, Any], found: str, indent: str) -> list[str]:
    """Statements reading field `f` (number `n` of its function) from `root`: each path's
    chained lookup and conversion, running `found` with the first usable value `v`."""
    names[f"convert{n}"], names[f"reason{n}"] = f.convert, f.reason
    lines = []
    for i, keys in enumerate(f.paths):
        names[f"P{n}_{i}"] = keys
        if any(type(k) is not str for k in keys):
            lines.append(f"v = get(root, P{n}_{i})")
        else:
            chain = "root"
            for k in keys[:-1]:
                chain = f"({chain}.get({k!r}) or E)"
            lines += ["try:", f"    v = {chain}.get({keys[-1]!r})", "except AttributeError:",
                      f"    v = get(root, P{n}_{i})"]
        lines.append("if v is not None:")
        if f.hashed:
            lines += ["    try:", f"        v = convert{n}(v)", "    except TypeError:", "        v = None",
                      "    if v:", f"        {found}"]
        else:
            dotted = ".".join(keys)
            lines += ["    try:", f"        v = convert{n}(v)", "    except ValueError as e:",
                      f"        raise Refusal(reason{n}, where + {dotted + ': '!r} + str(e)) from None",
                      "    if v is not None:", f"        {found}"]
    return [indent + line for line in lines]


class FieldTable(tuple):
    """The fields of one TikTok object (properties, a content item, app, lead), with `fill`:
    fill(out, root, where="") sets out[name] for each field that has a value, and returns out.
    Generated as one function for the whole table: one call per object, not one per field."""

    def __new__(cls, fields) -> FieldTable:
        table = super().__new__(cls, fields)
        names: dict[str, Any] = {"E": _E, "get": values.get, "Refusal": values.Refusal}
        lines = ["def fill(out, root, where=''):"]
        for n, f in enumerate(table):
            if f.constant is not None:
                names[f"C{n}"] = f.read(None)
                lines.append(f"    out[{f.name!r}] = C{n}")
                continue
            # One pass per field; `break` at its first usable value.
            lines += ["    while True:", *_field_code(f, n, names, f"out[{f.name!r}] = v; break", "        "),
                      "        break"]
        lines.append("    return out")
        exec("\n".join(lines), names)  # noqa: S102 - our own source, from validated spec paths
        table.fill = names["fill"]
        return table


@dataclass(frozen=True)
class Plan:
    """A compiled spec. Everything app.mapping.events needs, precomputed."""

    batch_path: Path | None             # a message carrying an array of events: where it is
    name_paths: tuple[Path, ...]
    fold_names: bool
    kind_path: Path | None
    kinds: frozenset[str]
    kind_default: str | None
    timestamp_paths: tuple[Path, ...]
    timestamp_unit: str
    event_id_paths: tuple[Path, ...]
    click_id_paths: tuple[Path, ...]
    test_event_code_paths: tuple[Path, ...]
    limited_data_use_paths: tuple[Path, ...]
    objects: tuple[Path, ...]
    require_identity: bool
    description_from_name: bool
    value_from_contents: bool
    events: Mapping[str, tuple[str, ...]]
    hashed_user: tuple[Field, ...]      # hashed before anything else is read
    ttclid: Field
    ttp: Field
    ttclid_urls: tuple[Path, ...]       # URLs whose ttclid parameter counts, after the click's
    cookie_paths: tuple[Path, ...]      # Cookie headers whose _ttp/ttclid count, before the click's
    name_default: str | None            # the name of an event that has none (RedTrack's untyped conversion)
    refuse_unmapped: bool               # a name the [events] table lacks is refused, not skipped
    plain_user: tuple[Field, ...]       # ip, user_agent, locale, city, state, country
    page_url: Field
    page_referrer: Field
    properties: tuple[Field, ...]
    contents_paths: tuple[Path, ...]
    single_path: Path | None
    single_when: tuple[str, ...]
    columns_path: Path | None            # products as parallel arrays in this object
    item: tuple[Field, ...]
    single_item: tuple[Field, ...]
    # Events of other sources than web (app.tiktok.facts, "event sources"): the data[] item's app
    # object (app events) and lead object (CRM events), filled like properties; empty: none.
    app: tuple[Field, ...] = ()
    lead: tuple[Field, ...] = ()


# --------------------------------------------------------------------------- transforms

def _constant(_: Any) -> Any:  # never called: a constant field has no paths
    raise AssertionError


_HASHES: dict[str, Callable[..., Any]] = {
    "email": hash_email, "phone": hash_phone, "external_id": hash_external_id,
    "first_name": hash_first_name, "last_name": hash_last_name, "zip_code": hash_zip_code,
}
_TRANSFORMS: dict[str, Convert] = {
    "text": values.text, "identifier": values.identifier, "number": values.number,
    "integer": values.count, "currency": values.currency, "url": values.http_url,
    "content_type": values.content_type, "ttclid_from_url": values.ttclid_from_url,
    "constant": _constant,
    "idfa": devices.idfa, "gaid": devices.gaid, "idfv": devices.idfv, "att_status": devices.att_status,
}
TRANSFORMS = tuple(sorted([*_HASHES, *_TRANSFORMS]))

# TikTok field -> (default transform, reason when refused). The fields a section may name.
_USER_FIELDS = {
    "email": "email", "phone": "phone", "external_id": "external_id", "first_name": "first_name",
    "last_name": "last_name", "zip_code": "zip_code", "ttclid": "identifier", "ttp": "identifier",
    "ip": "text", "user_agent": "text", "locale": "text", "city": "text", "state": "text",
    "country": "text",
    # App events only; where the pixel is known (app.mapping.sources) other sources leave them out.
    "idfa": "idfa", "idfv": "idfv", "gaid": "gaid", "att_status": "att_status",
}
_PAGE_FIELDS = {"url": "url", "referrer": "url"}
_PROPERTY_FIELDS = {
    "value": ("number", "invalid_value"), "currency": ("currency", "invalid_currency"),
    "num_items": ("integer", "invalid_num_items"), "order_id": ("text", "invalid_field"),
    "shop_id": ("text", "invalid_field"), "description": ("text", "invalid_field"),
    "search_string": ("text", "invalid_field"), "content_type": ("content_type", "invalid_field"),
}
_ITEM_FIELDS = {
    "content_id": ("text", "invalid_contents"), "content_name": ("text", "invalid_contents"),
    "content_category": ("text", "invalid_contents"), "brand": ("text", "invalid_contents"),
    "price": ("number", "invalid_price"), "quantity": ("number", "invalid_quantity"),
}
_EVENT_KEYS = {
    "batch": None, "name": [], "fold_names": False, "kind": None, "kinds": [], "kind_default": None,
    "timestamp": [], "timestamp_unit": "auto", "event_id": [], "click_id": [],
    "test_event_code": [], "limited_data_use": [], "objects": [], "require_identity": False,
    "description_from_name": False, "value_from_contents": False, "ttclid_urls": [],
    "cookies": [], "name_default": None, "unmapped": "skip", "custom_events": [],
}
_CONTENTS_KEYS = {"from", "single", "single_when", "columns", "item", "single_item"}
_TABLES = {"description", "event", "events", "user", "page", "properties", "contents", "extends",
           "app", "lead"}
# [app] (app events) and [lead] (CRM events): TikTok field -> (default transform, reason).
_APP_FIELDS = {"app_id": ("text", "invalid_field"), "app_name": ("text", "invalid_field"),
               "app_version": ("text", "invalid_field")}
_LEAD_FIELDS = {"lead_id": ("text", "invalid_field"), "lead_event_source": ("text", "invalid_field")}
_TIMESTAMP_UNITS = ("auto", "seconds", "milliseconds", "iso8601")


# --------------------------------------------------------------------------- loading

def load_preset(name: str) -> dict[str, Any]:
    """The preset's spec document, as shipped."""
    if name not in PRESETS:
        raise SpecError(f"preset: {name!r} is not a preset ({_nearest(name, PRESETS)})")
    text = resources.files("app.mapping").joinpath("presets", f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: tables merge key by key, anything else is replaced.

    [events] merges too (a user's file adds or re-maps names; [] stops one); a field's paths
    are replaced whole, so an override says the full precedence.
    """
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not _is_field(value):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _is_field(value: Mapping) -> bool:
    return "from" in value or "as" in value


def resolve(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document with `extends = "<preset>"` merged over that preset."""
    base = doc.get("extends")
    if base is None:
        return dict(doc)
    if not isinstance(base, str):
        raise SpecError(f"extends: expected a preset name, got {base!r}")
    return merge(load_preset(base), {k: v for k, v in doc.items() if k != "extends"})


# --------------------------------------------------------------------------- compiling

def compile_spec(doc: Mapping[str, Any], default_region: str | None = None) -> Plan:
    """Validate and compile a resolved spec document. SpecError names the first wrong key."""
    _known(doc, _TABLES, "")
    event = _table(doc, "event")
    _known(event, _EVENT_KEYS, "event.")
    get = partial(_setting, event)
    # Misspelled keys first: "user.emial: unknown key" says more than what is missing because of it.
    for table, known in (("user", _USER_FIELDS), ("page", _PAGE_FIELDS), ("properties", _PROPERTY_FIELDS)):
        _known(_table(doc, table), known, f"{table}.")
    name_paths = _paths(get("name"), "event.name")
    if not name_paths:
        raise SpecError("event.name: a spec must say where the event name is")
    kind = get("kind")
    kinds = get("kinds")
    if kind is not None and not (isinstance(kinds, list) and kinds and all(isinstance(k, str) for k in kinds)):
        raise SpecError("event.kinds: with event.kind, the list of kinds that are conversions")
    unit = get("timestamp_unit")
    if unit not in _TIMESTAMP_UNITS:
        raise SpecError(f"event.timestamp_unit: one of {', '.join(_TIMESTAMP_UNITS)}, got {unit!r}")
    timestamp_paths = _paths(get("timestamp"), "event.timestamp")
    if not timestamp_paths:
        raise SpecError("event.timestamp: a spec must say where the event time is")
    for flag in ("fold_names", "require_identity", "description_from_name", "value_from_contents"):
        if not isinstance(get(flag), bool):
            raise SpecError(f"event.{flag}: expected true or false, got {get(flag)!r}")
    kind_default = get("kind_default")
    if kind_default is not None and not isinstance(kind_default, str):
        raise SpecError(f"event.kind_default: expected a string, got {kind_default!r}")
    name_default = get("name_default")
    if name_default is not None and not (isinstance(name_default, str) and name_default.strip()):
        raise SpecError(f"event.name_default: expected a name, got {name_default!r}")
    if get("unmapped") not in ("skip", "refuse"):
        raise SpecError(f"event.unmapped: one of skip, refuse, got {get('unmapped')!r}")

    user = _table(doc, "user")
    _known(user, _USER_FIELDS, "user.")
    phone = partial(hash_phone, default_region=default_region)
    fields = {name: _field(user.get(name), f"user.{name}", name, _USER_FIELDS[name], "invalid_field", phone)
              for name in _USER_FIELDS}
    page = _table(doc, "page")
    _known(page, _PAGE_FIELDS, "page.")
    properties = _table(doc, "properties")
    _known(properties, _PROPERTY_FIELDS, "properties.")
    contents = _table(doc, "contents")
    _known(contents, _CONTENTS_KEYS, "contents.")
    item = _table(contents, "item", "contents.")
    _known(item, _ITEM_FIELDS, "contents.item.")
    single_item = merge(item, _table(contents, "single_item", "contents."))
    _known(single_item, _ITEM_FIELDS, "contents.single_item.")
    single = contents.get("single")
    if single is not None and not isinstance(single, str):
        raise SpecError(f"contents.single: expected a dotted path, got {single!r}")
    columns = contents.get("columns")
    if columns is not None and not isinstance(columns, str):
        raise SpecError(f"contents.columns: expected a dotted path, got {columns!r}")
    single_when = contents.get("single_when", [])
    if not isinstance(single_when, list) or not all(isinstance(k, str) and k for k in single_when):
        raise SpecError("contents.single_when: expected a list of keys")

    def table_fields(table: Mapping, known: Mapping, where: str) -> tuple[Field, ...]:
        out = []
        for name, (transform, reason) in known.items():
            if name in table:
                out.append(_field(table[name], f"{where}{name}", name, transform, reason, phone))
        return FieldTable(f for f in out if f.paths or f.constant is not None)

    batch = get("batch")
    if batch is not None and not (isinstance(batch, str) and "." not in batch and batch):
        raise SpecError(f"event.batch: expected the top-level key of the events array, got {batch!r}")
    app, lead = _table(doc, "app"), _table(doc, "lead")
    _known(app, _APP_FIELDS, "app.")
    _known(lead, _LEAD_FIELDS, "lead.")
    app_fields = table_fields(app, _APP_FIELDS, "app.")
    custom = get("custom_events")
    if not isinstance(custom, list) or not all(isinstance(n, str) and n.strip() == n and n for n in custom):
        raise SpecError(f"event.custom_events: expected a list of event names, got {custom!r}")
    # The names [events] may map to: TikTok's standard web names; its app names for a spec with an
    # [app] table (an app spec: app events need app.app_id); and the spec's own custom names (a
    # CRM event set's lead stages). Which of them a destination takes is decided where the pixel is
    # known (app.mapping.sources).
    names = STANDARD_EVENTS | (APP_EVENTS if app_fields else frozenset()) | frozenset(custom)
    return Plan(
        batch_path=(batch,) if batch else None,
        name_paths=name_paths, fold_names=get("fold_names"),
        kind_path=_paths([kind], "event.kind")[0] if kind is not None else None,
        kinds=frozenset(kinds or ()), kind_default=kind_default,
        timestamp_paths=timestamp_paths, timestamp_unit=unit,
        event_id_paths=_paths(get("event_id"), "event.event_id"),
        click_id_paths=_paths(get("click_id"), "event.click_id"),
        test_event_code_paths=_paths(get("test_event_code"), "event.test_event_code"),
        limited_data_use_paths=_paths(get("limited_data_use"), "event.limited_data_use"),
        objects=_paths(get("objects"), "event.objects"),
        require_identity=get("require_identity"),
        description_from_name=get("description_from_name"),
        value_from_contents=get("value_from_contents"),
        events=_events(_table(doc, "events"), names),
        hashed_user=tuple(f for n, f in fields.items() if f.hashed and (f.paths or f.constant is not None)),
        ttclid=fields["ttclid"], ttp=fields["ttp"],
        ttclid_urls=_paths(get("ttclid_urls"), "event.ttclid_urls"),
        cookie_paths=_paths(get("cookies"), "event.cookies"),
        name_default=name_default and name_default.strip(), refuse_unmapped=get("unmapped") == "refuse",
        plain_user=tuple(f for n, f in fields.items() if not f.hashed and n not in ("ttclid", "ttp")
                         and (f.paths or f.constant is not None)),
        page_url=_field(page.get("url"), "page.url", "url", "url", "invalid_field", phone),
        page_referrer=_field(page.get("referrer"), "page.referrer", "referrer", "url", "invalid_field", phone),
        properties=table_fields(properties, _PROPERTY_FIELDS, "properties."),
        contents_paths=_paths(contents.get("from", []), "contents.from"),
        single_path=_paths([single], "contents.single")[0] if single is not None else None,
        single_when=tuple(single_when),
        columns_path=_paths([columns], "contents.columns")[0] if columns is not None else None,
        item=table_fields(item, _ITEM_FIELDS, "contents.item."),
        single_item=table_fields(single_item, _ITEM_FIELDS, "contents.single_item."),
        app=app_fields, lead=table_fields(lead, _LEAD_FIELDS, "lead."),
    )


def _setting(table: Mapping, key: str) -> Any:
    return table.get(key, _EVENT_KEYS[key])


def _events(table: Mapping[str, Any], names: frozenset[str] = STANDARD_EVENTS) -> dict[str, tuple[str, ...]]:
    out = {}
    for source, targets in table.items():
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise SpecError(f"events.{source!r}: expected a TikTok event name or a list of them")
        for target in targets:
            if target not in names:
                hint = ("an app event: a spec with an [app] table may map to it" if target in APP_EVENTS
                        else _nearest(target, names))
                raise SpecError(f"events.{source!r}: {target!r} is not a TikTok standard event ({hint})")
        out[source] = tuple(dict.fromkeys(targets))
    return out


def _field(spec: Any, where: str, name: str, transform: str, reason: str, phone: Callable) -> Field:
    value = None
    if spec is None:
        paths: list = []
    elif isinstance(spec, list):
        paths = spec
    elif isinstance(spec, Mapping):
        _known(spec, {"from", "as", "value"}, f"{where}.")
        paths = spec.get("from", [])
        transform = spec.get("as", transform)
        if transform == "constant":
            if "value" not in spec or paths:
                raise SpecError(f"{where}: a constant has a `value` and no `from`")
            value = spec["value"]
        elif "value" in spec:
            raise SpecError(f"{where}.value: only a constant has a value")
    else:
        raise SpecError(f"{where}: expected a list of paths or {{ from = [...], as = \"...\" }}, got {spec!r}")
    if transform in _HASHES:
        convert = phone if transform == "phone" else _HASHES[transform]
        return Field(name, _paths(paths, where), convert, reason, hashed=True, constant=value)
    if transform not in _TRANSFORMS:
        raise SpecError(f"{where}.as: {transform!r} is not a transform ({_nearest(transform, TRANSFORMS)})")
    return Field(name, _paths(paths, where), _TRANSFORMS[transform], reason, constant=value)


def _paths(dotted: Any, where: str) -> tuple[Path, ...]:
    if isinstance(dotted, str):
        dotted = [dotted]
    if not isinstance(dotted, list):
        raise SpecError(f"{where}: expected a list of dotted paths, got {dotted!r}")
    out = []
    for p in dotted:
        keys = _path(p) if isinstance(p, str) else None
        if not keys:
            raise SpecError(f"{where}: {p!r} is not a dotted path (a key holding a dot is quoted: "
                            'a."b.c"; a step into an array is key[field=value])')
        out.append(keys)
    return tuple(out)


# One key of a path, then a dot or the end: plain, or "quoted" (it holds dots), either maybe
# followed by [field=value].
_KEY = re.compile(r'(?:"(?P<quoted>[^"]+)"|(?P<plain>[^."\[\]]+))'
                  r'(?:\[(?P<field>[^="\[\]]+)=(?P<value>[^"\[\]]+)\])?(?:\.(?!$)|$)')


def _path(dotted: str) -> Path | None:
    keys: list[str] = []
    at = 0
    while at < len(dotted):
        m = _KEY.match(dotted, at)
        if m is None:
            return None
        keys.append(m["quoted"] or m["plain"])
        if m["field"]:
            keys.append(values.Where(m["field"], m["value"]))
        at = m.end()
    return tuple(keys) or None


def _table(doc: Mapping, key: str, prefix: str = "") -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise SpecError(f"{prefix}{key}: expected a table, got {value!r}")
    return value


def _known(table: Mapping, known, prefix: str) -> None:
    for key in table:
        if key not in known:
            raise SpecError(f"{prefix}{key}: unknown key ({_nearest(key, known)})")


def _nearest(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(known))
