package ttbridge.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.function.UnaryOperator;

/**
 * One Segment-spec conversion + its click -> TikTok Events API data[] items, as ttbridge maps it
 * with its segment preset (app/mapping/presets/segment.toml, app.mapping.events.interpret) and
 * MappingConfig(default_region="GB"), the Quix peer's configuration. The preset is data here too:
 * the field tables below; the code is what the preset leaves to ttbridge's engine (precedence of
 * the event over its click, the attribution window, event_id, num_items, value).
 * bench/peers/kstreams_check.py compares the two on the benchmark's load.
 */
final class SegmentMapping {
    static final double ATTRIBUTION_WINDOW_S = 7 * 86400;
    static final double MAX_FUTURE_S = 300;
    private static final double MIN_EVENT_TIME = 1e9;
    private static final JsonNodeFactory JSON = JsonNodeFactory.instance;
    private static final ObjectMapper SORTED = new ObjectMapper().configure(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true);

    /** A field: its TikTok name, source paths (first usable wins), converter and refusal reason. */
    record Field(String name, List<List<String>> paths, Function<JsonNode, JsonNode> convert, String reason) {}

    /** A hashed user field: a wrong type leaves it out, never refuses. */
    record Hashed(String name, List<List<String>> paths, UnaryOperator<String> normalise) {}

    /** A click as ttbridge's clicks table stores it (app.mapping.decode.click_record). */
    record Click(double clickedAt, Map<String, String> texts) {}

    // ------------------------------------------------------------------ the preset, as data
    private static final List<List<String>> NAME = paths("event");
    private static final List<String> KIND = path("type");
    private static final Set<String> KINDS = Set.of("track");
    private static final String KIND_DEFAULT = "track";
    private static final List<List<String>> TIMESTAMP = paths("timestamp", "originalTimestamp");
    private static final List<List<String>> EVENT_ID = paths("properties.event_id", "properties.eventId", "messageId");
    static final List<List<String>> CLICK_ID = paths("properties.click_id", "context.click_id");
    private static final List<List<String>> LIMITED_DATA_USE = paths("properties.limited_data_use",
            "context.limited_data_use");
    private static final List<List<String>> OBJECTS = paths("properties", "context");
    private static final List<List<String>> TTCLID_URLS = paths("context.page.url", "properties.url");
    private static final Set<String> STANDARD_EVENTS = Set.of("AddPaymentInfo", "AddToCart", "AddToWishlist",
            "ApplicationApproval", "CompleteRegistration", "Contact", "CustomizeProduct", "Download", "FindLocation",
            "InitiateCheckout", "Lead", "Purchase", "Schedule", "Search", "StartTrial", "SubmitApplication",
            "Subscribe", "ViewContent", "ClickButton", "CompletePayment", "PlaceAnOrder", "SubmitForm");
    private static final Map<String, String> EVENTS = Map.of(
            "Product Viewed", "ViewContent", "Product Added", "AddToCart", "Product Added to Wishlist", "AddToWishlist",
            "Checkout Started", "InitiateCheckout", "Payment Info Entered", "AddPaymentInfo",
            "Order Completed", "Purchase", "Products Searched", "Search", "Signed Up", "CompleteRegistration",
            "Lead Generated", "Lead", "Form Submitted", "Lead");

    private final List<Hashed> hashedUser;
    private static final Field TTCLID = new Field("ttclid", paths("properties.ttclid", "context.ttclid"),
            v -> text(Values.identifier(v)), "invalid_field");
    private static final Field TTP = new Field("ttp", paths("properties.ttp", "context.ttp", "context.cookies._ttp"),
            v -> text(Values.identifier(v)), "invalid_field");
    private static final List<Field> PLAIN_USER = List.of(
            new Field("ip", paths("context.ip"), v -> text(Values.text(v)), "invalid_field"),
            new Field("user_agent", paths("context.userAgent"), v -> text(Values.text(v)), "invalid_field"),
            new Field("locale", paths("context.locale"), v -> text(Values.text(v)), "invalid_field"));
    private static final Field PAGE_URL = new Field("url", paths("context.page.url", "properties.url"),
            v -> text(Values.httpUrl(v)), "invalid_field");
    private static final Field PAGE_REFERRER = new Field("referrer", paths("context.page.referrer", "properties.referrer"),
            v -> text(Values.httpUrl(v)), "invalid_field");
    private static final List<Field> PROPERTIES = List.of(
            new Field("value", paths("properties.value", "properties.revenue", "properties.total"),
                    v -> number(Values.number(v)), "invalid_value"),
            new Field("currency", paths("properties.currency"), v -> text(Values.currency(v)), "invalid_currency"),
            new Field("num_items", paths("properties.num_items"), v -> number(Values.count(v)), "invalid_num_items"),
            new Field("order_id", paths("properties.order_id"), v -> text(Values.text(v)), "invalid_field"),
            new Field("shop_id", paths("properties.shop_id"), v -> text(Values.text(v)), "invalid_field"),
            new Field("description", paths("properties.description"), v -> text(Values.text(v)), "invalid_field"),
            new Field("search_string", paths("properties.query", "properties.search_string"),
                    v -> text(Values.text(v)), "invalid_field"),
            new Field("content_type", paths("properties.content_type", "properties.contentType"),
                    v -> text(Values.contentType(v)), "invalid_field"));
    private static final List<List<String>> CONTENTS_FROM = paths("properties.products", "properties.contents");
    private static final List<String> SINGLE = path("properties");
    private static final List<String> SINGLE_WHEN = List.of("product_id", "sku");
    private static final List<Field> ITEM = List.of(
            new Field("content_id", paths("product_id", "sku", "id", "content_id"), v -> text(Values.text(v)), "invalid_contents"),
            new Field("content_name", paths("name", "content_name"), v -> text(Values.text(v)), "invalid_contents"),
            new Field("content_category", paths("category", "content_category"), v -> text(Values.text(v)), "invalid_contents"),
            new Field("brand", paths("brand"), v -> text(Values.text(v)), "invalid_contents"),
            new Field("price", paths("price"), v -> number(Values.number(v)), "invalid_price"),
            new Field("quantity", paths("quantity"), v -> number(Values.number(v)), "invalid_quantity"));
    private static final List<Field> SINGLE_ITEM = List.of(
            new Field("content_id", paths("product_id", "sku"), v -> text(Values.text(v)), "invalid_contents"),
            ITEM.get(1), ITEM.get(2), ITEM.get(3), ITEM.get(4), ITEM.get(5));

    private final Map<String, String> names = new HashMap<>();
    private final Map<String, String> folded = new HashMap<>();  // fold_names = true

    SegmentMapping(String defaultRegion) {
        hashedUser = List.of(
                new Hashed("email", paths("context.traits.email", "traits.email", "properties.email"), Identifiers.LOWER),
                new Hashed("phone", paths("context.traits.phone", "traits.phone", "properties.phone"),
                        Identifiers.phone(defaultRegion)),
                new Hashed("external_id", paths("userId"), Identifiers.KEEP),
                new Hashed("first_name", paths("context.traits.firstName", "traits.firstName", "context.traits.first_name",
                        "traits.first_name"), Identifiers.LOWER),
                new Hashed("last_name", paths("context.traits.lastName", "traits.lastName", "context.traits.last_name",
                        "traits.last_name"), Identifiers.LOWER),
                new Hashed("zip_code", paths("context.traits.address.postalCode", "traits.address.postalCode",
                        "context.traits.zip", "traits.zip"), Identifiers.ZIP));
        for (String n : STANDARD_EVENTS) {
            names.put(n, n);
            folded.put(fold(n), n);
        }
        names.putAll(EVENTS);
        EVENTS.forEach((source, target) -> folded.put(fold(source), target));
    }

    // ------------------------------------------------------------------ decoding
    /** The click's ID (the same reading as on the conversion side), or null: no usable click ID. */
    static String clickIdOf(JsonNode doc, List<List<String>> paths) {
        for (List<String> keys : paths) {
            try {
                String id = Values.text(Values.get(doc, keys));
                if (id != null) return id;
            } catch (IllegalArgumentException e) {
                // an object where the ID should be is no click ID
            }
        }
        return null;
    }

    /** ttbridge's decode_click: the record of a click, or null for a click the clicks table refuses. */
    static Click decodeClick(JsonNode doc) {
        if (doc == null || !doc.isObject() || clickIdOf(doc, List.of(List.of("click_id"))) == null) return null;
        Map<String, String> texts = new HashMap<>();
        for (String key : List.of("ttclid", "ttp", "ip", "user_agent", "url", "referrer")) {
            JsonNode v = Values.get(doc, List.of(key));
            if (v != null && !v.isTextual()) return null;
            if (v != null && !v.textValue().isEmpty()) texts.put(key, v.textValue());
        }
        if (!texts.containsKey("ttclid")) {
            String fromUrl = Values.ttclidFromUrl(texts.get("url"));
            if (fromUrl != null) texts.put("ttclid", fromUrl);
        }
        try {
            return new Click(Values.timestamp(Values.get(doc, List.of("timestamp")), "timestamp"), texts);
        } catch (Refusal e) {
            return null;
        }
    }

    // ------------------------------------------------------------------ mapping
    /** The data[] items for one conversion and its click (or null); empty when not sent. */
    List<ObjectNode> map(JsonNode event, Click click, double now) throws Refusal {
        if (event == null || !event.isObject()) throw new Refusal("invalid_event", "expected a JSON object");
        String tiktok = tiktokName(event);
        if (tiktok == null) return List.of();
        for (List<String> keys : OBJECTS) {
            JsonNode part = Values.get(event, keys);
            if (part != null && !part.isObject()) {
                throw new Refusal("invalid_field", dotted(keys) + ": expected an object, got " + Values.shown(part));
            }
        }
        double eventTime = eventTime(event, now);
        ObjectNode user = user(event, click, clickCounts(click, eventTime));
        ObjectNode properties = properties(event);
        ObjectNode item = JSON.objectNode();
        item.put("event", tiktok);
        item.put("event_time", (long) eventTime);
        JsonNode orderId = properties.get("order_id");
        item.put("event_id", eventId(event, orderId == null ? null : orderId.textValue()));
        if (!user.isEmpty()) item.set("user", user);
        ObjectNode page = page(event, click);
        if (!page.isEmpty()) item.set("page", page);
        if (!properties.isEmpty()) item.set("properties", properties);
        for (List<String> keys : LIMITED_DATA_USE) {
            JsonNode ldu = Values.get(event, keys);
            if (ldu != null && ldu.isBoolean()) {
                item.put("limited_data_use", ldu.booleanValue());
                break;
            }
        }
        return List.of(item);
    }

    private String tiktokName(JsonNode event) throws Refusal {
        JsonNode kind = Values.get(event, KIND);
        String k = kind == null ? KIND_DEFAULT : kind.isTextual() ? kind.textValue() : null;
        if (k == null) throw new Refusal("invalid_field", "type: expected a string, got " + Values.shown(kind));
        if (!KINDS.contains(k)) return null;  // a page or identify call: not a conversion
        JsonNode name = Values.get(event, NAME.get(0));
        if (Values.blank(name)) throw new Refusal("missing_event_name", "event: the event has no name");
        if (!name.isTextual()) throw new Refusal("invalid_event_name", "event: expected a string");
        String mapped = names.get(name.textValue());
        return mapped != null ? mapped : folded.get(fold(name.textValue()));
    }

    private static String fold(String name) {
        return String.join(" ", name.replace('_', ' ').strip().split("\\s+")).toLowerCase(Locale.ROOT);
    }

    private static double eventTime(JsonNode event, double now) throws Refusal {
        JsonNode value = null;
        String where = dotted(TIMESTAMP.get(0));
        for (List<String> keys : TIMESTAMP) {
            value = Values.get(event, keys);
            if (value != null && !(value.isTextual() && value.textValue().isEmpty())) {
                where = dotted(keys);
                break;
            }
            value = null;
        }
        if (value == null) throw new Refusal("missing_timestamp", where + ": missing");
        double seconds = Values.timestamp(value, where);
        if (seconds < MIN_EVENT_TIME) throw new Refusal("invalid_timestamp", where + ": before 2001");
        if (seconds > now + MAX_FUTURE_S) throw new Refusal("future_event", where + ": in the future");
        return seconds;
    }

    private static String eventId(JsonNode event, String orderId) throws Refusal {
        for (List<String> keys : EVENT_ID) {
            try {
                String v = Values.text(Values.get(event, keys));
                if (v != null) return v;
            } catch (IllegalArgumentException e) {
                throw new Refusal("invalid_field", dotted(keys) + ": " + e.getMessage());
            }
        }
        if (orderId != null) return orderId + ":" + Values.get(event, NAME.get(0)).textValue().strip();
        try {
            // ttbridge hashes orjson's sorted compact form; Jackson's matches it for plain JSON.
            return Identifiers.sha256(SORTED.writeValueAsString(SORTED.treeToValue(event, Object.class)));
        } catch (Exception e) {
            throw new Refusal("invalid_event", "cannot derive an event_id: " + e.getMessage());
        }
    }

    private static boolean clickCounts(Click click, double eventTime) {
        // A click without a usable time can't be shown to be in the window, so it doesn't count.
        return click != null && Double.isFinite(click.clickedAt())
                && eventTime - click.clickedAt() <= ATTRIBUTION_WINDOW_S;
    }

    private static String clickText(Click click, String key) {
        String v = click == null ? null : click.texts().get(key);
        if (v == null) return null;
        v = v.strip();
        return v.isEmpty() ? null : v;
    }

    private ObjectNode user(JsonNode event, Click click, boolean clickCounts) throws Refusal {
        ObjectNode user = JSON.objectNode();
        for (Hashed f : hashedUser) {
            for (List<String> keys : f.paths()) {
                JsonNode v = Values.get(event, keys);
                JsonNode h = v == null ? null : Identifiers.hashed(v, f.normalise());
                if (h != null) {
                    user.set(f.name(), h);
                    break;
                }
            }
        }
        String ttclid = textOf(read(TTCLID, event));
        String ttp = textOf(read(TTP, event));
        if (clickCounts) {
            if (ttclid == null) ttclid = clickText(click, "ttclid");
            if (ttclid == null) ttclid = Values.ttclidFromUrl(click.texts().get("url"));
            if (ttp == null) ttp = clickText(click, "ttp");
        }
        for (int i = 0; ttclid == null && i < TTCLID_URLS.size(); i++) {
            ttclid = Values.ttclidFromUrl(Values.get(event, TTCLID_URLS.get(i)));
        }
        if (ttclid == null) ttclid = sameSiteReferrerTtclid(event);
        if (ttclid != null) user.put("ttclid", ttclid);
        if (ttp != null) user.put("ttp", ttp);
        for (Field f : PLAIN_USER) {
            String v = textOf(read(f, event));
            if (v == null && click != null && !f.name().equals("locale")) v = clickText(click, f.name());
            if (v != null) user.put(f.name(), v);
        }
        return user;
    }

    // The ttclid in the referrer when the referrer is on the page's own host (as TikTok's tag does).
    private static String sameSiteReferrerTtclid(JsonNode event) throws Refusal {
        String referrer = textOf(read(PAGE_REFERRER, event));
        if (referrer == null || !referrer.contains("ttclid=")) return null;
        String host = Values.host(textOf(read(PAGE_URL, event)));
        return host != null && host.equals(Values.host(referrer)) ? Values.ttclidFromUrl(referrer) : null;
    }

    private static ObjectNode page(JsonNode event, Click click) throws Refusal {
        String url = textOf(read(PAGE_URL, event));
        String referrer = textOf(read(PAGE_REFERRER, event));
        if (url == null && referrer == null && click != null) {
            // The click's landing page, when the conversion (a server postback) has no page.
            url = Values.httpUrl(click.texts().get("url"));
            referrer = Values.httpUrl(click.texts().get("referrer"));
        }
        ObjectNode page = JSON.objectNode();
        if (url != null) page.put("url", url);
        if (referrer != null) page.put("referrer", referrer);
        return page;
    }

    private static ObjectNode properties(JsonNode event) throws Refusal {
        ObjectNode out = fill(JSON.objectNode(), PROPERTIES, event, "");
        ArrayNode contents = contents(event);
        if (contents != null && !contents.isEmpty()) {
            out.set("contents", contents);
            double total = 0;
            boolean anyQuantity = false, allPriced = true;
            for (JsonNode c : contents) {
                if (c.has("quantity")) {
                    anyQuantity = true;
                    total += c.get("quantity").doubleValue();
                }
                allPriced &= c.has("price");
            }
            if (anyQuantity && !out.has("num_items") && total == Math.rint(total)) out.put("num_items", (long) total);
            if (!out.has("value") && allPriced) {
                // The order total from its lines, as TikTok's own server-side template does.
                double value = 0;
                boolean integral = true;
                for (JsonNode c : contents) {
                    JsonNode q = c.get("quantity");
                    value += c.get("price").doubleValue() * (q == null ? 1 : q.doubleValue());
                    integral &= c.get("price").isIntegralNumber() && (q == null || q.isIntegralNumber());
                }
                if (integral) out.put("value", (long) value);
                else out.put("value", Values.round2(value));
            }
        }
        return out;
    }

    private static ArrayNode contents(JsonNode event) throws Refusal {
        JsonNode products = null;
        String where = "";
        for (List<String> keys : CONTENTS_FROM) {
            products = Values.get(event, keys);
            if (products != null) {
                where = dotted(keys);
                break;
            }
        }
        ArrayNode out = JSON.arrayNode();
        if (products == null) {
            JsonNode holder = Values.get(event, SINGLE);
            if (holder == null || !holder.isObject()) return null;
            boolean any = false;
            for (String k : SINGLE_WHEN) {
                JsonNode v = Values.get(holder, List.of(k));
                any |= v != null && !(v.isTextual() && v.textValue().isEmpty());
            }
            if (!any) return null;
            ObjectNode item = fill(JSON.objectNode(), SINGLE_ITEM, holder, dotted(SINGLE) + ".");
            return item.isEmpty() ? null : out.add(item);
        }
        if (products.isObject()) products = JSON.arrayNode().add(products);  // one product sent as an object
        if (!products.isArray()) {
            throw new Refusal("invalid_contents", where + ": expected a list of products, got " + Values.shown(products));
        }
        for (int i = 0; i < products.size(); i++) {
            JsonNode product = products.get(i);
            if (!product.isObject()) {
                throw new Refusal("invalid_contents", where + "[" + i + "]: expected an object, got " + Values.shown(product));
            }
            ObjectNode item = fill(JSON.objectNode(), ITEM, product, where + "[" + i + "].");
            if (!item.isEmpty()) out.add(item);
        }
        return out;
    }

    private static ObjectNode fill(ObjectNode out, List<Field> fields, JsonNode root, String where) throws Refusal {
        for (Field f : fields) {
            JsonNode v = read(f, root, where);
            if (v != null) out.set(f.name(), v);
        }
        return out;
    }

    private static JsonNode read(Field f, JsonNode root) throws Refusal {
        return read(f, root, "");
    }

    private static JsonNode read(Field f, JsonNode root, String where) throws Refusal {
        for (List<String> keys : f.paths()) {
            JsonNode v = Values.get(root, keys);
            if (v == null) continue;
            try {
                v = f.convert().apply(v);
            } catch (IllegalArgumentException e) {
                throw new Refusal(f.reason(), where + dotted(keys) + ": " + e.getMessage());
            }
            if (v != null) return v;
        }
        return null;
    }

    // ------------------------------------------------------------------ small helpers
    private static JsonNode text(String s) {
        return s == null ? null : JSON.textNode(s);
    }

    private static String textOf(JsonNode v) {
        return v == null ? null : v.textValue();
    }

    private static JsonNode number(Number n) {
        if (n == null) return null;
        return n instanceof Long l ? JSON.numberNode(l) : JSON.numberNode(n.doubleValue());
    }

    static List<String> path(String dotted) {
        return Arrays.asList(dotted.split("\\."));
    }

    static List<List<String>> paths(String... dotted) {
        List<List<String>> out = new ArrayList<>();
        for (String d : dotted) out.add(path(d));
        return List.copyOf(out);
    }

    private static String dotted(List<String> keys) {
        return String.join(".", keys);
    }
}
