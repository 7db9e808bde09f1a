package dev.kafkae2ee.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.RecordDeserializationException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;

/**
 * Records with headers for tests/integration/test_headers.py (sealed application headers,
 * docs/FORMAT.md section 12). String keys and values; headers as [name, hex or null].
 *
 * <pre>
 *   produce PROPS TOPIC SPECFILE   SPECFILE: a JSON array of {"k", "v", "h": [[name, hex|null]...]};
 *                                  prints SENT n, then keeps running (serving its keys) until
 *                                  stdin closes
 *   consume PROPS TOPIC COUNT TIMEOUT_MS
 *                                  one JSON line per record {"o", "k", "v", "h"}, or per record
 *                                  that failed {"error", "o"} (then seeks past it)
 * </pre>
 */
public final class HeadersApp {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final HexFormat HEX = HexFormat.of();

    private HeadersApp() {}

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = new FileInputStream(args[1])) {
            props.load(in);
        }
        int rc = "produce".equals(args[0]) ? produce(props, args[2], Path.of(args[3]))
                : consume(props, args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]));
        System.out.flush();
        System.exit(rc);
    }

    private static int produce(Properties props, String topic, Path spec) throws IOException {
        JsonNode records = JSON.readTree(Files.readString(spec));
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (JsonNode r : records) {
                RecordHeaders headers = new RecordHeaders();
                for (JsonNode h : r.get("h")) {
                    headers.add(h.get(0).asText(), h.get(1).isNull() ? null : HEX.parseHex(h.get(1).asText()));
                }
                try {
                    // "k" or "v" null: a null key, a tombstone (tests/integration/test_tokenized_keys_java.py).
                    producer.send(new ProducerRecord<>(topic, null, text(r.get("k")), text(r.get("v")),
                            headers)).get();
                } catch (Exception e) {
                    System.out.println("SEND-FAILED " + e);
                    return 3;
                }
            }
            producer.flush();
            System.out.println("SENT " + records.size());
            System.out.flush();
            while (System.in.read() >= 0) {
                // serve keys until stdin closes
            }
        }
        return 0;
    }

    private static String text(JsonNode n) {
        return n == null || n.isNull() ? null : n.asText();
    }

    /** A key or value as the consumer's deserializer gave it: String, or byte[] read as UTF-8. */
    private static String text(Object o) {
        return o instanceof byte[] ? new String((byte[]) o, java.nio.charset.StandardCharsets.UTF_8)
                : (String) o;
    }

    private static int consume(Properties props, String topic, int count, long timeoutMs) {
        int seen = 0;
        long deadline = System.currentTimeMillis() + timeoutMs;
        try (KafkaConsumer<Object, Object> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            while (seen < count && System.currentTimeMillis() < deadline) {
                try {
                    for (ConsumerRecord<Object, Object> r : consumer.poll(Duration.ofMillis(200))) {
                        ObjectNode row = JSON.createObjectNode();
                        row.put("o", r.offset());
                        row.put("p", r.partition());
                        row.put("k", text(r.key()));
                        row.put("v", text(r.value()));
                        ArrayNode hs = row.putArray("h");
                        for (Header h : r.headers()) {
                            ArrayNode pair = hs.addArray();
                            pair.add(h.key());
                            if (h.value() == null) {
                                pair.addNull();
                            } else {
                                pair.add(HEX.formatHex(h.value()));
                            }
                        }
                        System.out.println(JSON.writeValueAsString(row));
                        seen++;
                    }
                } catch (RecordDeserializationException e) {
                    ObjectNode row = JSON.createObjectNode();
                    row.put("o", e.offset());
                    row.put("p", e.topicPartition().partition());
                    row.put("error", String.valueOf(e.getCause()));
                    System.out.println(row);
                    consumer.seek(e.topicPartition(), e.offset() + 1);
                    seen++;
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
            }
        }
        return seen >= count ? 0 : 5;
    }
}
