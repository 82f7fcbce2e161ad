"""The one redaction every text ttbridge keeps from the Events API passes through.

Gateways and error pages echo request headers, and some API messages quote the request: an
answer's text can carry the access token. Whatever ttbridge keeps of an answer or of an
exception (retry records' last_error, dead letters, log lines) goes through `redact()`, which
takes out every known secret and the value of anything that looks like an `Access-Token`
header, and bounds the text's length.

The known secrets are one set per process: the sender adds every configured token (and the
Kafka passwords) when it is built and each pixel's token as it sends, so the records and the
log see the same set without being handed it. `guard_logs()` puts the same redaction on every
log record of the process, ttbridge's and its libraries'.
"""
from __future__ import annotations

import json
import logging
import re
import urllib.parse
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from app.settings import Secret, Settings

__all__ = ["MASK", "MAX_TEXT", "Redactor", "SECRETS", "redact", "remember", "guard_logs"]

MASK = "***"
# What a record keeps of one message (retry records' last_error, dead letters).
MAX_TEXT = 2000
# How much of a long text is read before it is cut to its limit: the first `limit` characters
# after redaction are all that is kept, and a regex pass over a megabyte page would buy nothing.
_READ_AHEAD = 8192
# The value of a header-like "Access-Token: value" (also access_token=value, quoted or JSON-escaped,
# any case): it catches a token that is not, or no longer, configured, e.g. one just rotated.
_HEADER = re.compile(r"""(?i)(access[-_ ]?token["'\\]*\s*[:=]\s*["'\\]*)[^\s"'\\<>&,;)\]}]+""")


class Redactor:
    """A set of secrets and the redaction over them. Empty secrets are ignored."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._forms: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        new = {s for s in secrets if s and s not in self._secrets}
        if not new:
            return
        self._secrets |= new
        # Also as they look JSON-escaped or percent-encoded: an echo may quote the request so.
        forms = self._secrets | {json.dumps(s)[1:-1] for s in self._secrets} \
            | {urllib.parse.quote(s, safe="") for s in self._secrets}
        # Longest first: a secret that contains another is taken out whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self._forms)))

    def __call__(self, text: str | bytes, limit: int | None = MAX_TEXT) -> str:
        """`text` (bytes are read as UTF-8) without secrets or Access-Token values, at most
        `limit` characters (None: no bound)."""
        cut = False
        if limit is not None:
            read = limit + _READ_AHEAD + (len(self._forms[0]) if self._forms else 0)
            cut = len(text) > read
            text = text[:read]
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
            if cut:  # a character cut in two is no character
                text = text.rstrip("\ufffd")
        if cut:
            # Redaction shortens the text: a secret cut in half at the end of what was read
            # could move into the part that is kept. Drop such a fragment before redacting.
            text = self._without_secret_prefix_at_end(text)
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        text = _HEADER.sub(r"\1" + MASK, text)
        return text if limit is None else text[:limit]

    def _without_secret_prefix_at_end(self, text: str) -> str:
        longest = 0
        for form in self._forms:
            for n in range(min(len(form) - 1, len(text)), longest, -1):
                if text.endswith(form[:n]):
                    longest = n
                    break
        return text[:len(text) - longest]


# The process's secrets: one set, shared by the sender, the records and the log guard.
SECRETS = Redactor()


def redact(text: str | bytes, limit: int | None = MAX_TEXT) -> str:
    return SECRETS(text, limit)


def remember(settings: Settings) -> None:
    """Add every secret the settings hold: each pixel's token, the Kafka passwords."""
    secrets: list[Secret] = [p.token for p in settings.pixels.values()]
    secrets += [settings.kafka_security.sasl_password, settings.kafka_security.ssl_key_password]
    SECRETS.add(*(s.reveal() for s in secrets))


_guarded = False


def guard_logs() -> None:
    """Redact every log record of this process from now on (idempotent).

    A record factory, not a handler filter: the handlers are made later (faust sets up logging
    when its worker starts) and by code not ours; the factory sees every record that passes a
    logger's level, whoever logs it and wherever it goes.
    """
    global _guarded
    if _guarded:
        return
    make_record = logging.getLogRecordFactory()

    def guarded_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(guarded_record)
    _guarded = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: logging reports it when handled
        return
    clean = SECRETS(message, None)
    if clean != message:
        record.msg, record.args = clean, None
    # An exception's text (a library error quoting an answer) is rendered here, once, only when
    # it needs redacting; formatters use exc_text as it is when it is set.
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        clean = SECRETS(text, None)
        if clean != text:
            # Handlers that render exc_info themselves would print the secret again.
            record.exc_text, record.exc_info = clean, None
    if record.stack_info:
        record.stack_info = SECRETS(record.stack_info, None)
