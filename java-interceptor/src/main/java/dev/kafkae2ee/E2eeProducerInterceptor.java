package dev.kafkae2ee;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.producer.ProducerInterceptor;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The producer hook for clients whose serializers are fixed (Kafka's console and perf tools):
 * {@code interceptor.classes=dev.kafkae2ee.E2eeProducerInterceptor}. Encrypts byte[] and String
 * values of protected topics and adds the {@code e2ee} header.
 *
 * <p>It never throws: Kafka would log the exception and send the record unencrypted. When it
 * cannot encrypt, it returns a record whose value is a {@link NotEncrypted} marker instead of the
 * plaintext; no value serializer accepts it, so {@code send()} fails with SerializationException
 * and the plaintext never leaves the process.
 */
public class E2eeProducerInterceptor<K, V> implements ProducerInterceptor<K, V> {
    private static final Logger log = LoggerFactory.getLogger(E2eeProducerInterceptor.class);

    /** Stands in for a value that could not be encrypted; holds nothing of it. */
    public static final class NotEncrypted {
        private final String reason;

        NotEncrypted(String reason) {
            this.reason = reason;
        }

        @Override
        public String toString() {
            return "kafka-e2ee: record not encrypted, not sent (" + reason + ")";
        }
    }

    private Engines.Lease lease;
    private InterceptorValues values;
    private SealedHeaders.Policy headerPolicy;
    /** e2ee.keys=tokenize: byte[] keys of protected topics are replaced by their tokens. */
    private boolean tokenize;

    @Override
    public void configure(Map<String, ?> configs) {
        values = InterceptorValues.of(configs, "value.serializer",
                "org.apache.kafka.common.serialization.StringSerializer",
                "org.apache.kafka.common.serialization.ByteArraySerializer",
                "value.serializer=dev.kafkae2ee.EncryptingSerializer");
        E2eeConfig config = new E2eeConfig(configs);
        config.refuseConsumerOnly(E2eeProducerInterceptor.class.getName());
        headerPolicy = SealedHeaders.Policy.of(config);
        tokenize = "tokenize".equals(config.getString(E2eeConfig.KEYS));
        Object clientId = configs.get("client.id");
        boolean streams = clientId != null && String.valueOf(clientId).contains("-StreamThread-");
        if (tokenize) {
            // The interceptor can put a token in place of a key only if the key is bytes already.
            Object keySerializer = configs.get("key.serializer");
            String name = keySerializer instanceof Class ? ((Class<?>) keySerializer).getName()
                    : String.valueOf(keySerializer).trim();
            if (!"org.apache.kafka.common.serialization.ByteArraySerializer".equals(name)) {
                throw new org.apache.kafka.common.config.ConfigException("key.serializer", name,
                        "with " + E2eeConfig.KEYS + "=tokenize, " + E2eeProducerInterceptor.class.getName()
                                + " tokenizes byte[] keys only: set key.serializer="
                                + "org.apache.kafka.common.serialization.ByteArraySerializer, or use key.serializer="
                                + EncryptingSerializer.class.getName() + " with " + E2eeConfig.INNER_KEY_SERIALIZER);
            }
        }
        lease = Engines.acquire(configs, config, true);
        // A Streams producer (client.id <client id>-StreamThread-<n>-producer): its app may use the
        // interceptors without E2eeSerde, and must still hear that its keys are plaintext.
        if (streams && tokenize) {
            E2eeSerde.warnTokenizedJoins();
        } else if (streams) {
            E2eeSerde.warnPlaintextKeys();
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public ProducerRecord<K, V> onSend(ProducerRecord<K, V> record) {
        try {
            Object value = record.value();
            if (!lease.engine.isProtected(record.topic())) {
                return record; // unprotected topics pass
            }
            if (tokenize && record.key() != null) {
                return tokenized(record, value);
            }
            if (value == null) {
                return record; // tombstones stay tombstones
            }
            byte[] bytes;
            if (value instanceof byte[]) {
                bytes = ((byte[]) value).clone(); // the app still owns its array
            } else if (value instanceof String && values == InterceptorValues.STRING) {
                bytes = ((String) value).getBytes(StandardCharsets.UTF_8);
            } else {
                return refuse(record, "a value of type " + value.getClass().getName() + " with this value serializer");
            }
            RecordHeaders headers = new RecordHeaders(record.headers().toArray());
            // Sealed application headers (docs/FORMAT.md section 12), unless there are none.
            List<Header> app = headerPolicy.seal ? SealedHeaders.application(headers) : List.of();
            if (app.isEmpty()) {
                byte[] header = lease.engine.seal(record.topic(), Engine.BIND_UNBOUND, null, bytes);
                RecordCrypto.strip(headers);
                headers.add(RecordCrypto.HEADER, header);
            } else {
                byte[] out = lease.engine.sealRecord(record.topic(), Engine.BIND_UNBOUND, null, bytes,
                        SealedHeaders.encode(app, headerPolicy.clear));
                SealedHeaders.applySealed(headers, headerPolicy.clear, Arrays.copyOf(out, Engine.HEADER_LEN),
                        Arrays.copyOfRange(out, Engine.HEADER_LEN, out.length));
            }
            Object sealed = value instanceof byte[] ? bytes : new String(bytes, StandardCharsets.ISO_8859_1);
            return new ProducerRecord<>(record.topic(), record.partition(), record.timestamp(), record.key(),
                    (V) sealed, headers);
        } catch (Throwable t) {
            return refuse(record, t instanceof E2eeException ? t.getMessage() : t.toString());
        }
    }

    /**
     * A record of a protected topic with a key, under e2ee.keys=tokenize: the key becomes its token
     * and travels sealed in e2ee.k (docs/FORMAT.md section 13). A tombstone gets an e2ee header
     * sealing an empty value and stays null (13.5).
     */
    @SuppressWarnings("unchecked")
    private ProducerRecord<K, V> tokenized(ProducerRecord<K, V> record, Object value) {
        if (!(record.key() instanceof byte[])) {
            return refuse(record, "e2ee.keys=tokenize needs byte[] keys here, and this key is a "
                    + record.key().getClass().getName());
        }
        byte[] bytes;
        if (value == null) {
            bytes = new byte[0];
        } else if (value instanceof byte[]) {
            bytes = ((byte[]) value).clone(); // the app still owns its array
        } else if (value instanceof String && values == InterceptorValues.STRING) {
            bytes = ((String) value).getBytes(StandardCharsets.UTF_8);
        } else {
            return refuse(record, "a value of type " + value.getClass().getName() + " with this value serializer");
        }
        RecordHeaders headers = new RecordHeaders(record.headers().toArray());
        List<Header> app = headerPolicy.seal ? SealedHeaders.application(headers) : List.of();
        Engine.Tokenized sealed = RecordCrypto.sealTokenized(lease, record.topic(), (byte[]) record.key(), bytes,
                app.isEmpty() ? null : SealedHeaders.encode(app, headerPolicy.clear));
        if (sealed.sealedHeaders != null) {
            SealedHeaders.applySealed(headers, headerPolicy.clear, sealed.header, sealed.sealedHeaders);
        } else {
            RecordCrypto.strip(headers);
            headers.add(RecordCrypto.HEADER, sealed.header);
        }
        headers.add(RecordCrypto.SEALED_KEY, sealed.sealedKey);
        Object out = value == null ? null
                : value instanceof byte[] ? bytes : new String(bytes, StandardCharsets.ISO_8859_1);
        return new ProducerRecord<>(record.topic(), record.partition(), record.timestamp(), (K) sealed.token,
                (V) out, headers);
    }

    @SuppressWarnings("unchecked")
    private ProducerRecord<K, V> refuse(ProducerRecord<K, V> record, String reason) {
        try {
            if (lease != null) {
                lease.metrics.sendRefused();
            }
            log.error("kafka-e2ee could not encrypt a record for topic '{}'; its send fails and nothing of it "
                    + "is sent: {}", record.topic(), reason);
        } catch (Throwable ignored) {
            // logging must not make onSend throw
        }
        return new ProducerRecord<>(record.topic(), record.partition(), record.timestamp(), record.key(),
                (V) new NotEncrypted(reason), new RecordHeaders());
    }

    @Override
    public void onAcknowledgement(RecordMetadata metadata, Exception exception) {}

    @Override
    public void close() {
        if (lease != null) {
            lease.close();
        }
    }
}
