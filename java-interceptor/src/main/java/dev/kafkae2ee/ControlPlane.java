package dev.kafkae2ee;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The engine's background thread: carries control messages between the control topic and the
 * engine, and ticks its timers. It uses a Java producer and consumer built from the host client's
 * connection and security settings, so it authenticates exactly as the host does.
 *
 * <p>Contract (shared with the librdkafka plugin): read every partition of the control topic with
 * {@code assign}, from the end offsets as of start, and know the positions before sending the
 * first message; record key = the recipient's 8-byte instance id, or null for a broadcast; value =
 * the payload.
 */
final class ControlPlane implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ControlPlane.class);
    /** The longest the thread sleeps in poll: bounds how late a queued message goes out. */
    private static final long MAX_POLL_MS = 100;
    private static final long RETENTION_MS = 3_600_000;
    /** While the control topic fails (an outage, a missing ACL), one warning per this period. */
    static final long WARN_EVERY_MS = 30_000;
    /**
     * After a failed read, the next poll waits this long: a consumer that may not read the topic
     * fails every poll at once, and polling again at once would spin a core and log a warning (the
     * Kafka consumer's own) thousands of times a second for the whole outage.
     */
    static final long READ_RETRY_MS = 1_000;

    /** Host settings never carried over (besides every e2ee.* one). */
    private static final Set<String> DROPPED = Set.of(
            "interceptor.classes", "group.id", "group.instance.id", "group.protocol",
            "group.remote.assignor", "transactional.id", "client.id");

    private final Engine engine;
    private final String topic;
    private final Map<String, Object> base;
    private final E2eeMetrics metrics;
    private final Thread thread;
    private volatile boolean running = true;
    private volatile KafkaConsumer<byte[], byte[]> consumer;
    /** No poll before this time (after a failed read); timers and sends go on meanwhile. */
    private long readRetryAt;
    private final Problems readProblems = new Problems("cannot read control topic");
    private final Problems sendProblems = new Problems("control message not delivered to");

    ControlPlane(Engine engine, String instance, String topic, Map<String, ?> host, E2eeMetrics metrics) {
        this.engine = engine;
        this.topic = topic;
        this.metrics = metrics;
        this.base = baseConfig(host, instance);
        this.thread = new Thread(this::run, "kafka-e2ee-control-" + instance);
        thread.setDaemon(true);
        thread.start();
    }

    /**
     * The connection and security settings of the host client (bootstrap.servers,
     * security.protocol, ssl.*, sasl.* with JAAS and callback handlers, client.dns.lookup, ...),
     * and any setting no Kafka client defines (a login module or callback handler may read it);
     * without serdes, interceptors, group or transaction settings, tuning, or e2ee.*.
     */
    static Map<String, Object> baseConfig(Map<String, ?> host, String instance) {
        Set<String> known = new HashSet<>();
        known.addAll(ProducerConfig.configNames());
        known.addAll(ConsumerConfig.configNames());
        known.addAll(AdminClientConfig.configNames());
        Map<String, Object> out = new HashMap<>();
        for (Map.Entry<String, ?> e : host.entrySet()) {
            String k = e.getKey();
            if (k.startsWith(E2eeConfig.PREFIX) || DROPPED.contains(k) || e.getValue() == null) {
                continue;
            }
            boolean connection = k.equals("bootstrap.servers") || k.equals("security.protocol")
                    || k.startsWith("ssl.") || k.startsWith("sasl.") || k.equals("client.dns.lookup")
                    || k.startsWith("socket.connection.setup.timeout") || k.startsWith("reconnect.backoff")
                    || k.startsWith("retry.backoff") || k.equals("request.timeout.ms")
                    || k.equals("connections.max.idle.ms") || k.equals("metadata.max.age.ms")
                    || k.equals("security.providers") || k.equals("default.api.timeout.ms");
            if (connection || !known.contains(k)) {
                out.put(k, e.getValue());
            }
        }
        out.put("client.id", "kafka-e2ee-control-" + instance);
        return out;
    }

    /** Makes the thread look at its transmit queue now (a consumer asked for a key). */
    void nudge() {
        KafkaConsumer<byte[], byte[]> c = consumer;
        if (c != null) {
            c.wakeup();
        }
    }

    private void run() {
        KafkaProducer<byte[], byte[]> producer = null;
        KafkaConsumer<byte[], byte[]> c = null;
        try {
            long backoff = 100;
            while (running) {
                try {
                    ensureTopic();
                    c = newConsumer();
                    List<TopicPartition> partitions = partitions(c);
                    c.assign(partitions);
                    c.seekToEnd(partitions);
                    for (TopicPartition tp : partitions) {
                        c.position(tp); // the position must be known before we send anything
                    }
                    producer = newProducer();
                    break;
                } catch (Exception e) {
                    closeQuietly(c);
                    c = null;
                    if (!running) {
                        return;
                    }
                    log.warn("kafka-e2ee control plane cannot reach control topic {} yet ({}); retrying",
                            topic, e.toString());
                    sleep(backoff);
                    backoff = Math.min(backoff * 2, 5_000);
                }
            }
            if (!running) {
                return;
            }
            consumer = c;
            log.info("kafka-e2ee control plane running on topic {}", topic);
            loop(c, producer);
        } catch (Throwable t) {
            if (!running) {
                log.debug("kafka-e2ee control plane stopped", t);
                return;
            }
            log.error("kafka-e2ee control plane stopped by an unexpected error; keys can no longer "
                    + "be exchanged by this process", t);
        } finally {
            consumer = null;
            if (producer != null) {
                producer.close(Duration.ofSeconds(5));
            }
            closeQuietly(c);
        }
    }

    private void loop(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> producer) {
        while (running) {
            try {
                step(c, producer);
            } catch (WakeupException e) {
                // nudged outside poll: go round again
            } catch (RuntimeException e) {
                if (!running) {
                    return;
                }
                // One bad round (a broker hiccup, a producer error) must not end key exchange.
                readProblems.failed(topic, e);
                sleep(MAX_POLL_MS);
            }
        }
    }

    private void step(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> producer) {
        long start = System.currentTimeMillis();
        long wait = Math.max(0, Math.min(MAX_POLL_MS, engine.pollTimeout() - start));
        long generation = engine.keyGeneration();
        if (start < readRetryAt) {
            sleep(Math.min(wait, readRetryAt - start));
        } else {
            read(c, wait);
        }
        long now = System.currentTimeMillis();
        if (now >= engine.pollTimeout()) {
            String problem = engine.handleTimeout(now);
            if (problem != null) {
                log.warn("kafka-e2ee engine timer: {}", problem);
            }
        }
        byte[][] message;
        while ((message = engine.pollTransmit()) != null) {
            producer.send(new ProducerRecord<>(topic, message[0], message[1]), (md, e) -> {
                if (e != null) {
                    metrics.controlSendFailed();
                    sendProblems.failed(topic, e);
                } else {
                    sendProblems.succeeded(topic);
                }
            });
        }
        if (engine.keyGeneration() != generation) {
            engine.signalKeyArrival();
        }
    }

    private void read(KafkaConsumer<byte[], byte[]> c, long wait) {
        try {
            ConsumerRecords<byte[], byte[]> records = c.poll(Duration.ofMillis(wait));
            for (ConsumerRecord<byte[], byte[]> r : records) {
                if (r.value() == null) {
                    continue;
                }
                String rejected = engine.handleControl(System.currentTimeMillis(), r.value());
                if (rejected != null) {
                    log.debug("control message at {}-{}@{} rejected: {}", r.topic(), r.partition(), r.offset(),
                            rejected);
                }
            }
            if (!records.isEmpty()) {
                // Only records prove the topic readable: during an outage, polls between two
                // failed fetches return nothing without an error.
                readProblems.succeeded(topic);
            }
        } catch (WakeupException e) {
            // nudged: go on to the transmit queue
        } catch (KafkaException e) {
            // The control topic cannot be read (e.g. not authorized): the timers must still run
            // (rotation, retries) and queued messages still go out, or this process would stop
            // rotating and stop asking for keys until the poll succeeds again.
            readProblems.failed(topic, e);
            readRetryAt = System.currentTimeMillis() + READ_RETRY_MS;
        }
    }

    /**
     * One kind of recurring control-topic failure, logged at most once per {@link #WARN_EVERY_MS}
     * (an outage would otherwise log a line per poll), and once more when it ends. Thread-safe:
     * producer callbacks run on the producer's I/O thread.
     */
    static final class Problems {
        private final String what;
        private long lastWarnMs = Long.MIN_VALUE;
        private long suppressed;
        private boolean failing;

        Problems(String what) {
            this.what = what;
        }

        /** Returns whether this failure was logged. */
        synchronized boolean failed(String topic, Exception e) {
            failing = true;
            long now = System.currentTimeMillis();
            if (lastWarnMs != Long.MIN_VALUE && now - lastWarnMs < WARN_EVERY_MS) {
                suppressed++;
                return false;
            }
            log.warn("kafka-e2ee {} {}: {} ({} more since the last warning); key exchange retries, "
                    + "and records under keys already held keep flowing", what, topic, e.toString(), suppressed);
            lastWarnMs = now;
            suppressed = 0;
            return true;
        }

        synchronized void succeeded(String topic) {
            if (failing) {
                failing = false;
                lastWarnMs = Long.MIN_VALUE;
                suppressed = 0;
                log.info("kafka-e2ee control topic {} works again", topic);
            }
        }
    }

    private void ensureTopic() throws InterruptedException {
        Map<String, Object> cfg = new HashMap<>(base);
        cfg.put("client.id", base.get("client.id") + "-admin");
        try (Admin admin = Admin.create(cfg)) {
            if (admin.listTopics().names().get(30, TimeUnit.SECONDS).contains(topic)) {
                return;
            }
            int brokers = admin.describeCluster().nodes().get(30, TimeUnit.SECONDS).size();
            short replicas = (short) Math.max(1, Math.min(3, brokers));
            NewTopic t = new NewTopic(topic, 1, replicas).configs(Map.of(
                    "retention.ms", Long.toString(RETENTION_MS), "cleanup.policy", "delete"));
            admin.createTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
            log.info("kafka-e2ee created control topic {} (1 partition, {} replicas)", topic, replicas);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw new IllegalStateException("cannot create control topic " + topic + ": " + e.getCause(), e);
            }
        } catch (java.util.concurrent.TimeoutException e) {
            throw new IllegalStateException("timed out checking control topic " + topic, e);
        }
    }

    private List<TopicPartition> partitions(KafkaConsumer<byte[], byte[]> c) {
        List<PartitionInfo> infos = c.partitionsFor(topic, Duration.ofSeconds(30));
        if (infos == null || infos.isEmpty()) {
            throw new IllegalStateException("control topic " + topic + " has no partitions yet");
        }
        List<TopicPartition> out = new ArrayList<>();
        for (PartitionInfo p : infos) {
            out.add(new TopicPartition(p.topic(), p.partition()));
        }
        return out;
    }

    private KafkaConsumer<byte[], byte[]> newConsumer() {
        Map<String, Object> cfg = new HashMap<>(base);
        cfg.put("client.id", base.get("client.id") + "-consumer");
        cfg.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        cfg.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
        return new KafkaConsumer<>(cfg, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    private KafkaProducer<byte[], byte[]> newProducer() {
        Map<String, Object> cfg = new HashMap<>(base);
        cfg.put("client.id", base.get("client.id") + "-producer");
        cfg.put(ProducerConfig.ACKS_CONFIG, "all");
        cfg.put(ProducerConfig.LINGER_MS_CONFIG, 0);
        return new KafkaProducer<>(cfg, new ByteArraySerializer(), new ByteArraySerializer());
    }

    private static void closeQuietly(KafkaConsumer<byte[], byte[]> c) {
        if (c != null) {
            try {
                c.close(); // no group to leave: quick
            } catch (RuntimeException e) {
                log.debug("closing the control consumer", e);
            }
        }
    }

    private void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            running = false;
        }
    }

    /** Stops the thread and its clients; waits for them. */
    @Override
    public void close() {
        running = false;
        if (consumer == null) {
            thread.interrupt(); // still setting up: may be blocked on an admin call
        }
        nudge();
        try {
            thread.join(30_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (thread.isAlive()) {
            log.warn("kafka-e2ee control thread {} did not stop within 30 s", thread.getName());
        }
    }
}
