package dev.kafkae2ee;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Utils;

/**
 * The recommended producer hook: {@code value.serializer=dev.kafkae2ee.EncryptingSerializer}
 * wraps the serializer named by {@code e2ee.inner.value.serializer} (String, JSON, Avro, ...),
 * encrypts its bytes and adds the {@code e2ee} header. A record it cannot encrypt fails with
 * SerializationException from {@code send()}; nothing is sent.
 */
public class EncryptingSerializer<T> implements Serializer<T> {
    /** Kafka's serializers known to return a fresh array, which is encrypted in place. */
    private static final Set<String> FRESH_OUTPUT = Set.of(
            "org.apache.kafka.common.serialization.StringSerializer",
            "org.apache.kafka.common.serialization.IntegerSerializer",
            "org.apache.kafka.common.serialization.LongSerializer",
            "org.apache.kafka.common.serialization.ShortSerializer",
            "org.apache.kafka.common.serialization.FloatSerializer",
            "org.apache.kafka.common.serialization.DoubleSerializer",
            "org.apache.kafka.common.serialization.UUIDSerializer",
            "org.apache.kafka.connect.json.JsonSerializer");

    private Serializer<T> inner;
    private boolean innerIsFresh;
    private Engines.Lease lease;
    private SealedHeaders.Policy headerPolicy;

    @Override
    @SuppressWarnings("unchecked")
    public void configure(Map<String, ?> configs, boolean isKey) {
        if (isKey) {
            throw new ConfigException("key.serializer", EncryptingSerializer.class.getName(),
                    "kafka-e2ee encrypts record values only; set it as value.serializer");
        }
        E2eeConfig config = new E2eeConfig(configs);
        config.refuseConsumerOnly(EncryptingSerializer.class.getName());
        Class<?> innerClass = config.getClass(E2eeConfig.INNER_VALUE_SERIALIZER);
        if (innerClass == null) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_SERIALIZER + " is required with value.serializer="
                    + EncryptingSerializer.class.getName() + ": set it to the serializer of your values, e.g. "
                    + "org.apache.kafka.common.serialization.StringSerializer");
        }
        if (!Serializer.class.isAssignableFrom(innerClass) || innerClass == EncryptingSerializer.class) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_SERIALIZER, innerClass.getName(),
                    "is not a Serializer (or is this class itself); name the serializer of your values");
        }
        Serializer<T> created = Utils.newInstance(innerClass, Serializer.class);
        created.configure(configs, false);
        try {
            lease = Engines.acquire(configs, config, true);
        } catch (RuntimeException e) {
            Utils.closeQuietly(created, "inner serializer");
            throw e;
        }
        inner = created;
        headerPolicy = SealedHeaders.Policy.of(config);
        innerIsFresh = FRESH_OUTPUT.contains(innerClass.getName());
    }

    @Override
    public byte[] serialize(String topic, T data) {
        if (lease != null && lease.engine.isProtected(topic)) {
            throw new SerializationException("kafka-e2ee: a record of protected topic '" + topic
                    + "' must be serialized with its headers (serialize(topic, headers, data))");
        }
        return inner.serialize(topic, data);
    }

    @Override
    public byte[] serialize(String topic, Headers headers, T data) {
        byte[] bytes = inner.serialize(topic, headers, data);
        RecordCrypto.strip(headers); // a header from elsewhere must not ride along
        if (bytes == null || !lease.engine.isProtected(topic)) {
            return bytes; // a tombstone stays a tombstone
        }
        if (!innerIsFresh) {
            bytes = bytes.clone(); // the inner serializer may hand back the caller's own array
        }
        byte[] header;
        // Sealed application headers (docs/FORMAT.md section 12), unless there are none.
        List<Header> app = headerPolicy.seal ? SealedHeaders.application(headers) : List.of();
        try {
            if (app.isEmpty()) {
                header = lease.engine.seal(topic, Engine.BIND_UNBOUND, null, bytes);
            } else {
                byte[] out = lease.engine.sealRecord(topic, Engine.BIND_UNBOUND, null, bytes,
                        SealedHeaders.encode(app, headerPolicy.clear));
                SealedHeaders.applySealed(headers, headerPolicy.clear, Arrays.copyOf(out, Engine.HEADER_LEN),
                        Arrays.copyOfRange(out, Engine.HEADER_LEN, out.length));
                return bytes;
            }
        } catch (E2eeException e) {
            throw new SerializationException("kafka-e2ee could not encrypt a record for topic '" + topic
                    + "', so it was not sent: " + e.getMessage(), e);
        }
        headers.add(RecordCrypto.HEADER, header);
        return bytes;
    }

    @Override
    public void close() {
        try {
            if (inner != null) {
                inner.close();
            }
        } finally {
            if (lease != null) {
                lease.close();
            }
        }
    }
}
