package ttbridge.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

/**
 * ttbridge's job written as a Kafka Streams application, the way its documentation suggests:
 * `java -jar kstreams-peer.jar --bootstrap B --clicks T --events T --url URL --state-dir D --group G`.
 *
 * - clicks (keyed by click ID, murmur2: the Java client's default partitioner) are a KTable read
 *   from their topic; with topology.optimization=all the source topic is the table's changelog;
 * - conversions are parsed (Jackson), re-keyed by properties.click_id (`no-click:<messageId>`
 *   without one), repartitioned (co-partitioned with the clicks), left-joined with the table
 *   (a conversion whose click has not been read yet goes on without it, as in the Quix peer),
 *   mapped as ttbridge maps them (SegmentMapping), and
 * - POSTed from each task's Outbox: 1,000 events a request, at least every second, and always
 *   before offsets are committed (FlushingClients: at-least-once). A failed request is retried.
 *
 * Events that are not JSON or that the mapping refuses are dropped (counted in the log at exit).
 * `--map-stdin` maps {"event"|"raw": ..., "click": ..., "now": ...} lines to {"items"|"refused": ...}
 * lines instead (bench/peers/kstreams_check.py).
 */
public final class Peer {
    static final String PIXEL = "BENCHPIXEL000000001";
    static final String TOKEN = "bench-token-0123456789abcdef";
    private static final Logger log = LoggerFactory.getLogger(Peer.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final AtomicLong badJson = new AtomicLong(), badClick = new AtomicLong(), refused = new AtomicLong();

    private Peer() {}

    /** JSON values; what is not JSON deserialises to null (a conversion: dropped; a click: no click). */
    static final class JsonSerde implements Serde<JsonNode> {
        @Override
        public org.apache.kafka.common.serialization.Serializer<JsonNode> serializer() {
            return (topic, node) -> {
                try {
                    return node == null ? null : JSON.writeValueAsBytes(node);
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
            };
        }

        @Override
        public Deserializer<JsonNode> deserializer() {
            return (topic, raw) -> parse(raw);
        }
    }

    static JsonNode parse(byte[] raw) {
        if (raw == null) return null;
        try {
            return JSON.readTree(raw);
        } catch (IOException e) {
            return null;
        }
    }

    /** A conversion and the click its key found (or null). */
    record Conversion(JsonNode event, JsonNode click) {}

    static String byClickId(JsonNode event) {
        JsonNode id = Values.get(event, List.of("properties", "click_id"));
        if (id != null && id.isTextual() && !id.textValue().isEmpty()) return id.textValue();
        // Conversions without a click ID still need a key: their own message ID finds no click.
        JsonNode messageId = Values.get(event, List.of("messageId"));
        return "no-click:" + (messageId == null ? "" : messageId.isTextual() ? messageId.textValue() : messageId.toString());
    }

    static List<ObjectNode> mapped(SegmentMapping mapping, Conversion c, double now) {
        SegmentMapping.Click click = null;
        if (c.click() != null) {
            click = SegmentMapping.decodeClick(c.click());
            if (click == null) badClick.incrementAndGet();
        }
        try {
            return mapping.map(c.event(), click, now);
        } catch (Refusal r) {
            refused.incrementAndGet();
            return List.of();
        }
    }

    static Topology topology(String clicksTopic, String eventsTopic, String url, Properties props) {
        SegmentMapping mapping = new SegmentMapping("GB");
        Serde<JsonNode> json = new JsonSerde();
        StreamsBuilder builder = new StreamsBuilder();
        KTable<String, JsonNode> clicks = builder.table(clicksTopic, Consumed.with(Serdes.String(), json),
                Materialized.as("clicks"));
        Outbox.Delivery delivery = Outbox.Delivery.to(url, PIXEL, TOKEN);
        builder.stream(eventsTopic, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .flatMapValues(raw -> {
                    JsonNode doc = parse(raw);
                    if (doc == null) badJson.incrementAndGet();
                    return doc == null ? List.<JsonNode>of() : List.of(doc);
                })
                .selectKey((key, event) -> byClickId(event))
                .repartition(Repartitioned.with(Serdes.String(), json).withName("by-click-id"))
                .leftJoin(clicks, Conversion::new)
                .flatMapValues(c -> mapped(mapping, c, System.currentTimeMillis() / 1000.0))
                .mapValues(item -> (JsonNode) item)
                .process(() -> new SendToTikTok(delivery));
        return builder.build(props);
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (argv[i].equals("--map-stdin") || argv[i].equals("--version")) {
                args.put(argv[i].substring(2), "");
            } else if (argv[i].startsWith("--") && i + 1 < argv.length) {
                args.put(argv[i].substring(2), argv[++i]);
            } else {
                usage("unexpected argument " + argv[i]);
            }
        }
        if (args.containsKey("version")) {
            // The Kafka version the clients were built as (the benchmark's report names it).
            Properties version = new Properties();
            try (var in = KafkaStreams.class.getResourceAsStream("/kafka/kafka-version.properties")) {
                if (in != null) version.load(in);
            }
            System.out.println(version.getProperty("version", "unknown"));
            return;
        }
        if (args.containsKey("map-stdin")) {
            mapStdin();
            return;
        }
        for (String required : List.of("bootstrap", "clicks", "events", "url", "state-dir")) {
            if (!args.containsKey(required)) usage("--" + required + " is required");
        }
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.getOrDefault("group", "kstreams-peer"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);  // one core's worth, like the Quix peer's process
        // The clicks' source topic is their table's changelog: no second copy of every click.
        props.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);
        // Like the Quix peer's commit_interval; the outboxes are emptied before each commit anyway.
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        Topology topology = topology(args.get("clicks"), args.get("events"), args.get("url"), props);
        KafkaStreams streams = new KafkaStreams(topology, props, new FlushingClients());
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            log.error("stream thread failed", e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) stopped.countDown();
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));  // a last commit: every outbox is emptied first
            log.warn("kstreams peer sent {} events; dropped: bad_json={}, bad_click={}, refused={}",
                    Outbox.sent.get(), badJson.get(), badClick.get(), refused.get());
        }, "kstreams-peer-close"));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) System.exit(1);
    }

    private static void usage(String why) {
        System.err.println(why + "\nusage: java -jar kstreams-peer.jar --bootstrap B --clicks T --events T --url URL "
                + "--state-dir D [--group G]   |   --map-stdin   |   --version");
        System.exit(2);
    }

    // One {"event": ... or "raw": "...", "click": {...} or null, "now": seconds} per line.
    private static void mapStdin() throws IOException {
        SegmentMapping mapping = new SegmentMapping("GB");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            JsonNode doc = JSON.readTree(line);
            JsonNode event = doc.has("raw") ? parse(doc.get("raw").textValue().getBytes(StandardCharsets.UTF_8))
                    : doc.get("event");
            ObjectNode answer = JSON.createObjectNode();
            if (event == null) {
                answer.put("refused", "invalid_json");
            } else {
                JsonNode rawClick = doc.get("click");
                SegmentMapping.Click click = rawClick == null || rawClick.isNull() ? null : SegmentMapping.decodeClick(rawClick);
                try {
                    List<ObjectNode> items = mapping.map(event, click, doc.get("now").doubleValue());
                    answer.putArray("items").addAll(items);
                } catch (Refusal r) {
                    answer.put("refused", r.reason);
                }
            }
            out.write(JSON.writeValueAsString(answer));
            out.newLine();
        }
        out.flush();
    }
}
