package dev.kafkae2ee;

import org.apache.kafka.common.KafkaException;

/**
 * The one exception type of kafka-e2ee's native calls. {@link #kind()} says what went wrong;
 * the message never holds key material, plaintext or ciphertext.
 */
public class E2eeException extends KafkaException {
    private static final long serialVersionUID = 1L;

    /** What went wrong. The codes are shared with the native library (ffi/src/jni.rs). */
    public enum Kind {
        INTERNAL(0),
        CONFIG(1),
        KEY_PENDING(2),
        KEY_EXPIRED(3),
        KEY_REFUSED(4),
        KEY_UNKNOWN(5),
        MISSING_HEADER(6),
        NOT_AUTHORIZED(7),
        BAD_RECORD(8),
        NO_SEALING_KEY(9),
        STORAGE(10),
        CONTROL(11),
        NATIVE_LIBRARY(12),
        /** e2ee.keys=tokenize: the topic's token secret has not arrived yet (transient). */
        TOKEN_PENDING(13);

        final int code;

        Kind(int code) {
            this.code = code;
        }

        static Kind of(int code) {
            for (Kind k : values()) {
                if (k.code == code) {
                    return k;
                }
            }
            return INTERNAL;
        }
    }

    private final Kind kind;
    private final String property;

    /** Called by the native library. */
    E2eeException(int kind, String property, String message) {
        this(Kind.of(kind), property, message);
    }

    E2eeException(Kind kind, String property, String message) {
        super(message);
        this.kind = kind;
        this.property = property;
    }

    public Kind kind() {
        return kind;
    }

    /** The {@code e2ee.*} property at fault for {@link Kind#CONFIG}, else null. */
    public String property() {
        return property;
    }
}
