package ttbridge.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One task's events waiting for the Events API. Emptied at 1,000 events (one request's worth), by
 * the task's 1 s punctuator (SendToTikTok), on close, and before every commit: Kafka Streams
 * flushes its thread's producer before it commits that thread's offsets (that is how its own
 * output is at-least-once), and the producer it is given (FlushingClients) first empties every
 * outbox of its thread. So a commit never covers an event still in here; a crash loses only
 * events whose offsets were not committed yet, and they are read again. Only its stream thread
 * touches an outbox.
 */
final class Outbox {
    static final int BATCH = 1000;  // TikTok refuses a request of more (40061)
    static final String TRACK_PATH = "/open_api/v1.3/event/track/";
    private static final Logger log = LoggerFactory.getLogger(Outbox.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final ThreadLocal<Set<Outbox>> OF_THIS_THREAD = ThreadLocal.withInitial(LinkedHashSet::new);
    static final AtomicLong sent = new AtomicLong();

    private final Delivery delivery;
    private final List<JsonNode> items = new ArrayList<>(BATCH);

    /** Where the events go: shared by every task's outbox (one HTTP client, one connection pool). */
    record Delivery(HttpClient http, URI url, String pixel, String token) {
        static Delivery to(String baseUrl, String pixel, String token) {
            HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                    .connectTimeout(Duration.ofSeconds(10)).build();
            return new Delivery(http, URI.create(baseUrl.replaceAll("/+$", "") + TRACK_PATH), pixel, token);
        }
    }

    /** A task's outbox, on its stream thread. */
    static Outbox open(Delivery delivery) {
        Outbox outbox = new Outbox(delivery);
        OF_THIS_THREAD.get().add(outbox);
        return outbox;
    }

    /** Empties every outbox of the calling stream thread (FlushingClients, before a commit). */
    static void sendAllOfThisThread() {
        for (Outbox outbox : OF_THIS_THREAD.get()) outbox.send();
    }

    private Outbox(Delivery delivery) {
        this.delivery = delivery;
    }

    void close() {
        send();
        OF_THIS_THREAD.get().remove(this);
    }

    void add(JsonNode item) {
        items.add(item);
        if (items.size() >= BATCH) send();
    }

    /** POSTs what is here, 1,000 events a request; a refused or failed request is retried. */
    void send() {
        for (int first = 0; first < items.size(); first += BATCH) {
            post(items.subList(first, Math.min(items.size(), first + BATCH)));
        }
        items.clear();
    }

    private void post(List<JsonNode> chunk) {
        ObjectNode body = JSON.createObjectNode();
        body.put("event_source", "web").put("event_source_id", delivery.pixel()).putArray("data").addAll(chunk);
        HttpRequest request;
        try {
            request = HttpRequest.newBuilder(delivery.url()).timeout(Duration.ofSeconds(30))
                    .header("Access-Token", delivery.token()).header("Content-Type", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofByteArray(JSON.writeValueAsBytes(body))).build();
        } catch (IOException e) {
            throw new IllegalStateException("cannot serialise a batch", e);
        }
        // Blocking the stream thread is the back-pressure: nothing more is read, nothing committed.
        for (long backoffMs = 1000; ; ) {
            String why;
            try {
                HttpResponse<byte[]> r = delivery.http().send(request, HttpResponse.BodyHandlers.ofByteArray());
                JsonNode code = r.statusCode() == 200 ? JSON.readTree(r.body()).get("code") : null;
                if (code != null && code.asInt(-1) == 0) {
                    sent.addAndGet(chunk.size());
                    return;
                }
                why = "HTTP " + r.statusCode() + (code == null ? "" : ", code " + code);
            } catch (IOException e) {
                why = e.toString();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while sending", e);
            }
            log.warn("Events API refused a batch of {} ({}); retrying in {} ms", chunk.size(), why, backoffMs);
            try {
                Thread.sleep(backoffMs);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while backing off", e);
            }
        }
    }
}
