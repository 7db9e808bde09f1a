package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
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
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The consumer settings for mirrored clusters (docs/PROTOCOL.md, section 5c) in the Java hooks:
 * e2ee.topic.source.prefix maps a record of {@code A.orders} to {@code orders} through the core,
 * plaintext is refused if either name is protected, e2ee.control.bootstrap.servers moves the
 * control clients, bad values fail construction naming the property, and producers refuse both.
 * No broker: a producer and a consumer of one process share the engine (the same key-exchange
 * cluster and credential), so the consumer holds the keys the producer sealed with.
 */
class MirrorSettingsTest {
    private static final Path CLI = Path.of("..", "target", "release", "kafka-e2ee");
    private static final AtomicLong CLUSTERS = new AtomicLong();
    /** Nothing listens there: the control planes retry in the background and never connect. */
    private static final String NOWHERE = "127.0.0.1:1";

    @TempDir
    static Path dir;

    private static String cred;
    private static String trust;

    @BeforeAll
    static void credentials() throws Exception {
        assertTrue(Files.isExecutable(CLI), CLI + " is missing: run cargo build --release -p kafka-e2ee-cli");
        cli("authority", "init", "--out", dir.resolve("auth").toString());
        cli("credential", "issue", "--authority", dir.resolve("auth").toString(), "--name", "rw", "--produce",
                "orders", "--consume", "orders", "--out", dir.resolve("rw.cred").toString());
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

    /** A client configuration on a cluster of its own (so no other test's engine is shared). */
    private static Map<String, Object> config(String cluster) {
        Map<String, Object> m = new HashMap<>();
        m.put("bootstrap.servers", cluster);
        m.put(E2eeConfig.CREDENTIAL, cred);
        m.put(E2eeConfig.TRUST, trust);
        m.put(E2eeConfig.KEY_WAIT_MS, "0");
        m.put(E2eeConfig.CLOSE_TIMEOUT_MS, "0"); // no broker to deliver key envelopes to
        m.put(E2eeConfig.INNER_VALUE_SERIALIZER, "org.apache.kafka.common.serialization.StringSerializer");
        m.put(E2eeConfig.INNER_VALUE_DESERIALIZER, "org.apache.kafka.common.serialization.StringDeserializer");
        // The interceptors carry ciphertext in String values only as ISO-8859-1 (InterceptorValues).
        m.put("value.serializer.encoding", "ISO-8859-1");
        m.put("value.deserializer.encoding", "ISO-8859-1");
        return m;
    }

    private static String freshCluster() {
        return "mirror-source-" + CLUSTERS.incrementAndGet() + ":9092";
    }

    @Test
    void theMappingIsTheCores() {
        assertEquals("orders", Engine.sourceTopic("A.", "A.orders"));
        assertEquals("B.orders", Engine.sourceTopic("A.", "A.B.orders"), "stripped once");
        assertEquals("orders", Engine.sourceTopic("B.A.", "B.A.orders"), "a chained mirror's whole prefix");
        assertEquals("orders", Engine.sourceTopic("A.", "orders"), "other topics keep their name");
        assertEquals("B.orders", Engine.sourceTopic("A.", "B.orders"));
        assertEquals("a.orders", Engine.sourceTopic("A.", "a.orders"), "case matters");
        assertEquals("A.", Engine.sourceTopic("A.", "A."), "the prefix alone names no topic");
        assertEquals("A.orders", Engine.sourceTopic("", "A.orders"), "no prefix, no mapping");
    }

    @Test
    void aMirroredRecordOpensUnderItsSourceTopicAndOnlyThere() {
        String source = freshCluster();
        // The producer on the source cluster; the consumer reads the mirror on "B" and exchanges
        // keys on the source cluster: one engine for both.
        EncryptingSerializer<String> ser = new EncryptingSerializer<>();
        ser.configure(config(source), false);
        Map<String, Object> c = config(NOWHERE);
        c.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, source);
        c.put(E2eeConfig.TOPIC_SOURCE_PREFIX, "A.");
        DecryptingDeserializer<String> de = new DecryptingDeserializer<>();
        try {
            de.configure(c, false);
            RecordHeaders headers = new RecordHeaders();
            byte[] sealed = ser.serialize("orders", headers, "secret-1");
            assertFalse(new String(sealed, StandardCharsets.ISO_8859_1).contains("secret-1"));
            // As MirrorMaker 2 copies it: the same value and header, on topic A.orders.
            RecordHeaders mirroredHeaders = new RecordHeaders(headers.toArray());
            assertEquals("secret-1", de.deserialize("A.orders", mirroredHeaders, sealed.clone()));
            assertNull(mirroredHeaders.lastHeader(RecordCrypto.HEADER), "the e2ee header is stripped");
            // Mapped to another source topic (payments), the record does not open.
            RecordHeaders other = new RecordHeaders();
            byte[] sealedForOther = ser.serialize("orders", other, "secret-2");
            SerializationException wrongTopic = assertThrows(SerializationException.class,
                    () -> de.deserialize("A.payments", new RecordHeaders(other.toArray()), sealedForOther.clone()));
            assertFalse(wrongTopic.getMessage().contains("secret-2"), wrongTopic.getMessage());
        } finally {
            de.close();
            ser.close();
        }
    }

    @Test
    void plaintextOnAMappedTopicIsRefusedIfEitherNameIsProtected() {
        String source = freshCluster();
        for (String topics : new String[] {"A.*", "orders", "*"}) {
            Map<String, Object> c = config(NOWHERE);
            c.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, source);
            c.put(E2eeConfig.TOPIC_SOURCE_PREFIX, "A.");
            c.put(E2eeConfig.TOPICS, topics);
            DecryptingDeserializer<String> de = new DecryptingDeserializer<>();
            de.configure(c, false);
            try {
                byte[] plain = "injected-plaintext".getBytes(StandardCharsets.UTF_8);
                SerializationException e = assertThrows(SerializationException.class,
                        () -> de.deserialize("A.orders", new RecordHeaders(), plain.clone()), topics);
                assertTrue(e.getMessage().contains("MISSING_HEADER") && e.getMessage().contains("has no e2ee header"),
                        topics + ": " + e.getMessage());
                assertThrows(SerializationException.class, () -> de.deserialize("A.orders", plain.clone()), topics);
            } finally {
                de.close();
            }
        }
        // Neither name protected: plaintext passes, as on any unprotected topic.
        Map<String, Object> c = config(NOWHERE);
        c.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, source);
        c.put(E2eeConfig.TOPIC_SOURCE_PREFIX, "A.");
        c.put(E2eeConfig.TOPICS, "payments");
        DecryptingDeserializer<String> de = new DecryptingDeserializer<>();
        de.configure(c, false);
        try {
            assertEquals("plain", de.deserialize("A.orders", new RecordHeaders(),
                    "plain".getBytes(StandardCharsets.UTF_8)));
        } finally {
            de.close();
        }
    }

    @Test
    void theConsumerInterceptorMapsAndDropsMirroredPlaintext() throws Throwable {
        String source = freshCluster();
        E2eeProducerInterceptor<String, String> producer = new E2eeProducerInterceptor<>();
        Map<String, Object> p = config(source);
        p.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        producer.configure(p);
        Map<String, Object> c = config(NOWHERE);
        c.put("value.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
        c.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, source);
        c.put(E2eeConfig.TOPIC_SOURCE_PREFIX, "A.");
        E2eeConsumerInterceptor<String, String> consumer = new E2eeConsumerInterceptor<>();
        try {
            consumer.configure(c);
            var sent = producer.onSend(new org.apache.kafka.clients.producer.ProducerRecord<>("orders", "k", "v-1"));
            TopicPartition tp = new TopicPartition("A.orders", 0);
            List<ConsumerRecord<String, String>> in = List.of(
                    new ConsumerRecord<>("A.orders", 0, 0, 0L, TimestampType.CREATE_TIME, 0, 0, "k", sent.value(),
                            new RecordHeaders(sent.headers().toArray()), Optional.empty()),
                    new ConsumerRecord<>("A.orders", 0, 1, 0L, TimestampType.CREATE_TIME, 0, 0, "k",
                            "injected-plaintext", new RecordHeaders(), Optional.empty()));
            ConsumerRecords<String, String> out = consumer.onConsume(
                    Batches.of(Map.of(tp, in), Map.of(tp, new OffsetAndMetadata(2, Optional.empty(), ""))));
            List<String> values = new ArrayList<>();
            for (ConsumerRecord<String, String> r : out) {
                values.add(r.value());
            }
            assertEquals(List.of("v-1"), values, "opened as orders; the plaintext dropped");
        } finally {
            consumer.close();
            producer.close();
        }
    }

    @Test
    void producersRefuseTheConsumerSettingsNamingThemAndTheFix() {
        for (String name : new String[] {E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, E2eeConfig.TOPIC_SOURCE_PREFIX}) {
            Map<String, Object> m = config(freshCluster());
            m.put(name, name.equals(E2eeConfig.TOPIC_SOURCE_PREFIX) ? "A." : "a:9092");
            m.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
            String s = assertThrows(ConfigException.class, () -> new EncryptingSerializer<String>().configure(m, false))
                    .getMessage();
            assertTrue(s.contains(name) && s.contains("consumer setting") && s.contains("Remove it"), s);
            String i = assertThrows(ConfigException.class, () -> new E2eeProducerInterceptor<String, String>()
                    .configure(m)).getMessage();
            assertTrue(i.contains(name) && i.contains("consumer setting"), i);
        }
    }

    @Test
    void badValuesFailConstructionNamingTheProperty() {
        for (String prefix : new String[] {"A/", "A B.", "x".repeat(249), "\u00e9."}) {
            Map<String, Object> m = config(freshCluster());
            m.put(E2eeConfig.TOPIC_SOURCE_PREFIX, prefix);
            String msg = assertThrows(ConfigException.class,
                    () -> new DecryptingDeserializer<String>().configure(m, false)).getMessage();
            assertTrue(msg.contains(E2eeConfig.TOPIC_SOURCE_PREFIX) && msg.contains("not the start of a Kafka topic"),
                    msg);
            Map<String, Object> i = config(freshCluster());
            i.put(E2eeConfig.TOPIC_SOURCE_PREFIX, prefix);
            i.put("value.deserializer", "org.apache.kafka.common.serialization.StringDeserializer");
            msg = assertThrows(ConfigException.class, () -> new E2eeConsumerInterceptor<String, String>().configure(i))
                    .getMessage();
            assertTrue(msg.contains(E2eeConfig.TOPIC_SOURCE_PREFIX), msg);
        }
        for (String servers : new String[] {"nonsense", "a:b", "a:99999", "a:9092,:9092"}) {
            Map<String, Object> m = config(freshCluster());
            m.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, servers);
            String msg = assertThrows(ConfigException.class,
                    () -> new DecryptingDeserializer<String>().configure(m, false)).getMessage();
            assertTrue(msg.contains(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS) && msg.contains("host:port"), msg);
        }
    }

    @Test
    void theControlClientsConnectToTheControlClusterWithTheHostsSecuritySettings() {
        Map<String, Object> host = new HashMap<>();
        host.put("bootstrap.servers", "target:9092");
        host.put("security.protocol", "SASL_SSL");
        host.put("sasl.mechanism", "SCRAM-SHA-512");
        host.put("sasl.jaas.config", "org.example.Login required;");
        host.put("ssl.truststore.location", "/etc/ts.jks");
        host.put("group.id", "app");
        host.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, "source:9092");
        Map<String, Object> base = ControlPlane.baseConfig(host, "00", "source:9092");
        assertEquals("source:9092", base.get("bootstrap.servers"));
        for (String k : new String[] {"security.protocol", "sasl.mechanism", "sasl.jaas.config",
            "ssl.truststore.location"}) {
            assertEquals(host.get(k), base.get(k), k);
        }
        assertFalse(base.containsKey("group.id"));
        assertFalse(base.containsKey(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS));
        assertEquals("target:9092", ControlPlane.baseConfig(host, "00", "").get("bootstrap.servers"));
    }

    @Test
    void theEngineRefusesPlaintextUnderEitherNameAndOpensUnderTheSourceName() {
        Map<String, String> props = new HashMap<>();
        props.put(E2eeConfig.CREDENTIAL, cred);
        props.put(E2eeConfig.TRUST, trust);
        props.put(E2eeConfig.TOPICS, "A.*");
        try (Engine e = Engine.create(freshCluster(), props)) {
            byte[] plain = "p".getBytes(StandardCharsets.UTF_8);
            assertFalse(e.open("orders", null, null, Engine.BIND_UNBOUND, null, plain.clone()),
                    "orders itself is not protected");
            E2eeException x = assertThrows(E2eeException.class,
                    () -> e.open("orders", "A.orders", null, Engine.BIND_UNBOUND, null, plain.clone()));
            assertEquals(E2eeException.Kind.MISSING_HEADER, x.kind());
            assertTrue(x.getMessage().contains("'A.orders'"), x.getMessage());
        }
        props.put(E2eeConfig.TOPICS, "orders");
        try (Engine e = Engine.create(freshCluster(), props)) {
            byte[] value = "secret".getBytes(StandardCharsets.UTF_8);
            byte[] header = e.seal("orders", Engine.BIND_UNBOUND, null, value);
            assertTrue(e.open("orders", "A.orders", header, Engine.BIND_UNBOUND, null, value));
            assertArrayEquals("secret".getBytes(StandardCharsets.UTF_8), value);
        }
    }
}
