package ttbridge.kstreams;

/** The event can never be sent as it is (ttbridge's app.mapping.values.Refusal): dropped and counted. */
final class Refusal extends Exception {
    final String reason;

    Refusal(String reason, String message) {
        super(reason + ": " + message, null, false, false);  // no stack trace: a refusal is data, not a bug
        this.reason = reason;
    }
}
