package dev.kafkae2ee;

import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.metrics.Gauge;
import org.apache.kafka.common.metrics.JmxReporter;
import org.apache.kafka.common.metrics.KafkaMetricsContext;
import org.apache.kafka.common.metrics.MetricConfig;
import org.apache.kafka.common.metrics.Metrics;
import org.apache.kafka.common.metrics.MetricsReporter;
import org.apache.kafka.common.utils.Time;

/**
 * The engine's counters in Kafka's metrics registry, visible over JMX as {@code
 * kafka.e2ee:type=e2ee-metrics,instance=<instance id>}: the native engine's counters plus what
 * only the Java hooks see (consumer waits, records failed or dropped, sends refused).
 */
final class E2eeMetrics implements AutoCloseable {
    static final String GROUP = "e2ee-metrics";

    private final Metrics metrics;
    private final AtomicLong consumerWaits = new AtomicLong();
    private final AtomicLong keyWaitTimeouts = new AtomicLong();
    private final AtomicLong recordsFailed = new AtomicLong();
    private final AtomicLong recordsDropped = new AtomicLong();
    private final AtomicLong sendsRefused = new AtomicLong();
    private final AtomicLong controlSendFailures = new AtomicLong();
    private final AtomicLong keyEnvelopesUnacknowledged = new AtomicLong();

    E2eeMetrics(Engine engine, String instance) {
        JmxReporter jmx = new JmxReporter();
        List<MetricsReporter> reporters = List.of(jmx);
        metrics = new Metrics(new MetricConfig(), reporters, Time.SYSTEM, new KafkaMetricsContext("kafka.e2ee"));
        Map<String, String> tags = Map.of("instance", instance);
        for (int i = 0; i < Engine.METRIC_NAMES.length; i++) {
            int index = i;
            add(Engine.METRIC_NAMES[i], "native engine counter " + Engine.METRIC_NAMES[i], tags,
                    (config, now) -> {
                        try {
                            return engine.metrics()[index];
                        } catch (RuntimeException closed) {
                            return 0L;
                        }
                    });
        }
        addCounter("consumer-key-waits", "times a consumer waited for a key it lacked", tags, consumerWaits);
        addCounter("consumer-key-wait-timeouts", "waits that ended without the key (e2ee.key.wait.ms)",
                tags, keyWaitTimeouts);
        addCounter("records-failed", "records the deserializer failed (RecordDeserializationException)",
                tags, recordsFailed);
        addCounter("records-dropped", "records the consumer interceptor could not decrypt and dropped",
                tags, recordsDropped);
        addCounter("sends-refused", "records the producer interceptor could not encrypt; their send failed",
                tags, sendsRefused);
        addCounter("control-send-failures", "control messages the broker did not accept", tags,
                controlSendFailures);
        addCounter("key-envelopes-unacknowledged",
                "key envelopes the broker had not acknowledged when a producer's close gave up "
                        + "(e2ee.close.timeout.ms); records they cover may stay unreadable",
                tags, keyEnvelopesUnacknowledged);
    }

    private void add(String name, String doc, Map<String, String> tags, Gauge<Long> gauge) {
        MetricName n = metrics.metricName(name, GROUP, doc, tags);
        metrics.addMetric(n, gauge);
    }

    private void addCounter(String name, String doc, Map<String, String> tags, AtomicLong counter) {
        add(name, doc, tags, (config, now) -> counter.get());
    }

    void consumerWaited() {
        consumerWaits.incrementAndGet();
    }

    void keyWaitTimedOut() {
        keyWaitTimeouts.incrementAndGet();
    }

    void recordFailed() {
        recordsFailed.incrementAndGet();
    }

    void recordDropped() {
        recordsDropped.incrementAndGet();
    }

    void sendRefused() {
        sendsRefused.incrementAndGet();
    }

    void controlSendFailed() {
        controlSendFailures.incrementAndGet();
    }

    void keyEnvelopesUnacknowledged(long n) {
        keyEnvelopesUnacknowledged.addAndGet(n);
    }

    long keyEnvelopesUnacknowledged() {
        return keyEnvelopesUnacknowledged.get();
    }

    @Override
    public void close() {
        metrics.close();
    }
}
