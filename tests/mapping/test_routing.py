"""Which pixel an event goes to: a rule on the routing path's value, else the default."""
from __future__ import annotations

import pytest

from app.mapping.routing import Router
from app.settings import Pixel, Routing, Secret, load

SHOP_A = Pixel("PIXA", Secret("token-a"))
SHOP_B = Pixel("PIXB", Secret("token-b"), "web", "TEST123")
FALLBACK = Pixel("PIXDEFAULT", Secret("token-d"))
PIXELS = {p.code: p for p in (SHOP_A, SHOP_B, FALLBACK)}


def router(path="properties.site", rules=None, default="PIXDEFAULT") -> Router:
    rules = {"shop-a": "PIXA", "shop-b": "PIXB"} if rules is None else rules
    return Router(load({}, pixels=PIXELS, routing=Routing(path, rules, default)))


@pytest.mark.parametrize("event, pixel", [
    ({"properties": {"site": "shop-a"}}, SHOP_A),
    ({"properties": {"site": "shop-b"}}, SHOP_B),
    ({"properties": {"site": "shop-c"}}, FALLBACK),       # no rule for the value
    ({"properties": {"site": "Shop-A"}}, FALLBACK),       # values match exactly
    ({"properties": {}}, FALLBACK),
    ({}, FALLBACK),
    ({"properties": "shop-a"}, FALLBACK),                 # not an object on the way
    ({"properties": [{"site": "shop-a"}]}, FALLBACK),
    ({"properties": {"site": ["shop-a"]}}, FALLBACK),     # not a string (and unhashable)
    ({"properties": {"site": {"shop-a": 1}}}, FALLBACK),
    ({"properties": {"site": None}}, FALLBACK),
    ({"site": "shop-a"}, FALLBACK),                       # the value elsewhere does not count
])
def test_rules_by_path_value(event, pixel):
    assert router().pixel_for(event) is pixel


def test_no_default_and_no_match_is_none():
    r = router(default=None)
    assert r.pixel_for({"properties": {"site": "shop-c"}}) is None
    assert r.pixel_for({}) is None
    assert r.pixel_for({"properties": {"site": "shop-b"}}) is SHOP_B


def test_no_path_always_routes_to_the_default():
    r = router(path=None, rules={})
    assert r.pixel_for({"properties": {"site": "shop-a"}}) is FALLBACK
    assert r.pixel_for({}) is FALLBACK


def test_single_pixel_from_the_environment_takes_everything():
    settings = load({"TIKTOK_PIXEL_CODE": "PIX1", "TIKTOK_ACCESS_TOKEN": "token-1"})
    pixel = Router(settings).pixel_for({"properties": {"site": "shop-a"}})
    assert pixel == Pixel("PIX1", Secret("token-1"), "web", None)


def test_nothing_configured_routes_nowhere():
    assert Router(load({})).pixel_for({"event": "Order Completed"}) is None
