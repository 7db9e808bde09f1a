package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;

/** The header-list encoding and its application to Kafka's headers (docs/FORMAT.md section 12). */
class SealedHeadersTest {
    private static Header h(String name, String value) {
        return new RecordHeader(name, value == null ? null : value.getBytes(StandardCharsets.UTF_8));
    }

    @Test
    void encodingIsTheFormatsAndRoundTrips() {
        List<Header> list = List.of(h("a", "xy"), h("a", null), h("", ""));
        byte[] bytes = SealedHeaders.encode(list, Set.of("a"));
        // The same bytes as core/src/format/headers.rs's layout test (a is clear here, so kind 2 and 3).
        assertEquals("020000000161000000027879030000000161000000000000000000", HexFormat.of().formatHex(bytes));
        byte[] framed = new byte[bytes.length + 1];
        framed[0] = 2;
        System.arraycopy(bytes, 0, framed, 1, bytes.length);
        List<Header> back = SealedHeaders.decode(framed, 1);
        assertEquals(3, back.size());
        for (int i = 0; i < 3; i++) {
            assertEquals(list.get(i).key(), back.get(i).key());
            assertArrayEquals(list.get(i).value(), back.get(i).value());
        }
        assertNull(back.get(1).value());
        assertEquals(0, SealedHeaders.decode(new byte[] {2}, 1).size());
    }

    @Test
    void decodingIsStrict() {
        byte[] good = SealedHeaders.encode(List.of(h("n", "v")), Set.of());
        for (int cut = 1; cut < good.length; cut++) {
            byte[] shorter = Arrays.copyOf(good, cut);
            assertThrows(E2eeException.class, () -> SealedHeaders.decode(shorter, 0), "cut " + cut);
        }
        byte[] badKind = good.clone();
        badKind[0] = 4;
        assertThrows(E2eeException.class, () -> SealedHeaders.decode(badKind, 0));
        byte[] badName = {0, 0, 0, 0, 1, (byte) 0xff, 0, 0, 0, 0};
        assertThrows(E2eeException.class, () -> SealedHeaders.decode(badName, 0));
        byte[] hugeLength = {0, (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff};
        assertThrows(E2eeException.class, () -> SealedHeaders.decode(hugeLength, 0));
    }

    @Test
    void producerSideKeepsOnlyClearHeadersAndAddsOurs() {
        RecordHeaders headers = new RecordHeaders(new Header[] {
            h("route", "eu"), h("user", "alice"), h("e2ee.h", "forged"), h("route", null), h("user", "bob")});
        assertEquals(4, SealedHeaders.application(headers).size());
        byte[] header = new byte[Engine.HEADER_LEN];
        SealedHeaders.applySealed(headers, Set.of("route"), header, new byte[] {1, 2});
        Header[] left = headers.toArray();
        assertEquals(List.of("route", "route", "e2ee", "e2ee.h"), Arrays.stream(left).map(Header::key).toList());
        assertArrayEquals(new byte[] {1, 2}, left[3].value());
    }

    @Test
    void consumerSideReplacesEverything() {
        RecordHeaders headers = new RecordHeaders(new Header[] {h("route", "eu"), h("mm2", "x"), h("e2ee.h", "s")});
        assertTrue(SealedHeaders.replace(headers, List.of(h("route", "eu"), h("user", null))));
        assertEquals(List.of("route", "user"), Arrays.stream(headers.toArray()).map(Header::key).toList());
        headers.setReadOnly();
        assertFalse(SealedHeaders.replace(headers, List.of()));
    }

    @Test
    void presenceFollowsTheFlagOrTheHeader() {
        byte[] header = new byte[Engine.HEADER_LEN];
        assertFalse(SealedHeaders.present(header, SealedHeaders.NONE));
        assertFalse(SealedHeaders.present(null, SealedHeaders.NONE));
        assertTrue(SealedHeaders.present(null, new byte[][] {{}}));
        header[1] = (byte) 0x80;
        assertTrue(SealedHeaders.present(header, SealedHeaders.NONE));
    }

    @Test
    void ourOwnHeadersCannotBeListedClear() {
        ConfigException e = assertThrows(ConfigException.class,
                () -> E2eeConfig.CONFIG_DEF.parse(Map.of(E2eeConfig.HEADERS_CLEAR, "route, e2ee.h")));
        assertTrue(e.getMessage().contains("e2ee.headers.clear"), e.getMessage());
        assertThrows(ConfigException.class, () -> E2eeConfig.CONFIG_DEF.parse(Map.of(E2eeConfig.HEADERS, "plain")));
    }
}
