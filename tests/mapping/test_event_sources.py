"""Every event source right: a message mapped by a spec that fills the source's fields, then shaped
for its destination (app.mapping.sources.for_source, what the forwarder does once the pixel is
known), is a body the strict fake accepts; what a source can never take is refused with its
reason and exact message. Also the spec's new tables ([app], [lead], [event] custom_events) and
the device-ID converters (app.mapping.devices).
"""
from __future__ import annotations

import copy
import hashlib

import pytest

from app.devtools.fake_tiktok import check_request
from app.mapping import devices
from app.mapping.events import MappingConfig, Refusal, has_identifier, map_event
from app.mapping.sources import REASONS, for_source
from app.mapping.spec import SpecError, compile_spec, load_preset, merge
from app.tiktok.facts import ATT_STATUSES

EVENT_TIME = 1704721970                 # 2024-01-08T13:52:50Z
NOW = EVENT_TIME + 30.0
PIXEL, OFFLINE_SET, CRM_SET, APP_ID = "CQ1PIXEL000000000", "7181537436256731137", "7299000000000000001", \
    "7568899277611696136"
DESTINATIONS = {"web": PIXEL, "offline": OFFLINE_SET, "crm": CRM_SET, "app": APP_ID}
IDFA = "EA7583CD-A667-48BC-B806-42ECB2B48606"  # TikTok's own example
IDFV = "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"
GAID = "aaaaaaaa-2222-1111-8787-809e92233ba0"
CLICK = {"ttclid": "E.C.P.click-1", "ttp": "ttp-cookie-1", "clicked_at": EVENT_TIME - 600,
         "url": "https://shop.example/landing?ttclid=E.C.P.click-1", "ip": "198.51.100.7",
         "user_agent": "Mozilla/5.0 (landing)"}


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def body_for(source: str, items: list[dict]) -> dict:
    return {"event_source": source, "event_source_id": DESTINATIONS[source], "data": items}


def accepted(source: str, items: list[dict]) -> tuple[int, str]:
    return check_request(body_for(source, items), frozenset(DESTINATIONS.values()), now=NOW)


def segment(name: str, **properties) -> dict:
    return {"type": "track", "event": name, "messageId": f"msg-{name}", "userId": "user_123",
            "timestamp": "2024-01-08T13:52:50Z",
            "context": {"traits": {"email": "Alice@Example.com", "phone": "+44 7700 900123"},
                        "ip": "203.0.113.4", "userAgent": "Mozilla/5.0 (X11)",
                        "page": {"url": "https://shop.example/checkout"}},
            "properties": properties}


# --------------------------------------------------------------------------- the specs
# A mapping file per source over the segment preset, as an operator writes one.
CRM_SPEC = {
    "extends": "segment",
    "event": {"custom_events": ["Qualified Lead", "Deal Won"]},
    "events": {"Lead Qualified": "Qualified Lead", "Deal Won": "Deal Won"},
    "lead": {"lead_id": ["properties.lead_id"], "lead_event_source": {"as": "constant", "value": "HubSpot"}},
}
APP_SPEC = {
    "extends": "segment",
    "events": {"Application Installed": "InstallApp", "Checkout Started": "Checkout"},
    "app": {"app_id": ["context.app.namespace"], "app_name": ["context.app.name"],
            "app_version": ["context.app.version"]},
    "user": {"idfa": ["context.device.advertisingId"], "idfv": ["context.device.id"],
             "att_status": ["context.device.attStatus"]},
}
CRM = MappingConfig.from_dict({"spec": CRM_SPEC})
APP = MappingConfig.from_dict({"spec": APP_SPEC})
WEB = MappingConfig()


def lead_qualified(**properties) -> dict:
    return segment("Lead Qualified", lead_id="7123456789012345678", **properties)


def app_installed(**device) -> dict:
    event = {"type": "track", "event": "Application Installed", "messageId": "msg-install",
             "timestamp": "2024-01-08T13:52:50Z",
             "context": {"app": {"namespace": "com.shop.app", "name": "Shop", "version": "3.0.2"},
                         "device": {"advertisingId": IDFA.lower(), "id": IDFV, "attStatus": "authorized",
                                    **device},
                         "ip": "203.0.113.4", "userAgent": "Shop/3.0.2 (iPhone; iOS 17.1)",
                         "page": {"url": "https://shop.example/app-open"}}}
    return event


# --------------------------------------------------------------------------- web
def test_web_item_is_taken_as_mapped_and_accepted():
    items = map_event(segment("Order Completed", order_id="98213", value=46, currency="USD"), CLICK, WEB, NOW)
    shaped = for_source(items, "web")
    assert shaped == items and shaped[0] is items[0]  # nothing to leave out: not even copied
    assert accepted("web", shaped) == (0, "OK")


def test_web_leaves_out_the_lead_the_app_and_device_ids():
    [item] = map_event(lead_qualified(), CLICK, CRM, NOW)
    assert "lead" in item
    crm_only = copy.deepcopy(item)
    crm_only["event"] = "Lead"
    crm_only["user"]["idfa"] = IDFA
    [shaped] = for_source([crm_only], "web")
    assert "lead" not in shaped and "idfa" not in shaped["user"]
    assert shaped == {k: v for k, v in crm_only.items() if k != "lead"} | {
        "user": {k: v for k, v in crm_only["user"].items() if k != "idfa"}}
    assert crm_only["lead"] and crm_only["user"]["idfa"] == IDFA  # the mapped item is untouched
    assert accepted("web", [shaped]) == (0, "OK")


def test_web_refuses_a_crm_custom_name():
    items = map_event(lead_qualified(), CLICK, CRM, NOW)
    with pytest.raises(Refusal) as refused:
        for_source(items, "web")
    assert (refused.value.reason, refused.value.message) == (
        "event_not_for_source",
        "event: 'Qualified Lead' is not an event TikTok takes from a web pixel (map it to one of its web events)")


def test_web_refuses_an_app_event_name():
    with pytest.raises(Refusal) as refused:
        for_source(map_event(app_installed(), None, APP, NOW), "web")
    assert refused.value.reason == "event_not_for_source"
    assert refused.value.message.startswith("event: 'InstallApp' is not an event TikTok takes from a web pixel")


def test_web_refuses_an_item_whose_only_identifier_was_a_device_id():
    item = {"event": "Purchase", "event_time": EVENT_TIME, "event_id": "e1", "user": {"gaid": GAID}}
    assert has_identifier(item)  # the forwarder's check before routing counts device IDs
    with pytest.raises(Refusal) as refused:
        for_source([item], "web")
    assert (refused.value.reason, refused.value.message) == (
        "no_identifier", "nothing TikTok matches a web pixel's events on is left (no ttclid, ttp, email, "
        "phone, external_id, or IP with user agent)")


# --------------------------------------------------------------------------- offline
def test_offline_item_is_accepted():
    items = map_event(segment("Order Completed", order_id="98213", value=46, currency="USD"), CLICK, WEB, NOW)
    assert for_source(items, "offline") == items
    assert accepted("offline", items) == (0, "OK")


def test_offline_without_email_or_phone_is_refused():
    event = segment("Order Completed", order_id="98213")
    del event["context"]["traits"]
    items = map_event(event, CLICK, WEB, NOW)
    assert has_identifier(items[0])  # ttclid, ttp, external_id: fine on web
    with pytest.raises(Refusal) as refused:
        for_source(items, "offline")
    assert (refused.value.reason, refused.value.message) == (
        "no_identifier", "TikTok matches an offline event by email or phone only, and this one has neither")
    assert accepted("offline", items) == (
        40002, "Batch.0.user: Offline events are matched by email or phone: send at least one.")


def test_offline_refuses_what_is_not_a_standard_event():
    with pytest.raises(Refusal) as refused:
        for_source(map_event(lead_qualified(), None, CRM, NOW), "offline")
    assert refused.value.reason == "event_not_for_source"
    assert "from an offline event set" in refused.value.message


# --------------------------------------------------------------------------- crm
def test_crm_event_carries_its_lead_and_custom_name_and_is_accepted():
    items = map_event(lead_qualified(), CLICK, CRM, NOW)
    assert items == [{
        "event": "Qualified Lead", "event_time": EVENT_TIME, "event_id": "msg-Lead Qualified",
        "user": {"email": sha("alice@example.com"), "phone": sha("+447700900123"), "external_id": sha("user_123"),
                 "ttclid": "E.C.P.click-1", "ttp": "ttp-cookie-1", "ip": "203.0.113.4",
                 "user_agent": "Mozilla/5.0 (X11)"},
        "page": {"url": "https://shop.example/checkout"},
        "lead": {"lead_id": "7123456789012345678", "lead_event_source": "HubSpot"},
    }]
    assert for_source(items, "crm") == items
    assert accepted("crm", items) == (0, "OK")


def test_crm_lead_id_given_as_a_number_is_sent_as_text():
    [item] = map_event(segment("Lead Qualified", lead_id=7123456789012345678), None, CRM, NOW)
    assert item["lead"] == {"lead_id": "7123456789012345678", "lead_event_source": "HubSpot"}


def test_crm_standard_name_is_taken_too():
    # TikTok's own CRM example sends AddToCart: a standard name is not refused on crm.
    items = map_event(segment("Lead Generated", lead_id="L-1"), None, CRM, NOW)
    assert [i["event"] for i in items] == ["Lead"]
    assert accepted("crm", for_source(items, "crm")) == (0, "OK")


def test_crm_without_lead_id_is_refused():
    items = map_event(segment("Lead Qualified"), CLICK, CRM, NOW)
    assert "lead" in items[0] and "lead_id" not in items[0]["lead"]  # the constant source alone
    with pytest.raises(Refusal) as refused:
        for_source(items, "crm")
    assert (refused.value.reason, refused.value.message) == (
        "missing_lead_id", "lead.lead_id: a CRM event needs its TikTok lead ID (map it in the spec's [lead] table)")
    assert accepted("crm", items) == (40002, "Batch.0.lead.lead_id: Missing data for required field (CRM events).")


def test_crm_leaves_out_device_ids_and_the_app():
    item = {"event": "Qualified Lead", "event_time": EVENT_TIME, "lead": {"lead_id": "L1"},
            "user": {"idfa": IDFA}, "app": {"app_id": "com.shop.app"}}
    assert for_source([item], "crm") == [{"event": "Qualified Lead", "event_time": EVENT_TIME,
                                          "lead": {"lead_id": "L1"}}]


def test_a_custom_name_must_be_listed_in_the_spec():
    doc = merge(load_preset("segment"), {"events": {"Lead Qualified": "Qualified Lead"}})
    with pytest.raises(SpecError) as error:
        compile_spec(doc)
    assert str(error.value).startswith("events.'Lead Qualified': 'Qualified Lead' is not a TikTok standard "
                                       "event (known: AddPaymentInfo, AddToCart, ")
    plan = compile_spec(merge(doc, {"event": {"custom_events": ["Qualified Lead"]}}))
    assert plan.events["Lead Qualified"] == ("Qualified Lead",)


@pytest.mark.parametrize(("custom", "message"), [
    ("Qualified", "event.custom_events: expected a list of event names, got 'Qualified'"),
    ([""], "event.custom_events: expected a list of event names, got ['']"),
    ([" Qualified"], "event.custom_events: expected a list of event names, got [' Qualified']"),
    ([5], "event.custom_events: expected a list of event names, got [5]"),
])
def test_custom_events_are_validated(custom, message):
    with pytest.raises(SpecError) as error:
        compile_spec(merge(load_preset("segment"), {"event": {"custom_events": custom}}))
    assert str(error.value) == message


# --------------------------------------------------------------------------- app
def test_app_event_carries_its_app_and_device_and_is_accepted():
    items = map_event(app_installed(), CLICK, APP, NOW)
    # Mapped, it still has the click's ttclid/ttp and the page: the spec doesn't know the pixel.
    assert items[0]["user"]["ttclid"] == "E.C.P.click-1" and "page" in items[0]
    shaped = for_source(items, "app")
    assert shaped == [{
        "event": "InstallApp", "event_time": EVENT_TIME, "event_id": "msg-install",
        "user": {"ip": "203.0.113.4", "user_agent": "Shop/3.0.2 (iPhone; iOS 17.1)", "idfa": IDFA,
                 "idfv": IDFV, "att_status": "AUTHORIZED"},
        "app": {"app_id": "com.shop.app", "app_name": "Shop", "app_version": "3.0.2"},
    }]
    assert accepted("app", shaped) == (0, "OK")
    assert accepted("app", items)[0] == 40002  # as mapped (ttclid, page): refused by the fake


def test_app_names_need_an_app_spec():
    doc = merge(load_preset("segment"), {"events": {"Application Installed": "InstallApp"}})
    with pytest.raises(SpecError) as error:
        compile_spec(doc)
    assert str(error.value) == ("events.'Application Installed': 'InstallApp' is not a TikTok standard event "
                                "(an app event: a spec with an [app] table may map to it)")
    plan = compile_spec(merge(doc, {"app": {"app_id": ["context.app.namespace"]}}))
    assert plan.events["Application Installed"] == ("InstallApp",)


def test_app_without_app_id_is_refused():
    event = app_installed()
    del event["context"]["app"]["namespace"]
    items = map_event(event, None, APP, NOW)
    with pytest.raises(Refusal) as refused:
        for_source(items, "app")
    assert (refused.value.reason, refused.value.message) == (
        "missing_app_id", "app.app_id: an app event needs its app's ID (the store ID or package name; map it "
        "in the spec's [app] table)")


def test_app_refuses_a_web_name():
    event = app_installed()
    event["event"] = "Product Added"  # the segment preset's AddToCart: also an app name
    assert [i["event"] for i in for_source(map_event(event, None, APP, NOW), "app")] == ["AddToCart"]
    event["event"] = "Signed Up"      # CompleteRegistration: the app list says Registration
    with pytest.raises(Refusal) as refused:
        for_source(map_event(event, None, APP, NOW), "app")
    assert (refused.value.reason, refused.value.message) == (
        "event_not_for_source", "event: 'CompleteRegistration' is not an event TikTok takes from an app (map "
        "it to one of its app events)")


def test_app_refuses_an_event_identified_only_by_a_web_click():
    event = app_installed()
    del event["context"]["device"], event["context"]["ip"]
    items = map_event(event, {"ttclid": "E.C.P.click-1", "clicked_at": EVENT_TIME - 60}, APP, NOW)
    assert has_identifier(items[0])
    with pytest.raises(Refusal) as refused:
        for_source(items, "app")
    assert refused.value.reason == "no_identifier"
    assert refused.value.message == ("nothing TikTok matches an app's events on is left (no idfa, gaid, idfv, "
                                     "email, phone, external_id, or IP with user agent)")


def test_an_app_event_routed_to_a_pixel_leaves_its_device_behind():
    event = app_installed()
    event["event"] = "Checkout Started"
    items = map_event(event, CLICK, MappingConfig.from_dict({"spec": {**APP_SPEC, "events": {}}}), NOW)
    [shaped] = for_source(items, "web")
    assert "app" not in shaped and not {"idfa", "idfv", "att_status"} & set(shaped["user"])
    assert shaped["user"]["ttclid"] == "E.C.P.click-1"
    assert accepted("web", [shaped]) == (0, "OK")


# --------------------------------------------------------------------------- device IDs
@pytest.mark.parametrize(("convert", "given", "sent"), [
    (devices.idfa, IDFA.lower(), IDFA),                    # raw IDFA: UPPERCASE (TikTok's rule)
    (devices.idfa, f"  {IDFA}\n", IDFA),
    (devices.idfa, sha(IDFA).upper(), sha(IDFA)),          # already hashed: passed through, lowercase
    (devices.idfa, "00000000-0000-0000-0000-000000000000", None),  # no ATT consent: identifies no one
    (devices.idfa, "", None),
    (devices.idfa, "{{advertising_id}}", None),            # an unfilled macro is no ID
    (devices.idfa, None, None),
    (devices.gaid, GAID.upper(), GAID),                    # raw GAID: lowercase (TikTok's rule)
    (devices.gaid, sha(GAID), sha(GAID)),
    (devices.gaid, "00000000-0000-0000-0000-000000000000", None),
    (devices.idfv, f" {IDFV} ", IDFV),                     # no rule from TikTok: as given
    (devices.idfv, "", None),
    (devices.att_status, "authorized", "AUTHORIZED"),
    (devices.att_status, "not determined", "NOT_DETERMINED"),
    (devices.att_status, "Not_Applicable", "NOT_APPLICABLE"),
    (devices.att_status, "granted", None),
    (devices.att_status, True, None),
])
def test_device_ids_are_written_as_tiktok_says(convert, given, sent):
    assert convert(given) == sent


def test_every_att_status_passes():
    assert {devices.att_status(s.lower()) for s in ATT_STATUSES} == ATT_STATUSES


def test_a_device_id_of_the_wrong_type_refuses_the_event():
    with pytest.raises(Refusal) as refused:
        map_event(app_installed(advertisingId={"id": IDFA}), None, APP, NOW)
    assert (refused.value.reason, refused.value.message) == (
        "invalid_field", "context.device.advertisingId: expected a device ID string, got {'id': "
        "'EA7583CD-A667-48BC-B806-42ECB...")


def test_android_gaid_through_a_spec():
    spec = {**APP_SPEC, "user": {"gaid": ["context.device.advertisingId"], "att_status": ["context.device.attStatus"]}}
    event = app_installed(advertisingId=GAID.upper(), attStatus="NOT_APPLICABLE")
    [item] = for_source(map_event(event, None, MappingConfig.from_dict({"spec": spec}), NOW), "app")
    assert item["user"] == {"ip": "203.0.113.4", "user_agent": "Shop/3.0.2 (iPhone; iOS 17.1)", "gaid": GAID,
                            "att_status": "NOT_APPLICABLE"}
    assert accepted("app", [item]) == (0, "OK")


# --------------------------------------------------------------------------- the spec's tables
@pytest.mark.parametrize(("over", "message"), [
    ({"app": {"bundle": ["context.app.build"]}}, "app.bundle: unknown key (known: app_id, app_name, app_version)"),
    ({"lead": {"leadid": ["properties.lead_id"]}}, "lead.leadid: unknown key (did you mean 'lead_id'?)"),
    ({"app": ["context.app"]}, "app: expected a table, got ['context.app']"),
    ({"lead": {"lead_id": "properties.lead_id"}}, "lead.lead_id: expected a list of paths or { from = [...], "
     "as = \"...\" }, got 'properties.lead_id'"),
    ({"user": {"idfa": {"from": ["context.device.advertisingId"], "as": "idfaa"}}},
     "user.idfa.as: 'idfaa' is not a transform (did you mean 'idfa'?)"),
])
def test_the_new_tables_are_validated(over, message):
    with pytest.raises(SpecError) as error:
        compile_spec(merge(load_preset("segment"), over))
    assert str(error.value) == message


def test_the_segment_preset_fills_no_lead_app_or_device_fields():
    plan = compile_spec(load_preset("segment"))
    assert plan.app == () and plan.lead == ()
    assert not {"idfa", "idfv", "gaid", "att_status"} & {f.name for f in plan.plain_user}


def test_the_reasons_are_listed():
    assert REASONS == ("event_not_for_source", "missing_lead_id", "missing_app_id", "no_identifier")
