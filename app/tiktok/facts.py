"""Facts about the TikTok Events API (v1.3, "Events 2.0"), in one place.

Everything here comes from ../shared/TIKTOK_EVENTS_API.md, and the event-source facts (the end
of this file) from the sources named there. The mapping uses these tables to refuse what TikTok
would reject; the fake Events API uses the same tables to reject it. Changing a fact here changes
both sides, on purpose.
"""
from __future__ import annotations

__all__ = [
    "API_VERSION", "TRACK_PATH", "MAX_BATCH", "EVENT_SOURCES", "STANDARD_EVENTS", "CURRENCIES",
    "EVENT_FIELDS", "USER_FIELDS", "HASHED_USER_FIELDS", "PAGE_FIELDS", "PROPERTIES_FIELDS",
    "CONTENT_FIELDS", "LEAD_FIELDS", "Code", "APP_FIELDS", "APP_EVENTS", "DEVICE_FIELDS",
    "ATT_STATUSES", "SOURCE_EVENTS", "SOURCE_ITEM_FIELDS", "SOURCE_USER_FIELDS", "NUMERIC_SOURCE_IDS",
    "OFFLINE_IDENTIFIERS",
]

API_VERSION = "v1.3"
TRACK_PATH = f"/open_api/{API_VERSION}/event/track/"
MAX_BATCH = 1000  # more events in one request rejects the whole request (40061)

EVENT_SOURCES = frozenset({"web", "app", "offline", "crm"})

# Case-sensitive. The last four are older names TikTok still accepts.
STANDARD_EVENTS = frozenset({
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "ApplicationApproval", "CompleteRegistration",
    "Contact", "CustomizeProduct", "Download", "FindLocation", "InitiateCheckout", "Lead",
    "Purchase", "Schedule", "Search", "StartTrial", "SubmitApplication", "Subscribe",
    "ViewContent",
    "ClickButton", "CompletePayment", "PlaceAnOrder", "SubmitForm",
})

CURRENCIES = frozenset("""
AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR GBP GTQ HKD HNL HUF IDR
ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR PEN PHP PKR PLN PYG QAR RON
RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR
""".split())

# The fields of one data[] item that we send and the fake accepts; anything else is "unknown".
EVENT_FIELDS = frozenset({
    "event", "event_time", "event_id", "user", "page", "properties", "limited_data_use", "lead",
    "app",
})
HASHED_USER_FIELDS = frozenset({
    "email", "phone", "external_id", "first_name", "last_name", "zip_code",
})
# App events only: the device's advertising IDs and its App Tracking Transparency status.
DEVICE_FIELDS = frozenset({"idfa", "idfv", "gaid", "att_status"})
USER_FIELDS = HASHED_USER_FIELDS | DEVICE_FIELDS | {
    "ttclid", "ttp", "ip", "user_agent", "locale", "city", "state", "country",
}
PAGE_FIELDS = frozenset({"url", "referrer"})
PROPERTIES_FIELDS = frozenset({
    "contents", "content_type", "currency", "value", "num_items", "order_id", "shop_id",
    "description", "search_string",
})
CONTENT_FIELDS = frozenset({
    "content_id", "content_name", "content_category", "price", "quantity", "brand",
})
LEAD_FIELDS = frozenset({"lead_id", "lead_event_source"})
APP_FIELDS = frozenset({"app_id", "app_name", "app_version"})
CONTENT_TYPES = frozenset({"product", "product_group"})


class Code:
    """Response body codes. Errors arrive with HTTP 200: the body code decides."""

    OK = 0
    PARTIAL_OK = 20001
    NO_PERMISSION = 40001
    INVALID_PARAMETER = 40002
    INVALID_BATCH_SIZE = 40061
    PII_NOT_HASHED = 40062
    RATE_LIMITED = 40100
    TOKEN_EXPIRED = 40102
    TOKEN_EMPTY = 40104
    TOKEN_INVALID = 40105
    RATE_LIMITED_APP = 40132
    VALIDATION = 40700
    SERVER_ERROR = 50000
    SERVER_TIMEOUT = 50002
    SERVICE_UNAVAILABLE = 60001
    RATE_LIMITED_SYSTEM = 61000


# --------------------------------------------------------------------------- event sources
# What each event_source takes. Sources, in order of weight:
#  [ref]  TikTok's API reference page "Report App, Web, Offline, or CRM Events" (Events 2.0, doc id
#         1771101303285761), read in a stored copy (the search tool's code corpus, file id
#         54360797515; TikTok's portal is not reachable from here). Its parameter tables say
#         which field is "for web events only" etc., and carry one example request per source.
#  [seg]  Segment's TikTok destinations (segmentio/action-destinations, destinations/
#         tiktok-conversions, tiktok-offline-conversions, tiktok-app-events; the App Events one
#         is maintained by TikTok): what production integrations really send per source.
#  [help] TikTok help pages: "How to postback signals through Events API" (CRM), "How to upload
#         offline events" and "How to postback signals through csv".
# tiktok/tiktok-business-api-sdk (its yml_files/) has no /event/track/ operation: nothing from it.
#
# event_source_id [ref]: web = a Pixel Code, app = a TikTok App ID, offline = an Offline Event Set
# ID, crm = a CRM Event Set ID (from /crm/list/). Event set and app IDs are numeric: the
# RudderStack offline fixtures carry 7181537436256731137, a public app guide 7568899277611696136.
# UNCONFIRMED that every one is digits only (no TikTok text says so); the fake checks it, the
# settings do not (a wrong guess there would stop a deployment that TikTok accepts).
NUMERIC_SOURCE_IDS = frozenset({"app", "offline", "crm"})

# The event names each source takes; None: any name (custom names, see crm).
#  web: the standard events above. [ref] allows custom names too; TikTok discards them on web
#       (TIKTOK_EVENTS_API.md), so neither side takes them.
#  offline: [ref] "For offline events, it can only be a Standard Event". Which standard events is
#       UNCONFIRMED ([help] lists Purchase, Contact, Subscribe, Lead, Add Payment Info, ...; [seg]
#       sends CompletePayment, Contact, Subscribe, SubmitForm): the web list is taken.
#  app: TikTok's app standard events, as the TikTok-maintained [seg] App Events presets name them
#       (Checkout, not InitiateCheckout; Registration, not CompleteRegistration; LaunchAPP, and
#       InAppADClick, are spelled so). Custom app names: as on web, not sent.
#  crm: [ref] "For CRM events, it can only be a Custom Event": the names are the CRM event set's
#       own (its lead stages), mapped to standard events in Events Manager [help]. Yet [ref]'s own
#       CRM example sends AddToCart and [help] (csv) recommends standard names: whether TikTok
#       refuses a standard name on crm is UNCONFIRMED, so any name is taken, and a mapping names
#       its CRM event names itself (spec [event] custom_events).
APP_EVENTS = frozenset({
    "AchieveLevel", "AddPaymentInfo", "AddToCart", "AddToWishlist", "Checkout", "CompleteTutorial",
    "CreateGroup", "CreateRole", "GenerateLead", "InAppADClick", "InAppADImpr", "InstallApp",
    "JoinGroup", "LaunchAPP", "LoanApplication", "LoanApproval", "LoanDisbursal", "Login",
    "Purchase", "Rate", "Registration", "Search", "SpendCredits", "StartTrial", "Subscribe",
    "UnlockAchievement", "ViewContent",
})
SOURCE_EVENTS: dict[str, frozenset[str] | None] = {
    "web": STANDARD_EVENTS, "offline": STANDARD_EVENTS, "app": APP_EVENTS, "crm": None,
}

# The data[] item fields each source takes.
#  lead: crm only, and required there with its lead_id [ref] ([seg] sends it only for crm).
#  app: app only, and required there with its app_id [ref]; app_name, app_version optional.
#  page: [ref] marks it "required for web events"; not enforced (peers send web events without
#       it, and send_page_url = false leaves it out on purpose); taken on offline and crm too
#       ([seg] sends it there); not on app (an app event has no page; [seg] sends none there).
#  limited_data_use: [ref] says web and app; [seg] sends it on offline and crm too: taken on all.
#  ad (app and web, [ref]): ttbridge sends none, so neither side takes it.
_WEB_ITEM = frozenset({"event", "event_time", "event_id", "user", "page", "properties",
                       "limited_data_use"})
SOURCE_ITEM_FIELDS = {
    "web": _WEB_ITEM, "offline": _WEB_ITEM, "crm": _WEB_ITEM | {"lead"},
    "app": (_WEB_ITEM - {"page"}) | {"app"},
}

# The user fields each source takes.
#  idfa, idfv, gaid, att_status: "for app events only" [ref].
#  ttclid, ttp: "for web events only" [ref], but [seg] sends them on offline and crm in production:
#       taken there; not on app (a web click ID on an app event attributes nothing).
#  UNCONFIRMED whether TikTok refuses page, ttclid or ttp on app, or device IDs off app: the fake
#  does, and app.mapping.sources leaves them out there, so nothing TikTok uses is lost either way.
#  ip, user_agent, locale ("web and app"), external_id ("web and CRM"): [ref]'s markers, but [seg]
#       sends all of them on every source (external_id on app too): taken everywhere.
SOURCE_USER_FIELDS = {
    "web": USER_FIELDS - DEVICE_FIELDS, "offline": USER_FIELDS - DEVICE_FIELDS,
    "crm": USER_FIELDS - DEVICE_FIELDS, "app": USER_FIELDS - {"ttclid", "ttp"},
}

# Offline events are matched by email or phone only: [help] (offline upload) "We only support
# email or phone based PII"; [ref] marks external_id "for web and CRM events only" and its offline
# example sends just email and phone; [seg]'s error for an offline event says it "requires an
# email address and/or phone number" (its code lets an external_id alone through). An offline
# event with neither can't be attributed: both sides refuse it.
OFFLINE_IDENTIFIERS = ("email", "phone")

# Device IDs [ref]: IDFA raw in UPPERCASE or SHA-256 (lowercase hex); GAID raw in lowercase or
# SHA-256 (lowercase hex); IDFV: no rule stated (sent as given, trimmed). Raw is sent: [ref]'s
# sentence on hashing ("lowercase, trimmed before hashing") does not say whether the IDFA is
# lowercased before it is hashed, and [seg] hashes iOS and Android IDs differently. The all-zero
# ID (iOS without ATT consent, Android with ad tracking limited) identifies no one: left out.
ATT_STATUSES = frozenset({"AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"})
