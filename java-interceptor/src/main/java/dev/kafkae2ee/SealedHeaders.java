package dev.kafkae2ee;

import java.io.ByteArrayOutputStream;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeader;

/**
 * Sealed application headers (docs/FORMAT.md section 12): {@code e2ee.headers=encrypt} seals a
 * record's headers in one extra header, {@code e2ee.h}, and the consumer side hands the app
 * exactly the original headers back. This class encodes and decodes the header list (the
 * native engine seals, opens and checks it) and applies it to Kafka's {@link Headers}.
 */
final class SealedHeaders {
    /** The record header that carries the sealed list. */
    static final String NAME = "e2ee.h";
    /** Flags bit of the e2ee header: the record has sealed headers. */
    static final int FLAG_HEADERS = 0x80;
    /** No e2ee.h values. */
    static final byte[][] NONE = new byte[0][];
    private static final int KIND_NULL = 0x01;
    private static final int KIND_CLEAR = 0x02;

    /** A producer's {@code e2ee.headers} and {@code e2ee.headers.clear}. */
    static final class Policy {
        final boolean seal;
        final Set<String> clear;

        Policy(boolean seal, Set<String> clear) {
            this.seal = seal;
            this.clear = clear;
        }

        static Policy of(E2eeConfig config) {
            return new Policy("encrypt".equals(config.getString(E2eeConfig.HEADERS)),
                    Set.copyOf(new LinkedHashSet<>(config.getList(E2eeConfig.HEADERS_CLEAR))));
        }
    }

    private SealedHeaders() {}

    /** Whether a header is kafka-e2ee's own (never an application header). */
    static boolean isOurs(String name) {
        return RecordCrypto.HEADER.equals(name) || NAME.equals(name) || RecordCrypto.SEALED_KEY.equals(name);
    }

    /** The application headers of {@code headers} (all but e2ee, e2ee.h and e2ee.k), in order. */
    static List<Header> application(Headers headers) {
        List<Header> out = new ArrayList<>();
        if (headers == null) {
            return out;
        }
        for (Header h : headers) {
            if (!isOurs(h.key())) {
                out.add(h);
            }
        }
        return out;
    }

    /**
     * The encoded list: per header, kind (NULL 0x01, CLEAR 0x02) || name length (u32 BE) || name
     * (UTF-8) || [value length (u32 BE) || value]. Names in {@code clear} are marked CLEAR.
     */
    static byte[] encode(List<Header> headers, Set<String> clear) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (Header h : headers) {
            byte[] name = h.key().getBytes(StandardCharsets.UTF_8);
            byte[] value = h.value();
            int kind = (value == null ? KIND_NULL : 0) | (clear.contains(h.key()) ? KIND_CLEAR : 0);
            out.write(kind);
            writeLength(out, name.length);
            out.write(name, 0, name.length);
            if (value != null) {
                writeLength(out, value.length);
                out.write(value, 0, value.length);
            }
        }
        return out.toByteArray();
    }

    private static void writeLength(ByteArrayOutputStream out, int n) {
        out.write(n >>> 24);
        out.write(n >>> 16);
        out.write(n >>> 8);
        out.write(n);
    }

    /**
     * Decodes a list the native engine authenticated and checked; strict anyway (E2eeException
     * BAD_RECORD on anything malformed, never a partial list).
     */
    static List<Header> decode(byte[] list, int offset) {
        List<Header> out = new ArrayList<>();
        int i = offset;
        try {
            while (i < list.length) {
                int kind = list[i++] & 0xff;
                if ((kind & ~(KIND_NULL | KIND_CLEAR)) != 0) {
                    throw malformed();
                }
                int n = readLength(list, i);
                i += 4;
                String name = StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(java.nio.ByteBuffer.wrap(list, i, n)).toString();
                i += n;
                byte[] value = null;
                if ((kind & KIND_NULL) == 0) {
                    int m = readLength(list, i);
                    i += 4;
                    if (m > list.length - i) {
                        throw malformed();
                    }
                    value = Arrays.copyOfRange(list, i, i + m);
                    i += m;
                }
                out.add(new RecordHeader(name, value));
            }
        } catch (CharacterCodingException | IndexOutOfBoundsException e) {
            throw malformed();
        }
        return out;
    }

    private static int readLength(byte[] b, int i) {
        if (i < 0 || i > b.length - 4) {
            throw malformed();
        }
        long n = ((b[i] & 0xffL) << 24) | ((b[i + 1] & 0xff) << 16) | ((b[i + 2] & 0xff) << 8) | (b[i + 3] & 0xff);
        if (n > b.length - i - 4) {
            throw malformed();
        }
        return (int) n;
    }

    private static E2eeException malformed() {
        return new E2eeException(E2eeException.Kind.BAD_RECORD, null, "the record's sealed headers do not decode");
    }

    /** Every e2ee.h value of the record, in order (none: an empty array). */
    static byte[][] sealedValues(Headers headers) {
        List<byte[]> out = new ArrayList<>(1);
        if (headers != null) {
            for (Header h : headers.headers(NAME)) {
                out.add(h.value() == null ? new byte[0] : h.value());
            }
        }
        return out.toArray(NONE);
    }

    /** Whether the record must be opened with its headers: it has e2ee.h, or its header says so. */
    static boolean present(byte[] header, byte[][] sealed) {
        return sealed.length > 0 || (header != null && header.length == Engine.HEADER_LEN
                && (header[1] & FLAG_HEADERS) != 0);
    }

    /**
     * Makes {@code headers} exactly {@code restored}: removes every header and adds the restored
     * ones in order. False if the headers are read-only.
     */
    static boolean replace(Headers headers, List<Header> restored) {
        try {
            for (Iterator<Header> it = headers.iterator(); it.hasNext(); ) {
                it.next();
                it.remove();
            }
            for (Header h : restored) {
                headers.add(h);
            }
            return true;
        } catch (IllegalStateException readOnly) {
            return false;
        }
    }

    /**
     * On the producer side, after sealing: removes the sealed (not clear) application headers and
     * adds e2ee and e2ee.h.
     */
    static void applySealed(Headers headers, Set<String> clear, byte[] header, byte[] sealed) {
        for (Iterator<Header> it = headers.iterator(); it.hasNext(); ) {
            String key = it.next().key();
            if (isOurs(key) || !clear.contains(key)) {
                it.remove();
            }
        }
        headers.add(RecordCrypto.HEADER, header);
        headers.add(NAME, sealed);
    }
}
