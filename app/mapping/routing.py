"""Which pixel an event goes to: the value at the routing path picks a rule, else the default."""
from __future__ import annotations

from app.settings import Pixel, Settings

__all__ = ["Router"]


class Router:
    def __init__(self, settings: Settings) -> None:
        self._path = tuple(settings.routing.path.split(".")) if settings.routing.path else ()
        self._rules = {value: settings.pixels[code] for value, code in settings.routing.rules.items()}
        default = settings.routing.default
        self._default = settings.pixels[default] if default else None

    def pixel_for(self, event: dict) -> Pixel | None:
        if self._path:
            value = event
            for key in self._path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, str) and value in self._rules:
                return self._rules[value]
        return self._default
