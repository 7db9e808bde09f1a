package dev.kafkae2ee;

import java.util.HashMap;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One engine, control plane and metrics per process, cluster, credential, control topic and keys topic,
 * shared by every client that configures a kafka-e2ee hook; torn down when the last one closes.
 */
final class Engines {
    private static final Logger log = LoggerFactory.getLogger(Engines.class);
    private static final Map<String, Shared> SHARED = new HashMap<>();

    private Engines() {}

    /** What a client holds while it is open. */
    static final class Lease implements AutoCloseable {
        final Engine engine;
        final ControlPlane control;
        final E2eeMetrics metrics;
        final long keyWaitMs;
        private final Shared shared;
        private boolean closed;

        private Lease(Shared shared, long keyWaitMs) {
            this.shared = shared;
            this.engine = shared.engine;
            this.control = shared.control;
            this.metrics = shared.metrics;
            this.keyWaitMs = keyWaitMs;
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
        String cluster = E2eeConfig.cluster(originals);
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
            return new Lease(shared, waitMs);
        }
    }
}
