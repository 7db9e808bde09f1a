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
 *
 * <p>With {@code e2ee.keys=tokenize} it is also the key serializer: {@code
 * key.serializer=dev.kafkae2ee.EncryptingSerializer} wraps {@code e2ee.inner.key.serializer} and
 * returns the key's token (docs/FORMAT.md section 13). The value serializer then seals the record
 * with the real key, which it receives from the key serializer of the same send through a
 * thread-local {@link KeyHandoff}: KafkaProducer.doSend calls the key serializer and then the value
 * serializer, on the calling thread, one right after the other, with the same record's Headers
 * object (kafka-clients 4.x), and nothing else can hand the value serializer the key. The real key
 * never goes into a header, not even for that instant.
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

    /**
     * What the key serializer of a send leaves for the value serializer of the same send: the
     * record's Headers object (which send), the topic, and the real key with its token, or no key
     * (null, or a topic that is not protected). Taken (and removed) by the value serializer.
     */
    static final class KeyHandoff {
        final Headers headers;
        final String topic;
        /** The real key's bytes, or null if the key goes as it is. */
        final byte[] key;
        /** The array the key serializer returned: what goes on the wire as the key. */
        final byte[] token;
        /** The real key's array is ours alone (the inner serializer made it): wiped once sealed. */
        final boolean wipe;

        KeyHandoff(Headers headers, String topic, byte[] key, byte[] token, boolean wipe) {
            this.headers = headers;
            this.topic = topic;
            this.key = key;
            this.token = token;
            this.wipe = wipe;
        }
    }

    private static final ThreadLocal<KeyHandoff> HANDOFF = new ThreadLocal<>();

    private Serializer<T> inner;
    private boolean innerIsFresh;
    private Engines.Lease lease;
    private SealedHeaders.Policy headerPolicy;
    /** e2ee.keys=tokenize. */
    private boolean tokenize;
    /** This instance is the key serializer. */
    private boolean isKey;

    @Override
    @SuppressWarnings("unchecked")
    public void configure(Map<String, ?> configs, boolean isKey) {
        E2eeConfig config = new E2eeConfig(configs);
        tokenize = "tokenize".equals(config.getString(E2eeConfig.KEYS));
        this.isKey = isKey;
        if (isKey && !tokenize) {
            throw new ConfigException("key.serializer", EncryptingSerializer.class.getName(),
                    "kafka-e2ee serializes keys only to tokenize them (" + E2eeConfig.KEYS + "=tokenize); with "
                            + E2eeConfig.KEYS + "=clear set key.serializer to your key serializer itself and "
                            + EncryptingSerializer.class.getName() + " as value.serializer");
        }
        if (!isKey && tokenize && !namesThisClass(configs.get("key.serializer"))) {
            throw new ConfigException("key.serializer", String.valueOf(configs.get("key.serializer")),
                    "with " + E2eeConfig.KEYS + "=tokenize the record key must be tokenized: set key.serializer="
                            + EncryptingSerializer.class.getName() + " and " + E2eeConfig.INNER_KEY_SERIALIZER
                            + " to the serializer of your keys (e.g. "
                            + "org.apache.kafka.common.serialization.StringSerializer), or set "
                            + E2eeConfig.KEYS + "=clear");
        }
        config.refuseConsumerOnly(EncryptingSerializer.class.getName());
        String innerProperty = isKey ? E2eeConfig.INNER_KEY_SERIALIZER : E2eeConfig.INNER_VALUE_SERIALIZER;
        String what = isKey ? "keys" : "values";
        Class<?> innerClass = config.getClass(innerProperty);
        if (innerClass == null) {
            throw new ConfigException(innerProperty + " is required with " + (isKey ? "key" : "value")
                    + ".serializer=" + EncryptingSerializer.class.getName() + ": set it to the serializer of your "
                    + what + ", e.g. org.apache.kafka.common.serialization.StringSerializer");
        }
        if (!Serializer.class.isAssignableFrom(innerClass) || innerClass == EncryptingSerializer.class) {
            throw new ConfigException(innerProperty, innerClass.getName(),
                    "is not a Serializer (or is this class itself); name the serializer of your " + what);
        }
        Serializer<T> created = Utils.newInstance(innerClass, Serializer.class);
        created.configure(configs, isKey);
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

    /** Whether a key.serializer setting (a Class or a class name) is this class. */
    private static boolean namesThisClass(Object setting) {
        String name = setting instanceof Class ? ((Class<?>) setting).getName()
                : setting == null ? "" : String.valueOf(setting).trim();
        return EncryptingSerializer.class.getName().equals(name);
    }

    /**
     * The key serializer: the key's token, having left the real key for the value serializer of
     * this send. Null keys, and keys of topics that are not protected, go as they are.
     */
    private byte[] serializeKey(String topic, Headers headers, T data) {
        HANDOFF.remove(); // never leave one send's key to another
        byte[] bytes = inner.serialize(topic, headers, data);
        if (bytes == null || !lease.engine.isProtected(topic)) {
            HANDOFF.set(new KeyHandoff(headers, topic, null, null, false));
            return bytes;
        }
        byte[] token;
        try {
            token = RecordCrypto.tokenize(lease, topic, bytes);
        } catch (E2eeException e) {
            lease.metrics.sendRefused();
            throw new SerializationException("kafka-e2ee could not tokenize the key of a record for topic '" + topic
                    + "' (" + E2eeConfig.KEYS + "=tokenize), so it was not sent: " + e.getMessage(), e);
        }
        HANDOFF.set(new KeyHandoff(headers, topic, bytes, token, innerIsFresh));
        return token;
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
        if (isKey) {
            return serializeKey(topic, headers, data);
        }
        KeyHandoff key = null;
        if (tokenize) {
            key = HANDOFF.get();
            HANDOFF.remove();
            if (key == null || key.headers != headers || !key.topic.equals(topic)) {
                // Not this send's key serializer (a serializer called by hand, or another wrapper in
                // between): the key may be clear, so nothing is sent.
                throw new SerializationException("kafka-e2ee could not seal a record for topic '" + topic + "': "
                        + E2eeConfig.KEYS + "=tokenize, and its key was not tokenized by key.serializer="
                        + EncryptingSerializer.class.getName() + " in the same send; the record was not sent");
            }
        }
        byte[] bytes = inner.serialize(topic, headers, data);
        RecordCrypto.strip(headers); // a header from elsewhere must not ride along
        if (key != null && key.key != null) {
            return sealTokenized(topic, headers, key, bytes);
        }
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

    /**
     * Seals a record whose key the key serializer tokenized: value (an empty one for a tombstone,
     * which stays null on the wire, docs/FORMAT.md 13.5), headers and real key. The token the engine
     * seals against must be the one the key serializer returned, or nothing is sent.
     */
    private byte[] sealTokenized(String topic, Headers headers, KeyHandoff key, byte[] bytes) {
        byte[] value = bytes == null ? new byte[0] : innerIsFresh ? bytes : bytes.clone();
        List<Header> app = headerPolicy.seal ? SealedHeaders.application(headers) : List.of();
        Engine.Tokenized sealed;
        try {
            sealed = RecordCrypto.sealTokenized(lease, topic, key.key, value,
                    app.isEmpty() ? null : SealedHeaders.encode(app, headerPolicy.clear));
        } catch (E2eeException e) {
            throw new SerializationException("kafka-e2ee could not encrypt a record for topic '" + topic
                    + "', so it was not sent: " + e.getMessage(), e);
        } finally {
            if (key.wipe) {
                Arrays.fill(key.key, (byte) 0);
            }
        }
        if (!Arrays.equals(sealed.token, key.token)) {
            // The token secret changed between the two serializers (a rotation), or the key's
            // bytes were changed on the way: the key on the wire would not be the sealed one.
            throw new SerializationException("kafka-e2ee could not seal a record for topic '" + topic + "': the "
                    + "key's token changed between key and value serialization (was the topic's token secret "
                    + "rotated?); the record was not sent, send it again");
        }
        if (sealed.sealedHeaders != null) {
            SealedHeaders.applySealed(headers, headerPolicy.clear, sealed.header, sealed.sealedHeaders);
        } else {
            headers.add(RecordCrypto.HEADER, sealed.header);
        }
        headers.add(RecordCrypto.SEALED_KEY, sealed.sealedKey);
        return bytes == null ? null : value;
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
