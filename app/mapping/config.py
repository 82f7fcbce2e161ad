"""The mapping's configuration: the input shape's spec (a preset, maybe extended) and the
settings that shape every mapped event. Validated (ValueError naming the setting) and compiled
once into a Plan (app.mapping.spec), so app.mapping.events's hot path only reads lookups.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping

import phonenumbers

from app.mapping.spec import Plan, SpecError, compile_spec, load_preset, merge, resolve
from app.tiktok.facts import CONTENT_TYPES, STANDARD_EVENTS

__all__ = ["MappingConfig", "DEFAULT_EVENT_MAP", "DAY_S", "DEFAULT_MAX_FUTURE_S", "is_seconds"]

_SEGMENT = load_preset("segment")
# The default preset's event table (Segment's E-commerce spec names).
DEFAULT_EVENT_MAP: Mapping[str, tuple[str, ...]] = MappingProxyType({
    source: (targets,) if isinstance(targets, str) else tuple(targets)
    for source, targets in _SEGMENT["events"].items()})

DAY_S = 86_400
# TikTok's click-attribution window is 1-28 days; longer would attach clicks TikTok ignores.
_MAX_ATTRIBUTION_WINDOW_S = 28 * DAY_S
# How far ahead of our clock an event_time may be: the clock skew between the tracker and us.
# TikTok's own limit is unconfirmed (a strict receiver refuses future times with 40002, failing
# the whole batch), so a small allowance; the fake Events API draws the same line.
DEFAULT_MAX_FUTURE_S = 300.0


def _fold(name: str) -> str:
    # "order_completed", "order completed" and "Order Completed" name the same Segment event.
    return " ".join(name.replace("_", " ").split()).casefold()


@dataclass(frozen=True)
class MappingConfig:
    """How source events become TikTok events. Validated (ValueError) and compiled once."""

    # The input shape: a resolved spec document (app.mapping.spec); the Segment preset if None.
    spec: Mapping[str, Any] | None = None
    # Source event name -> TikTok standard names (one-to-many allowed; () = never send). None: the
    # spec's [events]. Complete when given: from_dict() merges overrides over the spec's table.
    # TikTok names map to themselves.
    event_map: Mapping[str, tuple[str, ...]] | None = None
    # Dotted paths into the source event to the tracker's own click ID; first non-empty wins.
    # None: the spec's event.click_id.
    click_id_paths: tuple[str, ...] | None = None
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
    # Events more than this ahead of `now` are refused as future_event (0..one day: beyond a day
    # it is not clock skew but a wrong clock or unit).
    max_future_s: float = DEFAULT_MAX_FUTURE_S

    # Compiled from the fields above, for the mapping's hot path.
    plan: Plan = field(init=False, repr=False, compare=False)
    _names: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _folded: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    # map_event's generated fast path (app.mapping.compiled), made on the first event.
    _compiled: Callable | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        region = self.default_region or None
        if region is not None and (not isinstance(region, str)
                                   or region.upper() not in phonenumbers.SUPPORTED_REGIONS):
            raise ValueError(f"default_region: {region!r} is not a region code like GB")
        region = region and region.upper()
        doc = dict(_SEGMENT if self.spec is None else self.spec)
        if self.click_id_paths is not None:
            if not self.click_id_paths or isinstance(self.click_id_paths, str):
                raise ValueError("click_id_paths: must be a non-empty list of dotted paths")
            for p in self.click_id_paths:
                if not isinstance(p, str) or not all(p.split(".")):
                    raise ValueError(f"click_id_paths: {p!r} is not a dotted path")
            doc = merge(doc, {"event": {"click_id": list(self.click_id_paths)}})
        if self.event_map is not None:
            doc["events"] = {s: [t] if isinstance(t, str) else list(t) for s, t in self.event_map.items()}
        plan = compile_spec(doc, region)  # SpecError is a ValueError naming the key
        names = {n: (n,) for n in STANDARD_EVENTS}
        names.update(plan.events)
        folded: dict[str, tuple[str, ...]] = {}
        if plan.fold_names:
            folded = {_fold(n): (n,) for n in STANDARD_EVENTS}
            spelled: dict[str, str] = {}
            for source in plan.events:
                key = _fold(source)
                if key in spelled and names[spelled[key]] != names[source]:
                    raise ValueError(f"events: {spelled[key]!r} and {source!r} differ only in case or "
                                     "spacing but map to different TikTok events")
                spelled[key] = source
                folded[key] = names[source]
        if not 0 < self.attribution_window_s <= _MAX_ATTRIBUTION_WINDOW_S:
            raise ValueError("attribution_window_s: must be > 0 and at most 28 days (TikTok's "
                             f"limit), got {self.attribution_window_s}")
        if self.content_type is not None and self.content_type not in CONTENT_TYPES:
            raise ValueError(f"content_type: must be one of {sorted(CONTENT_TYPES)}")
        if self.limited_data_use not in (None, True, False):
            raise ValueError("limited_data_use: must be true, false or unset")
        if self.max_event_age_s is not None and not self.max_event_age_s > 0:
            raise ValueError("max_event_age_s: must be > 0 or unset")
        if not (is_seconds(self.max_future_s) and 0 <= self.max_future_s <= DAY_S):
            raise ValueError(f"max_future_s: must be from 0 to {DAY_S} seconds, got {self.max_future_s!r}")
        setattr_ = partial(object.__setattr__, self)
        setattr_("default_region", region)
        setattr_("click_id_paths", tuple(".".join(p) for p in plan.click_id_paths))
        setattr_("event_map", MappingProxyType(dict(plan.events)))
        setattr_("plan", plan)
        setattr_("_names", names)
        setattr_("_folded", folded)

    def tiktok_names(self, name: str) -> tuple[str, ...]:
        """The TikTok names a source event name maps to; () when unmapped."""
        names = self._names.get(name)
        if names is not None:
            return names
        return self._folded.get(_fold(name), ()) if self._folded else ()

    def listed(self, name: str) -> bool:
        """Whether the event table names it (a TikTok name, or a source name, maybe mapped to [])."""
        return name in self._names or bool(self._folded) and _fold(name) in self._folded

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> MappingConfig:
        """From the TOML-shaped table: {"events": {"Order Completed": "Purchase" | [...]}, ...}.

        `spec` is the input shape (a resolved spec document, or a preset name); `events` is merged
        over the spec's table (map a name to [] to stop sending it). Unknown keys and wrong types
        raise ValueError naming the key.
        """
        kwargs: dict[str, Any] = {}
        spec = doc.get("spec")
        if spec is None or isinstance(spec, str):
            try:
                spec = load_preset(spec or "segment")
            except SpecError as e:
                raise ValueError(str(e)) from None
        elif isinstance(spec, Mapping):
            spec = resolve(spec)
        else:
            raise ValueError(f"spec: expected a preset name or a spec table, got {spec!r}")
        kwargs["spec"] = spec
        for key, value in doc.items():
            if key == "spec":
                continue
            if key == "events":
                if not isinstance(value, Mapping):
                    raise ValueError("events: expected a table of source name -> TikTok name(s)")
                events = {s: (t,) if isinstance(t, str) else tuple(t) for s, t in spec.get("events", {}).items()}
                for source, targets in value.items():
                    targets = [targets] if isinstance(targets, str) else targets
                    if not isinstance(targets, (list, tuple)) or not all(
                            isinstance(t, str) for t in targets):
                        raise ValueError(f"events: {source!r}: expected a TikTok event name or a "
                                         "list of them")
                    events[source] = tuple(targets)
                kwargs["event_map"] = events
            elif key not in _CONFIG_TYPES:
                raise ValueError(f"{key}: unknown mapping setting (known: events, spec, "
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
    "max_future_s": is_seconds,
}
