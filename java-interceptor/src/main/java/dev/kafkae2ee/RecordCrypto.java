package dev.kafkae2ee;

import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** What the serde wrappers and the interceptors share: the header, and opening with a bounded wait. */
final class RecordCrypto {
    private static final Logger log = LoggerFactory.getLogger(RecordCrypto.class);
    /** The record header that carries a sealed record's key id, counter and tag. */
    static final String HEADER = "e2ee";
    /** The record header that carries a tokenized record's real key, sealed (docs/FORMAT.md 13.2). */
    static final String SEALED_KEY = "e2ee.k";
    /** Flags bit of the e2ee header: the record's key is a token (docs/FORMAT.md 13.2). */
    static final int FLAG_TOKEN_KEY = 0x40;
    private static final int HEADER_LEN = Engine.HEADER_LEN;
    private static final int FLAG_KEY_BOUND = 1;
    private static final int FLAG_KEY_NULL = 2;
    /** Longest single sleep while waiting for a key; the engine may also answer "refused". */
    private static final long WAIT_SLICE_MS = 100;

    private RecordCrypto() {}

    /**
     * The e2ee header value, or null if there is none. A record with more than one is rejected
     * (E2eeException, BAD_RECORD; docs/FORMAT.md section 9): which one its producer wrote cannot
     * be told, and taking either lets whoever added the other choose what is opened.
     */
    static byte[] header(Headers headers) {
        if (headers == null) {
            return null;
        }
        Header found = null;
        for (Header h : headers.headers(HEADER)) {
            found = one(found, h);
        }
        return found == null ? null : found.value();
    }

    /**
     * {@link #header}, removing the e2ee headers in the same pass where the headers allow it
     * (afterwards {@code headers.lastHeader(HEADER) == null} says whether they did). One pass, so
     * one iterator: the consumer interceptor's only allocation per record (HotPathCheck). A record
     * rejected here has already lost its e2ee header; the caller drops it.
     */
    static byte[] take(Headers headers) {
        if (headers == null) {
            return null;
        }
        Header found = null;
        boolean writable = true;
        for (Iterator<Header> it = headers.iterator(); it.hasNext(); ) {
            Header h = it.next();
            if (!HEADER.equals(h.key())) {
                continue;
            }
            found = one(found, h);
            if (writable) {
                try {
                    it.remove();
                } catch (IllegalStateException readOnly) {
                    writable = false;
                }
            }
        }
        return found == null ? null : found.value();
    }

    private static Header one(Header found, Header next) {
        if (found != null) {
            throw new E2eeException(E2eeException.Kind.BAD_RECORD, null,
                    "the record has more than one e2ee header (a sealed record has exactly one)");
        }
        return next;
    }

    /**
     * Removes every e2ee, e2ee.h and e2ee.k header; false if the headers are read-only (the header
     * stays visible).
     */
    static boolean strip(Headers headers) {
        try {
            headers.remove(HEADER);
            headers.remove(SealedHeaders.NAME);
            headers.remove(SEALED_KEY);
            return true;
        } catch (IllegalStateException readOnly) {
            return false;
        }
    }

    /**
     * Whether a record's key is (or claims to be) a token: its e2ee header has TOKEN_KEY, or it
     * carries an e2ee.k header. Such a record must be opened with its key and e2ee.k, never by a
     * path that would hand the application the token.
     */
    static boolean tokenized(byte[] header, Headers headers) {
        if (header != null && header.length == HEADER_LEN && (header[1] & FLAG_TOKEN_KEY) != 0) {
            return true;
        }
        return headers != null && headers.lastHeader(SEALED_KEY) != null;
    }

    /** Every e2ee.k value of the record, in order (none: an empty array). */
    static byte[][] sealedKeys(Headers headers) {
        java.util.List<byte[]> out = new java.util.ArrayList<>(1);
        if (headers != null) {
            for (Header h : headers.headers(SEALED_KEY)) {
                out.add(h.value() == null ? new byte[0] : h.value());
            }
        }
        return out.toArray(SealedHeaders.NONE);
    }

    /**
     * The token of {@code key} on {@code topic} (e2ee.keys=tokenize), waiting for the topic's
     * token secret up to the lease's e2ee.key.wait.ms. Throws E2eeException: TOKEN_PENDING once
     * the wait is over, BAD_RECORD for a key that cannot be tokenized.
     */
    static byte[] tokenize(Engines.Lease lease, String topic, byte[] key) {
        return awaitingToken(lease, topic, () -> lease.engine.tokenize(topic, key));
    }

    /**
     * Seals a record with a tokenized key ({@link Engine#sealTokenized}), waiting for the topic's
     * token secret as {@link #tokenize} does. The value is encrypted in place.
     */
    static Engine.Tokenized sealTokenized(Engines.Lease lease, String topic, byte[] key, byte[] value,
            byte[] headers) {
        return awaitingToken(lease, topic, () -> lease.engine.sealTokenized(topic, key, value, headers));
    }

    /**
     * Runs {@code attempt} until it does not fail with TOKEN_PENDING, waiting between attempts for
     * the key generation to move (the control plane signals every arrival; the token secret
     * arrives, or is founded here once the keys topic was read), at most e2ee.key.wait.ms in all.
     */
    private static <T> T awaitingToken(Engines.Lease lease, String topic, java.util.function.Supplier<T> attempt) {
        Engine engine = lease.engine;
        long deadline = 0;
        while (true) {
            E2eeException pending;
            long generation = engine.keyGeneration();
            try {
                return attempt.get();
            } catch (E2eeException e) {
                if (e.kind() != E2eeException.Kind.TOKEN_PENDING) {
                    throw e;
                }
                pending = e;
            }
            long now = System.currentTimeMillis();
            if (deadline == 0) {
                deadline = now + lease.keyWaitMs;
                lease.control.nudge(); // the engine queued its request for the secret: send it now
                log.debug("waiting up to {} ms for the token secret of topic {}", lease.keyWaitMs, topic);
            }
            if (now >= deadline) {
                throw new E2eeException(E2eeException.Kind.TOKEN_PENDING, null, pending.getMessage()
                        + "; gave up after waiting " + lease.keyWaitMs + " ms (" + E2eeConfig.KEY_WAIT_MS + "="
                        + lease.keyWaitMs + "). Run a producer, consumer or keeper of the topic that holds "
                        + "its token secret, or check that this client can read and write "
                        + E2eeConfig.KEYS_TOPIC);
            }
            try {
                engine.awaitKeyArrival(generation, Math.min(WAIT_SLICE_MS, deadline - now));
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
                throw new E2eeException(E2eeException.Kind.TOKEN_PENDING, null,
                        pending.getMessage() + "; interrupted while waiting for it");
            }
        }
    }

    /** How a sealed record bound its key, from the header's flags byte. */
    static int binding(byte[] header) {
        if (header == null || header.length != HEADER_LEN) {
            return Engine.BIND_UNBOUND; // the engine rejects it with the precise reason
        }
        int flags = header[1];
        if ((flags & FLAG_KEY_BOUND) == 0) {
            return Engine.BIND_UNBOUND;
        }
        return (flags & FLAG_KEY_NULL) != 0 ? Engine.BIND_NULL : Engine.BIND_BYTES;
    }

    /** The record-key bytes for a bound key as a hook sees it (byte[] or UTF-8 String). */
    static byte[] keyBytes(Object key) {
        if (key instanceof byte[]) {
            return (byte[]) key;
        }
        if (key instanceof String) {
            return ((String) key).getBytes(StandardCharsets.UTF_8);
        }
        return null;
    }

    /** The key id part of a header (producer instance and epoch), for logs. */
    static String keyId(byte[] header) {
        if (header == null || header.length != HEADER_LEN) {
            return "?";
        }
        StringBuilder b = new StringBuilder();
        for (int i = 2; i < 10; i++) {
            b.append(String.format("%02x", header[i] & 0xff));
        }
        long epoch = ((header[10] & 0xffL) << 24) | ((header[11] & 0xff) << 16) | ((header[12] & 0xff) << 8)
                | (header[13] & 0xff);
        return b.append('/').append(epoch).toString();
    }

    /**
     * Decrypts {@code value}, a record of {@code recordTopic}, in place. It is opened under the
     * lease's source topic for it (e2ee.topic.source.prefix; the topic itself without one), and
     * plaintext is refused if either name is protected. If its key has not arrived, waits for it up
     * to {@code waitMs} (the control plane is nudged to ask at once). Throws E2eeException, value
     * unchanged, if it cannot be opened; false if it is plaintext of unprotected topics.
     */
    static boolean open(Engines.Lease lease, String recordTopic, byte[] header, int binding, byte[] key,
            byte[] value, long waitMs) {
        // No lambda here: this is the hot path, which allocates nothing (HotPathCheck).
        Engine engine = lease.engine;
        String topic = lease.sourceTopic(recordTopic);
        long deadline = 0;
        while (true) {
            try {
                // the one native call per record
                return engine.open(topic, recordTopic, header, binding, key, value);
            } catch (E2eeException e) {
                deadline = awaitKey(lease, topic, header, waitMs, deadline, e);
            }
        }
    }

    /**
     * {@link #open} for a record with sealed headers (docs/FORMAT.md section 12): {@code sealed}
     * are its e2ee.h values, {@code visible} its other headers (but e2ee) encoded. Returns null if
     * it is plaintext of an unprotected topic, an empty array if it had no sealed headers, else one
     * byte followed by the encoded list to restore. Opened under the lease's source topic for
     * {@code recordTopic}, as {@link #open}.
     */
    static byte[] openRecord(Engines.Lease lease, String recordTopic, byte[] header, byte[][] sealed,
            byte[] visible, int binding, byte[] key, byte[] value, long waitMs) {
        String topic = lease.sourceTopic(recordTopic);
        return waiting(lease, topic, header, waitMs,
                () -> lease.engine.openRecord(topic, header, sealed, visible, binding, key, value));
    }

    /**
     * {@link #openRecord} for a record that may have a tokenized key (docs/FORMAT.md section 13):
     * also opens its e2ee.k values against {@code wireKey}, the key as it came off the wire.
     */
    static Engine.OpenedParts openParts(Engines.Lease lease, String recordTopic, byte[] header, byte[][] sealed,
            byte[] visible, byte[] wireKey, byte[][] sealedKeys, int binding, byte[] key, byte[] value,
            long waitMs) {
        String topic = lease.sourceTopic(recordTopic);
        return waiting(lease, topic, header, waitMs, () -> lease.engine.openRecordParts(topic, header, sealed,
                visible, wireKey, sealedKeys, binding, key, value));
    }

    private static <T> T waiting(Engines.Lease lease, String topic, byte[] header, long waitMs,
            java.util.function.Supplier<T> attempt) {
        long deadline = 0;
        while (true) {
            try {
                return attempt.get();
            } catch (E2eeException e) {
                deadline = awaitKey(lease, topic, header, waitMs, deadline, e);
            }
        }
    }

    /**
     * After a failed open: rethrows anything but KEY_PENDING; otherwise waits (the control plane
     * nudged at the first miss) until the key arrives, the wait is over, or {@code deadline}
     * passes, and returns the deadline (set at the first miss) for the next attempt. Throws
     * KEY_PENDING once the deadline has passed. Allocates nothing unless it throws or logs.
     */
    private static long awaitKey(Engines.Lease lease, String topic, byte[] header, long waitMs, long deadline,
            E2eeException e) {
        Engine engine = lease.engine;
        if (e.kind() != E2eeException.Kind.KEY_PENDING) {
            throw e;
        }
        // Read after the failed open: a key that arrived in between is no longer
        // wanted (wantStatus says so) or has moved the generation, so nothing is missed.
        long generation = engine.keyGeneration();
        long now = System.currentTimeMillis();
        if (deadline == 0) {
            deadline = now + waitMs;
            lease.metrics.consumerWaited();
            lease.control.nudge();
            log.debug("waiting up to {} ms for key {} of topic {}", waitMs, keyId(header), topic);
        }
        if (now >= deadline) {
            lease.metrics.keyWaitTimedOut();
            throw new E2eeException(E2eeException.Kind.KEY_PENDING, null, e.getMessage()
                    + "; gave up after waiting " + waitMs + " ms (" + E2eeConfig.KEY_WAIT_MS + "="
                    + lease.keyWaitMs + ")");
        }
        try {
            // Woken by the control plane as soon as a key arrives (signalKeyArrival).
            E2eeException.Kind status = engine.wantStatus(topic, header);
            while (status == E2eeException.Kind.KEY_PENDING && engine.keyGeneration() == generation
                    && System.currentTimeMillis() < deadline) {
                engine.awaitKeyArrival(generation,
                        Math.min(WAIT_SLICE_MS, deadline - System.currentTimeMillis()));
                status = engine.wantStatus(topic, header);
            }
        } catch (InterruptedException ie) {
            Thread.currentThread().interrupt();
            throw new E2eeException(E2eeException.Kind.KEY_PENDING, null,
                    e.getMessage() + "; interrupted while waiting for it");
        }
        return deadline;
    }
}
