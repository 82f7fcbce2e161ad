"""`ttbridge <command>` (and `python -m app <command>`): every command registers itself here."""
from __future__ import annotations

import argparse
import sys

from app.settings import SettingsError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from app.devtools import demo, fake_tiktok, kafka_local, preview
    from app.job import replay, retrier, topics, worker

    parser = argparse.ArgumentParser(
        prog="ttbridge",
        description="Kafka-native bridge from your click tracking to the TikTok Events API.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in (demo, worker, retrier, replay, preview, kafka_local, topics, fake_tiktok):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as e:
        # One clear line for the operator, never a traceback (and never a token: see Secret).
        print(f"ttbridge: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
