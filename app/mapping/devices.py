"""App events' device identifiers, written the way TikTok matches them (app.tiktok.facts, "event
sources"): IDFA raw in UPPERCASE, GAID raw in lowercase, either passed through when it already is
a SHA-256 (lowercase hex); IDFV as given; att_status one of TikTok's five values.

The converters a mapping spec names (`as = "idfa"` ...; the [user] fields idfa, gaid, idfv,
att_status use them by default), with app.mapping.values' contract: the TikTok value, None when
nothing usable is there (the field is left out), ValueError when the value is of a type no
identifier has (the event is refused with invalid_field).
"""
from __future__ import annotations

import re
from typing import Any

from app.mapping.normalise import is_sha256_hex
from app.mapping.values import shown, text
from app.tiktok.facts import ATT_STATUSES

__all__ = ["idfa", "gaid", "idfv", "att_status"]

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# iOS answers the all-zero IDFA without ATT consent, Android the all-zero GAID when the user
# limited ad tracking: it is every such device at once, so it identifies no one.
_ZERO = "00000000-0000-0000-0000-000000000000"


def _advertising_id(v: Any, upper: bool) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"expected a device ID string, got {shown(v)}")
    s = v.strip()
    if is_sha256_hex(s):
        return s.lower()
    if not _UUID.fullmatch(s) or s == _ZERO:
        return None  # not an advertising ID (an unfilled macro, "unknown", the zero ID): matches no one
    return s.upper() if upper else s.lower()


def idfa(v: Any) -> str | None:
    """Apple's advertising ID: raw in UPPERCASE (TikTok's rule), or a SHA-256 passed through."""
    return _advertising_id(v, upper=True)


def gaid(v: Any) -> str | None:
    """Google's advertising ID: raw in lowercase (TikTok's rule), or a SHA-256 passed through."""
    return _advertising_id(v, upper=False)


def idfv(v: Any) -> str | None:
    """Apple's vendor ID: TikTok states no rule, so it is sent as given (trimmed)."""
    return text(v)


def att_status(v: Any) -> str | None:
    """The App Tracking Transparency status, in TikTok's spelling; anything else is left out."""
    if not isinstance(v, str):
        return None
    s = "_".join(v.upper().split())  # "not determined", "Not_Determined": NOT_DETERMINED
    return s if s in ATT_STATUSES else None
