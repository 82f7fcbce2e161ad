"""How the worker and the retry worker log: repeated errors rate-limited, optionally one JSON
object per line.

With the broker down every aiokafka client (the intake, faust's consumer and producer, each
retry tier, the writer) logs the same reconnect error many times a second: 23,741 lines in 52 s
in one outage, which buries everything else and fills the node's disk. `RateLimit` lets the
first record of a kind through, then at most one per interval, carrying how many it stood for.

`install()` puts the filter (and the JSON formatter) on the root logger's handlers: a filter on
a logger would miss its children's records, and the handlers are what every record reaches.
faust replaces the root handlers when its worker starts, so the worker calls it again then
(app.job.worker.BoundedWorker.on_setup_root_logger).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Callable

from app.tiktok.redact import redact

__all__ = ["RateLimit", "JsonFormatter", "FORMATS", "install", "fatal"]

FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"

# The loggers whose repeats are limited: the Kafka clients' and faust's (reconnect and metadata
# errors), and ttbridge's own supervisors, which restart a failed consumer every few seconds.
LIMITED = ("aiokafka", "faust", "mode", "app.job")
# Distinct (logger, template) pairs remembered; past it the memory starts over (a bound, since
# a redacted record's template is its text, which can vary).
_MAX_KINDS = 1000


class RateLimit(logging.Filter):
    """At most one record per `interval_s` per logger and message template (WARNING and above,
    of the LIMITED loggers). The first of a kind passes at once; the next one to pass after the
    interval says how many were dropped since: "... (and 412 more like it in 10 s)"."""

    def __init__(self, interval_s: float = 10.0, prefixes: tuple[str, ...] = LIMITED,
                 level: int = logging.WARNING, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.prefixes = prefixes
        self.level = level
        self.clock = clock
        self._kinds: dict[tuple[str, str], list] = {}  # kind -> [window start, records dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or not self._limited(record.name):
            return True
        now = self.clock()
        kind = (record.name, str(record.msg))
        seen = self._kinds.get(kind)
        if seen is None:
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = [now, 0]
            return True
        started, dropped = seen
        if now - started < self.interval_s:
            seen[1] += 1
            return False
        seen[0], seen[1] = now, 0
        if dropped:
            record.msg = f"{record.getMessage()} (and {dropped} more like it in {now - started:.0f} s)"
            record.args = None
        return True

    def _limited(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message and, when there is
    one, exception (the traceback, its newlines escaped). Message and exception are redacted
    here as well: the record factory of app.tiktok.redact.guard_logs only rewrites a record when
    it is installed (the sender installs it), and a traceback rendered here was never seen by it."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name,
                "message": redact(record.getMessage(), None)}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redact(record.exc_text, None)
        if record.stack_info:
            line["stack"] = redact(record.stack_info, None)
        return json.dumps(line, ensure_ascii=False)


def install(log_format: str = "text", interval_s: float = 10.0,
            logger: logging.Logger | None = None) -> None:
    """Rate-limit (and, for "json", format) every handler of `logger` (the root logger)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RateLimit) for f in handler.filters):
            handler.addFilter(RateLimit(interval_s))
        if log_format == "json":
            handler.setFormatter(JsonFormatter())


def fatal(message: str, log_format: str = "text") -> None:
    """The one line a command ends on (a configuration error, an unreachable broker), on stderr:
    as it is, or under --log-format json one JSON object like every other line, so that a log
    pipeline parsing each line does not trip on the last one."""
    if log_format == "json":
        message = JsonFormatter().format(logging.LogRecord("ttbridge", logging.CRITICAL, "", 0, message, None, None))
    print(message, file=sys.stderr)
