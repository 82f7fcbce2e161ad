package ttbridge.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.google.i18n.phonenumbers.NumberParseException;
import com.google.i18n.phonenumbers.PhoneNumberUtil;
import com.google.i18n.phonenumbers.Phonenumber.PhoneNumber;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Locale;
import java.util.function.UnaryOperator;
import java.util.regex.Pattern;

/**
 * Customer identifiers -> SHA-256 lowercase hex, normalised as TikTok matches them (ttbridge's
 * app.mapping.normalise): email trim+lowercase, phone E.164, external_id trim with case kept.
 * A value that already is 64 hex characters was hashed upstream and passes through lowercased.
 * A list gives a list of hashes; a value of another type is left out (null), never refused.
 */
final class Identifiers {
    private Identifiers() {}

    private static final Pattern SHA256_HEX = Pattern.compile("[0-9a-fA-F]{64}");
    private static final Pattern WHITESPACE = Pattern.compile("\\s+");
    private static final PhoneNumberUtil PHONES = PhoneNumberUtil.getInstance();
    private static final ThreadLocal<MessageDigest> SHA256 = ThreadLocal.withInitial(() -> {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    });

    static final UnaryOperator<String> LOWER = s -> s.toLowerCase(Locale.ROOT);
    static final UnaryOperator<String> KEEP = s -> s;
    static final UnaryOperator<String> ZIP = s -> WHITESPACE.matcher(s).replaceAll("").toLowerCase(Locale.ROOT);

    static UnaryOperator<String> phone(String defaultRegion) {
        return s -> e164(s, defaultRegion);
    }

    /** The hash (a TextNode), the hashes (an ArrayNode), or null when nothing usable is left. */
    static JsonNode hashed(JsonNode v, UnaryOperator<String> normalise) {
        if (v != null && v.isArray()) {
            ArrayNode out = JsonNodeFactory.instance.arrayNode();
            for (JsonNode x : v) {
                String h = hashedOne(x, normalise);
                if (h != null) out.add(h);
            }
            return out.isEmpty() ? null : out;
        }
        String h = hashedOne(v, normalise);
        return h == null ? null : JsonNodeFactory.instance.textNode(h);
    }

    private static String hashedOne(JsonNode v, UnaryOperator<String> normalise) {
        String s = scalar(v);
        if (s == null) return null;
        if (s.length() == 64 && SHA256_HEX.matcher(s).matches()) return s.toLowerCase(Locale.ROOT);
        s = normalise.apply(s);
        return s == null || s.isEmpty() ? null : sha256(s);
    }

    // The stripped string form of one scalar; null for anything else (Python's TypeError).
    private static String scalar(JsonNode v) {
        if (v == null || v.isNull() || v.isBoolean() || v.isContainerNode()) return null;
        if (v.isTextual()) {
            String s = v.textValue().strip();
            return s.isEmpty() ? null : s;
        }
        if (v.isIntegralNumber()) return v.bigIntegerValue().toString();
        double d = v.doubleValue();
        if (!Double.isFinite(d)) return null;
        return d == Math.rint(d) ? new java.math.BigDecimal(d).toBigInteger().toString() : Values.repr(d);
    }

    static String sha256(String s) {
        return HexFormat.of().formatHex(SHA256.get().digest(s.getBytes(StandardCharsets.UTF_8)));
    }

    /**
     * E.164, or null: without a + the number is national to the default region; "possible" (the
     * right length for its country) is the bar, as in ttbridge, not "valid".
     */
    static String e164(String s, String defaultRegion) {
        try {
            PhoneNumber number = PHONES.parse(s, defaultRegion == null ? "ZZ" : defaultRegion);
            if (PHONES.isPossibleNumberWithReason(number) != PhoneNumberUtil.ValidationResult.IS_POSSIBLE) return null;
            return PHONES.format(number, PhoneNumberUtil.PhoneNumberFormat.E164);
        } catch (NumberParseException e) {
            return null;
        }
    }
}
