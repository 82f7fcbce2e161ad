"""`ttbridge map`: what ttbridge would send TikTok for each message, before going live.

Reads messages (one JSON document per line) on stdin and prints one JSON object per line:
`{"data": [<TikTok data[] items>]}`, `{"skipped": "<reason>"}`, or `{"refused": "<reason>",
"message": "..."}` — the same decisions the worker makes (mapping, skip reasons, the identifier
check, the event-age limit), with no broker and no Events API. A batch message (a shape with
event.batch, such as mParticle's) prints one line per event it carries. `--now` judges event age
against a fixed time instead of the clock, so a preview of fixed messages stays reproducible.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import tomllib
from typing import IO, Iterator

import orjson

from app.mapping.config import DAY_S, MappingConfig
from app.mapping.decode import decode_click, decode_object
from app.mapping.events import Refusal, Skip, events_of, has_identifier, map_event, skip_reason
from app.mapping.spec import PRESETS, SpecError, load_preset, resolve
from app.settings import Settings, SettingsError, load, mapping_config

__all__ = ["register", "preview"]

# Lines as large as the worker's default limit, and more (map is for looking, not guarding).
_MAX_LINE = 16 * 1024 * 1024


def preview(lines: IO[bytes], config: MappingConfig, click: dict | None, now: float) -> Iterator[dict]:
    """One outcome per event of every line."""
    for line in lines:
        if not line.strip():
            continue
        try:
            doc = decode_object(line, _MAX_LINE)
        except Refusal as r:
            yield _refused(r)
            continue
        events = events_of(doc, config)
        if not events:  # a batch with no events: the worker counts it as skipped, so does map
            yield {"skipped": "no_events"}
        for event in events:
            yield _outcome(event, click, config, now)


def _outcome(event: dict | Refusal, click: dict | None, config: MappingConfig, now: float) -> dict:
    if isinstance(event, Refusal):
        return _refused(event)
    try:
        items = map_event(event, click, config, now)
    except Refusal as r:
        return _refused(r)
    except Skip as s:
        return {"skipped": s.reason}
    if not items:
        return {"skipped": skip_reason(event, config)}
    if not has_identifier(items[0]):
        return {"refused": "no_identifier", "message": "no ttclid, ttp, email, phone, external_id, or IP "
                "with user agent: TikTok cannot attribute it"}
    return {"data": items}


def _refused(r: Refusal) -> dict:
    return {"refused": r.reason, "message": r.message}


def _config(args) -> MappingConfig:
    if args.preset is None and args.config is None:
        return mapping_config(load())  # the worker's own: TTBRIDGE_CONFIG and the environment
    try:
        spec = load_preset(args.preset or "segment")
        if args.config:
            with open(args.config, "rb") as f:
                own = tomllib.load(f)
            spec = resolve(own)  # on its own, or over the preset its `extends` names
        # The worker's default windows, so that a message the worker would refuse as stale (or
        # join to a click it would ignore) is shown so here too.
        return MappingConfig(spec=spec, default_region=args.default_region,
                             max_event_age_s=Settings.max_event_age_days * DAY_S,
                             attribution_window_s=Settings.attribution_window_days * DAY_S)
    except OSError as e:
        raise SettingsError(f"--config {args.config}: cannot read it ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"--config {args.config}: not valid TOML ({e})") from None
    except (SpecError, ValueError) as e:
        raise SettingsError(f"{'--config ' + args.config if args.config else '--preset'}: {e}") from None


def _click(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return decode_click(raw, _MAX_LINE)[1]
    except OSError as e:
        raise SettingsError(f"--click {path}: cannot read it ({e.strerror})") from None
    except Refusal as r:
        raise SettingsError(f"--click {path}: not a click ({r.reason}: {r.message})") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "map", help="print what ttbridge would send TikTok for messages on stdin (one JSON per line)",
        description=__doc__)
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--preset", choices=PRESETS, help="the input shape (default: the worker's own "
                       "configuration from TTBRIDGE_CONFIG, else segment)")
    shape.add_argument("--config", metavar="FILE", help="a mapping file of your own (on its own, or "
                       "over the preset its `extends` names)")
    p.add_argument("--click", metavar="FILE", help="a click as the clicks topic carries it, joined "
                   "to every message")
    p.add_argument("--default-region", metavar="CC", help="region of phone numbers written without a "
                   "country code, e.g. GB (with --preset/--config)")
    # Event age is judged against the clock (max_event_age_days); a fixed one makes a preview of
    # fixed messages reproducible (the README's examples are run this way by a test).
    p.add_argument("--now", metavar="UNIX", type=_unix_time, help="the time to judge event age "
                   "against, in Unix seconds (default: the clock)")
    p.set_defaults(func=_main)


def _unix_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected Unix seconds, got {text!r}")
    return value


def _main(args) -> int:
    config = _config(args)
    click = _click(args.click)
    out = sys.stdout.buffer
    now = time.time() if args.now is None else args.now
    for outcome in preview(sys.stdin.buffer, config, click, now):
        out.write(orjson.dumps(outcome) + b"\n")
    out.flush()
    return 0
