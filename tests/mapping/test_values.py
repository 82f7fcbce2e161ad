"""Values as refusals show them: bounded, and never a crash of their own."""
import time

import orjson
import pytest

from app.mapping.events import MappingConfig, Refusal, map_event
from app.mapping.values import shown


def test_shown_is_bounded():
    assert shown("abc") == "'abc'"
    assert shown("x" * 100) == "'" + "x" * 36 + "..."


def test_a_value_nested_too_deep_to_show_refuses_its_event_with_the_fields_reason():
    # orjson reads 1,024 levels; repr() of such a value exceeds Python's recursion limit.
    deep = orjson.loads(b'{"x":' * 1000 + b"1" + b"}" * 1000)
    now = time.time()
    event = {"type": "track", "event": "Order Completed", "messageId": "m", "timestamp": now,
             "properties": {"currency": deep}}
    with pytest.raises(Refusal) as refused:
        map_event(event, None, MappingConfig(), now)
    assert (refused.value.reason, refused.value.message) == (
        "invalid_currency", "properties.currency: expected a currency code, got a dict nested too deep to show")
