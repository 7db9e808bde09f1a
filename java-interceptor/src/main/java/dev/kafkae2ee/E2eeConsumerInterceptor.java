package dev.kafkae2ee;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerInterceptor;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The consumer hook for clients whose deserializers are fixed (Kafka's console and perf tools):
 * {@code interceptor.classes=dev.kafkae2ee.E2eeConsumerInterceptor}. Decrypts byte[] and String
 * values and strips the {@code e2ee} header.
 *
 * <p>The interceptor API has no error channel (Kafka swallows its exceptions and hands the app the
 * records as they were, i.e. ciphertext). So it never throws, and a record it cannot decrypt after
 * waiting up to {@code e2ee.key.wait.ms} for its key is <b>dropped</b>: logged at ERROR with topic,
 * partition and offset, counted in {@code records-dropped}, and left out of what {@code poll()}
 * returns, while the batch's next offsets are kept so the consumer moves on. Loss instead of leak:
 * use the DecryptingDeserializer where a record must fail visibly.
 *
 * <p>Except in a Kafka Streams restore or global consumer (see {@link StreamsRestore}): there a
 * dropped record is a silently wrong state store, so it never drops. It waits for a missing key,
 * without end, naming it in the log; any other failure stops the consumer's thread.
 */
public class E2eeConsumerInterceptor<K, V> implements ConsumerInterceptor<K, V> {
    private static final Logger log = LoggerFactory.getLogger(E2eeConsumerInterceptor.class);

    private Engines.Lease lease;
    private InterceptorValues values;
    /** Non-null in a Streams restore or global consumer: records are never dropped. */
    private StreamsRestore restore;

    @Override
    public void configure(Map<String, ?> configs) {
        values = InterceptorValues.of(configs, "value.deserializer",
                "org.apache.kafka.common.serialization.StringDeserializer",
                "org.apache.kafka.common.serialization.ByteArrayDeserializer",
                "value.deserializer=dev.kafkae2ee.DecryptingDeserializer");
        lease = Engines.acquire(configs, new E2eeConfig(configs), false);
        restore = StreamsRestore.of(configs, lease);
    }

    @Override
    public ConsumerRecords<K, V> onConsume(ConsumerRecords<K, V> records) {
        Map<TopicPartition, OffsetAndMetadata> next = Map.of();
        try {
            next = Batches.nextOffsets(records);
            // Built only once a record is dropped or replaced: in the steady state every byte[]
            // value is decrypted in place and its header stripped in place, and the batch
            // itself is returned.
            Map<TopicPartition, List<ConsumerRecord<K, V>>> out = null;
            Set<String> keysGivenUp = new HashSet<>();
            for (TopicPartition tp : records.partitions()) {
                List<ConsumerRecord<K, V>> in = records.records(tp);
                List<ConsumerRecord<K, V>> kept = null;
                for (int i = 0; i < in.size(); i++) {
                    ConsumerRecord<K, V> r = in.get(i);
                    ConsumerRecord<K, V> opened = open(r, keysGivenUp);
                    if (opened != r && kept == null) {
                        kept = new ArrayList<>(in.subList(0, i));
                    }
                    if (kept != null && opened != null) {
                        kept.add(opened);
                    }
                }
                if (kept != null && out == null) {
                    out = new HashMap<>();
                    for (TopicPartition done : records.partitions()) {
                        if (done.equals(tp)) {
                            break;
                        }
                        out.put(done, records.records(done));
                    }
                }
                if (out != null) {
                    out.put(tp, kept != null ? kept : in);
                }
            }
            return out == null ? records : Batches.of(out, next);
        } catch (StreamsRestore.Stopped stop) {
            throw stop;
        } catch (Throwable t) {
            if (restore != null) {
                throw restore.stop(records.count() + " records", t.toString()); // an empty batch is loss
            }
            // Never return the input: it holds ciphertext.
            try {
                log.error("kafka-e2ee dropped a whole batch of {} records after an unexpected error", records.count(), t);
                lease.metrics.recordDropped();
            } catch (Throwable ignored) {
                // nothing more to do
            }
            try {
                return Batches.of(Map.of(), next);
            } catch (Throwable impossible) {
                return ConsumerRecords.empty(); // loses nextOffsets, never leaks
            }
        }
    }

    /**
     * The decrypted record (the record itself when its byte[] value was decrypted and its header
     * stripped in place), the record itself if it needs no decryption, or null to drop it.
     */
    @SuppressWarnings("unchecked")
    private ConsumerRecord<K, V> open(ConsumerRecord<K, V> r, Set<String> keysGivenUp) {
        try {
            Object value = r.value();
            if (value == null && (r.headers().lastHeader(RecordCrypto.HEADER) != null
                    || r.headers().lastHeader(RecordCrypto.SEALED_KEY) != null)) {
                // A tombstone with a tokenized key carries a header (docs/FORMAT.md 13.5): it must
                // be opened, or the app would get the token as its key.
                byte[] header;
                try {
                    header = RecordCrypto.header(r.headers());
                } catch (E2eeException e) {
                    lease.engine.noteRejected();
                    return drop(r, e.kind() + ": " + e.getMessage());
                }
                return RecordCrypto.tokenized(header, r.headers()) ? openTokenized(r, null, header, keysGivenUp) : r;
            }
            // Finds the e2ee header and strips it in place in one pass (one iterator per record).
            byte[] header;
            try {
                header = value == null ? null : RecordCrypto.take(r.headers());
            } catch (E2eeException e) {
                lease.engine.noteRejected();
                return drop(r, e.kind() + ": " + e.getMessage());
            }
            if (value != null && RecordCrypto.tokenized(header, r.headers())) {
                return openTokenized(r, value, header, keysGivenUp);
            }
            if (value != null && header == null && r.headers().lastHeader(SealedHeaders.NAME) != null) {
                // e2ee.h without an e2ee header (docs/FORMAT.md section 12.4), whatever the topic.
                lease.engine.noteRejected();
                return drop(r, "BAD_RECORD: the record has an e2ee.h header but no e2ee header");
            }
            if (value == null || (header == null && !lease.isProtected(r.topic()))) {
                return r;
            }
            byte[] bytes;
            if (value instanceof byte[]) {
                bytes = (byte[]) value; // the consumer's own fresh array: decrypted in place
            } else if (value instanceof String && values == InterceptorValues.STRING) {
                bytes = ((String) value).getBytes(StandardCharsets.ISO_8859_1);
            } else {
                return drop(r, "a value of type " + value.getClass().getName() + " cannot be decrypted here");
            }
            int binding = RecordCrypto.binding(header);
            byte[] key = binding == Engine.BIND_BYTES ? RecordCrypto.keyBytes(r.key()) : null;
            if (binding == Engine.BIND_BYTES && key == null) {
                binding = Engine.BIND_NULL; // the engine names the mismatch
            }
            // A key this batch already waited for in vain is not waited for again.
            long wait = !keysGivenUp.isEmpty() && keysGivenUp.contains(RecordCrypto.keyId(header))
                    ? 0 : lease.keyWaitMs;
            // Sealed application headers (docs/FORMAT.md section 12): opened, checked and
            // restored with the value. lastHeader allocates nothing on the usual path.
            if (SealedHeaders.present(header, SealedHeaders.NONE)
                    || r.headers().lastHeader(SealedHeaders.NAME) != null) {
                return openWithHeaders(r, value, bytes, header, binding, key, wait, keysGivenUp);
            }
            try {
                RecordCrypto.open(lease, r.topic(), header, binding, key, bytes, wait);
            } catch (E2eeException e) {
                if (restore == null) {
                    if (e.kind() == E2eeException.Kind.KEY_PENDING) {
                        keysGivenUp.add(RecordCrypto.keyId(header));
                    }
                    return drop(r, e.kind() + ": " + e.getMessage());
                }
                restore.openOrStop(r, header, binding, key, bytes, e); // returns once opened, or throws
            }
            if (value instanceof byte[] && (header == null || r.headers().lastHeader(RecordCrypto.HEADER) == null)) {
                return r;
            }
            RecordHeaders headers = new RecordHeaders(r.headers().toArray());
            headers.remove(RecordCrypto.HEADER);
            Object plain = value instanceof byte[] ? bytes : new String(bytes, StandardCharsets.UTF_8);
            return new ConsumerRecord<>(r.topic(), r.partition(), r.offset(), r.timestamp(), r.timestampType(),
                    r.serializedKeySize(), r.serializedValueSize(), r.key(), (V) plain, headers, r.leaderEpoch());
        } catch (StreamsRestore.Stopped stop) {
            throw stop;
        } catch (Throwable t) {
            return drop(r, t.toString());
        }
    }

    /**
     * A record with sealed headers: opened with them, and handed on with exactly the headers its
     * producer sealed (the e2ee, e2ee.h and clear copies, and any header added on the way, go).
     * In a Streams restore it waits for a missing key without end and stops on anything else, as
     * for any record.
     */
    @SuppressWarnings("unchecked")
    private ConsumerRecord<K, V> openWithHeaders(ConsumerRecord<K, V> r, Object value, byte[] bytes, byte[] header,
            int binding, byte[] key, long wait, Set<String> keysGivenUp) {
        byte[][] sealed = SealedHeaders.sealedValues(r.headers());
        byte[] visible = SealedHeaders.encode(SealedHeaders.application(r.headers()), Set.of());
        byte[] list;
        try {
            list = RecordCrypto.openRecord(lease, r.topic(), header, sealed, visible, binding, key, bytes, wait);
        } catch (E2eeException e) {
            if (restore != null) {
                // Waits without end for a missing key; stops on anything else.
                list = restore.openRecordOrStop(r, header, sealed, visible, binding, key, bytes, e);
            } else {
                if (e.kind() == E2eeException.Kind.KEY_PENDING) {
                    keysGivenUp.add(RecordCrypto.keyId(header));
                }
                return drop(r, e.kind() + ": " + e.getMessage());
            }
        }
        List<Header> restored = list == null || list.length == 0 ? null : SealedHeaders.decode(list, 1);
        if (restored == null) {
            return drop(r, "the record has an e2ee.h header but no sealed headers");
        }
        Object plain = value instanceof byte[] ? bytes : new String(bytes, StandardCharsets.UTF_8);
        if (value instanceof byte[] && SealedHeaders.replace(r.headers(), restored)) {
            return r;
        }
        return new ConsumerRecord<>(r.topic(), r.partition(), r.offset(), r.timestamp(), r.timestampType(),
                r.serializedKeySize(), r.serializedValueSize(), r.key(), (V) plain,
                new RecordHeaders(restored.toArray(new Header[0])), r.leaderEpoch());
    }

    /**
     * A record whose key is a token (docs/FORMAT.md section 13): opened whole (value, sealed
     * headers, sealed key) and handed on with its real key, or dropped. Only byte[] keys can be
     * replaced; a tombstone ({@code value} null) opens as an empty value and stays null.
     */
    @SuppressWarnings("unchecked")
    private ConsumerRecord<K, V> openTokenized(ConsumerRecord<K, V> r, Object value, byte[] header,
            Set<String> keysGivenUp) {
        if (!(r.key() instanceof byte[])) {
            return drop(r, "its key is tokenized (e2ee.keys=tokenize) and only byte[] keys can be restored by "
                    + "this interceptor: set key.deserializer=org.apache.kafka.common.serialization."
                    + "ByteArrayDeserializer");
        }
        byte[] wireKey = (byte[]) r.key();
        byte[] bytes;
        if (value == null) {
            bytes = new byte[0];
        } else if (value instanceof byte[]) {
            bytes = (byte[]) value;
        } else if (value instanceof String && values == InterceptorValues.STRING) {
            bytes = ((String) value).getBytes(StandardCharsets.ISO_8859_1);
        } else {
            return drop(r, "a value of type " + value.getClass().getName() + " cannot be decrypted here");
        }
        int binding = RecordCrypto.binding(header);
        long wait = header != null && keysGivenUp.contains(RecordCrypto.keyId(header)) ? 0 : lease.keyWaitMs;
        Engine.OpenedParts parts;
        try {
            parts = RecordCrypto.openParts(lease, r.topic(), header, SealedHeaders.sealedValues(r.headers()),
                    SealedHeaders.encode(SealedHeaders.application(r.headers()), Set.of()), wireKey,
                    RecordCrypto.sealedKeys(r.headers()), binding, binding == Engine.BIND_BYTES ? wireKey : null,
                    bytes, wait);
        } catch (E2eeException e) {
            if (e.kind() == E2eeException.Kind.KEY_PENDING && header != null) {
                keysGivenUp.add(RecordCrypto.keyId(header));
            }
            return drop(r, e.kind() + ": " + e.getMessage());
        }
        if (!parts.decrypted || parts.key == null) {
            // The engine opened it but restored no key: never hand the app the token.
            return drop(r, "the record's key is marked tokenized but no real key was restored");
        }
        List<Header> restored = parts.headers != null ? SealedHeaders.decode(parts.headers, 0)
                : SealedHeaders.application(r.headers());
        Object plain = value == null ? null : value instanceof byte[] ? bytes : new String(bytes, StandardCharsets.UTF_8);
        return new ConsumerRecord<>(r.topic(), r.partition(), r.offset(), r.timestamp(), r.timestampType(),
                r.serializedKeySize(), r.serializedValueSize(), (K) parts.key, (V) plain,
                new RecordHeaders(restored.toArray(new Header[0])), r.leaderEpoch());
    }

    private ConsumerRecord<K, V> drop(ConsumerRecord<K, V> r, String reason) {
        if (restore != null) {
            throw restore.stop("the record at " + r.topic() + "-" + r.partition() + " offset " + r.offset(), reason);
        }
        try {
            lease.metrics.recordDropped();
            log.error("kafka-e2ee dropped the record at {}-{} offset {}: it could not be decrypted ({}); "
                    + "the consumer moves past it", r.topic(), r.partition(), r.offset(), reason);
        } catch (Throwable ignored) {
            // logging must not make onConsume throw
        }
        return null;
    }

    @Override
    public void onCommit(Map<TopicPartition, OffsetAndMetadata> offsets) {}

    @Override
    public void close() {
        if (lease != null) {
            lease.close();
        }
    }
}
