"""`ttbridge <command>` (and `python -m app <command>`): every command registers itself here."""
from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version

from app.job.logs import fatal
from app.settings import SettingsError

__all__ = ["main", "build_parser"]

# faust reads these when it is imported (faust/types/_env.py), as numbers, before any setting
# of ours applies: a Kubernetes Service named `faust-web` injects FAUST_WEB_PORT=tcp://..., and
# the import itself would crash. ttbridge passes every faust setting explicitly, so none of
# them is needed; they are dropped from the process's environment before faust is imported.
FAUST_IMPORT_ENV = tuple(prefix + name for prefix in ("FAUST_", "F_") for name in (
    "WEB_PORT", "WEB_BIND", "WEB_TRANSPORT", "CONSOLE_PORT", "BLOCKING_TIMEOUT",
    "FORCE_BLOCKING_TIMEOUT", "DEBUG", "STRICT", "DATADIR", "WORKDIR", "LOOP"))


def package_version() -> str:
    try:
        return version("ttbridge")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from app.devtools import demo, fake_tiktok, kafka_local, preview
    from app.job import replay, retrier, topics, worker

    parser = argparse.ArgumentParser(
        prog="ttbridge",
        description="Kafka-native bridge from your click tracking to the TikTok Events API.")
    parser.add_argument("--version", action="version", version=f"ttbridge {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in (demo, worker, retrier, replay, preview, kafka_local, topics, fake_tiktok):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for name in FAUST_IMPORT_ENV:
        os.environ.pop(name, None)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as e:
        # One clear line for the operator, never a traceback (and never a token: see Secret).
        fatal(f"ttbridge: configuration error: {e}", getattr(args, "log_format", "text"))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
