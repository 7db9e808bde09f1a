package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

class ControlPlaneTest {
    @Test
    void controlClientsCarryConnectionAndSecuritySettingsOnly() {
        Map<String, Object> host = new HashMap<>();
        host.put("bootstrap.servers", "b:9093");
        host.put("security.protocol", "SASL_SSL");
        host.put("sasl.mechanism", "OAUTHBEARER");
        host.put("sasl.jaas.config", "org.example.Login required;");
        host.put("sasl.login.callback.handler.class", "org.example.Handler");
        host.put("ssl.truststore.location", "/etc/ts.jks");
        host.put("client.dns.lookup", "use_all_dns_ips");
        host.put("aws.profile", "prod"); // a setting only a login module reads
        host.put("value.serializer", "dev.kafkae2ee.EncryptingSerializer");
        host.put("key.deserializer", "x");
        host.put("interceptor.classes", "dev.kafkae2ee.E2eeProducerInterceptor");
        host.put("group.id", "orders");
        host.put("transactional.id", "tx");
        host.put("linger.ms", "50");
        host.put("e2ee.credential", "/c");
        host.put("client.id", "app");
        Map<String, Object> out = ControlPlane.baseConfig(host, "0011223344556677");
        for (String kept : new String[] {"bootstrap.servers", "security.protocol", "sasl.mechanism",
            "sasl.jaas.config", "sasl.login.callback.handler.class", "ssl.truststore.location",
            "client.dns.lookup", "aws.profile"}) {
            assertEquals(host.get(kept), out.get(kept), kept);
        }
        for (String dropped : new String[] {"value.serializer", "key.deserializer", "interceptor.classes",
            "group.id", "transactional.id", "linger.ms", "e2ee.credential"}) {
            assertFalse(out.containsKey(dropped), dropped);
        }
        assertEquals("kafka-e2ee-control-0011223344556677", out.get("client.id"));
    }

    @Test
    void aRecurringControlTopicFailureIsLoggedOncePerPeriodAndAgainAfterRecovery() {
        ControlPlane.Problems p = new ControlPlane.Problems("cannot read control topic");
        RuntimeException e = new RuntimeException("not authorized");
        assertTrue(p.failed("_e2ee_control", e));
        for (int i = 0; i < 100; i++) {
            assertFalse(p.failed("_e2ee_control", e)); // within WARN_EVERY_MS: counted, not logged
        }
        p.succeeded("_e2ee_control");
        assertTrue(p.failed("_e2ee_control", e)); // a new outage is reported at once
    }

    @Test
    void theKeysTopicIsCompactedAndOutlivesKeyRetentionByARotationAndADay() {
        assertEquals(604_800_000L + 900_000L + 86_400_000L, ControlPlane.keysRetentionMs(604_800_000L, 900_000L));
        assertEquals(Long.MAX_VALUE, ControlPlane.keysRetentionMs(Long.MAX_VALUE - 5, 900_000L));
        Map<String, String> keys = ControlPlane.keysTopicConfigs(42);
        assertEquals("compact,delete", keys.get("cleanup.policy"));
        assertEquals("42", keys.get("retention.ms"));
        assertEquals("delete", ControlPlane.controlTopicConfigs().get("cleanup.policy"));
    }

    @Test
    void theUnacknowledgedLineSaysWhatItMeansAndWhatFixesIt() {
        String m = ControlPlane.unacknowledgedMessage(3, "_e2ee_keys", 30_000);
        for (String part : new String[] {"3 key envelope(s)", "_e2ee_keys", "unreadable", "keep the producer running",
            "e2ee.state.dir", "ACLs"}) {
            assertTrue(m.contains(part), part);
        }
    }
}
