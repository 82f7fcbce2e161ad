"""A mapping config's common case as ONE generated Python function: map_event's fast path.

app.mapping.events.map_event interprets the Plan: ~15 helper calls, a generated reader per field
and ~120 dict lookups per Segment event, every path read from the event's root (a profile of the
Segment preset, py-spy on bench.map_speed, put ~3/4 of its cost there, not in hashing or parsing).
compile_map() writes instead what a hand-written mapper of that spec would be: one function, each
intermediate object of the event read once into a local (`context`, `context.traits`, ...), the
converters inlined for the value types JSON gives (a str, an int, a float) and the original
converter called for any other, the output dicts built directly.

Only the common case is compiled. The generated function returns None — and map_event then runs
the interpreter, which is the reference — as soon as the event leaves it: a value a converter
would refuse (Refusal), a missing or non-text name, a kind that is not text, a time outside the
window, an object of a type JSON does not have. So every Refusal and Skip keeps its exact reason
and message, written in one place. On the steps it does take it follows the interpreter's order
and calls its helpers for the rare branches (cookies, columns, a same-site referrer), so what
those raise is what the interpreter raises there. tests/mapping/test_compiled.py checks that both
agree on every preset's example and on mutations of them at every path a spec reads.
"""
from __future__ import annotations

import hashlib
import math
from functools import partial
from typing import Any, Callable

import orjson

from app.mapping import normalise, values
from app.mapping.spec import Field

__all__ = ["compile_map"]

# A step through a value of one of these is "nothing there" (values.get's rule for JSON). Any
# other type (a hand-built event's tuple, a Mapping) is left to the interpreter.
_JSON_NON_OBJECTS = frozenset({str, int, float, bool, list})

# Hash functions whose normalisation is inlined: the expression normalising a stripped, non-empty,
# not already hashed string `{s}` (app.mapping.normalise's _lower, _keep, _zip).
_HASH_NORMALISE = {
    normalise.hash_email: "{s}.lower()", normalise.hash_first_name: "{s}.lower()",
    normalise.hash_last_name: "{s}.lower()", normalise.hash_external_id: "{s}",
    normalise.hash_zip_code: "WHITESPACE('', {s}).lower()",
}


class _Source:
    """The generated function's text and the constants its globals hold."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {
            "E": {}, "JSON_NON_OBJECTS": _JSON_NON_OBJECTS, "get": values.get, "Refusal": values.Refusal,
            "SHA256": hashlib.sha256, "HEX64": normalise._SHA256_HEX.fullmatch,
            "WHITESPACE": normalise._WHITESPACE.sub, "normalise": normalise, "isfinite": math.isfinite,
            "MAX_NUMBER": values._MAX_NUMBER, "HTTP": values._HTTP, "PLACEHOLDERS": values._PLACEHOLDERS,
            "CURRENCIES": values.CURRENCIES, "CONTENT_TYPES": values.CONTENT_TYPES,
        }
        self._count = 0

    def const(self, value: Any, hint: str = "K") -> str:
        """A global of the generated function holding `value`; its name."""
        self._count += 1
        name = f"{hint}_{self._count}"
        self.names[name] = value
        return name

    def local(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"


class _Root:
    """The objects read under one root (the event, one product): each intermediate object once,
    in `prologue`, as its raw value and a dict to read on (`E` when it is not an object)."""

    def __init__(self, src: _Source, var: str) -> None:
        self.src = src
        self.nodes: dict[tuple, tuple[str, str]] = {(): (var, var)}
        self.prologue: list[str] = []

    def node(self, prefix: tuple) -> tuple[str, str]:
        if prefix not in self.nodes:
            _, parent = self.node(prefix[:-1])
            raw, view = self.src.local("n"), self.src.local("d")
            self.prologue += [
                f"{raw} = {parent}.get({prefix[-1]!r})",
                f"if type({raw}) is dict:", f"    {view} = {raw}",
                f"elif {raw} is None or type({raw}) in JSON_NON_OBJECTS:", f"    {view} = E",
                "else:", "    return None",
            ]
            self.nodes[prefix] = raw, view
        return self.nodes[prefix]

    def read(self, keys: tuple) -> str:
        """An expression with values.get(root, keys)'s value."""
        where = next((i for i, k in enumerate(keys) if type(k) is not str), None)
        if where is None:
            return f"{self.node(keys[:-1])[1]}.get({keys[-1]!r})"
        # A [field=value] step into an array: the general reader from the object before it.
        return f"get({self.node(keys[:where])[0]}, {self.src.const(keys[where:], 'P')})"


def _convert(src: _Source, f: Field, v: str) -> list[str]:
    """Lines turning the non-None `v` into f.convert(v) in place; `return None` (the interpreter
    takes over) where the converter would raise ValueError, i.e. the field would be refused."""
    conv = f.convert
    fn = src.const(conv, "CONVERT")
    if f.hashed:
        if isinstance(conv, partial) and conv.func is normalise.hash_phone and not conv.args \
                and set(conv.keywords) == {"default_region"}:
            # normalise.e164 looked up per call, as hash_phone does: bench.map_speed swaps it.
            norm = f"normalise.e164({{s}}, {src.const(conv.keywords['default_region'], 'REGION')})"
        else:
            norm = _HASH_NORMALISE.get(conv)
        if norm is None:
            return ["try:", f"    {v} = {fn}({v})", "except TypeError:", f"    {v} = None"]
        return [f"if type({v}) is str:", f"    {v} = {v}.strip()", f"    if not {v}:", f"        {v} = None",
                f"    elif len({v}) == 64 and HEX64({v}) is not None:", f"        {v} = {v}.lower()",
                "    else:", f"        {v} = {norm.format(s=v)}",
                f"        {v} = SHA256({v}.encode()).hexdigest() if {v} else None",
                "else:", "    try:", f"        {v} = {fn}({v})", "    except TypeError:", f"        {v} = None"]
    general = ["try:", f"    {v} = {fn}({v})", "except ValueError:", "    return None"]
    indented = ["    " + line for line in general]
    if conv is values.text:
        return [f"if type({v}) is str:", f"    {v} = {v}.strip() or None", "else:", *indented]
    if conv is values.identifier:
        return [f"if type({v}) is str:", f"    {v} = {v}.strip()",
                f"    if not {v} or {v}.casefold() in PLACEHOLDERS:", f"        {v} = None", "else:", *indented]
    if conv is values.number:
        return [f"if type({v}) is int or type({v}) is float:", f"    if not 0 <= {v} < MAX_NUMBER:",
                "        return None", "else:", *indented]
    if conv is values.count:
        return [f"if type({v}) is int:", f"    if not 0 <= {v} < MAX_NUMBER:", "        return None",
                "else:", *indented]
    if conv is values.currency:
        return [f"if type({v}) is str:", f"    {v} = {v}.strip().upper()", f"    if not {v}:", f"        {v} = None",
                f"    elif {v} not in CURRENCIES:", "        return None", "else:", *indented]
    if conv is values.http_url:
        return [f"if type({v}) is str:", f"    {v} = {v}.strip()", f"    if not {v}.startswith(HTTP):",
                f"        {v} = None", "else:", *indented]
    if conv is values.content_type:
        return [f"if type({v}) is str:", f"    {v} = {v} if {v} in CONTENT_TYPES else None", "else:", *indented]
    return general


def _field(src: _Source, root: _Root, f: Field, v: str) -> list[str]:
    """Lines leaving in `v` what f.read(root) gives: the first usable value of its paths."""
    if f.constant is not None:
        return [f"{v} = {src.const(f.read(None), 'C')}"]
    if not f.paths:
        return [f"{v} = None"]
    lines: list[str] = []
    pad = ""
    for i, keys in enumerate(f.paths):
        if i:  # the next path only when this one gave nothing usable
            lines.append(pad + (f"if not {v}:" if f.hashed else f"if {v} is None:"))
            pad += "    "
        lines += [pad + f"{v} = {root.read(keys)}", pad + f"if {v} is not None:"]
        lines += [pad + "    " + line for line in _convert(src, f, v)]
    return lines


def _table(src: _Source, root: _Root, fields, out: str) -> list[str]:
    """FieldTable.fill(out, root)'s lines: out[name] for each field with a value."""
    lines = []
    for f in fields:
        v = src.local("v")
        lines += _field(src, root, f, v)
        lines += [f"if {v} is not None:", f"    {out}[{f.name!r}] = {v}"]
    return lines


def _indent(lines: list[str], pad: str = "    ") -> list[str]:
    return [pad + line for line in lines]


def compile_map(config, events) -> Callable[[Any, Any, float], list[dict] | None]:
    """fast(event, click, now): map_event's items, or None where the interpreter must decide.
    `events` is app.mapping.events, whose helpers the rare branches call."""
    plan = config.plan
    src = _Source()
    root = _Root(src, "event")
    const = src.const
    body: list[str] = []
    add = body.append

    # tiktok_names(): the kind, then the name (text, not blank), then the [events] table.
    if plan.kind_path is not None:
        add(f"kind = {root.read(plan.kind_path)}")
        add("if kind is None:")
        add(f"    kind = {const(plan.kind_default, 'KIND_DEFAULT')}")
        add("if type(kind) is str:")
        add(f"    if kind not in {const(plan.kinds, 'KINDS')}:")
        add("        return []")
        add("elif kind is None:")
        add("    return []")
        add("else:")
        add("    return None")
    add("name = None")
    pad = ""
    for i, keys in enumerate(plan.name_paths):
        if i:
            add(pad + "if name is None:")
            pad += "    "
        body += [pad + line for line in [
            f"v = {root.read(keys)}",
            "if type(v) is str:",
            "    if v.strip():",
            "        name = v",
            "elif v is not None:",
            "    return None"]]
    add("if name is None:")
    add(f"    name = {const(plan.name_default, 'NAME_DEFAULT')}" if plan.name_default else "    return None")
    add(f"names = {const(config._names, 'NAMES')}.get(name) or {const(config.tiktok_names, 'TIKTOK_NAMES')}(name)")
    add("if not names:")
    add("    return None" if plan.refuse_unmapped else "    return []")
    for keys in plan.objects:
        add(f"v = {root.read(keys)}")
        add("if v is not None and type(v) is not dict:")
        add("    return None")

    # _event_time(): the first time given, parsed, inside the window.
    pad = ""
    for i, keys in enumerate(plan.timestamp_paths):
        if i:
            add(pad + "if v is None or v == '':")
            pad += "    "
        add(pad + f"v = {root.read(keys)}")
        add(pad + f"where = {'.'.join(keys)!r}")
    add("if v is None or v == '':")
    add("    return None")
    add("try:")
    add(f"    seconds = {const(values.parse_timestamp, 'PARSE_TIMESTAMP')}(v, where, {plan.timestamp_unit!r})")
    add("except Refusal:")
    add("    return None")
    add(f"if seconds < {events._MIN_EVENT_TIME!r} or seconds > now + {config.max_future_s!r}:")
    add("    return None")
    if config.max_event_age_s is not None:
        add(f"if now - seconds > {config.max_event_age_s!r}:")
        add("    return None")

    # _click_counts(): a finite float clicked_at inline, anything else by the interpreter's helper.
    add("counts = False")
    add("if click:")
    add("    v = click.get('clicked_at')")
    add("    if type(v) is float:")
    add(f"        counts = isfinite(v) and seconds - v <= {config.attribution_window_s!r}")
    add("    elif v is not None:")
    add(f"        counts = {const(events._click_counts, 'CLICK_COUNTS')}(click, seconds, {const(config, 'CONFIG')})")

    # _user(): hashed fields, ttclid/ttp (event, cookies, click, URLs, referrer), plain fields.
    add("user = {}")
    for f in plan.hashed_user:
        body += _field(src, root, f, "v")
        add("if v:")
        add(f"    user[{f.name!r}] = v")
    body += _field(src, root, plan.ttclid, "ttclid")
    body += _field(src, root, plan.ttp, "ttp")
    click_text = const(events._click_text, "CLICK_TEXT")
    if plan.cookie_paths:
        cookie = const(values.cookie, "COOKIE")
        add("if not (ttclid and ttp):")
        for keys in plan.cookie_paths:
            add(f"    v = {root.read(keys)}")
            add(f"    ttclid = ttclid or {cookie}(v, 'ttclid')")
            add(f"    ttp = ttp or {cookie}(v, '_ttp')")
    ttclid_from_url = const(values.ttclid_from_url, "TTCLID_FROM_URL")
    add("if counts:")
    add("    if not ttclid:")
    add("        v = click.get('ttclid')")
    add(f"        ttclid = (v.strip() or None) if type(v) is str else {click_text}(click, 'ttclid')")
    add("        if not ttclid:")
    add(f"            ttclid = {ttclid_from_url}(click.get('url'))")
    add("    if not ttp:")
    add("        v = click.get('ttp')")
    add(f"        ttp = (v.strip() or None) if type(v) is str else {click_text}(click, 'ttp')")
    add("if not ttclid:")
    pad = "    "
    for keys in plan.ttclid_urls:
        add(pad + f"ttclid = {ttclid_from_url}({root.read(keys)})")
        add(pad + "if not ttclid:")
        pad += "    "
    add(pad + "ttclid = None")  # next(filter(None, ...), None): no URL had one
    if plan.page_referrer.paths:
        add(pad + f"ttclid = {const(events._same_site_referrer_ttclid, 'SAME_SITE')}(event, {const(plan, 'PLAN')})")
    add("if ttclid:")
    add("    user['ttclid'] = ttclid")
    add("if ttp:")
    add("    user['ttp'] = ttp")
    for f in plan.plain_user:
        body += _field(src, root, f, "v")
        if f.name in ("ip", "user_agent"):
            add("if v is None and click:")
            add(f"    v = {click_text}(click, {f.name!r})")
        add("if v:")
        add(f"    user[{f.name!r}] = v")
    if plan.require_identity:
        add("if not (user.get('email') or user.get('phone') or user.get('external_id')):")
        add(f"    raise {const(events.Skip, 'Skip')}('no_user_identity')")

    # _properties(): its table, the contents and what is derived from them.
    add("properties = {}")
    body += _table(src, root, plan.properties, "properties")
    body += _contents(src, root, plan, events)
    add("if contents:")
    add("    properties['contents'] = contents")
    add("    quantities = [c['quantity'] for c in contents if 'quantity' in c]")
    add("    total = sum(quantities)")
    add("    if quantities and 'num_items' not in properties and float(total).is_integer():")
    add("        properties['num_items'] = int(total)")
    if plan.value_from_contents:
        add("    if 'value' not in properties and all('price' in c for c in contents):")
        add("        v = sum(c['price'] * c.get('quantity', 1) for c in contents)")
        add("        properties['value'] = round(v, 2) if isinstance(v, float) else v")
    if config.content_type:
        add("if 'content_type' not in properties:")
        add(f"    properties['content_type'] = {config.content_type!r}")
    if plan.description_from_name and plan.name_paths:
        add("if 'description' not in properties:")
        pad = "    "
        for keys in plan.name_paths:
            add(pad + f"v = {root.read(keys)}")
            add(pad + "if not isinstance(v, str):")
            pad += "    "
        add(pad + "v = None")
        add("    if v and v.strip():")
        add("        properties['description'] = v.strip()")

    # _event_id(): the event's own (text), else order_id:name, else a hash of the event.
    text_field = Field("event_id", (), values.text, "invalid_field")
    add("v = None")
    pad = ""
    for keys in plan.event_id_paths:
        add(pad + f"v = {root.read(keys)}")
        add(pad + "if v is not None:")
        body += [pad + "    " + line for line in _convert(src, text_field, "v")]
        add(pad + "if not v:")
        pad += "    "
    add(pad + "v = properties.get('order_id')")
    add(pad + "if v:")
    add(pad + "    v = f'{v}:' + name.strip()")
    add(pad + "else:")
    add(pad + "    try:")
    add(pad + f"        v = SHA256({const(orjson.dumps, 'DUMPS')}(event, option={orjson.OPT_SORT_KEYS})).hexdigest()")
    add(pad + "    except TypeError:")
    add(pad + "        return None")
    add("item = {'event': None, 'event_time': int(seconds), 'event_id': v}")
    add("if user:")
    add("    item['user'] = user")

    if config.send_page_url:  # _page()
        body += _field(src, root, plan.page_url, "url")
        body += _field(src, root, plan.page_referrer, "referrer")
        add("if url is None and referrer is None and click:")
        page_convert = const(plan.page_url.convert, "PAGE_CONVERT")
        add(f"    url, referrer = {page_convert}(click.get('url')), {page_convert}(click.get('referrer'))")
        add("if url or referrer:")
        add("    page = {}")
        add("    if url:")
        add("        page['url'] = url")
        add("    if referrer:")
        add("        page['referrer'] = referrer")
        add("    item['page'] = page")
    add("if properties:")
    add("    item['properties'] = properties")
    for key, fields in (("app", plan.app), ("lead", plan.lead)):
        if fields:
            add("part = {}")
            body += _table(src, root, fields, "part")
            add("if part:")
            add(f"    item[{key!r}] = part")
    add(f"ldu = {config.limited_data_use!r}")
    pad = ""
    for i, keys in enumerate(plan.limited_data_use_paths):  # the first bool
        if i:
            add(pad + "else:")
            pad += "    "
        add(pad + f"v = {root.read(keys)}")
        add(pad + "if type(v) is bool:")
        add(pad + "    ldu = v")
    add("if ldu is not None:")
    add("    item['limited_data_use'] = ldu")
    add("if len(names) == 1:")
    add("    item['event'] = names[0]")
    add("    return [item]")
    add("return [{**item, 'event': n} for n in names]")

    lines = ["def fast(event, click, now):", "    if type(event) is not dict:", "        return None",
             *_indent(root.prologue), *_indent(body)]
    source = "\n".join(lines)
    exec(compile(source, f"<mapping of {plan.name_paths!r}>", "exec"), src.names)  # noqa: S102 - our own source
    fast = src.names["fast"]
    fast.source = source  # for a reader of a profile or a traceback
    return fast


def _contents(src: _Source, root: _Root, plan, events) -> list[str]:
    """_contents()'s lines, leaving the items (or None) in `contents`."""
    lines = ["products = None"]
    pad = ""
    for i, keys in enumerate(plan.contents_paths):  # the first path with a value
        if i:
            lines.append(pad + "if products is None:")
            pad += "    "
        lines.append(pad + f"products = {root.read(keys)}")
    if plan.columns_path is not None:
        none = [f"contents = {src.const(events._columns, 'COLUMNS')}(event, {src.const(plan, 'PLAN')})"]
    elif plan.single_path is not None:
        fill = src.const(plan.single_item.fill, "SINGLE_FILL")
        where = ".".join(plan.single_path) + "."
        none = [
            f"holder = {root.read(plan.single_path)}",
            f"if not isinstance(holder, dict) or all(holder.get(k) in (None, '') for k in {plan.single_when!r}):",
            "    contents = None",
            "else:",
            f"    contents = {fill}({{}}, holder, {where!r})",
            "    contents = [contents] if contents else None"]
    else:
        none = ["contents = None"]
    lines += ["if products is None:", *_indent(none)]
    if not plan.contents_paths:
        return lines
    product = _Root(src, "product")
    item = _table(src, product, plan.item, "content")
    lines += [
        "else:",
        "    if type(products) is dict:",
        "        products = [products]",
        "    elif type(products) is not list:",
        "        return None",
        "    contents = []",
        "    for product in products:",
        "        if type(product) is not dict:",
        "            return None",
        "        content = {}",
        *_indent(product.prologue, "        "),
        *_indent(item, "        "),
        "        if content:",
        "            contents.append(content)",
    ]
    return lines
