package dev.kafkae2ee;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One engine, control plane and metrics per process, cluster, credential, control topic and keys topic,
 * shared by every client that configures a kafka-e2ee hook; torn down when the last one closes.
 */
final class Engines {
    private static final Logger log = LoggerFactory.getLogger(Engines.class);
    private static final Map<String, Shared> SHARED = new HashMap<>();
    /** Past this many mapped topics, a lease maps per call instead of caching. */
    private static final int MAX_MAPPED_TOPICS = 10_000;

    private Engines() {}

    /** What a client holds while it is open. */
    static final class Lease implements AutoCloseable {
        final Engine engine;
        final ControlPlane control;
        final E2eeMetrics metrics;
        final long keyWaitMs;
        /** This client's e2ee.topic.source.prefix ("" for none): its own, whoever made the engine. */
        private final String sourcePrefix;
        /** Topic -> the name its records are opened under, as the core mapped it. */
        private final Map<String, String> sources = new ConcurrentHashMap<>();
        private final Shared shared;
        private boolean closed;

        private Lease(Shared shared, long keyWaitMs, String sourcePrefix) {
            this.shared = shared;
            this.engine = shared.engine;
            this.control = shared.control;
            this.metrics = shared.metrics;
            this.keyWaitMs = keyWaitMs;
            this.sourcePrefix = sourcePrefix;
        }

        /**
         * The name a record of {@code topic} is opened, authorized and key-requested under: its
         * source topic when {@code topic} is this client's e2ee.topic.source.prefix followed by a
         * name (mapped by the core, Engine.sourceTopic), else {@code topic}. Never from the broker.
         */
        String sourceTopic(String topic) {
            if (sourcePrefix.isEmpty()) {
                return topic; // no mapping configured: no native call on this path
            }
            String source = sources.get(topic);
            if (source == null) {
                source = Engine.sourceTopic(sourcePrefix, topic);
                if (sources.size() < MAX_MAPPED_TOPICS) {
                    sources.putIfAbsent(topic, source);
                }
            }
            return source;
        }

        /** Whether a record of {@code topic} without the e2ee header is refused: either name is protected. */
        boolean isProtected(String topic) {
            String source = sourceTopic(topic);
            return engine.isProtected(source) || (!source.equals(topic) && engine.isProtected(topic));
        }

        @Override
        public void close() {
            synchronized (Engines.class) {
                if (closed) {
                    return;
                }
                closed = true;
                if (--shared.leases > 0) {
                    return;
                }
                SHARED.remove(shared.key);
            }
            shared.shutdown();
        }
    }

    private static final class Shared {
        final String key;
        final Engine engine;
        final ControlPlane control;
        final E2eeMetrics metrics;
        int leases;
        /** A producer-side client used this engine: its close delivers key envelopes first. */
        boolean producer;

        Shared(String key, Engine engine, ControlPlane control, E2eeMetrics metrics) {
            this.key = key;
            this.engine = engine;
            this.control = control;
            this.metrics = metrics;
        }

        void shutdown() {
            control.close(producer);
            metrics.close();
            engine.close();
            log.info("kafka-e2ee engine for {} closed", key.replace('\0', ' '));
        }
    }

    /**
     * The shared engine for this client's configuration. Fails with Kafka's ConfigException
     * naming the property when the credential, trust or settings are unusable. Clients that
     * differ in e2ee.cipher, e2ee.compression or e2ee.kex.hybrid get an engine each, so each seals as
     * configured.
     * {@code producer}: the client seals (serializer, producer interceptor), so the engine's close
     * waits for its key envelopes to be delivered (e2ee.close.timeout.ms).
     */
    static Lease acquire(Map<String, ?> originals, E2eeConfig config, boolean producer) {
        // The engine and its control plane belong to the cluster the keys are exchanged on: a
        // mirrored cluster's consumer shares them with the source cluster's clients of this
        // process, not with its own cluster's (as in the librdkafka plugin).
        String cluster = config.keyExchangeCluster(originals);
        try {
            // This client's own settings, checked by the core even when the engine exists already.
            Engine.checkProperties(config.nativeProperties());
        } catch (E2eeException e) {
            if (e.kind() == E2eeException.Kind.CONFIG) {
                throw config.configException(e);
            }
            throw e;
        }
        String key = cluster + '\0' + config.getString(E2eeConfig.CREDENTIAL) + '\0'
                + config.getString(E2eeConfig.CONTROL_TOPIC) + '\0' + config.getString(E2eeConfig.KEYS_TOPIC)
                + '\0' + config.getString(E2eeConfig.CIPHER)
                + '\0' + config.getString(E2eeConfig.COMPRESSION)
                + '\0' + config.getString(E2eeConfig.KEX_HYBRID);
        long waitMs = config.getLong(E2eeConfig.KEY_WAIT_MS);
        synchronized (Engines.class) {
            Shared shared = SHARED.get(key);
            if (shared == null) {
                Engine engine;
                try {
                    engine = Engine.create(cluster, config.nativeProperties());
                } catch (E2eeException e) {
                    if (e.kind() == E2eeException.Kind.CONFIG) {
                        throw config.configException(e);
                    }
                    throw e;
                }
                String instance = engine.instanceId();
                E2eeMetrics metrics = new E2eeMetrics(engine, instance);
                ControlPlane control = new ControlPlane(
                        engine, instance, ControlPlane.Settings.of(config), originals, metrics);
                shared = new Shared(key, engine, control, metrics);
                SHARED.put(key, shared);
                log.info("kafka-e2ee engine {} started for cluster {}", instance, cluster);
            }
            shared.leases++;
            shared.producer |= producer;
            return new Lease(shared, waitMs, config.sourcePrefix());
        }
    }
}
