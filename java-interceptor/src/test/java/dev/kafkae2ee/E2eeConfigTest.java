package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.common.config.ConfigException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class E2eeConfigTest {
    @TempDir
    Path dir;

    private Map<String, Object> valid() throws IOException {
        Map<String, Object> m = new HashMap<>();
        m.put("bootstrap.servers", "127.0.0.1:9092");
        m.put(E2eeConfig.CREDENTIAL, Files.writeString(dir.resolve("c.cred"), "x").toString());
        m.put(E2eeConfig.TRUST, Files.writeString(dir.resolve("trust"), "x").toString());
        return m;
    }

    private static String fails(Map<String, Object> m) {
        return assertThrows(ConfigException.class, () -> new E2eeConfig(m)).getMessage();
    }

    @Test
    void defaultsAreTheDocumentedOnes() throws IOException {
        E2eeConfig c = new E2eeConfig(valid());
        Map<String, String> n = c.nativeProperties();
        assertEquals("*", n.get(E2eeConfig.TOPICS));
        assertEquals("900000", n.get(E2eeConfig.KEY_ROTATION_MS));
        assertEquals("30000", n.get(E2eeConfig.KEY_WAIT_MS));
        assertEquals("_e2ee_control", n.get(E2eeConfig.CONTROL_TOPIC));
        assertEquals("_e2ee_keys", n.get(E2eeConfig.KEYS_TOPIC));
        assertEquals("30000", n.get(E2eeConfig.CLOSE_TIMEOUT_MS));
        assertFalse(n.containsKey(E2eeConfig.INNER_VALUE_SERIALIZER), "Java-only settings stay in Java");
        for (String name : E2eeConfig.CONFIG_DEF.names()) {
            String doc = E2eeConfig.CONFIG_DEF.configKeys().get(name).documentation;
            assertTrue(doc != null && doc.length() > 20, name + " is documented");
        }
    }

    @Test
    void theKeysTopicMustNotBeEmptyAndTheCloseTimeoutNotNegative() throws IOException {
        Map<String, Object> m = valid();
        m.put(E2eeConfig.KEYS_TOPIC, "");
        assertTrue(fails(m).contains(E2eeConfig.KEYS_TOPIC));
        m = valid();
        m.put(E2eeConfig.CLOSE_TIMEOUT_MS, "-1");
        assertTrue(fails(m).contains(E2eeConfig.CLOSE_TIMEOUT_MS));
        m = valid();
        m.put(E2eeConfig.CLOSE_TIMEOUT_MS, "soon");
        assertTrue(fails(m).contains(E2eeConfig.CLOSE_TIMEOUT_MS));
        m = valid();
        m.put(E2eeConfig.KEYS_TOPIC, "k");
        m.put(E2eeConfig.CLOSE_TIMEOUT_MS, "0");
        Map<String, String> n = new E2eeConfig(m).nativeProperties();
        assertEquals("k", n.get(E2eeConfig.KEYS_TOPIC));
        assertEquals("0", n.get(E2eeConfig.CLOSE_TIMEOUT_MS));
    }

    @Test
    void aMissingCredentialNamesThePropertyAndTheFix() throws IOException {
        Map<String, Object> m = valid();
        m.remove(E2eeConfig.CREDENTIAL);
        String msg = fails(m);
        assertTrue(msg.contains("e2ee.credential is required") && msg.contains("kafka-e2ee credential issue"), msg);
    }

    @Test
    void aNonexistentTrustFileNamesThePropertyAndThePath() throws IOException {
        Map<String, Object> m = valid();
        m.put(E2eeConfig.TRUST, dir.resolve("nope").toString());
        String msg = fails(m);
        assertTrue(msg.contains("e2ee.trust") && msg.contains("nope") && msg.contains("no such file"), msg);
    }

    @Test
    void anUnknownE2eePropertyIsATypo() throws IOException {
        Map<String, Object> m = valid();
        m.put("e2ee.topic", "orders");
        String msg = fails(m);
        assertTrue(msg.contains("e2ee.topic") && msg.contains("unknown kafka-e2ee property"), msg);
    }

    @Test
    void theMirrorSettingsAreDefinedAndPassedToTheCore() throws IOException {
        Map<String, Object> m = valid();
        Map<String, String> n = new E2eeConfig(m).nativeProperties();
        assertEquals("", n.get(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS), "unset: the client's own cluster");
        assertEquals("", n.get(E2eeConfig.TOPIC_SOURCE_PREFIX), "unset: no mapping");
        assertEquals("127.0.0.1:9092", new E2eeConfig(m).keyExchangeCluster(m));
        m.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, " a:9092, b:9093 ");
        m.put(E2eeConfig.TOPIC_SOURCE_PREFIX, " A. ");
        E2eeConfig c = new E2eeConfig(m);
        assertEquals("a:9092,b:9093", c.nativeProperties().get(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS));
        assertEquals("a:9092,b:9093", c.keyExchangeCluster(m), "engines are shared per key-exchange cluster");
        assertEquals("A.", c.sourcePrefix());
        m.put(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS, "no-port");
        String msg = fails(m);
        assertTrue(msg.contains(E2eeConfig.CONTROL_BOOTSTRAP_SERVERS) && msg.contains("host:port"), msg);
    }

    @Test
    void numbersAreValidated() throws IOException {
        Map<String, Object> m = valid();
        m.put(E2eeConfig.KEY_ROTATION_MS, "0");
        assertTrue(fails(m).contains(E2eeConfig.KEY_ROTATION_MS));
        m = valid();
        m.put(E2eeConfig.KEY_ROTATION_MS, "5000");
        m.put(E2eeConfig.KEY_RETENTION_MS, "1000");
        assertTrue(fails(m).contains(E2eeConfig.KEY_RETENTION_MS));
        m = valid();
        m.put(E2eeConfig.KEY_WAIT_MS, "soon");
        assertTrue(fails(m).contains(E2eeConfig.KEY_WAIT_MS));
    }

    @Test
    void anInnerSerializerThatDoesNotExistNamesTheProperty() throws IOException {
        Map<String, Object> m = valid();
        m.put(E2eeConfig.INNER_VALUE_SERIALIZER, "com.example.NoSuch");
        String msg = fails(m);
        assertTrue(msg.contains(E2eeConfig.INNER_VALUE_SERIALIZER) && msg.contains("com.example.NoSuch"), msg);
    }

    @Test
    void theClusterIsTheBootstrapList() {
        assertEquals("a:1,b:2", E2eeConfig.cluster(Map.of("bootstrap.servers", java.util.List.of("a:1", " b:2"))));
        assertEquals("a:1", E2eeConfig.cluster(Map.of("bootstrap.servers", " a:1 ")));
    }
}
