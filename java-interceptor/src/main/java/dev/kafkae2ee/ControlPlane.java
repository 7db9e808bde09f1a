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
import java.util.concurrent.atomic.AtomicLong;
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
 * <p>Contract (shared with the librdkafka plugin, ffi/src/rdkafka/control.rs):
 *
 * <ul>
 *   <li>Two topics, both read on every partition with {@code assign} (no group, no commits) and
 *       created when missing (1 partition, min(3, brokers) replicas). {@code e2ee.control.topic}
 *       (live exchange; delete policy, 1 h) is read from its end offsets as of start, and the
 *       positions are known before the first message is sent. {@code e2ee.keys.topic} (prekeys
 *       and key envelopes; {@code compact,delete}, retention = e2ee.key.retention.ms +
 *       e2ee.key.rotation.ms + 1 day) is read from the beginning.
 *   <li>Every non-null record value of either topic goes to {@link Engine#handleControl}.
 *   <li>Every message of {@link Engine#pollTransmit} goes to the topic its channel names, with its
 *       record key (the recipient's 8-byte instance id, or null for a broadcast, on the control
 *       topic; always set on the compacted keys topic).
 *   <li>"Caught up" ({@link #caughtUp()}): the keys topic has been read up to the end offsets it
 *       had when reading started.
 *   <li>Close of an engine a producer used: within e2ee.close.timeout.ms from the start of close,
 *       wait until caught up (so the engine knows every recipient's prekey), tick the engine once
 *       more and send all it queued, flush; key envelopes the broker has not acknowledged then are
 *       logged at ERROR and counted (key-envelopes-unacknowledged). A consumer-only engine stops
 *       at once.
 * </ul>
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

    /** What the control plane needs of the client settings. */
    static final class Settings {
        final String controlTopic;
        final String keysTopic;
        final long keysRetentionMs;
        final long closeTimeoutMs;
        /**
         * e2ee.control.bootstrap.servers, or "" for none: the control clients connect there instead
         * of to the host's bootstrap.servers, with the host's security settings.
         */
        final String controlBootstrap;

        Settings(String controlTopic, String keysTopic, long keysRetentionMs, long closeTimeoutMs) {
            this(controlTopic, keysTopic, keysRetentionMs, closeTimeoutMs, "");
        }

        Settings(String controlTopic, String keysTopic, long keysRetentionMs, long closeTimeoutMs,
                String controlBootstrap) {
            this.controlTopic = controlTopic;
            this.keysTopic = keysTopic;
            this.keysRetentionMs = keysRetentionMs;
            this.closeTimeoutMs = closeTimeoutMs;
            this.controlBootstrap = controlBootstrap;
        }

        static Settings of(E2eeConfig config) {
            return new Settings(config.getString(E2eeConfig.CONTROL_TOPIC), config.getString(E2eeConfig.KEYS_TOPIC),
                    keysRetentionMs(config.getLong(E2eeConfig.KEY_RETENTION_MS),
                            config.getLong(E2eeConfig.KEY_ROTATION_MS)),
                    config.getLong(E2eeConfig.CLOSE_TIMEOUT_MS), config.controlBootstrap());
        }
    }

    /**
     * retention.ms of the keys topic: an envelope must outlive the last record sealed under its key
     * (an epoch lasts up to the rotation interval, its key is kept the retention after it ended),
     * plus a day of margin for clock skew and late consumers; saturates at Long.MAX_VALUE.
     */
    static long keysRetentionMs(long keyRetentionMs, long keyRotationMs) {
        long sum = keyRetentionMs + keyRotationMs + 86_400_000L;
        return sum < 0 ? Long.MAX_VALUE : sum; // both are positive (ConfigDef): overflow wraps negative
    }

    /** The ERROR line of a close that could not get every key envelope acknowledged (as the plugin's). */
    static String unacknowledgedMessage(long n, String keysTopic, long closeTimeoutMs) {
        return n + " key envelope(s) were not acknowledged by the broker on keys topic " + keysTopic
                + " within e2ee.close.timeout.ms (" + closeTimeoutMs + " ms) of close: records this producer "
                + "sealed may stay unreadable for consumers that were not running. To fix it, keep the "
                + "producer running until the broker is reachable, or restart it on its e2ee.state.dir (it "
                + "publishes them again), and check that the keys topic's ACLs let this client write it";
    }

    private final Engine engine;
    private final String topic;
    private final String keysTopic;
    private final Settings settings;
    private final Map<String, Object> base;
    private final E2eeMetrics metrics;
    private final Thread thread;
    private volatile boolean running = true;
    /** close() was called; with {@link #drain}, the thread delivers key envelopes until the deadline. */
    private volatile boolean closing;
    private volatile boolean drain;
    private volatile long closeDeadlineMs;
    private volatile boolean caughtUp;
    /** The keys topic's end offsets when reading started; owned by the thread. */
    private Map<TopicPartition, Long> keysEnd = Map.of();
    /** Keys-topic messages handed to the producer without a delivery outcome yet, and those that failed. */
    private final AtomicLong keysPending = new AtomicLong();
    private final AtomicLong keysFailed = new AtomicLong();
    private volatile KafkaConsumer<byte[], byte[]> consumer;
    /** No poll before this time (after a failed read); timers and sends go on meanwhile. */
    private long readRetryAt;
    private final Problems readProblems = new Problems("cannot read control topic");
    private final Problems sendProblems = new Problems("control message not delivered to");

    ControlPlane(Engine engine, String instance, Settings settings, Map<String, ?> host, E2eeMetrics metrics) {
        this.engine = engine;
        this.settings = settings;
        this.topic = settings.controlTopic;
        this.keysTopic = settings.keysTopic;
        this.metrics = metrics;
        this.base = baseConfig(host, instance, settings.controlBootstrap);
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
        return baseConfig(host, instance, "");
    }

    /**
     * {@link #baseConfig(Map, String)}, connecting to {@code controlBootstrap} instead of the host's
     * bootstrap.servers when it is not empty (e2ee.control.bootstrap.servers: a mirrored cluster's
     * consumer exchanges keys on the source cluster, with its own security settings, as the
     * librdkafka plugin's control clients do).
     */
    static Map<String, Object> baseConfig(Map<String, ?> host, String instance, String controlBootstrap) {
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
        if (!controlBootstrap.isEmpty()) {
            out.put("bootstrap.servers", controlBootstrap);
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
            while (!giveUp()) {
                try {
                    ensureTopics();
                    c = newConsumer();
                    List<TopicPartition> control = partitions(c, topic);
                    List<TopicPartition> keys = partitions(c, keysTopic);
                    List<TopicPartition> all = new ArrayList<>(control);
                    all.addAll(keys);
                    c.assign(all);
                    c.seekToEnd(control);
                    c.seekToBeginning(keys);
                    for (TopicPartition tp : all) {
                        c.position(tp, budget()); // the position must be known before we send anything
                    }
                    keysEnd = c.endOffsets(keys, budget());
                    producer = newProducer();
                    break;
                } catch (Exception e) {
                    closeQuietly(c);
                    c = null;
                    if (giveUp()) {
                        break;
                    }
                    log.warn("kafka-e2ee control plane cannot reach control topic {} / keys topic {} yet ({}); "
                            + "retrying", topic, keysTopic, e.toString());
                    sleep(backoff);
                    backoff = Math.min(backoff * 2, 5_000);
                }
            }
            if (producer == null) {
                if (drain) {
                    // Stopped before the topics could be used: the key envelopes the engine holds
                    // were never sent.
                    closeWithoutBroker();
                }
                return;
            }
            updateCaughtUp(c); // before nudges can reach the consumer
            consumer = c;
            log.info("kafka-e2ee control plane running on topics {} and {}", topic, keysTopic);
            loop(c, producer);
            if (closing && drain && running) {
                KafkaProducer<byte[], byte[]> p = producer;
                producer = null; // closed by closeAndDeliver, within the deadline
                closeAndDeliver(c, p);
            }
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

    /**
     * The timeout of one blocking setup call: 30 s, cut to what is left of the close deadline once a
     * delivering close has started, so a close with the broker down ends on time.
     */
    private Duration budget() {
        long ms = 30_000;
        if (closing) {
            ms = Math.max(1, Math.min(ms, closeDeadlineMs - System.currentTimeMillis()));
        }
        return Duration.ofMillis(ms);
    }

    /** Whether the thread should end now: stopped hard, or closing with nothing to deliver or out of time. */
    private boolean giveUp() {
        return !running || (closing && (!drain || System.currentTimeMillis() >= closeDeadlineMs));
    }

    private void loop(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> producer) {
        while (running && !closing) {
            round(c, producer);
        }
    }

    /**
     * Close of an engine a producer used: (a) read the keys topic up to its end, (b) tick once more
     * and send everything, (c) flush, all by the deadline; (d) report what the broker did not
     * acknowledge.
     */
    private void closeAndDeliver(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> producer) {
        try {
            while (running && !caughtUp && System.currentTimeMillis() < closeDeadlineMs) {
                round(c, producer);
            }
            String problem = engine.handleTimeout(System.currentTimeMillis());
            if (problem != null) {
                log.warn("kafka-e2ee engine timer: {}", problem);
            }
            transmit(producer);
        } catch (RuntimeException e) {
            log.warn("kafka-e2ee control plane closing: {}", e.toString());
        } finally {
            long left = Math.max(0, closeDeadlineMs - System.currentTimeMillis());
            // close(timeout) is flush with a deadline: what is still unsent then fails, and its
            // callback counts it.
            try {
                producer.close(Duration.ofMillis(left));
            } catch (RuntimeException e) {
                log.debug("closing the control producer", e);
            }
            reportUnacknowledged(keysPending.get() + keysFailed.get());
        }
    }

    /** Closing before the topics were usable: count the key envelopes the engine still holds. */
    private void closeWithoutBroker() {
        long lost = 0;
        try {
            engine.handleTimeout(System.currentTimeMillis());
            Engine.Transmit t;
            while ((t = engine.pollTransmit()) != null) {
                if (t.keys) {
                    lost++;
                }
            }
        } catch (RuntimeException e) {
            log.debug("draining the engine at close", e);
        }
        reportUnacknowledged(lost);
    }

    private void reportUnacknowledged(long n) {
        if (n > 0) {
            metrics.keyEnvelopesUnacknowledged(n);
            log.error("kafka-e2ee: {}", unacknowledgedMessage(n, keysTopic, settings.closeTimeoutMs));
        }
    }

    /** Whether the keys topic has been read up to the end offsets it had when reading started. */
    boolean caughtUp() {
        return caughtUp;
    }

    private void updateCaughtUp(KafkaConsumer<byte[], byte[]> c) {
        if (caughtUp) {
            return;
        }
        try {
            for (Map.Entry<TopicPartition, Long> e : keysEnd.entrySet()) {
                // Known locally after a fetch; never block the thread on a lookup here.
                if (e.getValue() != null && c.position(e.getKey(), Duration.ZERO) < e.getValue()) {
                    return;
                }
            }
        } catch (org.apache.kafka.common.errors.TimeoutException e) {
            return; // position being reset: not caught up yet, ask again next round
        }
        caughtUp = true;
        // Only now may the engine found a token secret for a topic nobody has claimed one on
        // (e2ee.keys=tokenize, docs/PROTOCOL.md 5e): before, a claim it has not read yet could
        // exist, and two secrets for one topic would give one key two tokens.
        engine.keysTopicRead();
    }

    private void round(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> producer) {
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

    private void step(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> producer) {
        long start = System.currentTimeMillis();
        long wait = Math.max(0, Math.min(MAX_POLL_MS, engine.pollTimeout() - start));
        long generation = engine.keyGeneration();
        if (start < readRetryAt) {
            sleep(Math.min(wait, readRetryAt - start));
        } else {
            read(c, wait);
            updateCaughtUp(c);
        }
        long now = System.currentTimeMillis();
        if (now >= engine.pollTimeout()) {
            String problem = engine.handleTimeout(now);
            if (problem != null) {
                log.warn("kafka-e2ee engine timer: {}", problem);
            }
        }
        transmit(producer);
        if (engine.keyGeneration() != generation) {
            engine.signalKeyArrival();
        }
    }

    /** Sends every queued message to the topic its channel names; counts keys-topic outcomes. */
    private void transmit(KafkaProducer<byte[], byte[]> producer) {
        Engine.Transmit t;
        while ((t = engine.pollTransmit()) != null) {
            boolean keys = t.keys;
            String to = keys ? keysTopic : topic;
            if (keys) {
                keysPending.incrementAndGet();
            }
            try {
                producer.send(new ProducerRecord<>(to, t.key, t.payload), (md, e) -> {
                    if (keys) {
                        keysPending.decrementAndGet();
                    }
                    if (e != null) {
                        if (keys) {
                            keysFailed.incrementAndGet();
                        }
                        metrics.controlSendFailed();
                        sendProblems.failed(to, e);
                    } else {
                        sendProblems.succeeded(to);
                    }
                });
            } catch (RuntimeException e) {
                if (keys) { // thrown, so no callback: never handed over
                    keysPending.decrementAndGet();
                    keysFailed.incrementAndGet();
                }
                throw e;
            }
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

    /** Creates the control and keys topics where missing, with the broker's default replication. */
    private void ensureTopics() throws InterruptedException {
        Map<String, Object> cfg = new HashMap<>(base);
        cfg.put("client.id", base.get("client.id") + "-admin");
        Admin admin = Admin.create(cfg);
        try {
            Set<String> existing = admin.listTopics().names().get(budget().toMillis(), TimeUnit.MILLISECONDS);
            ensureTopic(admin, existing, "control topic", topic, controlTopicConfigs());
            ensureTopic(admin, existing, "keys topic", keysTopic, keysTopicConfigs(settings.keysRetentionMs));
        } catch (java.util.concurrent.TimeoutException e) {
            throw new IllegalStateException("timed out checking topics " + topic + " and " + keysTopic, e);
        } catch (ExecutionException e) {
            throw new IllegalStateException("cannot list topics: " + e.getCause(), e);
        } finally {
            // Bounded: a call that timed out above is still pending in the admin client, and an
            // unbounded close would wait for it (up to default.api.timeout.ms) past a close deadline.
            admin.close(budget());
        }
    }

    static Map<String, String> controlTopicConfigs() {
        return Map.of("retention.ms", Long.toString(RETENTION_MS), "cleanup.policy", "delete");
    }

    /**
     * Compacted, so the newest prekey and envelope under each record key stay however old; deleted
     * after the retention, so shredded keys' envelopes go too.
     */
    static Map<String, String> keysTopicConfigs(long retentionMs) {
        return Map.of("retention.ms", Long.toString(retentionMs), "cleanup.policy", "compact,delete");
    }

    private void ensureTopic(Admin admin, Set<String> existing, String what, String name,
            Map<String, String> configs) throws InterruptedException, java.util.concurrent.TimeoutException {
        if (existing.contains(name)) {
            return;
        }
        try {
            int brokers = admin.describeCluster().nodes().get(budget().toMillis(), TimeUnit.MILLISECONDS).size();
            short replicas = (short) Math.max(1, Math.min(3, brokers));
            NewTopic t = new NewTopic(name, 1, replicas).configs(configs);
            admin.createTopics(List.of(t)).all().get(budget().toMillis(), TimeUnit.MILLISECONDS);
            log.info("kafka-e2ee created {} {} (1 partition, {} replicas, {})", what, name, replicas, configs);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw new IllegalStateException("cannot create " + what + " " + name + ": " + e.getCause(), e);
            }
        }
    }

    private List<TopicPartition> partitions(KafkaConsumer<byte[], byte[]> c, String name) {
        List<PartitionInfo> infos = c.partitionsFor(name, budget());
        if (infos == null || infos.isEmpty()) {
            throw new IllegalStateException("topic " + name + " has no partitions yet");
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

    /** Stops the thread and its clients at once (a consumer-only engine); waits for them. */
    @Override
    public void close() {
        close(false);
    }

    /**
     * Stops the thread and its clients; waits for them. With {@code deliver} (a producer used the
     * engine), the thread first keeps the close promise of the class comment, within
     * e2ee.close.timeout.ms from now.
     */
    void close(boolean deliver) {
        long start = System.currentTimeMillis();
        long timeout = settings.closeTimeoutMs;
        closeDeadlineMs = start + timeout;
        drain = deliver;
        closing = true;
        if (!deliver) {
            running = false;
            if (consumer == null) {
                thread.interrupt(); // still setting up: may be blocked on an admin call
            }
        }
        nudge();
        try {
            // The thread ends by the deadline unless a blocking call holds it; a little grace for
            // the producer close and the report, then it is interrupted.
            thread.join(deliver ? timeout + 2_000 : 30_000);
            if (thread.isAlive() && deliver) {
                running = false;
                thread.interrupt();
                nudge();
                thread.join(5_000);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (thread.isAlive()) {
            log.warn("kafka-e2ee control thread {} did not stop in time", thread.getName());
        }
    }
}
