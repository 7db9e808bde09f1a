package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * e2ee.keys=tokenize in the Java hooks (docs/FORMAT.md section 13): the setting, the key/value
 * serializer hand-off and every way it fails closed. The round trip through a broker is
 * tests/integration/test_tokenized_keys_java.py (a token secret needs the keys topic).
 */
class TokenizedKeysTest {
    private static final Path CLI = Path.of("..", "target", "release", "kafka-e2ee");
    private static final AtomicLong CLUSTERS = new AtomicLong();
    private static final String STRING_SER = "org.apache.kafka.common.serialization.StringSerializer";
    private static final String ENCRYPTING = EncryptingSerializer.class.getName();

    @TempDir
    static Path dir;

    private static String cred;
    private static String trust;

    @BeforeAll
    static void credentials() throws Exception {
        assertTrue(Files.isExecutable(CLI), CLI + " is missing: run cargo build --release -p kafka-e2ee-cli");
        cli("authority", "init", "--out", dir.resolve("auth").toString());
        cli("credential", "issue", "--authority", dir.resolve("auth").toString(), "--name", "rw", "--produce",
                "*", "--consume", "*", "--out", dir.resolve("rw.cred").toString());
        cred = dir.resolve("rw.cred").toString();
        trust = dir.resolve("auth").resolve("trust").toString();
    }

    private static void cli(String... args) throws Exception {
        List<String> argv = new ArrayList<>(List.of(CLI.toString()));
        argv.addAll(List.of(args));
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out);
    }

    /**
     * A tokenizing producer's configuration on a cluster of its own where nothing listens: its
     * control plane never reads the keys topic, so no token secret ever comes.
     */
    private static Map<String, Object> config() {
        Map<String, Object> m = new HashMap<>();
        m.put("bootstrap.servers", "tokenized-" + CLUSTERS.incrementAndGet() + ":9092");
        m.put(E2eeConfig.CREDENTIAL, cred);
        m.put(E2eeConfig.TRUST, trust);
        m.put(E2eeConfig.KEYS, "tokenize");
        m.put(E2eeConfig.KEY_WAIT_MS, "300");
        m.put(E2eeConfig.CLOSE_TIMEOUT_MS, "0");
        m.put("key.serializer", ENCRYPTING);
        m.put("value.serializer", ENCRYPTING);
        m.put(E2eeConfig.INNER_KEY_SERIALIZER, STRING_SER);
        m.put(E2eeConfig.INNER_VALUE_SERIALIZER, STRING_SER);
        return m;
    }

    private static String configFails(Map<String, Object> m, boolean isKey) {
        EncryptingSerializer<String> s = new EncryptingSerializer<>();
        return assertThrows(ConfigException.class, () -> s.configure(m, isKey)).getMessage();
    }

    @Test
    void theSettingIsValidatedDefaultsToClearAndGoesToTheCore() {
        Map<String, Object> m = config();
        m.remove(E2eeConfig.KEYS);
        E2eeConfig c = new E2eeConfig(m);
        assertEquals("clear", c.getString(E2eeConfig.KEYS));
        assertEquals("clear", c.nativeProperties().get(E2eeConfig.KEYS));
        m.put(E2eeConfig.KEYS, "tokenize");
        assertEquals("tokenize", new E2eeConfig(m).nativeProperties().get(E2eeConfig.KEYS));
        m.put(E2eeConfig.KEYS, "hash");
        String msg = assertThrows(ConfigException.class, () -> new E2eeConfig(m)).getMessage();
        assertTrue(msg.contains(E2eeConfig.KEYS), msg);
        // The core accepts what Java passes it (the same names on both sides).
        m.put(E2eeConfig.KEYS, "tokenize");
        Engine.checkProperties(new E2eeConfig(m).nativeProperties());
    }

    @Test
    void aTokenizingValueSerializerNeedsTheKeyWrapper() {
        for (Object other : new Object[] {STRING_SER, org.apache.kafka.common.serialization.StringSerializer.class,
                null}) {
            Map<String, Object> m = config();
            m.put("key.serializer", other);
            String msg = configFails(m, false);
            assertTrue(msg.contains("key.serializer") && msg.contains(ENCRYPTING)
                    && msg.contains(E2eeConfig.INNER_KEY_SERIALIZER), msg);
        }
    }

    @Test
    void theKeyWrapperNeedsTokenizeAndAnInnerSerializer() {
        Map<String, Object> clear = config();
        clear.put(E2eeConfig.KEYS, "clear");
        String msg = configFails(clear, true);
        assertTrue(msg.contains("key.serializer") && msg.contains("e2ee.keys=tokenize"), msg);
        Map<String, Object> noInner = config();
        noInner.remove(E2eeConfig.INNER_KEY_SERIALIZER);
        msg = configFails(noInner, true);
        assertTrue(msg.contains(E2eeConfig.INNER_KEY_SERIALIZER + " is required"), msg);
    }

    @Test
    void aValueWithoutItsKeyHandOffIsNotSent() {
        EncryptingSerializer<String> value = new EncryptingSerializer<>();
        value.configure(config(), false);
        try {
            SerializationException e = assertThrows(SerializationException.class,
                    () -> value.serialize("orders", new RecordHeaders(), "secret-value"));
            assertTrue(e.getMessage().contains("was not tokenized by key.serializer=" + ENCRYPTING), e.getMessage());
            assertFalse(e.getMessage().contains("secret-value"));
        } finally {
            value.close();
        }
    }

    /** The hand-off belongs to one send: another record's headers (or topic) do not take it. */
    @Test
    void aHandOffOfAnotherSendIsNotTaken() {
        Map<String, Object> m = config();
        EncryptingSerializer<String> key = new EncryptingSerializer<>();
        EncryptingSerializer<String> value = new EncryptingSerializer<>();
        key.configure(m, true);
        value.configure(m, false);
        try {
            // A null key is not tokenized (and needs no token secret): its hand-off says so.
            RecordHeaders headers = new RecordHeaders();
            assertNull(key.serialize("orders", headers, null));
            assertThrows(SerializationException.class, () -> value.serialize("orders", new RecordHeaders(), "v"));
            assertNull(key.serialize("orders", headers, null));
            assertThrows(SerializationException.class, () -> value.serialize("payments", headers, "v"));
            // The matching send: a null key, the value sealed as usual.
            assertNull(key.serialize("orders", headers, null));
            byte[] sealed = value.serialize("orders", headers, "secret-value");
            assertFalse(new String(sealed, StandardCharsets.ISO_8859_1).contains("secret-value"));
            assertTrue(headers.lastHeader(RecordCrypto.HEADER) != null);
            assertNull(headers.lastHeader(RecordCrypto.SEALED_KEY));
        } finally {
            value.close();
            key.close();
        }
    }

    @Test
    void noTokenSecretFailsTheSendAfterTheWaitNamingTopicAndSetting() {
        Map<String, Object> m = config();
        EncryptingSerializer<String> key = new EncryptingSerializer<>();
        key.configure(m, true);
        try {
            long start = System.currentTimeMillis();
            SerializationException e = assertThrows(SerializationException.class,
                    () -> key.serialize("orders", new RecordHeaders(), "alice@example.com"));
            assertTrue(System.currentTimeMillis() - start >= 250, "it waited for the token secret");
            String msg = e.getMessage();
            assertTrue(msg.contains("'orders'") && msg.contains("token secret") && msg.contains(E2eeConfig.KEY_WAIT_MS),
                    msg);
            assertFalse(msg.contains("alice"), "no plaintext key in the message: " + msg);
            assertEquals(E2eeException.Kind.TOKEN_PENDING, ((E2eeException) e.getCause()).kind());
        } finally {
            key.close();
        }
    }

    @Test
    void theProducerInterceptorTokenizesByteKeysOnly() {
        Map<String, Object> m = config();
        m.put("key.serializer", STRING_SER);
        m.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        String msg = assertThrows(ConfigException.class, () -> new E2eeProducerInterceptor<>().configure(m))
                .getMessage();
        assertTrue(msg.contains("key.serializer") && msg.contains("ByteArraySerializer"), msg);

        // With byte[] keys it configures; a record it cannot tokenize (no secret) fails its send.
        m.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        E2eeProducerInterceptor<byte[], byte[]> interceptor = new E2eeProducerInterceptor<>();
        interceptor.configure(m);
        try {
            byte[] secretKey = "alice@example.com".getBytes(StandardCharsets.UTF_8);
            ProducerRecord<byte[], byte[]> out = interceptor.onSend(
                    new ProducerRecord<>("orders", secretKey, "v".getBytes(StandardCharsets.UTF_8)));
            assertTrue(((Object) out.value()) instanceof E2eeProducerInterceptor.NotEncrypted);
            // A tombstone with a key cannot slip through as a plain tombstone either.
            out = interceptor.onSend(new ProducerRecord<>("orders", secretKey, null));
            assertTrue(((Object) out.value()) instanceof E2eeProducerInterceptor.NotEncrypted);
        } finally {
            interceptor.close();
        }
    }

    @Test
    void streamsTokenizesThroughItsInterceptors() {
        // Streams tokenizes keys with the interceptors (its clients use byte[] keys): E2eeSerde
        // accepts the setting, and so does a Streams producer's interceptor (tests/integration/
        // test_streams.py runs a groupBy topology so, with a restore on a new host).
        Map<String, Object> m = new HashMap<>();
        m.put("application.id", "app");
        m.put(E2eeConfig.KEYS, "tokenize");
        m.put(E2eeConfig.INNER_VALUE_SERDE, "org.apache.kafka.common.serialization.Serdes$StringSerde");
        m.put("consumer.interceptor.classes", E2eeSerde.CONSUMER_INTERCEPTOR);
        m.put("producer.interceptor.classes", E2eeSerde.PRODUCER_INTERCEPTOR);
        E2eeSerde<String> serde = new E2eeSerde<>();
        serde.configure(m, false);
        serde.close();
        Map<String, Object> p = config();
        p.put("client.id", "app-1-StreamThread-1-producer");
        p.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        p.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        E2eeProducerInterceptor<byte[], byte[]> interceptor = new E2eeProducerInterceptor<>();
        interceptor.configure(p);
        interceptor.close();
    }

    /** A record whose key is a token, as a consumer receives it (its e2ee header has TOKEN_KEY). */
    private static RecordHeaders tokenizedHeaders() {
        byte[] header = new byte[Engine.HEADER_LEN];
        header[0] = 1;
        header[1] = (byte) RecordCrypto.FLAG_TOKEN_KEY;
        RecordHeaders h = new RecordHeaders();
        h.add(RecordCrypto.HEADER, header);
        h.add(RecordCrypto.SEALED_KEY, new byte[20]);
        return h;
    }

    @Test
    void theDeserializerFailsTokenizedRecordsAndNamesTheFix() {
        Map<String, Object> m = config();
        m.put(E2eeConfig.INNER_VALUE_DESERIALIZER, "org.apache.kafka.common.serialization.StringDeserializer");
        // The key guard: needs its inner deserializer, fails tokenized records (tombstones included,
        // which KafkaConsumer never hands a value deserializer), passes other keys.
        String refused = assertThrows(ConfigException.class,
                () -> new DecryptingDeserializer<String>().configure(m, true)).getMessage();
        assertTrue(refused.contains(E2eeConfig.INNER_KEY_DESERIALIZER) && refused.contains(
                E2eeConsumerInterceptor.class.getName()), refused);
        m.put(E2eeConfig.INNER_KEY_DESERIALIZER, "org.apache.kafka.common.serialization.StringDeserializer");
        DecryptingDeserializer<String> guard = new DecryptingDeserializer<>();
        guard.configure(m, true);
        SerializationException tokenKey = assertThrows(SerializationException.class,
                () -> guard.deserialize("orders", tokenizedHeaders(), java.nio.ByteBuffer.wrap(new byte[8])));
        assertTrue(tokenKey.getMessage().contains(E2eeConsumerInterceptor.class.getName()), tokenKey.getMessage());
        RecordHeaders plain = new RecordHeaders();
        plain.add(RecordCrypto.HEADER, new byte[Engine.HEADER_LEN]); // sealed value, key in the clear
        assertEquals("k1", guard.deserialize("orders", plain, "k1".getBytes(StandardCharsets.UTF_8)));
        guard.close();
        DecryptingDeserializer<String> de = new DecryptingDeserializer<>();
        de.configure(m, false);
        try {
            for (byte[] value : new byte[][] {new byte[8], null}) { // a value, and a tombstone
                SerializationException e = assertThrows(SerializationException.class,
                        () -> de.deserialize("orders", tokenizedHeaders(), value));
                assertTrue(e.getMessage().contains(E2eeConsumerInterceptor.class.getName()), e.getMessage());
            }
            // e2ee.k alone (its flag stripped) fails too.
            RecordHeaders onlyKey = new RecordHeaders();
            onlyKey.add(RecordCrypto.SEALED_KEY, new byte[20]);
            assertThrows(SerializationException.class, () -> de.deserialize("orders", onlyKey, (byte[]) null));
            // An ordinary tombstone is still one.
            assertNull(de.deserialize("orders", new RecordHeaders(), (byte[]) null));
        } finally {
            de.close();
        }
    }

    @Test
    void theConsumerInterceptorDropsTokenizedRecordsItCannotRestore() {
        Map<String, Object> m = config();
        m.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        E2eeConsumerInterceptor<Object, byte[]> interceptor = new E2eeConsumerInterceptor<>();
        interceptor.configure(m);
        try {
            TopicPartition tp = new TopicPartition("orders", 0);
            // A String key (not restorable here), a forged byte[] one, and a tombstone: none reaches the app.
            List<ConsumerRecord<Object, byte[]>> in = List.of(
                    record(tp, 0, "tokenABC", new byte[8]),
                    record(tp, 1, new byte[8], new byte[8]),
                    record(tp, 2, new byte[8], null));
            ConsumerRecords<Object, byte[]> out = interceptor.onConsume(
                    new ConsumerRecords<>(Map.of(tp, in), Map.of()));
            assertEquals(0, out.count());
        } finally {
            interceptor.close();
        }
    }

    private static ConsumerRecord<Object, byte[]> record(TopicPartition tp, long offset, Object key, byte[] value) {
        return new ConsumerRecord<>(tp.topic(), tp.partition(), offset, 0L, TimestampType.CREATE_TIME, 8,
                value == null ? -1 : value.length, key, value, tokenizedHeaders(), java.util.Optional.empty());
    }
}
