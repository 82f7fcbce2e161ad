"""Each event source's rules, applied where the destination is known: the forwarder routes an
event to a pixel (web), an app (app) or an event set (offline, crm), then calls for_source().

The mapping cannot do this itself: one input shape may feed destinations of several sources
(routing), so its items carry whatever the spec fills. for_source() then keeps, of each item,
what its source takes (app.tiktok.facts, "event sources") and refuses, with a machine-readable
reason, what that source can never take:

  event_not_for_source  the event's name is not one the source takes (an app name to a pixel,
                        a CRM event set's custom name to a pixel or an app)
  missing_lead_id       a CRM event without lead.lead_id (TikTok requires it)
  missing_app_id        an app event without app.app_id (TikTok requires it)
  no_identifier         nothing left that TikTok matches on for this source: an offline event
                        without email or phone; a web/app event whose only identifiers were
                        of another source

What is left out is what the source does not take: the lead object outside crm, the app object
and the device IDs (idfa, idfv, gaid, att_status) outside app, and page, ttclid and ttp on app
(they come from a web click or page, and an app event is attributed by its device). Pure, no
I/O; an item is copied before anything is left out of it (one-to-many items share their dicts).
"""
from __future__ import annotations

from typing import Any

from app.mapping.values import Refusal, shown
from app.tiktok.facts import OFFLINE_IDENTIFIERS, SOURCE_EVENTS, SOURCE_ITEM_FIELDS, SOURCE_USER_FIELDS

__all__ = ["REASONS", "for_source"]

REASONS = ("event_not_for_source", "missing_lead_id", "missing_app_id", "no_identifier")

_NAMES = {"web": "a web pixel", "offline": "an offline event set", "app": "an app", "crm": "a CRM event set"}
_WEB_IDENTIFIERS = ("ttclid", "ttp", "email", "phone", "external_id")
_APP_IDENTIFIERS = ("idfa", "gaid", "idfv", "email", "phone", "external_id")


def for_source(items: list[dict], source: str) -> list[dict]:
    """The items as `source` takes them; Refusal when it can never take one (see the module)."""
    # On every event: the common case (a web item to a pixel) is two C-level subset tests per item.
    allowed, user_fields = SOURCE_ITEM_FIELDS[source], SOURCE_USER_FIELDS[source]
    names = SOURCE_EVENTS[source]
    out = []
    for item in items:
        if names is not None and item["event"] not in names:
            raise Refusal("event_not_for_source", f"event: {shown(item['event'])} is not an event TikTok "
                          f"takes from {_NAMES[source]} (map it to one of its {source} events)")
        user = item.get("user")
        if allowed.issuperset(item) and (user is None or user_fields.issuperset(user)):
            if source != "web":
                _check(item, source, stripped=False)
            out.append(item)  # nothing to leave out: not even copied
            continue
        kept = _kept(item, allowed, user_fields)
        _check(kept, source, stripped=True)
        out.append(kept)
    return out


def _kept(item: dict, allowed: frozenset[str], user_fields: frozenset[str]) -> dict:
    """A copy of the item without what its source does not take."""
    kept = {k: v for k, v in item.items() if k in allowed}
    user = item.get("user")
    if user is not None and not user_fields.issuperset(user):
        kept["user"] = {k: v for k, v in user.items() if k in user_fields}
        if not kept["user"]:
            del kept["user"]
    return kept


def _check(item: dict[str, Any], source: str, stripped: bool) -> None:
    user = item.get("user") or {}
    if source == "crm":
        if not (item.get("lead") or {}).get("lead_id"):
            raise Refusal("missing_lead_id", "lead.lead_id: a CRM event needs its TikTok lead ID "
                          "(map it in the spec's [lead] table)")
        return  # the lead ID identifies it
    if source == "app" and not (item.get("app") or {}).get("app_id"):
        raise Refusal("missing_app_id", "app.app_id: an app event needs its app's ID (the store ID "
                      "or package name; map it in the spec's [app] table)")
    if source == "offline":
        if not any(user.get(k) for k in OFFLINE_IDENTIFIERS):
            raise Refusal("no_identifier", "TikTok matches an offline event by email or phone only, "
                          "and this one has neither")
        return
    # Web and app: the forwarder checked the mapped item (has_identifier); only what was left out
    # here can have taken the last identifier with it.
    keys = _APP_IDENTIFIERS if source == "app" else _WEB_IDENTIFIERS
    if stripped and not (any(user.get(k) for k in keys) or user.get("ip") and user.get("user_agent")):
        raise Refusal("no_identifier", f"nothing TikTok matches {_NAMES[source]}'s events on is left "
                      f"(no {', '.join(keys)}, or IP with user agent)")
