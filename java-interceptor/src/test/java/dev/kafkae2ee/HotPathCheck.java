package dev.kafkae2ee;

import java.io.FileInputStream;
import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Random;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;

/**
 * Run by tests/integration/test_java.py: what the record path allocates on the Java heap, counted
 * with the JVM's per-thread allocation counter. {@code HotPathCheck PROPS TOPIC} prints one
 * {@code name value} line per figure and exits 0 (the test asserts the bounds).
 *
 * <ul>
 *   <li>{@code seal-bytes}: per {@link Engine#seal} of 1 KiB (its output, the 34-byte header, only);
 *   <li>{@code open-bytes}: per {@link Engine#open} (nothing: decrypted in place);
 *   <li>{@code consume-bytes}: per record through {@link E2eeConsumerInterceptor#onConsume};
 *   <li>{@code consume-same-batch}: 1 if onConsume returned the batch itself, decrypted in place.
 * </ul>
 */
final class HotPathCheck {
    private static final int SIZE = 1024;
    private static final int BATCH = 500;
    private static final int ROUNDS = 20;

    private HotPathCheck() {}

    public static void main(String[] args) throws Throwable {
        Properties props = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        String topic = args[1];
        @SuppressWarnings({"unchecked", "rawtypes"})
        Map<String, Object> configs = new HashMap<>((Map) props);
        configs.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long self = Thread.currentThread().getId();

        E2eeConsumerInterceptor<byte[], byte[]> consumer = new E2eeConsumerInterceptor<>();
        consumer.configure(configs);
        try (Engines.Lease lease = Engines.acquire(configs, new E2eeConfig(configs), false)) {
            Engine engine = lease.engine;
            byte[][] plain = new byte[BATCH][];
            Random random = new Random(7);
            for (int i = 0; i < BATCH; i++) {
                plain[i] = new byte[SIZE];
                random.nextBytes(plain[i]);
            }
            byte[][] values = new byte[BATCH][];
            byte[][] headers = new byte[BATCH][];
            for (int i = 0; i < BATCH; i++) {
                values[i] = plain[i].clone();
            }
            long sealBytes = 0;
            long openBytes = 0;
            long sealNs = 0;
            long openNs = 0;
            for (int round = 0; round < ROUNDS; round++) { // the first rounds warm the JIT up
                long a0 = threads.getThreadAllocatedBytes(self);
                long t0 = System.nanoTime();
                for (int i = 0; i < BATCH; i++) {
                    System.arraycopy(plain[i], 0, values[i], 0, SIZE);
                    headers[i] = engine.seal(topic, Engine.BIND_UNBOUND, null, values[i]);
                }
                long t1 = System.nanoTime();
                long a1 = threads.getThreadAllocatedBytes(self);
                for (int i = 0; i < BATCH; i++) {
                    engine.open(topic, headers[i], Engine.BIND_UNBOUND, null, values[i]);
                }
                long t2 = System.nanoTime();
                long a2 = threads.getThreadAllocatedBytes(self);
                for (int i = 0; i < BATCH; i++) {
                    if (!Arrays.equals(values[i], plain[i])) {
                        throw new AssertionError("record " + i + " did not round-trip");
                    }
                }
                if (round == ROUNDS - 1) {
                    sealBytes = a1 - a0;
                    openBytes = a2 - a1;
                    sealNs = t1 - t0;
                    openNs = t2 - t1;
                }
            }
            System.out.println("seal-bytes " + sealBytes / BATCH);
            System.out.println("open-bytes " + openBytes / BATCH);
            System.out.println("seal-ns " + sealNs / BATCH);
            System.out.println("open-ns " + openNs / BATCH);

            // The consumer interceptor on batches of sealed records, as a fetch hands them over.
            TopicPartition tp = new TopicPartition(topic, 0);
            long consumeBytes = 0;
            boolean same = true;
            for (int round = 0; round < ROUNDS; round++) {
                List<ConsumerRecord<byte[], byte[]>> list = new ArrayList<>(BATCH);
                for (int i = 0; i < BATCH; i++) {
                    byte[] v = plain[i].clone();
                    byte[] h = engine.seal(topic, Engine.BIND_UNBOUND, null, v);
                    RecordHeaders hs = new RecordHeaders();
                    hs.add(RecordCrypto.HEADER, h);
                    list.add(new ConsumerRecord<>(topic, 0, i, 0L, TimestampType.CREATE_TIME, 0, SIZE, null, v,
                            hs, Optional.empty()));
                }
                Map<TopicPartition, OffsetAndMetadata> next =
                        Map.of(tp, new OffsetAndMetadata(BATCH, Optional.empty(), ""));
                ConsumerRecords<byte[], byte[]> batch = Batches.of(Map.of(tp, list), next);
                long a0 = threads.getThreadAllocatedBytes(self);
                ConsumerRecords<byte[], byte[]> out = consumer.onConsume(batch);
                long a1 = threads.getThreadAllocatedBytes(self);
                int i = 0;
                for (ConsumerRecord<byte[], byte[]> r : out) {
                    if (!Arrays.equals(r.value(), plain[i]) || r.headers().lastHeader(RecordCrypto.HEADER) != null) {
                        throw new AssertionError("record " + i + " was not decrypted and stripped");
                    }
                    i++;
                }
                if (i != BATCH) {
                    throw new AssertionError("onConsume returned " + i + " of " + BATCH + " records");
                }
                same &= out == batch;
                consumeBytes = a1 - a0;
            }
            System.out.println("consume-bytes " + consumeBytes / BATCH);
            System.out.println("consume-same-batch " + (same ? 1 : 0));
        } finally {
            consumer.close();
        }
    }
}
