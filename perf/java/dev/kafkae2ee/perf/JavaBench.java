package dev.kafkae2ee.perf;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;

/**
 * The Java side of scripts/bench: a producer and a consumer configured by properties files alone,
 * so the same code measures plaintext (ByteArraySerializer) and encrypted (EncryptingSerializer /
 * DecryptingDeserializer, or the interceptors) runs. Values have the layout rdkafka_bench.c uses:
 * MARKER, sequence, send time (System.nanoTime), measured index, filler; the consumer counts a
 * value without the marker as corrupt, never as consumed.
 *
 * <pre>
 *   throughput PRODUCER_PROPS CONSUMER_PROPS TOPIC RECORDS SIZE WARMUP
 *       WARMUP records, flush, then RECORDS at the maximum rate and flush (timed); then a
 *       consumer reads all of them. Its window runs from the first record to the last, so
 *       partition assignment and a key fetch are outside it (reported as first_record_ms).
 *       The producer stays open meanwhile: it serves its keys.
 *   latency PRODUCER_PROPS CONSUMER_PROPS TOPIC RECORDS SIZE WARMUP RATE [WARMUP_MAX_MS]
 *       producer thread at RATE records/s, consumer in this thread: at least WARMUP warm-up
 *       records and until the consumer is within 50 ms of the producer (at most WARMUP_MAX_MS,
 *       default 30 s, more;
 *       caught_up says whether it was), then RECORDS measured;
 *       latency = receive time - send time, both System.nanoTime in this process.
 *   prime HOLDER_PROPS CONSUMER_PROPS TOPIC
 *       a producer opened with HOLDER_PROPS (the same credential and e2ee.state.dir as a producer
 *       that has exited, so it serves that producer's keys) while a consumer with CONSUMER_PROPS
 *       reads the topic's first record; with e2ee.state.dir the consumer keeps the key it got.
 * </pre>
 *
 * Prints one JSON line; exits 0 if every record was acknowledged and consumed intact, else 1.
 */
public final class JavaBench {
    static final byte[] MARKER = "E2EE-BENCH-PLAINTEXT-MARKER:".getBytes(StandardCharsets.US_ASCII);
    static final int SEQ_AT = MARKER.length;
    static final int TIME_AT = SEQ_AT + 8;
    static final int INDEX_AT = TIME_AT + 8;
    static final int MIN_SIZE = INDEX_AT + 8;
    static final long NOT_MEASURED = -1;
    static final Duration POLL = Duration.ofMillis(100);
    static final long IDLE_TIMEOUT_NS = 60_000_000_000L;
    static final long WARMUP_EXTRA_NS = 30_000_000_000L;

    private JavaBench() {}

    public static void main(String[] args) throws Exception {
        int status;
        switch (args.length > 0 ? args[0] : "") {
            case "throughput":
                status = throughput(load(args[1]), load(args[2]), args[3], Integer.parseInt(args[4]),
                        Integer.parseInt(args[5]), Integer.parseInt(args[6]));
                break;
            case "latency":
                status = latency(load(args[1]), load(args[2]), args[3], Integer.parseInt(args[4]),
                        Integer.parseInt(args[5]), Integer.parseInt(args[6]), Integer.parseInt(args[7]),
                        args.length > 8 ? Long.parseLong(args[8]) * 1_000_000L : WARMUP_EXTRA_NS);
                break;
            case "prime":
                status = prime(load(args[1]), load(args[2]), args[3]);
                break;
            default:
                System.err.println("usage: JavaBench throughput|latency|prime ... (see the class comment)");
                status = 2;
        }
        System.out.flush();
        // Exit at once: lingering client threads must not hold the process. halt skips the
        // shutdown hooks, so a Flight Recorder recording (scripts/bench --jfr) is written first.
        try {
            for (jdk.jfr.Recording r : jdk.jfr.FlightRecorder.getFlightRecorder().getRecordings()) {
                r.stop(); // writes it to its destination (-XX:StartFlightRecording=filename=...)
            }
        } catch (Throwable noRecorder) {
            // no recording, or no recorder in this runtime
        }
        Runtime.getRuntime().halt(status);
    }

    /**
     * CPU seconds (user + system, every thread) this JVM has used so far, from /proc/self/stat
     * (fields 14 and 15, clock ticks of 1/100 s, Linux's USER_HZ): the bench's "CPU per MB".
     */
    static double cpuSeconds() {
        try {
            String stat = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/self/stat"));
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return (Long.parseLong(f[11]) + Long.parseLong(f[12])) / 100.0;
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    static Properties load(String file) throws IOException {
        Properties p = new Properties();
        try (InputStream in = new FileInputStream(file)) {
            p.load(in);
        }
        return p;
    }

    static byte[] value(int size) {
        if (size < MIN_SIZE) {
            throw new IllegalArgumentException("size must be at least " + MIN_SIZE);
        }
        byte[] v = new byte[size];
        System.arraycopy(MARKER, 0, v, 0, MARKER.length);
        for (int i = MIN_SIZE; i < size; i++) {
            v[i] = (byte) ('a' + i % 26);
        }
        return v;
    }

    static ByteBuffer le(byte[] v) {
        return ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN);
    }

    static boolean intact(byte[] v, int size) {
        return v != null && v.length == size && Arrays.equals(v, 0, MARKER.length, MARKER, 0, MARKER.length);
    }

    /** Counts acknowledgements; a producer whose sends fail is reported, not hidden. */
    static final class Acks implements Callback {
        final AtomicLong acked = new AtomicLong();
        final AtomicLong failed = new AtomicLong();

        @Override
        public void onCompletion(org.apache.kafka.clients.producer.RecordMetadata m, Exception e) {
            if (e == null) {
                acked.incrementAndGet();
            } else if (failed.getAndIncrement() < 5) {
                System.err.println("JavaBench: send failed: " + e);
            }
        }
    }

    /** What a consumer got: intact values, corrupt ones (not the plaintext), and when. */
    static final class Tally {
        long consumed;
        long corrupt;
        long startNs = System.nanoTime();
        long firstNs;
        long lastNs;

        boolean add(byte[] v, int size, long now) {
            if (firstNs == 0) {
                firstNs = now;
            }
            lastNs = now;
            if (intact(v, size)) {
                consumed++;
                return true;
            }
            corrupt++;
            return false;
        }
    }

    static KafkaConsumer<byte[], byte[]> consumer(Properties props, String topic) {
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props);
        // The bench topics have one partition: assign it, no group join.
        c.assign(List.of(new TopicPartition(topic, 0)));
        c.seekToBeginning(List.of(new TopicPartition(topic, 0)));
        return c;
    }

    static int throughput(Properties pp, Properties cp, String topic, int records, int size, int warmup) {
        Acks acks = new Acks();
        byte[] v = value(size);
        ByteBuffer b = le(v);
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            long seq = 0;
            for (int i = 0; i < warmup; i++, seq++) {
                b.putLong(SEQ_AT, seq);
                producer.send(new ProducerRecord<>(topic, v), acks);
            }
            producer.flush();
            long warmAcked = acks.acked.get();
            double cpu0 = cpuSeconds();
            long t0 = System.nanoTime();
            for (int i = 0; i < records; i++, seq++) {
                b.putLong(SEQ_AT, seq);
                producer.send(new ProducerRecord<>(topic, v), acks);
            }
            producer.flush();
            double produceSecs = (System.nanoTime() - t0) / 1e9;
            double produceCpu = cpuSeconds() - cpu0;
            long timedAcked = acks.acked.get() - warmAcked;

            long total = (long) records + warmup;
            Tally t = new Tally();
            double consumeCpu0 = 0;
            try (KafkaConsumer<byte[], byte[]> consumer = consumer(cp, topic)) {
                long idleSince = System.nanoTime();
                while (t.consumed + t.corrupt < total) {
                    ConsumerRecords<byte[], byte[]> got = consumer.poll(POLL);
                    long now = System.nanoTime();
                    if (got.isEmpty()) {
                        if (now - idleSince > IDLE_TIMEOUT_NS) {
                            System.err.println("JavaBench: no record for 60 s; giving up");
                            break;
                        }
                        continue;
                    }
                    idleSince = now;
                    if (t.firstNs == 0) {
                        consumeCpu0 = cpuSeconds(); // the window starts at the first record
                    }
                    for (ConsumerRecord<byte[], byte[]> r : got) {
                        t.add(r.value(), size, now);
                    }
                }
            }
            double consumeCpu = cpuSeconds() - consumeCpu0;
            // Records 2..N fall in the window [first record, last record].
            double consumeSecs = (t.lastNs - t.firstNs) / 1e9;
            long timed = Math.max(0, t.consumed - 1);
            System.out.println(String.format(Locale.ROOT,
                    "{\"command\":\"throughput\",\"records\":%d,\"warmup\":%d,\"size\":%d,"
                            + "\"produce\":{\"acked\":%d,\"failed\":%d,\"seconds\":%.6f,\"cpu_s\":%.3f,"
                            + "\"records_per_s\":%.1f,"
                            + "\"mb_per_s\":%.3f},"
                            + "\"consume\":{\"records\":%d,\"consumed\":%d,\"corrupt\":%d,\"first_record_ms\":%.1f,"
                            + "\"seconds\":%.6f,\"cpu_s\":%.3f,\"records_per_s\":%.1f,\"mb_per_s\":%.3f}}",
                    records, warmup, size, acks.acked.get(), acks.failed.get(), produceSecs, produceCpu,
                    timedAcked / produceSecs, timedAcked * (double) size / 1048576.0 / produceSecs,
                    total, t.consumed, t.corrupt, t.firstNs == 0 ? -1.0 : (t.firstNs - t.startNs) / 1e6,
                    consumeSecs, consumeCpu, consumeSecs > 0 ? timed / consumeSecs : 0.0,
                    consumeSecs > 0 ? timed * (double) size / 1048576.0 / consumeSecs : 0.0));
            boolean ok = acks.acked.get() == total && acks.failed.get() == 0 && t.consumed == total
                    && t.corrupt == 0;
            return ok ? 0 : 1;
        }
    }

    static int latency(Properties pp, Properties cp, String topic, int records, int size, int warmup, int rate,
            long warmupExtraNs) {
        Acks acks = new Acks();
        AtomicLong sent = new AtomicLong();
        AtomicLong received = new AtomicLong();
        AtomicLong caughtUp = new AtomicLong(); // 1: measuring began with the consumer caught up
        AtomicLong cpuMicrosAtMeasuring = new AtomicLong(); // process CPU when measured records began
        long[] latencyNs = new long[records];
        boolean[] seen = new boolean[records];
        long measured = 0;
        long duplicates = 0;
        Tally t = new Tally();
        double cpuMeasured = -1;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp);
                KafkaConsumer<byte[], byte[]> consumer = consumer(cp, topic)) {
            Thread sender = new Thread(() -> {
                byte[] v = value(size);
                ByteBuffer b = le(v);
                long interval = 1_000_000_000L / rate;
                long lagOk = rate / 20 + 1; // 50 ms of records
                long next = System.nanoTime();
                // Warm-up: the consumer's first fetch and key fetch happen here, and the
                // backlog they leave is drained before anything is measured. A consumer that
                // cannot keep up gets warmupExtraNs more, then measuring starts anyway.
                long warmupEnd = next + warmup * interval + warmupExtraNs;
                while (!Thread.currentThread().isInterrupted() && System.nanoTime() < warmupEnd
                        && (sent.get() < warmup || sent.get() - received.get() > lagOk)) {
                    next = sendPaced(producer, topic, v, b, sent, NOT_MEASURED, next, interval, acks);
                }
                caughtUp.set(sent.get() - received.get() <= lagOk ? 1 : 0);
                cpuMicrosAtMeasuring.set((long) (cpuSeconds() * 1e6));
                for (int i = 0; i < records && !Thread.currentThread().isInterrupted(); i++) {
                    next = sendPaced(producer, topic, v, b, sent, i, next, interval, acks);
                }
                producer.flush();
            }, "bench-sender");
            sender.start();
            long idleSince = System.nanoTime();
            while (measured < records) {
                ConsumerRecords<byte[], byte[]> got = consumer.poll(POLL);
                long now = System.nanoTime();
                if (got.isEmpty()) {
                    if (now - idleSince > IDLE_TIMEOUT_NS) {
                        System.err.println("JavaBench: no record for 60 s; giving up");
                        break;
                    }
                    continue;
                }
                idleSince = now;
                for (ConsumerRecord<byte[], byte[]> r : got) {
                    if (!t.add(r.value(), size, now)) {
                        continue;
                    }
                    ByteBuffer b = le(r.value());
                    received.set(b.getLong(SEQ_AT) + 1);
                    long index = b.getLong(INDEX_AT);
                    if (index >= 0 && index < records) {
                        if (seen[(int) index]) {
                            duplicates++;
                        } else {
                            seen[(int) index] = true;
                            latencyNs[(int) index] = now - b.getLong(TIME_AT);
                            measured++;
                        }
                    }
                }
            }
            cpuMeasured = cpuSeconds() - cpuMicrosAtMeasuring.get() / 1e6;
            sender.interrupt();
            sender.join(120_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        long[] got = new long[(int) measured];
        int k = 0;
        for (int i = 0; i < records; i++) {
            if (seen[i]) {
                got[k++] = latencyNs[i];
            }
        }
        Arrays.sort(got);
        System.out.println(String.format(Locale.ROOT,
                "{\"command\":\"latency\",\"records\":%d,\"warmup\":%d,\"size\":%d,\"rate\":%d,\"sent\":%d,"
                        + "\"caught_up\":%b,"
                        + "\"measured\":%d,\"duplicates\":%d,\"corrupt\":%d,\"acked\":%d,\"failed\":%d,"
                        + "\"cpu_s\":%.3f,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f}",
                records, warmup, size, rate, sent.get(), caughtUp.get() == 1, measured, duplicates, t.corrupt, acks.acked.get(),
                acks.failed.get(), cpuMeasured, percentileMs(got, 50), percentileMs(got, 99), percentileMs(got, 99.9),
                percentileMs(got, 100)));
        boolean ok = measured == records && t.corrupt == 0 && acks.failed.get() == 0 && acks.acked.get() == sent.get();
        return ok ? 0 : 1;
    }

    /** Sends at the next tick of the fixed rate; latency counts from the actual send. */
    static long sendPaced(KafkaProducer<byte[], byte[]> producer, String topic, byte[] v, ByteBuffer b,
            AtomicLong sent, long index, long next, long interval, Acks acks) {
        long wait;
        while ((wait = next - System.nanoTime()) > 0) {
            LockSupport.parkNanos(wait);
        }
        b.putLong(SEQ_AT, sent.get());
        b.putLong(INDEX_AT, index);
        b.putLong(TIME_AT, System.nanoTime());
        producer.send(new ProducerRecord<>(topic, v), acks);
        sent.incrementAndGet();
        return next + interval;
    }

    /** Nearest-rank percentile of sorted nanoseconds, in milliseconds. */
    static double percentileMs(long[] sorted, double p) {
        if (sorted.length == 0) {
            return -1;
        }
        int rank = (int) Math.ceil(p / 100.0 * sorted.length);
        rank = Math.max(1, Math.min(sorted.length, rank));
        return sorted[rank - 1] / 1e6;
    }

    /**
     * The engine saves a key it received at its next housekeeping tick (every second), not at
     * close: wait until the state file is written after the record arrived, or, if it was saved
     * before, until two ticks have passed. The timed consumer run checks that it got no key wait.
     */
    static boolean awaitStateSaved(String stateDir) {
        if (stateDir == null || stateDir.isEmpty()) {
            return false;
        }
        java.io.File state = new java.io.File(stateDir, "state");
        long received = System.currentTimeMillis();
        long deadline = received + 2_500;
        while (System.currentTimeMillis() < deadline) {
            if (state.lastModified() > received) {
                return true;
            }
            LockSupport.parkNanos(20_000_000L);
        }
        return state.lastModified() > 0;
    }

    @SuppressWarnings("try") // the holder is only kept open: its engine serves the keys
    static int prime(Properties holderProps, Properties cp, String topic) {
        try (KafkaProducer<byte[], byte[]> holder = new KafkaProducer<>(holderProps);
                KafkaConsumer<byte[], byte[]> consumer = consumer(cp, topic)) {
            long deadline = System.nanoTime() + IDLE_TIMEOUT_NS;
            while (System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> got = consumer.poll(POLL);
                List<byte[]> values = new ArrayList<>();
                got.forEach(r -> values.add(r.value()));
                if (!values.isEmpty()) {
                    boolean ok = values.stream().allMatch(v -> v != null && v.length >= MARKER.length
                            && Arrays.equals(v, 0, MARKER.length, MARKER, 0, MARKER.length));
                    boolean saved = awaitStateSaved(cp.getProperty("e2ee.state.dir"));
                    System.out.println("{\"command\":\"prime\",\"records\":" + values.size() + ",\"intact\":" + ok
                            + ",\"state_saved\":" + saved + "}");
                    return ok ? 0 : 1;
                }
            }
            System.err.println("JavaBench: prime got no record in 60 s");
            return 1;
        }
    }
}
