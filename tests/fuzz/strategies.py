"""Hostile tracking events and clicks, as the bytes a producer could put on the input topics.

A message is a valid Segment track call (joined to a click, joined to a click that comes later,
or with none) or one of its mutations:
- at a path the Segment preset reads (every path in app/mapping/presets/segment.toml, and their
  parents): a wrong type, deletion, a huge string, nesting up to 1,024 levels, odd emails,
  phones, timestamps, currencies, values, products that are not a list;
- of the bytes: truncated JSON, invalid UTF-8, duplicate keys, over max_message_bytes, not an
  object at all.
Clicks: valid ones and junk. Everything is drawn by Hypothesis: seeded and shrinkable.
`MUTATIONS` names the families, so that the Kafka-level run (bench/fuzz.py) can draw from them
with its own seeded random.Random and the same code.
"""
from __future__ import annotations

import json
import random
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import orjson
from hypothesis import strategies as st

# The clock at import: the forwarder maps against the real clock, so events are made near it.
NOW = float(int(time.time()))
MAX_BYTES = 256 * 1024            # settings.max_message_bytes' default

_PRESET = Path(__file__).resolve().parents[2] / "app" / "mapping" / "presets" / "segment.toml"


def dumps(doc) -> bytes:
    """JSON bytes; Python's json for what orjson refuses to write (integers over 64 bits)."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc).encode()


def _preset_paths() -> tuple[tuple[str, ...], ...]:
    """Every dotted path the Segment preset reads for an event (its [event], [user], [page],
    [properties] tables and [contents] from/single), and each of their parents."""
    doc = tomllib.loads(_PRESET.read_text())
    found: set[str] = set()
    for table in ("event", "user", "page", "properties"):
        for key, value in doc[table].items():
            if key in ("kinds", "kind_default", "fold_names", "value_from_contents"):
                continue
            found.update(value if isinstance(value, list) else [value] if isinstance(value, str) else [])
    found.update(doc["contents"]["from"])
    found.add(doc["contents"]["single"])
    paths = {tuple(p.split(".")) for p in found}
    paths |= {p[:i] for p in list(paths) for i in range(1, len(p))}
    return tuple(sorted(paths))


PATHS = _preset_paths()

EVENT_NAMES = ("Order Completed", "Product Added", "Checkout Started", "Signed Up", "Product Viewed",
               "Page Scrolled", "order_completed")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def valid_event(rng: random.Random, marker: str, click_id: str | None) -> dict:
    """A Segment track call that maps: with an email (so it is always attributable)."""
    n = rng.randint(0, 3)
    products = [{"product_id": f"sku-{i}", "price": rng.choice([1, 9.99, 120]), "quantity": rng.randint(1, 3)}
                for i in range(n)]
    props: dict = {"value": round(rng.uniform(1, 500), 2), "currency": rng.choice(["EUR", "USD", "gbp"]),
                   "order_id": f"o-{marker}"}
    if products:
        props["products"] = products
    if click_id is not None:
        props["click_id"] = click_id
    return {"type": "track", "event": rng.choice(EVENT_NAMES[:5]), "messageId": marker,
            "timestamp": iso(NOW - rng.uniform(1, 3 * 86400)),
            "userId": f"user-{rng.randint(1, 10 ** 6)}",
            "context": {"traits": {"email": f"{marker}@example.com", "phone": "+33 6 12 34 56 78",
                                   "firstName": "Ann"},
                        "ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (fuzz)",
                        "page": {"url": "https://shop.example/checkout"}},
            "properties": props}


def valid_click(click_id: str, at: float) -> bytes:
    return dumps({"click_id": click_id, "ttclid": f"E.C.P.{click_id}", "timestamp": iso(at),
                         "ip": "198.51.100.9", "user_agent": "Mozilla/5.0 (click)",
                         "url": f"https://shop.example/?ttclid=E.C.P.{click_id}"})


def deep(depth: int, leaf: str = "1") -> str:
    """JSON text of `depth` nested arrays (orjson reads up to 1,024 levels; writes 254)."""
    return "[" * depth + leaf + "]" * depth


# Odd values of the kinds the mapping converts; wrong types of every JSON kind.
ODD = {
    "email": ["", " ", "@", "a@", "@b", "ÄÖ@exämple.com", "a" * 5000 + "@x.io", ["x@y.z", 3], {"e": 1}],
    "phone": ["", "+", "12", "+999 999", "٠٦١٢٣٤٥٦٧٨", "+33 6 12 34 56 78 ext. 999999", 33612345678, -1, 1e300],
    "timestamp": ["", "now", "2024-13-45T99:99:99Z", "9999-12-31T23:59:59Z", "0001-01-01", -1, 0, 1e20,
                  1.7e12, "1704722000", "NaN", True, NOW + 86400 * 365, iso(NOW + 3600)],
    "currency": ["", "ZZZ", "eu", "€", "USDD", 978, None, ["EUR"], "usd "],
    "value": ["", "abc", "1,5", "NaN", "Infinity", -1, 1e308, "0x10", [], {"v": 1}, True],
    "products": ["not a list", 7, {"product_id": 1}, [1, "x", None], [{"price": "free", "quantity": -5}],
                 [{"product_id": ["a"], "quantity": 1e30}]],
}
WRONG_TYPES = [None, True, 0, -7, 3.5, 10 ** 40, "", "text", [], [1, [2]], {}, {"k": {"k": 1}}]


def _set(doc: dict, path: tuple[str, ...], value, delete: bool = False) -> None:
    node = doc
    for key in path[:-1]:
        nxt = node.get(key) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def _odd_kind(path: tuple[str, ...]) -> str | None:
    last = path[-1].lower()
    for kind in ("email", "phone", "currency", "products"):
        if kind in last:
            return kind
    if "timestamp" in last:
        return "timestamp"
    if last in ("value", "revenue", "total", "price", "quantity", "num_items"):
        return "value"
    return None


# The mutation families; each takes (rng, valid event) and gives the message's bytes.
def m_wrong_type(rng, ev):
    _set(ev, rng.choice(PATHS), rng.choice(WRONG_TYPES))
    return dumps(ev)


def m_missing(rng, ev):
    _set(ev, rng.choice(PATHS), None, delete=True)
    return dumps(ev)


def m_odd_value(rng, ev):
    path = rng.choice([p for p in PATHS if _odd_kind(p)])
    _set(ev, path, rng.choice(ODD[_odd_kind(path)]))
    return dumps(ev)


def m_huge_string(rng, ev):
    _set(ev, rng.choice(PATHS), "x" * rng.choice([10_000, 100_000, 200_000]))
    return dumps(ev)


def m_deep(rng, ev):
    # Nested at a path, textually: up to the 1,024 levels orjson reads (the event's own object
    # and its parents count: a depth near 1,022 at the top level is the edge).
    depth = rng.choice([253, 255, 600, 1000, 1019, 1020, 1021, 1022, 1023, 1024, 1030])
    key = rng.choice(["properties", "context", "zz", "traits"])
    text = dumps({k: v for k, v in ev.items() if k != key}).decode()
    return (text[:-1] + f', "{key}": ' + deep(max(depth - 1, 1)) + "}").encode()


def m_invalid_utf8(rng, ev):
    raw = dumps(ev)
    at = rng.randrange(len(raw))
    return raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]) + raw[at:]


def m_truncated(rng, ev):
    raw = dumps(ev)
    return raw[:rng.randrange(len(raw))]


def m_duplicate_keys(rng, ev):
    raw = dumps(ev)
    dup = rng.choice([b'"event": 12, ', b'"type": "identify", ', b'"properties": "x", ',
                      b'"timestamp": null, ', b'"event": "Order Completed", '])
    return b"{" + dup + raw[1:] if rng.random() < 0.5 else raw[:-1] + b", " + dup.rstrip(b", ") + b"}"


def m_item_field(rng, ev):
    products = ev.setdefault("properties", {}).setdefault("products", [{"product_id": "p"}])
    if not products:
        products.append({"product_id": "p"})
    field = rng.choice(["product_id", "sku", "id", "content_id", "name", "category", "brand", "price",
                        "quantity"])
    products[0][field] = rng.choice(WRONG_TYPES + ODD["value"])
    return dumps(ev)


def m_oversize(rng, ev):
    ev.setdefault("properties", {})["padding"] = "p" * (MAX_BYTES + rng.randint(1, 1000))
    return dumps(ev)


def m_not_an_object(rng, ev):
    return rng.choice([b"[]", b"null", b"42", b'"track"', b"", b" ", b"[" + dumps(ev) + b"]", b"\x00"])


MUTATIONS = {
    "wrong_type": m_wrong_type, "missing": m_missing, "odd_value": m_odd_value,
    "huge_string": m_huge_string, "deep": m_deep, "invalid_utf8": m_invalid_utf8,
    "item_field": m_item_field, "truncated": m_truncated, "duplicate_keys": m_duplicate_keys, "oversize": m_oversize,
    "not_an_object": m_not_an_object,
}


def junk_click(rng: random.Random, click_id: str) -> bytes:
    good = orjson.loads(valid_click(click_id, NOW - 60))
    kind = rng.randrange(6)
    if kind == 0:
        good.pop("click_id")
    elif kind == 1:
        good[rng.choice(list(good))] = rng.choice(WRONG_TYPES)
    elif kind == 2:
        good["timestamp"] = rng.choice(ODD["timestamp"])
    elif kind == 3:
        return dumps(good)[:rng.randrange(1, 40)]
    elif kind == 4:
        return b"\xff" + dumps(good)
    else:
        return rng.choice([b"[]", b"null", b"1", b"{" * 2000])
    return dumps(good)


# --------------------------------------------------------------------------- Hypothesis

seeds = st.integers(0, 2 ** 32 - 1)
markers = st.integers(0, 10 ** 9).map(lambda n: f"m-{n}")


@st.composite
def messages(draw, valid_share: float = 0.3) -> tuple[str, bytes, str | None]:
    """(kind, bytes, click_id): "valid" or a mutation family's name."""
    rng = random.Random(draw(seeds))
    marker = draw(markers)
    click_id = draw(st.sampled_from([None, f"c-{marker}"]))
    ev = valid_event(rng, marker, click_id)
    if draw(st.floats(0, 1)) < valid_share:
        return "valid", dumps(ev), click_id
    kind = draw(st.sampled_from(sorted(MUTATIONS)))
    return kind, MUTATIONS[kind](rng, ev), click_id


@st.composite
def clicks(draw) -> tuple[bool, bytes]:
    """(valid, bytes)."""
    rng = random.Random(draw(seeds))
    click_id = f"c-m-{draw(st.integers(0, 10 ** 9))}"
    if draw(st.booleans()):
        return True, valid_click(click_id, NOW - rng.uniform(1, 86400))
    return False, junk_click(rng, click_id)


# Bytes for the bundle framing: anything at all, including what no intake would accept.
any_bytes = st.one_of(st.binary(max_size=300), st.just(b""), st.just(b"\n" * 5),
                      st.just(b"ttbridge-events/2\n{}\n"), st.just(deep(1024).encode()))
