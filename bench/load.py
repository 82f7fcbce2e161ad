"""The benchmark's load: clicks and Segment-spec conversions of realistic shape and size,
serialised once up front (bench/kafka.py produces them), and a pacer for steady offered load.

Every conversion has a kind, drawn from its index so a run is reproducible:
- joined (~89.5%): its click is produced before it;
- late (5%): it arrives before its click (the click is produced after it);
- no_click (5%): no click ID at all, only an email (and IP + user agent);
- bad_json (0.25%): a truncated message; bad_currency (0.25%): "BTC" (TikTok refuses it).
The two bad kinds are dead-lettered; every other event must reach the Events API.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

__all__ = ["PIXEL", "TOKEN", "KINDS", "BAD_KINDS", "Load", "kind_of", "click", "event",
           "make_load", "interleaved", "sent_at_of", "Pacer"]

PIXEL = "BENCHPIXEL000000001"
TOKEN = "bench-token-0123456789abcdef"

KINDS = ("joined", "late", "no_click", "bad_json", "bad_currency")
BAD_KINDS = frozenset({"bad_json", "bad_currency"})

_USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 musical_ly_34.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en",
)
_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES")
_CURRENCIES = ("USD", "GBP", "EUR", "usd", "eur")
_EVENTS = ("Order Completed",) * 7 + ("Checkout Started",) * 2 + ("Payment Info Entered",)
_PRODUCTS = (
    ("Merino Crew Socks", "apparel/socks", "Woolly"), ("Linen Summer Dress", "apparel/dresses", "Avena"),
    ("Trail Running Shoe", "footwear/running", "Strider"), ("Canvas Tote Bag", "accessories/bags", "Hold"),
    ("Organic Cotton Tee", "apparel/tops", "Avena"), ("Wireless Earbuds Pro", "electronics/audio", "Sonic"),
)


def kind_of(i: int) -> str:
    """The kind of conversion i: a fixed pattern, so a run (and a test) is reproducible."""
    if i % 400 == 7:
        return "bad_json"
    if i % 400 == 207:
        return "bad_currency"
    return {3: "late", 11: "no_click"}.get(i % 20, "joined")


def _ip(i: int) -> str:
    return f"203.0.{113 + i % 3}.{i % 251 + 1}" if i % 7 else f"2001:db8:{i % 65536:x}::{i % 4093:x}"


def click(i: int, run: str, now: float) -> dict:
    """Click i as a click tracker records it: its own ID, ttclid, _ttp, IP, UA, landing URL."""
    ttclid = f"E.C.P.Cs0B{run}{i:09d}Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0KkLlMmNn"
    return {
        "click_id": f"{run}-c{i}",
        "ttclid": ttclid,
        "ttp": f"2Gx{run}{i:010d}Q3kOe5RtYu7",
        "timestamp": round(now - 3600 - i % 7200, 3),
        "ip": _ip(i),
        "user_agent": _USER_AGENTS[i % len(_USER_AGENTS)],
        "url": f"https://shop.example/landing/spring-sale?utm_source=tiktok&utm_medium=paid&"
               f"utm_campaign=spring{i % 13}&ttclid={ttclid}",
        "referrer": "https://www.tiktok.com/",
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(i: int, run: str, now: float, kind: str | None = None, message_id: str | None = None) -> dict | bytes:
    """Conversion i (~1 KB of JSON); bytes for the bad_json kind."""
    kind = kind or kind_of(i)
    n_products = 2 + i % 2
    products = []
    for j in range(n_products):
        name, category, brand = _PRODUCTS[(i + j) % len(_PRODUCTS)]
        products.append({"product_id": f"SKU-{(i * 7 + j) % 90000 + 10000}", "sku": f"{brand[:3].upper()}-{j}{i % 997}",
                         "name": name, "category": category, "brand": brand,
                         "price": round(9.95 + (i + j) % 90, 2), "quantity": 1 + (i + j) % 3})
    value = sum(p["price"] * p["quantity"] for p in products)
    properties = {
        "order_id": f"{run}-o{i}", "checkout_id": f"chk_{i:09d}", "value": f"{value:.2f}",
        "revenue": round(value / 1.2, 2), "tax": round(value - value / 1.2, 2), "shipping": 4.95,
        "currency": "BTC" if kind == "bad_currency" else _CURRENCIES[i % len(_CURRENCIES)],
        "coupon": "SPRING10" if i % 4 == 0 else None, "products": products,
    }
    if kind != "no_click":
        properties = {"click_id": f"{run}-c{i}", **properties}
    doc = {
        "type": "track", "event": _EVENTS[i % len(_EVENTS)],
        "messageId": message_id or f"{run}-e{i}",
        "timestamp": _iso(now - 60 - i % 600), "userId": f"user_{i % 50000}",
        "anonymousId": f"{i:08x}-4b1e-4c2a-9f1e-{run}{i % 100000:05d}",
        "context": {
            "ip": _ip(i), "userAgent": _USER_AGENTS[(i + 1) % len(_USER_AGENTS)],
            "locale": _LOCALES[i % len(_LOCALES)],
            "library": {"name": "analytics-node", "version": "2.1.0"},
            "page": {"url": f"https://shop.example/checkout/thanks?order={run}-o{i}",
                     "referrer": "https://shop.example/checkout/payment"},
            "traits": {"email": f"Customer.{i}@Example.com", "phone": f"+44 7700 9{i % 100000:05d}"},
        },
        "properties": properties,
    }
    if kind == "bad_json":
        raw = orjson.dumps(doc)
        return raw[:len(raw) // 2]  # a message cut in half, as a crashed producer leaves it
    return doc


def sent_at_of(message_id: str) -> float | None:
    """The produce time (Unix seconds) the latency phase embeds in messageId as its last part."""
    tail = message_id.rsplit("-", 1)[-1]
    return int(tail) / 1e6 if tail.isdigit() else None


@dataclass
class Load:
    """A pre-serialised load: (key, value) clicks to produce first, late clicks to produce after
    the events, and the events. `joinable` events must reach the Events API."""

    clicks: list[tuple[bytes, bytes]] = field(default_factory=list)
    late_clicks: list[tuple[bytes, bytes]] = field(default_factory=list)
    events: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    start: int = 0  # the index of the first conversion

    @property
    def joinable(self) -> int:
        return sum(v for k, v in self.kinds.items() if k not in BAD_KINDS)


def make_load(n: int, run: str, now: float, start: int = 0) -> Load:
    """Conversions start..start+n-1 and their clicks, serialised once."""
    load = Load(start=start)
    dumps = orjson.dumps
    for i in range(start, start + n):
        kind = kind_of(i)
        load.kinds[kind] += 1
        if kind != "no_click":
            c = click(i, run, now)
            (load.late_clicks if kind == "late" else load.clicks).append((c["click_id"].encode(), dumps(c)))
        e = event(i, run, now, kind)
        load.events.append((f"{run}-u{i % 50000}".encode(), e if isinstance(e, bytes) else dumps(e)))
    return load


def interleaved(load: Load, chunk: int, lag: int = 2) -> list[tuple[list, list]]:
    """The load as production sends it, clicks and conversions together: (clicks, conversions)
    per `chunk` conversions, each joinable conversion's click in its own chunk's clicks (produced
    just before it), each late conversion's click `lag` chunks later (produced after it)."""
    clicks, late = iter(load.clicks), iter(load.late_clicks)
    out: list[tuple[list, list]] = []
    for first in range(0, len(load.events), chunk):
        out.append(([], load.events[first:first + chunk]))
    out += [([], []) for _ in range(lag)]
    for k, (before, events) in enumerate(out):
        for i in range(load.start + k * chunk, load.start + k * chunk + len(events)):
            kind = kind_of(i)
            if kind == "late":
                out[k + lag][0].append(next(late))
            elif kind != "no_click":
                before.append(next(clicks))
    return [c for c in out if c[0] or c[1]]


class Pacer:
    """How many events are due at a steady rate: `due(now)` minus what was sent so far."""

    def __init__(self, rate: float, start: float) -> None:
        self.rate = rate
        self.start = start
        self.sent = 0

    def due(self, now: float) -> int:
        return max(0, int((now - self.start) * self.rate) - self.sent)
