package dev.kafkae2ee;

import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.utils.Utils;

/**
 * The recommended consumer hook: {@code value.deserializer=dev.kafkae2ee.DecryptingDeserializer}
 * decrypts a record's value, strips the {@code e2ee} header and hands the plaintext to the
 * deserializer named by {@code e2ee.inner.value.deserializer}. A record it cannot decrypt (no key
 * after {@code e2ee.key.wait.ms}, a credential that may not read the topic, a missing header on a
 * protected topic, a forged or damaged record) fails: {@code poll()} throws
 * RecordDeserializationException naming its partition and offset. Ciphertext never reaches the
 * inner deserializer or the app.
 */
public class DecryptingDeserializer<T> implements Deserializer<T> {
    /**
     * How long a record whose key is still missing waits when it is parsed again: an app that polls
     * again in a loop after the error is paced by this instead of spinning a core (and Kafka logging
     * an error per attempt); a key that arrives ends the wait at once.
     */
    static final long RETRY_WAIT_MS = 1_000;
    private Deserializer<T> inner;
    private Engines.Lease lease;
    /** Configured as key.deserializer: only the tokenized-key guard (no engine). */
    private boolean isKey;
    /**
     * The last record that failed. Kafka's fetcher parses a failing record again (on the next
     * poll, and at once when records came before it in the same batch), so without this one
     * record would be opened, waited for and counted two or more times.
     */
    private Failure lastFailure;

    /** A failed record, known by where it sits in the fetch buffer Kafka keeps for it. */
    private static final class Failure {
        final String topic;
        final WeakReference<byte[]> buffer;
        final int position;
        final SerializationException error;
        /**
         * A missing key may have arrived since: such a record is tried again (waiting at most
         * {@link #RETRY_WAIT_MS}), but not counted again.
         */
        final boolean retry;

        Failure(String topic, ByteBuffer data, SerializationException error, boolean retry) {
            this.topic = topic;
            this.buffer = new WeakReference<>(data.array());
            this.position = data.arrayOffset() + data.position();
            this.error = error;
            this.retry = retry;
        }

        boolean sameRecord(String topic, ByteBuffer data) {
            return data.hasArray() && buffer.get() == data.array()
                    && position == data.arrayOffset() + data.position() && this.topic.equals(topic);
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public void configure(Map<String, ?> configs, boolean isKey) {
        if (isKey) {
            configureKeyGuard(configs);
            return;
        }
        E2eeConfig config = new E2eeConfig(configs);
        Class<?> innerClass = config.getClass(E2eeConfig.INNER_VALUE_DESERIALIZER);
        if (innerClass == null) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_DESERIALIZER + " is required with "
                    + "value.deserializer=" + DecryptingDeserializer.class.getName()
                    + ": set it to the deserializer of your values, e.g. "
                    + "org.apache.kafka.common.serialization.StringDeserializer");
        }
        if (!Deserializer.class.isAssignableFrom(innerClass) || innerClass == DecryptingDeserializer.class) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_DESERIALIZER, innerClass.getName(),
                    "is not a Deserializer (or is this class itself); name the deserializer of your values");
        }
        Deserializer<T> created = Utils.newInstance(innerClass, Deserializer.class);
        created.configure(configs, false);
        try {
            lease = Engines.acquire(configs, config, false);
        } catch (RuntimeException e) {
            Utils.closeQuietly(created, "inner deserializer");
            throw e;
        }
        inner = created;
    }

    /**
     * As key.deserializer: a guard, not a decryptor. Restoring a tokenized key here would need the
     * sealed key opened before the value is seen (the consumer deserializes the key first, and no
     * deserializer sees both); the consumer interceptor sees whole records and restores byte[]
     * keys. But only the key deserializer sees every tokenized record: Kafka does not call the
     * value deserializer for a null value, so a tokenized tombstone would reach the application
     * with its token as key. So this fails every record whose key is a token, and hands other keys
     * to e2ee.inner.key.deserializer.
     */
    @SuppressWarnings("unchecked")
    private void configureKeyGuard(Map<String, ?> configs) {
        isKey = true;
        E2eeConfig config = new E2eeConfig(configs);
        Class<?> innerClass = config.getClass(E2eeConfig.INNER_KEY_DESERIALIZER);
        if (innerClass == null) {
            throw new ConfigException(E2eeConfig.INNER_KEY_DESERIALIZER + " is required with key.deserializer="
                    + DecryptingDeserializer.class.getName() + ": set it to the deserializer of your keys. (This "
                    + "key deserializer refuses tokenized keys, e2ee.keys=tokenize; to read them use "
                    + "interceptor.classes=" + E2eeConsumerInterceptor.class.getName() + " with key.deserializer="
                    + "org.apache.kafka.common.serialization.ByteArrayDeserializer.)");
        }
        if (!Deserializer.class.isAssignableFrom(innerClass) || innerClass == DecryptingDeserializer.class) {
            throw new ConfigException(E2eeConfig.INNER_KEY_DESERIALIZER, innerClass.getName(),
                    "is not a Deserializer (or is this class itself); name the deserializer of your keys");
        }
        Deserializer<T> created = Utils.newInstance(innerClass, Deserializer.class);
        created.configure(configs, true);
        inner = created;
    }

    /** The key guard: a tokenized record fails (E2eeConsumerInterceptor restores its key). */
    private void refuseTokenizedKey(String topic, Headers headers) {
        if (headers == null || headers.lastHeader(RecordCrypto.HEADER) == null
                && headers.lastHeader(RecordCrypto.SEALED_KEY) == null) {
            return;
        }
        byte[] header;
        try {
            header = RecordCrypto.header(headers);
        } catch (E2eeException e) {
            throw new SerializationException("kafka-e2ee could not read a record of topic '" + topic
                    + "' (" + e.kind() + "): " + e.getMessage(), e);
        }
        if (RecordCrypto.tokenized(header, headers)) {
            throw tokenizedKey(topic);
        }
    }

    @Override
    public T deserialize(String topic, byte[] data) {
        if (isKey) {
            return inner.deserialize(topic, data);
        }
        if (data != null && lease.isProtected(topic)) {
            throw new SerializationException("kafka-e2ee: a record of protected topic '" + topic
                    + "' must be deserialized with its headers");
        }
        return inner.deserialize(topic, data);
    }

    /** Decrypts {@code data} in place (the consumer hands each call its own array). */
    @Override
    public T deserialize(String topic, Headers headers, byte[] data) {
        if (isKey) {
            refuseTokenizedKey(topic, headers);
            return inner.deserialize(topic, headers, data);
        }
        if (data == null) {
            refuseTokenizedTombstone(topic, headers);
            return inner.deserialize(topic, headers, (byte[]) null);
        }
        open(topic, headers, data, true);
        return inner.deserialize(topic, headers, data);
    }

    /** What the consumer calls: one copy out of the fetch buffer, decrypted in place. */
    @Override
    public T deserialize(String topic, Headers headers, ByteBuffer data) {
        if (isKey) {
            refuseTokenizedKey(topic, headers);
            return inner.deserialize(topic, headers, data);
        }
        if (data == null) {
            refuseTokenizedTombstone(topic, headers);
            return inner.deserialize(topic, headers, (ByteBuffer) null);
        }
        Failure last = lastFailure;
        boolean again = last != null && last.sameRecord(topic, data);
        if (again && !last.retry) {
            throw last.error; // already failed, counted and reported: not opened again
        }
        byte[] value = new byte[data.remaining()];
        data.duplicate().get(value);
        try {
            open(topic, headers, value, !again);
        } catch (SerializationException e) {
            if (data.hasArray()) {
                boolean pending = e.getCause() instanceof E2eeException
                        && ((E2eeException) e.getCause()).kind() == E2eeException.Kind.KEY_PENDING;
                lastFailure = new Failure(topic, data, e, pending);
            }
            throw e;
        }
        if (again) {
            lastFailure = null;
        }
        return inner.deserialize(topic, headers, value);
    }

    /**
     * A tombstone with a tokenized key (docs/FORMAT.md 13.5) would hand the app the token as its
     * key: it fails instead, as every tokenized record does here. (KafkaConsumer itself never calls
     * a value deserializer for a null value: the key guard, key.deserializer=this class, is what
     * stops those; this is for callers that do.)
     */
    private void refuseTokenizedTombstone(String topic, Headers headers) {
        if (headers == null || headers.lastHeader(RecordCrypto.HEADER) == null
                && headers.lastHeader(RecordCrypto.SEALED_KEY) == null) {
            return; // an ordinary tombstone (docs/FORMAT.md section 9)
        }
        byte[] header;
        try {
            header = RecordCrypto.header(headers);
        } catch (E2eeException e) {
            throw new SerializationException("kafka-e2ee could not read a record of topic '" + topic
                    + "' (" + e.kind() + "): " + e.getMessage(), e);
        }
        if (RecordCrypto.tokenized(header, headers)) {
            lease.metrics.recordFailed();
            throw tokenizedKey(topic);
        }
    }

    private static SerializationException tokenizedKey(String topic) {
        return new SerializationException("kafka-e2ee could not read a record of topic '" + topic + "': its key "
                + "is tokenized (a producer with e2ee.keys=tokenize), and a deserializer never sees the key, so "
                + "it cannot give the application the real key. Read this topic with interceptor.classes="
                + E2eeConsumerInterceptor.class.getName() + " and key.deserializer="
                + "org.apache.kafka.common.serialization.ByteArrayDeserializer");
    }

    /**
     * Decrypts in place. {@code first}: the first attempt at this record, which waits for a
     * missing key and counts a failure in records-failed.
     */
    private void open(String topic, Headers headers, byte[] value, boolean first) {
        byte[] header;
        try {
            header = RecordCrypto.header(headers);
        } catch (E2eeException e) {
            // Fails like any record that does not open: a SerializationException for the consumer.
            if (first) {
                lease.engine.noteRejected();
                lease.metrics.recordFailed();
            }
            throw new SerializationException("kafka-e2ee could not decrypt a record of topic '" + topic
                    + "' (" + e.kind() + "): " + e.getMessage(), e);
        }
        if (RecordCrypto.tokenized(header, headers)) {
            if (first) {
                lease.metrics.recordFailed();
            }
            throw tokenizedKey(topic);
        }
        if (header != null && RecordCrypto.binding(header) != Engine.BIND_UNBOUND) {
            // A deserializer never sees the record key, so it cannot check a key-bound record.
            if (first) {
                lease.metrics.recordFailed();
            }
            throw new SerializationException("kafka-e2ee could not decrypt a record of topic '" + topic
                    + "': its producer bound the record key (a librdkafka client with e2ee.bind.key=true), "
                    + "and a deserializer cannot see keys. Read this topic with "
                    + "interceptor.classes=dev.kafkae2ee.E2eeConsumerInterceptor, or set e2ee.bind.key=false "
                    + "on its librdkafka producers.");
        }
        List<Header> restored = null;
        try {
            long wait = first ? lease.keyWaitMs : Math.min(lease.keyWaitMs, RETRY_WAIT_MS);
            // Sealed application headers (docs/FORMAT.md section 12): opened, checked and
            // restored with the value.
            byte[][] sealed = headers == null ? SealedHeaders.NONE : SealedHeaders.sealedValues(headers);
            if (SealedHeaders.present(header, sealed)) {
                byte[] visible = SealedHeaders.encode(SealedHeaders.application(headers), Set.of());
                byte[] list = RecordCrypto.openRecord(lease, topic, header, sealed, visible, Engine.BIND_UNBOUND,
                        null, value, wait);
                if (list == null || list.length == 0) {
                    throw new E2eeException(E2eeException.Kind.BAD_RECORD, null,
                            "the record has an e2ee.h header but no sealed headers");
                }
                restored = SealedHeaders.decode(list, 1);
            } else {
                RecordCrypto.open(lease, topic, header, Engine.BIND_UNBOUND, null, value, wait);
            }
        } catch (E2eeException e) {
            if (first) {
                lease.metrics.recordFailed();
            }
            throw new SerializationException("kafka-e2ee could not decrypt a record of topic '" + topic
                    + "' (" + e.kind() + "): " + e.getMessage(), e);
        }
        if (restored != null) {
            if (!SealedHeaders.replace(headers, restored)) {
                throw new SerializationException("kafka-e2ee could not restore the sealed headers of a record of "
                        + "topic '" + topic + "': its headers are read-only");
            }
        } else if (header != null) {
            RecordCrypto.strip(headers);
        }
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
