package ttbridge.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;

import java.time.Duration;

/** The topology's sink: each mapped event goes into its task's Outbox, emptied at least every second. */
final class SendToTikTok implements Processor<String, JsonNode, Void, Void> {
    static final Duration FLUSH_EVERY = Duration.ofSeconds(1);
    private final Outbox.Delivery delivery;
    private Outbox outbox;

    SendToTikTok(Outbox.Delivery delivery) {
        this.delivery = delivery;
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
        outbox = Outbox.open(delivery);  // init runs on the task's stream thread
        // Wall-clock time: a quiet partition's last events still go out within a second.
        context.schedule(FLUSH_EVERY, PunctuationType.WALL_CLOCK_TIME, now -> outbox.send());
    }

    @Override
    public void process(Record<String, JsonNode> record) {
        outbox.add(record.value());
    }

    @Override
    public void close() {
        outbox.close();
    }
}
