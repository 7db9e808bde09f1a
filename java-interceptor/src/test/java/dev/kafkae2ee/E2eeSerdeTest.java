package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;

/** E2eeSerde's configuration checks and its pass-through (no engine needed: it does no crypto). */
class E2eeSerdeTest {
    private static Map<String, Object> streams() {
        Map<String, Object> m = new HashMap<>();
        m.put("application.id", "app");
        m.put("bootstrap.servers", "127.0.0.1:9092");
        m.put(E2eeConfig.INNER_VALUE_SERDE, "org.apache.kafka.common.serialization.Serdes$StringSerde");
        m.put("consumer.interceptor.classes", E2eeSerde.CONSUMER_INTERCEPTOR);
        m.put("producer.interceptor.classes", List.of(E2eeProducerInterceptor.class));
        return m;
    }

    private static String fails(Map<String, Object> m) {
        return assertThrows(ConfigException.class, () -> new E2eeSerde<String>().configure(m, false)).getMessage();
    }

    @Test
    void valuesPassThroughWhenBothInterceptorsAreSet() {
        E2eeSerde<String> serde = new E2eeSerde<>();
        serde.configure(streams(), false);
        byte[] bytes = serde.serializer().serialize("t", new RecordHeaders(), "v");
        assertArrayEquals("v".getBytes(StandardCharsets.UTF_8), bytes);
        // A state store calls without headers: its bytes, not an error (the reduce of issue 16).
        assertEquals("v", serde.deserializer().deserialize("t-changelog", bytes));
        assertEquals("v", serde.deserializer().deserialize("t", new RecordHeaders(), bytes));
    }

    @Test
    void aValueStillEncryptedIsRefused() {
        E2eeSerde<String> serde = new E2eeSerde<>();
        serde.configure(streams(), false);
        RecordHeaders headers = new RecordHeaders();
        headers.add(RecordCrypto.HEADER, new byte[Engine.HEADER_LEN]);
        String m = assertThrows(SerializationException.class,
                () -> serde.deserializer().deserialize("t", headers, new byte[] {1, 2})).getMessage();
        assertTrue(m.contains("consumer.interceptor.classes=dev.kafkae2ee.E2eeConsumerInterceptor"), m);
    }

    @Test
    void missingInterceptorsFailNamingTheProperty() {
        Map<String, Object> m = streams();
        m.remove("producer.interceptor.classes");
        assertTrue(fails(m).contains("producer.interceptor.classes to include dev.kafkae2ee.E2eeProducerInterceptor"));
        m = streams();
        m.put("consumer.interceptor.classes", "");
        assertTrue(fails(m).contains("consumer.interceptor.classes"));
        m = streams();
        m.put("restore.consumer.interceptor.classes", "x.Other");
        assertTrue(fails(m).contains("restore.consumer.interceptor.classes"));
        // The unprefixed property serves every client.
        m = streams();
        m.remove("consumer.interceptor.classes");
        m.remove("producer.interceptor.classes");
        m.put("interceptor.classes", E2eeSerde.CONSUMER_INTERCEPTOR + ", " + E2eeSerde.PRODUCER_INTERCEPTOR);
        new E2eeSerde<String>().configure(m, false);
    }

    @Test
    void misuseFailsClearly() {
        Map<String, Object> m = streams();
        m.remove(E2eeConfig.INNER_VALUE_SERDE);
        assertTrue(fails(m).contains(E2eeConfig.INNER_VALUE_SERDE + " is required"));
        m = streams();
        m.remove("application.id");
        assertTrue(fails(m).contains("EncryptingSerializer"));
        assertTrue(assertThrows(ConfigException.class, () -> new E2eeSerde<String>().configure(streams(), true))
                .getMessage().contains("values only"));
        assertThrows(IllegalStateException.class, () -> new E2eeSerde<String>().serializer());
    }
}
