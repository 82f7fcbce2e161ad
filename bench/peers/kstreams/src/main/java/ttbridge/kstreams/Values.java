package ttbridge.kstreams;

import com.fasterxml.jackson.databind.JsonNode;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The converters of ttbridge's app.mapping.values, over Jackson nodes: each returns the TikTok
 * value, null when nothing usable is there, or throws IllegalArgumentException saying why TikTok
 * would refuse it. Numbers come back as Long or Double, as Python's int and float.
 */
final class Values {
    private Values() {}

    static final Set<String> CURRENCIES = Set.of((
            "AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR GBP GTQ HKD HNL HUF IDR "
            + "ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR PEN PHP PKR PLN PYG QAR RON "
            + "RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR").split(" "));
    static final Set<String> CONTENT_TYPES = Set.of("product", "product_group");
    // An unfilled ad or tag-manager macro sent as if it were a ttclid/_ttp: it matches no one.
    private static final Set<String> PLACEHOLDERS = Set.of("__callback_param__", "__ttclid__", "{ttclid}",
            "{{ttclid}}", "e.c.p.", "undefined", "null", "none", "(not set)");
    // Above 2**53 a JSON number loses integer precision.
    private static final double MAX_NUMBER = 9007199254740992.0;
    private static final BigInteger MAX_INTEGER = BigInteger.valueOf(9007199254740992L);
    static final Pattern NUMERIC = Pattern.compile("[+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?");

    /** The node at a dotted path; null when absent, JSON null, or a non-object on the way. */
    static JsonNode get(JsonNode root, List<String> keys) {
        JsonNode node = root;
        for (String key : keys) {
            if (node == null || !node.isObject()) return null;
            node = node.get(key);
        }
        return node == null || node.isNull() ? null : node;
    }

    static boolean isString(JsonNode v) {
        return v != null && v.isTextual();
    }

    static boolean blank(JsonNode v) {
        return v == null || v.isTextual() && v.textValue().strip().isEmpty();
    }

    static String shown(JsonNode v) {
        String s = v == null ? "None" : v.toString();
        return s.length() <= 40 ? s : s.substring(0, 37) + "...";
    }

    /** Python's repr of a float, as far as the JSON numbers of events need it. */
    static String repr(double v) {
        if (v == Math.rint(v) && Math.abs(v) < 1e16) return (long) v + ".0";
        String s = Double.toString(v);
        return s.replace("E", "e");
    }

    /** A TikTok string field; numbers become their plain form (TikTok refuses a numeric content_id). */
    static String text(JsonNode v) {
        if (v == null) return null;
        if (v.isTextual()) {
            String s = v.textValue().strip();
            return s.isEmpty() ? null : s;
        }
        if (v.isIntegralNumber()) return v.bigIntegerValue().toString();
        if (v.isFloatingPointNumber()) {
            double d = v.doubleValue();
            if (!Double.isFinite(d)) throw new IllegalArgumentException("expected a string, got " + shown(v));
            return d == Math.rint(d) && Math.abs(d) < MAX_NUMBER ? Long.toString((long) d) : repr(d);
        }
        throw new IllegalArgumentException("expected a string, got " + shown(v));
    }

    /** A ttclid or _ttp: text, but a placeholder left by an unfilled macro is nothing. */
    static String identifier(JsonNode v) {
        String s = text(v);
        return s == null || PLACEHOLDERS.contains(s.toLowerCase(Locale.ROOT)) ? null : s;
    }

    static String identifier(String s) {
        if (s == null) return null;
        s = s.strip();
        return s.isEmpty() || PLACEHOLDERS.contains(s.toLowerCase(Locale.ROOT)) ? null : s;
    }

    /** A TikTok number >= 0 (Long or Double); numeric strings ("46.00") are converted. */
    static Number number(JsonNode v) {
        if (v == null) return null;
        Number n;
        if (v.isTextual()) {
            String s = v.textValue().strip();
            if (s.isEmpty()) return null;
            if (!NUMERIC.matcher(s).matches()) throw new IllegalArgumentException("expected a number, got " + shown(v));
            if (s.contains(".") || s.contains("e") || s.contains("E")) {
                n = Double.parseDouble(s);
            } else {
                n = integer(new BigInteger(s.startsWith("+") ? s.substring(1) : s), v);
            }
        } else if (v.isIntegralNumber()) {
            n = integer(v.bigIntegerValue(), v);
        } else if (v.isFloatingPointNumber()) {
            n = v.doubleValue();
        } else {
            throw new IllegalArgumentException("expected a number, got " + shown(v));
        }
        if (n instanceof Double d && !(Double.isFinite(d) && 0 <= d && d < MAX_NUMBER)) {
            throw new IllegalArgumentException("expected a number from 0 to 2**53, got " + shown(v));
        }
        return n;
    }

    private static Long integer(BigInteger i, JsonNode v) {
        if (i.signum() < 0 || i.compareTo(MAX_INTEGER) >= 0) {
            throw new IllegalArgumentException("expected a number from 0 to 2**53, got " + shown(v));
        }
        return i.longValue();
    }

    static Long count(JsonNode v) {
        Number n = number(v);
        if (n instanceof Double d) {
            if (d != Math.rint(d)) throw new IllegalArgumentException("expected a whole number, got " + shown(v));
            return d.longValue();
        }
        return (Long) n;
    }

    static String currency(JsonNode v) {
        if (v == null) return null;
        if (!v.isTextual()) throw new IllegalArgumentException("expected a currency code, got " + shown(v));
        String code = v.textValue().strip().toUpperCase(Locale.ROOT);
        if (!code.isEmpty() && !CURRENCIES.contains(code)) {
            throw new IllegalArgumentException(shown(v) + " is not an ISO-4217 code TikTok accepts");
        }
        return code.isEmpty() ? null : code;
    }

    /** TikTok fails an event whose page URL lacks the scheme: such a URL is left out, not refused. */
    static String httpUrl(JsonNode v) {
        return v != null && v.isTextual() ? httpUrl(v.textValue()) : null;
    }

    static String httpUrl(String v) {
        if (v == null) return null;
        v = v.strip();
        return v.startsWith("http://") || v.startsWith("https://") ? v : null;
    }

    static String contentType(JsonNode v) {
        return v != null && v.isTextual() && CONTENT_TYPES.contains(v.textValue()) ? v.textValue() : null;
    }

    /** The `ttclid` query parameter TikTok appends to an ad's landing-page URL. */
    static String ttclidFromUrl(JsonNode url) {
        return url != null && url.isTextual() ? ttclidFromUrl(url.textValue()) : null;
    }

    static String ttclidFromUrl(String url) {
        if (url == null || !url.contains("ttclid=")) return null;
        int hash = url.indexOf('#');  // as urlsplit: the fragment goes first, then the query
        String beforeFragment = hash < 0 ? url : url.substring(0, hash);
        int q = beforeFragment.indexOf('?');
        if (q < 0) return null;
        String query = beforeFragment.substring(q + 1);
        for (String pair : query.split("&")) {
            int eq = pair.indexOf('=');
            if (eq < 0 || eq == pair.length() - 1) continue;  // as parse_qsl: blank values are dropped
            if (!decode(pair.substring(0, eq)).equals("ttclid")) continue;
            String found = identifier(decode(pair.substring(eq + 1)));
            if (found != null) return found;
        }
        return null;
    }

    private static String decode(String s) {
        try {
            return URLDecoder.decode(s, StandardCharsets.UTF_8);
        } catch (IllegalArgumentException e) {  // a stray "%": Python keeps it as it is
            return s.replace('+', ' ');
        }
    }

    /** The host of a URL, lowercased; null when it has none. */
    static String host(String url) {
        if (url == null) return null;
        try {
            String host = URI.create(url.strip()).getHost();
            return host == null ? null : host.toLowerCase(Locale.ROOT);
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    /** ISO-8601 (naive = UTC) or Unix time (above 1e11: milliseconds) -> Unix seconds. */
    static double timestamp(JsonNode value, String where) throws Refusal {
        double seconds;
        if (value != null && value.isTextual()) {
            String s = value.textValue().strip();
            Double iso = iso8601(s);
            if (iso != null) return iso;
            if (!NUMERIC.matcher(s).matches()) {
                throw new Refusal("invalid_timestamp", where + ": " + shown(value) + " is not ISO-8601 or Unix time");
            }
            seconds = Double.parseDouble(s);
        } else if (value != null && value.isNumber()) {
            seconds = value.doubleValue();
        } else {
            throw new Refusal("invalid_timestamp", where + ": expected ISO-8601 or Unix time, got " + shown(value));
        }
        if (!Double.isFinite(seconds)) throw new Refusal("invalid_timestamp", where + ": " + shown(value) + " is not a time");
        return seconds > 1e11 ? seconds / 1000 : seconds;
    }

    private static Double iso8601(String s) {
        String t = s.length() > 10 && s.charAt(10) == ' ' ? s.substring(0, 10) + "T" + s.substring(11) : s;
        try {
            OffsetDateTime at = OffsetDateTime.parse(t);
            return at.toEpochSecond() + at.getNano() / 1e9;
        } catch (DateTimeParseException ignored) {
            // not with an offset: naive (UTC), or a date
        }
        try {
            LocalDateTime at = LocalDateTime.parse(t);
            return at.toEpochSecond(ZoneOffset.UTC) + at.getNano() / 1e9;
        } catch (DateTimeParseException ignored) {
            // not a naive date-time
        }
        try {
            return (double) LocalDate.parse(t).toEpochDay() * 86400;
        } catch (DateTimeParseException ignored) {
            return null;
        }
    }

    /** Python's round(x, 2): the exact binary value rounded half to even. */
    static double round2(double v) {
        return new BigDecimal(v).setScale(2, java.math.RoundingMode.HALF_EVEN).doubleValue();
    }
}
