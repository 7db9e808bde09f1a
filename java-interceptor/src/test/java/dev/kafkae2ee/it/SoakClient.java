package dev.kafkae2ee.it;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import javax.management.MBeanServer;
import javax.management.ObjectName;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.RecordDeserializationException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.Deserializer;
import dev.kafkae2ee.DecryptingDeserializer;

/**
 * The Java clients of the soak run (tests/soak.py): a paced producer and a counting consumer.
 * Values are {@code "<producer>:<seq>:"} padded with 'x', keys {@code "<seq>"}, so the consumer
 * counts loss and duplicates exactly. Both print {@code STATUS k=v ...} lines once a second and
 * a {@code FINAL k=v ...} line when stdin closes, then exit.
 *
 * <pre>
 *   produce PROPS TOPIC PRODUCER_ID RATE SECONDS SIZE   then holds (serving its keys) until stdin closes
 *   consume PROPS TOPIC PRODUCERS CAPACITY              CAPACITY: records per producer to expect at most
 * </pre>
 */
public final class SoakClient {
    private SoakClient() {}

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = new FileInputStream(args[1])) {
            props.load(in);
        }
        // stdin: a line (any) says go, EOF says stop.
        java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);
        AtomicBoolean stop = new AtomicBoolean();
        Thread watcher = new Thread(() -> {
            try {
                int c;
                while ((c = System.in.read()) >= 0) {
                    if (c == '\n') {
                        go.countDown();
                    }
                }
            } catch (IOException e) {
                // stdin gone: stop
            }
            stop.set(true);
            go.countDown();
        });
        watcher.setDaemon(true);
        watcher.start();
        if (args[0].equals("produce")) {
            produce(props, args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]), Integer.parseInt(args[5]),
                    Integer.parseInt(args[6]), go, stop);
        } else {
            consume(props, args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]), stop);
        }
        System.exit(0);
    }

    /** A kafka-e2ee counter from JMX (summed over engines), or -1. */
    private static long metric(String name) {
        try {
            MBeanServer jmx = ManagementFactory.getPlatformMBeanServer();
            long sum = 0;
            for (ObjectName n : jmx.queryNames(new ObjectName("kafka.e2ee:type=e2ee-metrics,*"), null)) {
                sum += ((Number) jmx.getAttribute(n, name)).longValue();
            }
            return sum;
        } catch (Exception e) {
            return -1;
        }
    }

    private static void produce(Properties props, String topic, int id, int rate, int seconds, int size,
            java.util.concurrent.CountDownLatch go, AtomicBoolean stop) throws InterruptedException {
        AtomicLong acked = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        long total = (long) rate * seconds;
        long sent = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            status("READY");
            go.await();
            long start = System.nanoTime();
            long nextStatus = start;
            while (sent < total && !stop.get()) {
                long now = System.nanoTime();
                long due = Math.min(total, (now - start) / 1_000_000L * rate / 1000L);
                while (sent < due) {
                    producer.send(new ProducerRecord<>(topic, Long.toString(sent), value(id, sent, size)), (md, e) -> {
                        if (e == null) {
                            acked.incrementAndGet();
                        } else {
                            if (failed.getAndIncrement() < 5) {
                                System.err.println("SEND-FAILED " + e);
                            }
                        }
                    });
                    sent++;
                }
                if (now >= nextStatus) {
                    status("STATUS", "sent=" + sent, "due=" + due, "acked=" + acked.get(), "failed=" + failed.get());
                    nextStatus += 1_000_000_000L;
                }
                Thread.sleep(2);
            }
            producer.flush();
            status("SENT", "sent=" + sent, "acked=" + acked.get(), "failed=" + failed.get(),
                    "seconds=" + (System.nanoTime() - start) / 1e9);
            // A producer serves the keys of what it sealed: stay up until told to stop.
            while (!stop.get()) {
                Thread.sleep(100);
            }
            status("FINAL", "sent=" + sent, "acked=" + acked.get(), "failed=" + failed.get());
        }
    }

    static String value(int id, long seq, int size) {
        StringBuilder b = new StringBuilder(size).append(id).append(':').append(seq).append(':');
        while (b.length() < size) {
            b.append('x');
        }
        return b.toString();
    }

    private static void consume(Properties props, String topic, int producers, int capacity, AtomicBoolean stop) {
        BitSet[] seen = new BitSet[producers];
        for (int i = 0; i < producers; i++) {
            seen[i] = new BitSet(capacity); // allocated up front: the RSS check must not see it grow
        }
        long records = 0;
        long duplicates = 0;
        long failed = 0; // RecordDeserializationException: undecryptable
        long garbled = 0; // a value that is not one the producers sent: ciphertext or garbage
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            long nextStatus = System.nanoTime();
            while (!stop.get()) {
                try {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                        records++;
                        long[] ps = parse(r.value(), r.key(), producers, capacity);
                        if (ps == null) {
                            if (garbled++ < 5) {
                                System.err.println("GARBLED offset=" + r.offset());
                            }
                        } else if (seen[(int) ps[0]].get((int) ps[1])) {
                            duplicates++;
                        } else {
                            seen[(int) ps[0]].set((int) ps[1]);
                        }

                    }
                } catch (RecordDeserializationException e) {
                    if (failed++ < 5) {
                        System.err.println("UNDECRYPTABLE " + e.topicPartition() + " offset=" + e.offset() + " "
                                + e.getCause());
                    }
                    consumer.seek(e.topicPartition(), e.offset() + 1);
                }
                long now = System.nanoTime();
                if (now >= nextStatus) {
                    status("STATUS", "records=" + records);
                    nextStatus = now + 1_000_000_000L;
                }
            }
            StringBuilder distinct = new StringBuilder();
            StringBuilder epochs = new StringBuilder();
            for (int i = 0; i < producers; i++) {
                distinct.append(i == 0 ? "" : ",").append(seen[i].cardinality());
                epochs.append(i == 0 ? "" : ",").append(KeyIdCountingDeserializer.KEY_IDS.getOrDefault(i, Set.of()).size());
            }
            long dropped = metric("records-dropped");
            status("FINAL", "records=" + records, "distinct=" + distinct, "duplicates=" + duplicates,
                    "undecryptable=" + (failed + Math.max(0, dropped)), "garbled=" + garbled, "epochs=" + epochs);
        }
    }

    /** {producer, seq} of a value the producers sent with this key, or null. */
    private static long[] parse(String value, String key, int producers, int capacity) {
        if (value == null) {
            return null;
        }
        String[] parts = value.split(":", 3);
        try {
            int p = Integer.parseInt(parts[0]);
            long seq = Long.parseLong(parts[1]);
            if (parts.length != 3 || p < 0 || p >= producers || seq < 0 || seq >= capacity
                    || !parts[2].chars().allMatch(c -> c == 'x') || !parts[1].equals(key)) {
                return null;
            }
            return new long[] {p, seq};
        } catch (NumberFormatException | ArrayIndexOutOfBoundsException e) {
            return null;
        }
    }

    /**
     * The DecryptingDeserializer, counting the key ids (producer instance || epoch: bytes 2..14
     * of the e2ee header, which the deserializer strips) per producer of the soak: how many epochs
     * each producer went through, as a consumer saw them.
     */
    public static final class KeyIdCountingDeserializer implements Deserializer<String> {
        static final Map<Integer, Set<String>> KEY_IDS = new ConcurrentHashMap<>();
        private final DecryptingDeserializer<String> inner = new DecryptingDeserializer<>();

        @Override
        public void configure(Map<String, ?> configs, boolean isKey) {
            inner.configure(configs, isKey);
        }

        @Override
        public String deserialize(String topic, byte[] data) {
            return inner.deserialize(topic, data);
        }

        @Override
        public String deserialize(String topic, Headers headers, byte[] data) {
            Header h = headers.lastHeader("e2ee");
            return count(h == null ? null : h.value(), inner.deserialize(topic, headers, data));
        }

        @Override
        public String deserialize(String topic, Headers headers, ByteBuffer data) {
            Header h = headers.lastHeader("e2ee");
            return count(h == null ? null : h.value(), inner.deserialize(topic, headers, data));
        }

        private static String count(byte[] header, String value) {
            if (header != null && header.length == 34 && value != null) {
                try {
                    int producer = Integer.parseInt(value.substring(0, value.indexOf(':')));
                    KEY_IDS.computeIfAbsent(producer, p -> ConcurrentHashMap.newKeySet())
                            .add(HexFormat.of().formatHex(header, 2, 14));
                } catch (RuntimeException notOurs) {
                    // counted as garbled by the consumer
                }
            }
            return value;
        }

        @Override
        public void close() {
            inner.close();
        }
    }

    private static void status(String what, String... kv) {
        System.out.println(what + " " + String.join(" ", kv));
        System.out.flush();
    }
}
