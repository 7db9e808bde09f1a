package dev.kafkae2ee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;

/** How both Java hooks (the consumer interceptor and the deserializer) find a record's e2ee header. */
class RecordCryptoTest {
    private static final byte[] SEALED = new byte[Engine.HEADER_LEN];

    @Test
    void oneHeaderIsTheRecordsAndNoneIsNull() {
        RecordHeaders h = new RecordHeaders();
        h.add("app", new byte[] {1});
        assertNull(RecordCrypto.header(h));
        assertNull(RecordCrypto.header(null));
        h.add(RecordCrypto.HEADER, SEALED);
        assertArrayEquals(SEALED, RecordCrypto.header(h));
    }

    /** docs/FORMAT.md section 9: a record with more than one e2ee header is rejected, even two copies. */
    @Test
    void twoHeadersAreRejectedNotTheLastTaken() {
        for (byte[] second : new byte[][] {SEALED.clone(), new byte[] {9}}) {
            RecordHeaders h = new RecordHeaders();
            h.add(RecordCrypto.HEADER, SEALED);
            h.add("app", new byte[] {1});
            h.add(RecordCrypto.HEADER, second);
            E2eeException e = assertThrows(E2eeException.class, () -> RecordCrypto.header(h));
            assertEquals(E2eeException.Kind.BAD_RECORD, e.kind());
            assertTrue(e.getMessage().contains("more than one e2ee header"), e.getMessage());
        }
    }

    /** The consumer interceptor's one-pass variant: the same answer, and the headers stripped. */
    @Test
    void takeFindsStripsAndRejectsTwo() {
        RecordHeaders h = new RecordHeaders();
        h.add("app", new byte[] {1});
        h.add(RecordCrypto.HEADER, SEALED);
        h.add("trace", new byte[] {2});
        assertArrayEquals(SEALED, RecordCrypto.take(h));
        assertNull(h.lastHeader(RecordCrypto.HEADER));
        assertEquals(2, h.toArray().length);
        assertNull(RecordCrypto.take(h));
        assertNull(RecordCrypto.take(null));

        RecordHeaders two = new RecordHeaders();
        two.add(RecordCrypto.HEADER, SEALED);
        two.add(RecordCrypto.HEADER, SEALED.clone());
        E2eeException e = assertThrows(E2eeException.class, () -> RecordCrypto.take(two));
        assertEquals(E2eeException.Kind.BAD_RECORD, e.kind());
    }

    /** Read-only headers (as a record handed on after onConsume): found, counted, left in place. */
    @Test
    void takeOnReadOnlyHeadersLeavesThem() {
        RecordHeaders h = new RecordHeaders();
        h.add(RecordCrypto.HEADER, SEALED);
        h.setReadOnly();
        assertArrayEquals(SEALED, RecordCrypto.take(h));
        assertArrayEquals(SEALED, h.lastHeader(RecordCrypto.HEADER).value());
    }
}
