package dev.kafkae2ee.perf;

import java.nio.ByteBuffer;
import java.security.GeneralSecurityException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.kafka.clients.consumer.ConsumerInterceptor;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.ProducerInterceptor;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serializer;

/**
 * The cipher-only ceilings of the Java paths for scripts/bench (docs/PERFORMANCE.md, "Cipher-only
 * ceilings"). NOT ENCRYPTION: the key is a constant in this file. Each class sits at the product
 * hook's own place (ProducerInterceptor.onSend, ConsumerInterceptor.onConsume,
 * Serializer.serialize(topic, headers, data), Deserializer.deserialize(topic, headers, ByteBuffer))
 * and does only AES-256-GCM over the value with the JDK's cipher (HotSpot's AES and GHASH
 * intrinsics): no engine, no JNI call, no header, no lookups. The JNI crossing is deliberately not in
 * the ceiling: the issue counts it among the costs that are ours to remove.
 *
 * <p>The value on the wire is IV (12 bytes, a counter) || ciphertext || tag (16 bytes): the JDK
 * refuses to reuse an IV, and without a header the IV and tag travel in the value (28 bytes, against
 * the product's e2ee header of 34). Every class refuses to configure unless the environment has
 * KAFKA_E2EE_BENCH_CEILING=not-encryption, so no client configuration alone can enable it.
 */
public final class Ceiling {
    static final String ENV = "KAFKA_E2EE_BENCH_CEILING";
    static final String ENV_VALUE = "not-encryption";
    static final int IV_LEN = 12;
    static final int TAG_LEN = 16;
    private static final SecretKeySpec KEY = new SecretKeySpec(new byte[32], "AES");

    private Ceiling() {}

    static void refuseUnlessBench(String what) {
        if (!ENV_VALUE.equals(System.getenv(ENV))) {
            throw new ConfigException(what + " is a benchmark instrument that does NOT encrypt (fixed key); it "
                    + "loads only with " + ENV + "=" + ENV_VALUE);
        }
    }

    /** One cipher per hook instance (a client calls each hook from one thread at a time). */
    static final class Aead {
        private final Cipher cipher;
        private final byte[] iv = new byte[IV_LEN];
        private long counter;

        Aead() {
            try {
                cipher = Cipher.getInstance("AES/GCM/NoPadding");
            } catch (GeneralSecurityException e) {
                throw new IllegalStateException(e);
            }
        }

        /** IV || AES-256-GCM(value) || tag, in a new array. */
        synchronized byte[] seal(byte[] value) {
            try {
                long c = ++counter;
                for (int i = 0; i < 8; i++) {
                    iv[4 + i] = (byte) (c >>> (8 * i));
                }
                cipher.init(Cipher.ENCRYPT_MODE, KEY, new GCMParameterSpec(TAG_LEN * 8, iv));
                byte[] out = new byte[IV_LEN + value.length + TAG_LEN];
                System.arraycopy(iv, 0, out, 0, IV_LEN);
                cipher.doFinal(value, 0, value.length, out, IV_LEN);
                return out;
            } catch (GeneralSecurityException e) {
                throw new SerializationException("ceiling seal", e);
            }
        }

        /** The plaintext of IV || ciphertext || tag, tag checked. */
        synchronized byte[] open(ByteBuffer sealed) {
            try {
                ByteBuffer in = sealed.duplicate();
                byte[] nonce = new byte[IV_LEN];
                in.get(nonce);
                cipher.init(Cipher.DECRYPT_MODE, KEY, new GCMParameterSpec(TAG_LEN * 8, nonce));
                byte[] out = new byte[in.remaining() - TAG_LEN];
                cipher.doFinal(in, ByteBuffer.wrap(out));
                return out;
            } catch (GeneralSecurityException e) {
                throw new SerializationException("ceiling open", e);
            }
        }
    }

    /** At E2eeProducerInterceptor's place. */
    public static final class ProducerHook implements ProducerInterceptor<byte[], byte[]> {
        private final Aead aead = new Aead();

        @Override
        public void configure(Map<String, ?> configs) {
            refuseUnlessBench(getClass().getName());
        }

        @Override
        public ProducerRecord<byte[], byte[]> onSend(ProducerRecord<byte[], byte[]> r) {
            if (r.value() == null) {
                return r;
            }
            return new ProducerRecord<>(r.topic(), r.partition(), r.timestamp(), r.key(), aead.seal(r.value()),
                    r.headers());
        }

        @Override
        public void onAcknowledgement(RecordMetadata metadata, Exception exception) {}

        @Override
        public void close() {}
    }

    /** At E2eeConsumerInterceptor's place: every value opened, the batch rebuilt around the new arrays. */
    public static final class ConsumerHook implements ConsumerInterceptor<byte[], byte[]> {
        private final Aead aead = new Aead();

        @Override
        public void configure(Map<String, ?> configs) {
            refuseUnlessBench(getClass().getName());
        }

        @Override
        public ConsumerRecords<byte[], byte[]> onConsume(ConsumerRecords<byte[], byte[]> records) {
            Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> out = new HashMap<>();
            for (TopicPartition tp : records.partitions()) {
                List<ConsumerRecord<byte[], byte[]>> in = records.records(tp);
                List<ConsumerRecord<byte[], byte[]>> opened = new ArrayList<>(in.size());
                for (ConsumerRecord<byte[], byte[]> r : in) {
                    byte[] v = r.value() == null ? null : aead.open(ByteBuffer.wrap(r.value()));
                    opened.add(new ConsumerRecord<>(r.topic(), r.partition(), r.offset(), r.timestamp(),
                            r.timestampType(), r.serializedKeySize(), v == null ? -1 : v.length, r.key(), v,
                            r.headers(), r.leaderEpoch()));
                }
                out.put(tp, opened);
            }
            return new ConsumerRecords<>(out, records.nextOffsets());
        }

        @Override
        public void onCommit(Map<TopicPartition, OffsetAndMetadata> offsets) {}

        @Override
        public void close() {}
    }

    /** At EncryptingSerializer's place (around ByteArraySerializer, which returns the caller's array). */
    public static final class SerializerHook implements Serializer<byte[]> {
        private final Aead aead = new Aead();

        @Override
        public void configure(Map<String, ?> configs, boolean isKey) {
            refuseUnlessBench(getClass().getName());
        }

        @Override
        public byte[] serialize(String topic, byte[] data) {
            return data == null ? null : aead.seal(data);
        }

        @Override
        public byte[] serialize(String topic, Headers headers, byte[] data) {
            return serialize(topic, data);
        }
    }

    /** At DecryptingDeserializer's place: the consumer's ByteBuffer opened into the value's array. */
    public static final class DeserializerHook implements Deserializer<byte[]> {
        private final Aead aead = new Aead();

        @Override
        public void configure(Map<String, ?> configs, boolean isKey) {
            refuseUnlessBench(getClass().getName());
        }

        @Override
        public byte[] deserialize(String topic, byte[] data) {
            return data == null ? null : aead.open(ByteBuffer.wrap(data));
        }

        @Override
        public byte[] deserialize(String topic, Headers headers, ByteBuffer data) {
            return data == null ? null : aead.open(data);
        }
    }
}
