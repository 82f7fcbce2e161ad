"""Facts about the TikTok Events API (v1.3, "Events 2.0"), in one place.

Everything here comes from ../shared/TIKTOK_EVENTS_API.md. The mapping uses these tables to refuse
what TikTok would reject; the fake Events API uses the same tables to reject it. Changing a fact
here changes both sides, on purpose.
"""
from __future__ import annotations

__all__ = [
    "API_VERSION", "TRACK_PATH", "MAX_BATCH", "EVENT_SOURCES", "STANDARD_EVENTS", "CURRENCIES",
    "EVENT_FIELDS", "USER_FIELDS", "HASHED_USER_FIELDS", "PAGE_FIELDS", "PROPERTIES_FIELDS",
    "CONTENT_FIELDS", "LEAD_FIELDS", "Code",
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
})
HASHED_USER_FIELDS = frozenset({
    "email", "phone", "external_id", "first_name", "last_name", "zip_code",
})
USER_FIELDS = HASHED_USER_FIELDS | {
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
