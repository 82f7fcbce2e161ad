"""The mapping's configuration: which source events become which TikTok events, and the settings
that shape every mapped event. Validated (ValueError naming the setting) and precompiled once, so
app.mapping.events's hot path only reads lookups.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping

import phonenumbers

from app.mapping.normalise import (
    hash_email,
    hash_external_id,
    hash_first_name,
    hash_last_name,
    hash_phone,
    hash_zip_code,
)
from app.tiktok.facts import CONTENT_TYPES, STANDARD_EVENTS

__all__ = ["MappingConfig", "DEFAULT_EVENT_MAP", "DAY_S", "is_seconds"]

DEFAULT_EVENT_MAP: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Product Viewed": ("ViewContent",),
    "Product Added": ("AddToCart",),
    "Product Added to Wishlist": ("AddToWishlist",),
    "Checkout Started": ("InitiateCheckout",),
    "Payment Info Entered": ("AddPaymentInfo",),
    "Order Completed": ("Purchase",),
    "Products Searched": ("Search",),
    "Signed Up": ("CompleteRegistration",),
    "Lead Generated": ("Lead",),
    "Form Submitted": ("Lead",),
})

DAY_S = 86_400
# TikTok's click-attribution window is 1-28 days; longer would attach clicks TikTok ignores.
_MAX_ATTRIBUTION_WINDOW_S = 28 * DAY_S


def _fold(name: str) -> str:
    # "order_completed", "order completed" and "Order Completed" name the same Segment event.
    return " ".join(name.replace("_", " ").split()).casefold()


def _path(dotted: str) -> tuple[str, ...]:
    keys = tuple(dotted.split("."))
    if not all(keys):
        raise ValueError(f"click_id_paths: {dotted!r} is not a dotted path")
    return keys


@dataclass(frozen=True)
class MappingConfig:
    """How source events become TikTok events. Validated (ValueError) and precompiled once."""

    # Source event name -> TikTok standard names (one-to-many allowed; () = never send). Complete:
    # use from_dict() to merge overrides over DEFAULT_EVENT_MAP. TikTok names map to themselves.
    event_map: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_EVENT_MAP)
    # Dotted paths into the source event to the tracker's own click ID; first non-empty wins.
    click_id_paths: tuple[str, ...] = ("properties.click_id", "context.click_id")
    # Region (e.g. "GB") for phone numbers written without a country code; None leaves them out.
    default_region: str | None = None
    # A click's ttclid/ttp count only if it happened at most this long before the event.
    attribution_window_s: float = 7 * DAY_S
    # Sent on every event when set; an event's own bool limited_data_use takes precedence.
    limited_data_use: bool | None = None
    # "product" or "product_group", sent when set; an event's own valid content_type wins.
    content_type: str | None = None
    # False leaves page url/referrer out (they can carry PII in query strings).
    send_page_url: bool = True
    # Events older than this (at mapping time) are refused as stale_event; None = no limit (TikTok's
    # own limit for web events is unconfirmed).
    max_event_age_s: float | None = None

    # Compiled from the fields above, for the mapping's hot path.
    _names: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _folded: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    # click_id_paths split into keys.
    click_paths: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    # (TikTok user field, hash function bound to default_region, source paths as keys).
    hashed_user: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {n: (n,) for n in STANDARD_EVENTS}
        for source, targets in self.event_map.items():
            targets = (targets,) if isinstance(targets, str) else tuple(targets)
            for target in targets:
                if target not in STANDARD_EVENTS:
                    raise ValueError(f"events: {source!r} -> {target!r} is not a TikTok standard "
                                     f"event (one of {', '.join(sorted(STANDARD_EVENTS))})")
            names[source] = tuple(dict.fromkeys(targets))  # duplicates would only be deduped
        folded = {_fold(n): (n,) for n in STANDARD_EVENTS}
        spelled: dict[str, str] = {}
        for source in self.event_map:
            key = _fold(source)
            if key in spelled and names[spelled[key]] != names[source]:
                raise ValueError(f"events: {spelled[key]!r} and {source!r} differ only in case or "
                                 "spacing but map to different TikTok events")
            spelled[key] = source
            folded[key] = names[source]
        region = self.default_region or None
        if region is not None and (not isinstance(region, str)
                                   or region.upper() not in phonenumbers.SUPPORTED_REGIONS):
            raise ValueError(f"default_region: {region!r} is not a region code like GB")
        if not 0 < self.attribution_window_s <= _MAX_ATTRIBUTION_WINDOW_S:
            raise ValueError("attribution_window_s: must be > 0 and at most 28 days (TikTok's "
                             f"limit), got {self.attribution_window_s}")
        if self.content_type is not None and self.content_type not in CONTENT_TYPES:
            raise ValueError(f"content_type: must be one of {sorted(CONTENT_TYPES)}")
        if self.limited_data_use not in (None, True, False):
            raise ValueError("limited_data_use: must be true, false or unset")
        if self.max_event_age_s is not None and not self.max_event_age_s > 0:
            raise ValueError("max_event_age_s: must be > 0 or unset")
        if not self.click_id_paths or isinstance(self.click_id_paths, str):
            raise ValueError("click_id_paths: must be a non-empty list of dotted paths")
        setattr_ = partial(object.__setattr__, self)
        setattr_("default_region", region and region.upper())
        setattr_("click_id_paths", tuple(self.click_id_paths))
        setattr_("event_map", MappingProxyType({s: names[s] for s in self.event_map}))
        setattr_("_names", names)
        setattr_("_folded", folded)
        setattr_("click_paths", tuple(_path(p) for p in self.click_id_paths))
        phone = partial(hash_phone, default_region=region)
        setattr_("hashed_user", tuple((name, phone if hasher is hash_phone else hasher, paths)
                                       for name, hasher, paths in _HASHED_USER))

    def tiktok_names(self, name: str) -> tuple[str, ...]:
        """The TikTok names a source event name maps to; () when unmapped."""
        names = self._names.get(name)
        return names if names is not None else self._folded.get(_fold(name), ())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> MappingConfig:
        """From the TOML-shaped table: {"events": {"Order Completed": "Purchase" | [...]}, ...}.

        `events` is merged over DEFAULT_EVENT_MAP (map a name to [] to stop sending it). Unknown
        keys and wrong types raise ValueError naming the key.
        """
        kwargs: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "events":
                if not isinstance(value, Mapping):
                    raise ValueError("events: expected a table of source name -> TikTok name(s)")
                events = dict(DEFAULT_EVENT_MAP)
                for source, targets in value.items():
                    targets = [targets] if isinstance(targets, str) else targets
                    if not isinstance(targets, (list, tuple)) or not all(
                            isinstance(t, str) for t in targets):
                        raise ValueError(f"events: {source!r}: expected a TikTok event name or a "
                                         "list of them")
                    events[source] = tuple(targets)
                kwargs["event_map"] = events
            elif key not in _CONFIG_TYPES:
                raise ValueError(f"{key}: unknown mapping setting (known: events, "
                                 f"{', '.join(_CONFIG_TYPES)})")
            elif not _CONFIG_TYPES[key](value):
                raise ValueError(f"{key}: wrong type ({value!r})")
            else:
                kwargs[key] = tuple(value) if key == "click_id_paths" else value
        return cls(**kwargs)


def is_seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CONFIG_TYPES: dict[str, Callable[[Any], bool]] = {
    "click_id_paths": lambda v: isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v),
    "default_region": lambda v: v is None or isinstance(v, str),
    "attribution_window_s": is_seconds,
    "limited_data_use": lambda v: v is None or isinstance(v, bool),
    "content_type": lambda v: v is None or isinstance(v, str),
    "send_page_url": lambda v: isinstance(v, bool),
    "max_event_age_s": lambda v: v is None or is_seconds(v),
}


# --------------------------------------------------------------------------- hashed user fields
# A field table of the mapping, kept here because MappingConfig binds it to the default region
# (app.mapping.events reads the bound copy, config.hashed_user).

def _paths(*dotted: str) -> tuple[tuple[str, ...], ...]:
    return tuple(_path(p) for p in dotted)


# (TikTok field, hash function, source paths): Segment's traits first, then properties. The phone
# hasher is bound to the configured default region in MappingConfig.
_HASHED_USER = (
    ("email", hash_email, _paths("context.traits.email", "traits.email", "properties.email")),
    ("phone", hash_phone, _paths("context.traits.phone", "traits.phone", "properties.phone")),
    ("external_id", hash_external_id, _paths("userId")),
    ("first_name", hash_first_name, _paths("context.traits.firstName", "traits.firstName",
                                           "context.traits.first_name", "traits.first_name")),
    ("last_name", hash_last_name, _paths("context.traits.lastName", "traits.lastName",
                                         "context.traits.last_name", "traits.last_name")),
    ("zip_code", hash_zip_code, _paths("context.traits.address.postalCode",
                                       "traits.address.postalCode", "context.traits.zip",
                                       "traits.zip")),
)
