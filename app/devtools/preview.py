"""`ttbridge map`: what ttbridge would send TikTok for each message, before going live.

Reads messages (one JSON document per line) on stdin and prints one JSON object per line:
`{"data": [<TikTok data[] items>]}`, `{"skipped": "<reason>"}`, or `{"refused": "<reason>",
"message": "..."}` — the same decisions the worker makes (mapping, skip reasons, the identifier
check), with no broker and no Events API. A batch message (a shape with event.batch, such as
mParticle's) prints one line per event it carries.
"""
from __future__ import annotations

import sys
import time
import tomllib
from typing import IO, Iterator

import orjson

from app.mapping.config import MappingConfig
from app.mapping.decode import decode_click, decode_object
from app.mapping.events import Refusal, Skip, events_of, has_identifier, map_event, skip_reason
from app.mapping.spec import PRESETS, SpecError, load_preset, merge, resolve
from app.settings import SettingsError, load, mapping_config

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
        for event in events_of(doc, config):
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
            spec = resolve(own) if "extends" in own else merge(spec, own)
        return MappingConfig(spec=spec, default_region=args.default_region)
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
    shape.add_argument("--config", metavar="FILE", help="a mapping file of your own (over segment, "
                       "or over the preset its `extends` names)")
    p.add_argument("--click", metavar="FILE", help="a click as the clicks topic carries it, joined "
                   "to every message")
    p.add_argument("--default-region", metavar="CC", help="region of phone numbers written without a "
                   "country code, e.g. GB (with --preset/--config)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    config = _config(args)
    click = _click(args.click)
    out = sys.stdout.buffer
    for outcome in preview(sys.stdin.buffer, config, click, time.time()):
        out.write(orjson.dumps(outcome) + b"\n")
    out.flush()
    return 0
