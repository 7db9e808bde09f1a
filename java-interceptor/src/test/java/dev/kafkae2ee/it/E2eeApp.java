package dev.kafkae2ee.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.RecordDeserializationException;

/**
 * A Java app for the integration tests (tests/integration/test_java.py): produces or consumes
 * with nothing but a properties file, so the test decides serdes, interceptors and e2ee.*.
 *
 * <pre>
 *   produce PROPS TOPIC PREFIX COUNT TYPE     TYPE: json | string | bytes; after SENT, keeps
 *                                             running (serving its keys) until stdin closes
 *   consume PROPS TOPIC COUNT TIMEOUT_MS TYPE prints one value per line
 *   paced PROPS TOPIC PREFIX COUNT INTERVAL_MS  produce string values at a pace, then hold
 *   member PROPS TOPIC OUTFILE [offsets]       a group member: appends each value to OUTFILE
 *                                              ("PARTITION OFFSET VALUE" with offsets), commits
 *                                              after each poll, leaves when stdin closes
 *   acked PROPS TOPIC PREFIX FROM COUNT INTERVAL_MS ACKFILE [UNTILFILE]
 *                                              produce string values FROM..FROM+COUNT-1 at a
 *                                              pace (stopping early once UNTILFILE exists),
 *                                              appending each value the broker acknowledged to
 *                                              ACKFILE as it is acknowledged; then SENT n, hold
 *   reader PROPS TOPICS OUTFILE ONERROR        subscribes to TOPICS (comma-separated) until stdin
 *                                              closes; appends "R topic partition offset value"
 *                                              per record and "E topic partition offset reason"
 *                                              per RecordDeserializationException, then polls
 *                                              again (ONERROR=retry: the record is retried) or
 *                                              seeks past it (ONERROR=skip); metrics on stderr
 *   audit PROPS OUTFILE TOPIC...               reads every partition of the topics from the start
 *                                              (no group), like an app that moves past a record it
 *                                              cannot read; writes RECORD / FAILED / AT lines to
 *                                              OUTFILE, and METRIC lines for each "metrics" line on
 *                                              stdin; stops when stdin closes
 * </pre>
 *
 * Exit codes: 0 ok, 3 a send failed (SEND-FAILED line), 4 poll threw
 * RecordDeserializationException (DESERIALIZATION-FAILED line), 5 timed out.
 */
public final class E2eeApp {
    private static final ObjectMapper JSON = new ObjectMapper();

    private E2eeApp() {}

    public static void main(String[] args) throws Exception {
        Properties props = load(args[1]);
        switch (args[0]) {
            case "produce":
                System.exit(produce(props, args[2], args[3], Integer.parseInt(args[4]), args[5]));
                break;
            case "consume":
                System.exit(consume(props, args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]), args[5]));
                break;
            case "paced":
                System.exit(paced(props, args[2], args[3], Integer.parseInt(args[4]), Long.parseLong(args[5])));
                break;
            case "member":
                System.exit(member(props, args[2], args[3], args.length > 4 && args[4].equals("offsets")));
                break;
            case "acked":
                System.exit(acked(props, args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]),
                        Long.parseLong(args[6]), args[7], args.length > 8 ? args[8] : null));
                break;
            case "reader":
                System.exit(reader(props, args[2], args[3], args[4]));
                break;
            case "audit":
                System.exit(audit(props, args[2], List.of(args).subList(3, args.length)));
                break;
            default:
                throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    private static Properties load(String file) throws IOException {
        Properties p = new Properties();
        try (InputStream in = new FileInputStream(file)) {
            p.load(in);
        }
        return p;
    }

    static Object value(String prefix, int i, String type) {
        String text = prefix + "-" + String.format("%05d", i);
        switch (type) {
            case "json":
                ObjectNode node = JSON.createObjectNode();
                node.put("id", i);
                node.put("note", text);
                return node;
            case "string":
                return text + "-\u00e9\u4e2d"; // non-ASCII survives the round trip
            case "edge-string":
            case "edge-bytes":
                // tombstones, empty values and ordinary ones
                String v = i % 3 == 0 ? null : i % 3 == 1 ? "" : text;
                return v == null || type.equals("edge-string") ? v : v.getBytes(StandardCharsets.UTF_8);
            default:
                return text.getBytes(StandardCharsets.UTF_8);
        }
    }

    static String show(Object v) {
        if (v instanceof byte[]) {
            return new String((byte[]) v, StandardCharsets.UTF_8);
        }
        if (v instanceof JsonNode) {
            return v.toString();
        }
        return String.valueOf(v);
    }

    private static int produce(Properties props, String topic, String prefix, int count, String type) {
        try (KafkaProducer<String, Object> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                Object v = value(prefix, i, type);
                try {
                    producer.send(new ProducerRecord<>(topic, "key-" + i, v)).get();
                } catch (Exception e) {
                    System.out.println("SEND-FAILED " + chain(e));
                    return 3;
                }
            }
            producer.flush();
            System.out.println("SENT " + count);
            System.out.flush();
            // A producer serves the keys of what it sealed: stay up while consumers read.
            try {
                while (System.in.read() >= 0) {
                    // until EOF
                }
            } catch (IOException e) {
                // stdin gone: done
            }
        }
        return 0;
    }

    private static int consume(Properties props, String topic, int count, long timeoutMs, String type) {
        int got = 0;
        long deadline = System.currentTimeMillis() + timeoutMs;
        try (KafkaConsumer<String, Object> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            while (got < count && System.currentTimeMillis() < deadline) {
                try {
                    for (ConsumerRecord<String, Object> r : consumer.poll(Duration.ofMillis(200))) {
                        System.out.println(show(r.value()));
                        got++;
                    }
                } catch (RecordDeserializationException e) {
                    System.out.println("DESERIALIZATION-FAILED partition=" + e.topicPartition().partition()
                            + " offset=" + e.offset() + " " + chain(e));
                    return 4;
                }
            }
            printMetrics(); // while the consumer (and its engine) is open
        }
        // The last client closed: the engine's control thread is gone.
        long control = Thread.getAllStackTraces().keySet().stream()
                .filter(t -> t.isAlive() && t.getName().startsWith("kafka-e2ee-control-"))
                .count();
        System.err.println("CONTROL-THREADS " + control);
        System.out.flush();
        return got < count ? 5 : 0;
    }

    /** kafka-e2ee's metrics as JMX shows them, on stderr: "METRIC name=value". */
    private static void printMetrics() {
        try {
            javax.management.MBeanServer jmx = java.lang.management.ManagementFactory.getPlatformMBeanServer();
            for (javax.management.ObjectName n : jmx.queryNames(
                    new javax.management.ObjectName("kafka.e2ee:type=e2ee-metrics,*"), null)) {
                for (String a : new String[] {"records-opened", "keys-received", "consumer-key-waits",
                        "records-failed", "records-dropped", "records-key-unavailable"}) {
                    System.err.println("METRIC " + a + "=" + jmx.getAttribute(n, a));
                }
            }
        } catch (Exception e) {
            System.err.println("METRIC unavailable: " + e);
        }
    }

    private static void holdUntilStdinCloses() {
        try {
            while (System.in.read() >= 0) {
                // until EOF
            }
        } catch (IOException e) {
            // stdin gone: done
        }
    }

    private static int paced(Properties props, String topic, String prefix, int count, long intervalMs)
            throws InterruptedException {
        try (KafkaProducer<String, Object> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(topic, "key-" + i, value(prefix, i, "string")), (md, e) -> {
                    if (e != null) {
                        System.out.println("SEND-FAILED " + chain(e));
                    }
                });
                Thread.sleep(intervalMs);
            }
            producer.flush();
            System.out.println("SENT " + count);
            System.out.flush();
            holdUntilStdinCloses();
        }
        return 0;
    }

    /**
     * Each acknowledged value is on disk as soon as the callback ran, so a test that kills this
     * process knows exactly which records the broker took.
     */
    private static int acked(Properties props, String topic, String prefix, int from, int count, long intervalMs,
            String ackFile, String untilFile) throws Exception {
        int sent = 0;
        try (KafkaProducer<String, Object> producer = new KafkaProducer<>(props);
                java.io.PrintStream acks = new java.io.PrintStream(
                        new java.io.FileOutputStream(ackFile, true), true, StandardCharsets.UTF_8)) {
            for (int i = from; i < from + count; i++) {
                if (untilFile != null && new java.io.File(untilFile).exists()) {
                    break;
                }
                Object v = value(prefix, i, "string");
                producer.send(new ProducerRecord<>(topic, "key-" + i, v), (md, e) -> {
                    if (e != null) {
                        System.out.println("SEND-FAILED " + chain(e));
                    } else {
                        acks.println(v); // one write per line: a kill leaves whole lines
                    }
                });
                sent++;
                Thread.sleep(intervalMs);
            }
            producer.flush();
            System.out.println("SENT " + sent);
            System.out.flush();
            holdUntilStdinCloses();
        }
        return 0;
    }

    private static int member(Properties props, String topic, String outFile, boolean offsets) throws Exception {
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        Thread watcher = new Thread(() -> {
            holdUntilStdinCloses();
            stop.set(true);
        });
        watcher.setDaemon(true);
        watcher.start();
        try (KafkaConsumer<String, Object> consumer = new KafkaConsumer<>(props);
                java.io.PrintStream out = new java.io.PrintStream(
                        new java.io.FileOutputStream(outFile, true), true, StandardCharsets.UTF_8)) {
            consumer.subscribe(List.of(topic));
            while (!stop.get()) {
                try {
                    var records = consumer.poll(Duration.ofMillis(200));
                    for (ConsumerRecord<String, Object> r : records) {
                        String v = show(r.value());
                        out.println(offsets ? r.partition() + " " + r.offset() + " " + v : v);
                    }
                    if (!records.isEmpty()) {
                        try {
                            consumer.commitSync();
                        } catch (org.apache.kafka.common.errors.RetriableException
                                | org.apache.kafka.clients.consumer.CommitFailedException e) {
                            // At least once: these records may come again (a broker restart, a
                            // rebalance); that is no reason for the app to stop.
                            System.err.println("COMMIT-FAILED " + chain(e));
                        }
                    }
                } catch (RecordDeserializationException e) {
                    System.out.println("DESERIALIZATION-FAILED partition=" + e.topicPartition().partition()
                            + " offset=" + e.offset() + " " + chain(e));
                    return 4;
                }
            }
        }
        return 0;
    }

    private static int reader(Properties props, String topics, String outFile, String onError) throws Exception {
        if (!onError.equals("retry") && !onError.equals("skip")) {
            throw new IllegalArgumentException("ONERROR must be retry or skip, not " + onError);
        }
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        Thread watcher = new Thread(() -> {
            holdUntilStdinCloses();
            stop.set(true);
        });
        watcher.setDaemon(true);
        watcher.start();
        try (KafkaConsumer<String, Object> consumer = new KafkaConsumer<>(props);
                java.io.PrintStream out = new java.io.PrintStream(
                        new java.io.FileOutputStream(outFile, true), true, StandardCharsets.UTF_8)) {
            consumer.subscribe(List.of(topics.split(",")));
            while (!stop.get()) {
                try {
                    for (ConsumerRecord<String, Object> r : consumer.poll(Duration.ofMillis(200))) {
                        out.println("R " + r.topic() + " " + r.partition() + " " + r.offset() + " " + show(r.value()));
                    }
                } catch (RecordDeserializationException e) {
                    out.println("E " + e.topicPartition().topic() + " " + e.topicPartition().partition() + " "
                            + e.offset() + " " + chain(e));
                    if (onError.equals("skip")) {
                        consumer.seek(e.topicPartition(), e.offset() + 1);
                    }
                }
            }
            printMetrics();
        }
        return 0;
    }

    private static int audit(Properties props, String outFile, List<String> topics) throws Exception {
        java.util.concurrent.atomic.AtomicInteger metricsAsked = new java.util.concurrent.atomic.AtomicInteger();
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        Thread watcher = new Thread(() -> {
            try (var in = new java.io.BufferedReader(new java.io.InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                for (String line; (line = in.readLine()) != null; ) {
                    if (line.equals("metrics")) {
                        metricsAsked.incrementAndGet();
                    }
                }
            } catch (IOException e) {
                // stdin gone: stop
            }
            stop.set(true);
        });
        watcher.setDaemon(true);
        watcher.start();
        int answered = 0;
        try (KafkaConsumer<String, Object> consumer = new KafkaConsumer<>(props);
                java.io.PrintStream out = new java.io.PrintStream(
                        new java.io.FileOutputStream(outFile, true), true, StandardCharsets.UTF_8)) {
            List<org.apache.kafka.common.TopicPartition> parts = new java.util.ArrayList<>();
            for (String t : topics) {
                for (var p : consumer.partitionsFor(t, Duration.ofSeconds(30))) {
                    parts.add(new org.apache.kafka.common.TopicPartition(t, p.partition()));
                }
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            java.util.Map<org.apache.kafka.common.TopicPartition, Long> at = new java.util.HashMap<>();
            while (!stop.get()) {
                try {
                    for (ConsumerRecord<String, Object> r : consumer.poll(Duration.ofMillis(100))) {
                        out.println("RECORD " + r.topic() + " " + r.partition() + " " + r.offset() + " " + r.key()
                                + " " + show(r.value()) + " headers=" + r.headers().toArray().length);
                    }
                } catch (RecordDeserializationException e) {
                    out.println("FAILED " + e.topicPartition().topic() + " " + e.topicPartition().partition() + " "
                            + e.offset() + " " + chain(e));
                    consumer.seek(e.topicPartition(), e.offset() + 1);
                }
                for (var tp : parts) {
                    long pos = consumer.position(tp);
                    if (!Long.valueOf(pos).equals(at.put(tp, pos))) {
                        out.println("AT " + tp.topic() + " " + tp.partition() + " " + pos);
                    }
                }
                int asked = metricsAsked.get();
                if (asked != answered) {
                    answered = asked;
                    printMetrics(out, answered);
                }
            }
            printMetrics(out, -1);
        }
        return 0;
    }

    /** Every kafka-e2ee metric as JMX shows it: METRIC instance name value, then METRICS-DONE seq. */
    private static void printMetrics(java.io.PrintStream out, int seq) throws Exception {
        javax.management.MBeanServer jmx = java.lang.management.ManagementFactory.getPlatformMBeanServer();
        for (javax.management.ObjectName n : jmx.queryNames(
                new javax.management.ObjectName("kafka.e2ee:type=e2ee-metrics,*"), null)) {
            for (javax.management.MBeanAttributeInfo a : jmx.getMBeanInfo(n).getAttributes()) {
                out.println("METRIC " + n.getKeyProperty("instance") + " " + a.getName() + " "
                        + jmx.getAttribute(n, a.getName()));
            }
        }
        out.println("METRICS-DONE " + seq);
    }

    private static String chain(Throwable t) {
        StringBuilder b = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            b.append(c.getClass().getName()).append(": ").append(c.getMessage()).append(" | ");
        }
        return b.toString().replace('\n', ' ');
    }
}
