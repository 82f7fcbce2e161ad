"""The redtrack preset: RedTrack conversions + their click -> the exact TikTok data[] items.

The guide (../shared/seeds/000_0cb93494c056c8f6.txt) lists what RedTrack sends to TikTok for a
conversion; it has no example message, so the conversions here are in RedTrack's own format (its
API's conversion: flat keys, p_sub1..p_sub20 sub-parameters). Every conversion either maps or gets a
reason, never an "unmapped" skip. Every item built here also passes the strict fake's checks.
"""
from __future__ import annotations

import orjson
import pytest

from app.mapping.decode import DECODE_REASONS, decode_event
from app.mapping.events import (
    SKIP_REASONS,
    MappingConfig,
    Refusal,
    click_id_of,
    map_event,
    skip_reason,
    tiktok_names,
)
from app.mapping.spec import SpecError, compile_spec, load_preset, merge
from tests.support import accepted, sha

CREATED_AT = 1704721970  # 2024-01-08T13:52:50Z
NOW = CREATED_AT + 60.0
CONFIG = MappingConfig.from_dict({"spec": "redtrack"})
GB = MappingConfig.from_dict({"spec": "redtrack", "default_region": "GB"})
# The guide's example ClickId, recorded by ttbridge as the click's ttclid at landing.
TTCLID = "EAIaIQobChMI3oztgOuugQMV1uLtCh1Q8A2tEAAYASAAEgIe8PD_BwE"
CLICK = {"ttclid": TTCLID, "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "198.51.100.7",
         "user_agent": "Mozilla/5.0 (Linux; Android 14) click",
         "url": f"https://lp.example/offer?ttclid={TTCLID}",
         "referrer": "https://www.tiktok.com/", "clicked_at": CREATED_AT - 3600}


def mapped(event: dict, click: dict | None = None, config: MappingConfig = CONFIG) -> list[dict]:
    """map_event's items, after checking that TikTok (the strict fake) would accept them."""
    return accepted(map_event(event, click, config, NOW), NOW)


def conversion(**changes) -> dict:
    """A RedTrack conversion as its API writes it: the fields the guide sends, and the rest."""
    doc = {
        "id": "65a1f0c2e4b0a1b2c3d4e5f6",
        "clickid": "65a1efb1c2d3e4f5a6b7c8d9",
        "campaign_id": "659f00aa11bb22cc33dd44ee",
        "campaign": "TikTok | US | Spring",
        "source": "TikTok",
        "offer": "Shop",
        "type": "purchase",
        "status": "approved",
        "created_at": "2024-01-08T13:52:50Z",
        "payout": 46.5,
        "payout_default": 46.5,
        "revenue_default": 46.5,
        "currency": "USD",
        "ip": "203.0.113.4",
        "postback_ip": "192.0.2.10",
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        "country": "US",
        "page": "https://shop.example/checkout/thanks",
        "referer": "https://shop.example/cart",
        "p_sub1": "+1 (213) 373-4253",         # the Phone role
        "p_sub2": " ALICE_abc@gmail.com ",     # the Email role
        "p_sub3": "Entertainment",             # the Content Category role: not sent
        "p_sub4": "sku-1,sku-2",               # the Contents role: not sent
        "sub1": "1789000000000000",            # the click's (traffic channel's) own sub-parameters
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


# ------------------------------------------------------------------ the guide's conversion

def test_a_conversion_joined_to_its_click_is_what_the_guide_sends():
    assert mapped(conversion(), CLICK) == [{
        "event": "Purchase",                                   # EventName: the type, by the table
        "event_time": CREATED_AT,                              # EventTime: created_at, UTC
        "event_id": "65a1f0c2e4b0a1b2c3d4e5f6",
        "user": {
            # Email and Phone: the role sub-parameters, hashed as TikTok normalises them
            # (TikTok's own examples: " ALICE_abc@gmail.com ", "(+1)2133734253").
            "email": "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f",
            "phone": "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd",
            "ttclid": TTCLID,                                  # ClickId: from the click
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ip": "203.0.113.4",                               # IP, UserAgent: the conversion's
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        },
        "page": {"url": "https://shop.example/checkout/thanks", "referrer": "https://shop.example/cart"},
        "properties": {"value": 46.5, "currency": "USD"},     # Revenue: revenue_default; USD
    }]
    assert sha("alice_abc@gmail.com") == mapped(conversion(), CLICK)[0]["user"]["email"]
    assert sha("+12133734253") == mapped(conversion(), CLICK)[0]["user"]["phone"]


def test_the_conversion_is_found_by_redtracks_own_click_id():
    assert click_id_of(conversion(), CONFIG) == "65a1efb1c2d3e4f5a6b7c8d9"
    assert CONFIG.click_id_paths == ("clickid",)


def test_a_bare_postback_conversion_takes_ip_user_agent_and_page_from_its_click():
    bare = {"id": "c-2", "clickid": "65a1efb1c2d3e4f5a6b7c8d9", "type": "Lead",
            "created_at": "2024-01-08 13:52:50", "revenue_default": 0}
    assert mapped(bare, CLICK) == [{
        "event": "Lead",
        "event_time": CREATED_AT,                              # no offset: UTC, as the guide says
        "event_id": "c-2",
        "user": {"ttclid": TTCLID, "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH", "ip": "198.51.100.7",
                 "user_agent": "Mozilla/5.0 (Linux; Android 14) click"},
        "page": {"url": f"https://lp.example/offer?ttclid={TTCLID}", "referrer": "https://www.tiktok.com/"},
        "properties": {"value": 0, "currency": "USD"},
    }]


def test_a_click_older_than_the_attribution_window_gives_no_ttclid():
    old = {**CLICK, "clicked_at": CREATED_AT - 8 * 86_400}
    user = mapped(conversion(), old)[0]["user"]
    assert "ttclid" not in user and "ttp" not in user
    assert user["email"]  # still sent: TikTok can match the hashed email


def test_revenue_default_then_payout_default_never_payout():
    assert mapped(conversion(revenue_default=None, payout_default=12))[0]["properties"] == \
        {"value": 12, "currency": "USD"}
    # payout is in the conversion's own currency, which the constant USD would mislabel.
    assert mapped(conversion(revenue_default=None, payout_default=None, payout=99, currency="EUR"))[0][
        "properties"] == {"currency": "USD"}


def test_a_phone_without_country_code_needs_the_default_region():
    assert "phone" not in mapped(conversion(p_sub1="07700 900123"))[0]["user"]
    assert mapped(conversion(p_sub1="07700 900123"), config=GB)[0]["user"]["phone"] == sha("+447700900123")


# ------------------------------------------------------------------ the event table

TABLE = [
    # TikTok's own names, in any spelling (the guide's example type is "purchase").
    ("purchase", "Purchase"),
    ("Purchase", "Purchase"),
    ("Lead", "Lead"),
    ("ViewContent", "ViewContent"),
    ("AddToCart", "AddToCart"),
    ("InitiateCheckout", "InitiateCheckout"),
    ("CompleteRegistration", "CompleteRegistration"),
    ("CompletePayment", "CompletePayment"),
    # The preset's rows: types RedTrack's help pages use that are not TikTok names.
    ("Sale", "Purchase"),
    ("Upsell", "Purchase"),
    ("Deposit", "Purchase"),
    ("Registration", "CompleteRegistration"),
    ("registration", "CompleteRegistration"),
    ("Signup", "CompleteRegistration"),
]


@pytest.mark.parametrize("source, tiktok", TABLE)
def test_every_row_of_the_conversion_type_table(source, tiktok):
    assert tiktok_names(conversion(type=source), CONFIG) == (tiktok,)
    assert [item["event"] for item in mapped(conversion(type=source), CLICK)] == [tiktok]


def test_the_preset_table_is_exactly_its_rows():
    assert dict(CONFIG.event_map) == {
        "Sale": ("Purchase",), "Upsell": ("Purchase",), "Deposit": ("Purchase",),
        "Registration": ("CompleteRegistration",), "Signup": ("CompleteRegistration",)}


def test_a_users_own_file_maps_their_types_and_re_assigns_the_sub_parameters():
    user_file = {
        "extends": "redtrack",
        "events": {"conversion": "Purchase", "FormSent": "Lead", "Upsell": ["Purchase", "AddPaymentInfo"]},
        "user": {"phone": ["p_sub3"], "email": ["p_sub7"]},
    }
    config = MappingConfig.from_dict({"spec": user_file})
    event = conversion(type=None, p_sub3="+1 213 373 4253", p_sub7="bob@example.com")
    item, = mapped(event, CLICK, config)
    assert item["event"] == "Purchase"           # the untyped conversion, as this user maps it
    assert item["user"]["phone"] == sha("+12133734253")
    assert item["user"]["email"] == sha("bob@example.com")
    assert [i["event"] for i in mapped(conversion(type="FormSent"), CLICK, config)] == ["Lead"]
    assert [i["event"] for i in mapped(conversion(type="Upsell"), CLICK, config)] == \
        ["Purchase", "AddPaymentInfo"]
    assert [i["event"] for i in mapped(conversion(type="Deposit"), CLICK, config)] == ["Purchase"]  # kept


# ------------------------------------------------------------------ every conversion maps or gets a reason

@pytest.mark.parametrize("type_, where", [
    ("Deposit2", "type: 'Deposit2'"),
    (None, "type (missing, read as 'conversion'): 'conversion'"),
    ("", "type (missing, read as 'conversion'): 'conversion'"),
    ("  ", "type (missing, read as 'conversion'): 'conversion'"),
])
def test_a_type_the_table_lacks_is_refused_never_skipped(type_, where):
    event = conversion(type=type_)  # None: no `type` key at all
    with pytest.raises(Refusal) as refused:
        map_event(event, CLICK, CONFIG, NOW)
    assert refused.value.reason == "unmapped_event"
    assert refused.value.message.startswith(where)
    # ... already at intake, with the original bytes (replayed once the type is mapped).
    with pytest.raises(Refusal) as at_intake:
        decode_event(orjson.dumps(event), 262_144, CONFIG)
    assert at_intake.value.reason == "unmapped_event" and "unmapped_event" in DECODE_REASONS


def test_a_type_the_user_stops_is_skipped_as_excluded_not_unmapped():
    # RedTrack sends nothing but conversions; one a user does not want on TikTok (a pre-lander
    # view, say) is mapped to [] and skipped with its own reason.
    config = MappingConfig.from_dict({"spec": "redtrack", "events": {"Prelander": []}})
    event = conversion(type="Prelander", revenue_default=0)
    assert tiktok_names(event, config) == ()
    assert map_event(event, CLICK, config, NOW) == []
    assert skip_reason(event, config) == "excluded" and "excluded" in SKIP_REASONS


def test_a_created_at_that_is_not_iso_8601_is_refused():
    with pytest.raises(Refusal) as refused:
        map_event(conversion(created_at="08/01/2024 13:52"), CLICK, CONFIG, NOW)
    assert refused.value.reason == "invalid_timestamp"
    assert refused.value.message.startswith("created_at:")
    with pytest.raises(Refusal) as refused:
        map_event(conversion(created_at=CREATED_AT), CLICK, CONFIG, NOW)
    assert refused.value.reason == "invalid_timestamp"


def test_a_type_that_is_not_text_is_refused():
    with pytest.raises(Refusal) as refused:
        map_event(conversion(type=7), CLICK, CONFIG, NOW)
    assert refused.value.reason == "invalid_event_name"


# ------------------------------------------------------------------ identifiers already hashed

def test_sub_parameters_already_hashed_pass_through_lowercased():
    email, phone = sha("alice_abc@gmail.com"), sha("+12133734253")
    user = mapped(conversion(p_sub1=phone.upper(), p_sub2=email.upper()), CLICK)[0]["user"]
    assert (user["phone"], user["email"]) == (phone, email)


def test_the_postback_servers_ip_is_never_the_visitors():
    user = mapped(conversion(ip=None), CLICK)[0]["user"]
    assert user["ip"] == CLICK["ip"]  # the click's, not postback_ip


# ------------------------------------------------------------------ the engine options the preset uses

def test_unmapped_and_name_default_are_validated():
    base = load_preset("redtrack")
    with pytest.raises(SpecError, match="event.unmapped"):
        compile_spec(merge(base, {"event": {"unmapped": "drop"}}))
    with pytest.raises(SpecError, match="event.name_default"):
        compile_spec(merge(base, {"event": {"name_default": " "}}))
    with pytest.raises(SpecError, match="event.cookies"):
        compile_spec(merge(base, {"event": {"cookies": "device..cookie"}}))
    plan = compile_spec(base)
    assert (plan.name_default, plan.refuse_unmapped, plan.fold_names) == ("conversion", True, True)
