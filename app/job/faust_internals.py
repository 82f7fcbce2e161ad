"""Every private name of faust, mode and aiokafka that ttbridge relies on, and nothing else.

Each use says what it relies on and what an upgrade could break; tests/job/test_faust_internals.py
fails when an upgrade moves one of them. The versions they were written against are pinned in
pyproject.toml (faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0): change a pin only
together with that test. Everything else in app/ uses public API only.
"""
from __future__ import annotations

__all__ = ["recovery_completed"]


def recovery_completed(app) -> bool:
    """Whether faust has restored every table partition assigned to this worker. Relies on the
    `completed` event of the tables' Recovery service (faust.tables.recovery.Recovery), which
    has no public accessor."""
    return app.tables.recovery.completed.is_set()
