package dev.kafkae2ee;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The native engine of one process, cluster and credential: an opaque handle owned by this
 * object. {@link #close()} refuses while a call is in flight, so no native call ever sees a
 * released handle.
 */
final class Engine implements AutoCloseable {
    /** Record-key binding: not bound (the hook cannot see the serialized key). */
    static final int BIND_UNBOUND = 0;
    /** Record-key binding: bound, and the key is null. */
    static final int BIND_NULL = 1;
    /** Record-key binding: bound to these key bytes. */
    static final int BIND_BYTES = 2;

    /** The native counters, in the order metrics0 returns them. */
    static final String[] METRIC_NAMES = {
        "records-sealed",
        "records-opened",
        "records-rejected",
        "records-missing-header",
        "records-key-unavailable",
        "control-messages-rejected",
        "keys-served",
        "keys-received",
        "keys-refused",
        "keys-deleted",
        "key-rotations",
        "handshakes",
        "sessions-hybrid",
        "sessions-classical",
    };

    /** pollTransmit0's channel byte: the message goes to e2ee.control.topic. */
    static final byte CHANNEL_CONTROL = 0;
    /** pollTransmit0's channel byte: the message goes to e2ee.keys.topic (compacted; always keyed). */
    static final byte CHANNEL_KEYS = 1;

    /** A message the engine wants published: on which topic, under which record key. */
    static final class Transmit {
        /** The Kafka record key: recipient instance id or null (control topic); always set (keys topic). */
        final byte[] key;
        final byte[] payload;
        /** True: e2ee.keys.topic; false: e2ee.control.topic. */
        final boolean keys;

        Transmit(byte[] key, byte[] payload, boolean keys) {
            this.key = key;
            this.payload = payload;
            this.keys = keys;
        }
    }

    /** The length of the e2ee header value (format v1). */
    static final int HEADER_LEN = 34;
    /** Past this many distinct topics, topic facts are computed per call instead of cached. */
    private static final int MAX_CACHED_TOPICS = 10_000;

    /** What the record path needs of a topic, computed once: its UTF-8 name and whether it is protected. */
    static final class Topic {
        final byte[] name;
        final boolean isProtected;

        Topic(byte[] name, boolean isProtected) {
            this.name = name;
            this.isProtected = isProtected;
        }
    }

    private final long handle;
    /** Per-topic facts: the record path makes one native call per record, with no string conversion. */
    private final Map<String, Topic> topics = new ConcurrentHashMap<>();
    /** Calls in flight; -1 once closed. */
    private final AtomicInteger users = new AtomicInteger();
    private final Object keyArrival = new Object();

    private Engine(long handle) {
        this.handle = handle;
    }

    /** The shared native engine for this cluster and these (native) e2ee.* settings. */
    static Engine create(String cluster, Map<String, String> e2eeProperties) {
        NativeLibrary.load();
        return new Engine(create0(cluster, pairs(e2eeProperties)));
    }

    private static String[] pairs(Map<String, String> e2eeProperties) {
        String[] pairs = new String[e2eeProperties.size() * 2];
        int i = 0;
        for (Map.Entry<String, String> e : e2eeProperties.entrySet()) {
            pairs[i++] = e.getKey();
            pairs[i++] = e.getValue();
        }
        return pairs;
    }

    static String nativeVersion() {
        return version0();
    }

    private long acquire() {
        while (true) {
            int n = users.get();
            if (n < 0) {
                throw closed();
            }
            if (users.compareAndSet(n, n + 1)) {
                return handle;
            }
        }
    }

    private static E2eeException closed() {
        return new E2eeException(E2eeException.Kind.INTERNAL, null, "the kafka-e2ee engine is closed");
    }

    private void release() {
        users.decrementAndGet();
    }

    /** The facts about {@code topic} (cached: the protected-topic setting is fixed for the engine's life). */
    Topic topic(String topic) {
        Topic t = topics.get(topic);
        if (t != null) {
            return t;
        }
        boolean isProtected;
        long h = acquire();
        try {
            isProtected = isProtected0(h, topic);
        } finally {
            release();
        }
        t = new Topic(topic.getBytes(StandardCharsets.UTF_8), isProtected);
        if (topics.size() < MAX_CACHED_TOPICS) {
            topics.putIfAbsent(topic, t);
        }
        return t;
    }

    /** Encrypts {@code value} in place; returns the e2ee header value. */
    byte[] seal(String topic, int binding, byte[] key, byte[] value) {
        Topic t = topic(topic);
        byte[] header = new byte[HEADER_LEN];
        long h = acquire();
        try {
            seal0(h, t.name, binding, key, value, header);
        } finally {
            release();
        }
        return header;
    }

    /**
     * Encrypts {@code value} in place and seals the encoded header list {@code headers}
     * (docs/FORMAT.md section 12); returns the e2ee header value followed by the e2ee.h value.
     */
    byte[] sealRecord(String topic, int binding, byte[] key, byte[] value, byte[] headers) {
        Topic t = topic(topic);
        long h = acquire();
        byte[] out;
        try {
            out = sealRecord0(h, t.name, binding, key, value, headers);
        } finally {
            release();
        }
        if (out == null || out.length < HEADER_LEN) {
            throw new E2eeException(E2eeException.Kind.INTERNAL, null, "malformed answer from the native engine");
        }
        return out;
    }

    /**
     * Decrypts {@code value} in place, checking and opening the record's sealed headers: {@code
     * sealed} are its e2ee.h values, {@code visible} its other headers (but e2ee) encoded. Returns
     * null if it is plaintext of an unprotected topic, an empty array if it had no sealed headers,
     * else one byte followed by the encoded header list to restore.
     */
    byte[] openRecord(String topic, byte[] header, byte[][] sealed, byte[] visible, int binding, byte[] key,
            byte[] value) {
        Topic t = topic(topic);
        long h = acquire();
        byte[] out;
        try {
            out = openRecord0(h, t.name, header, sealed, visible, binding, key, value);
        } finally {
            release();
        }
        if (out == null || out.length == 0 || out[0] < 0 || out[0] > 2 || (out[0] != 2 && out.length != 1)) {
            throw new E2eeException(E2eeException.Kind.INTERNAL, null, "malformed answer from the native engine");
        }
        return out[0] == 0 ? null : out[0] == 1 ? new byte[0] : out;
    }

    /** A record sealed with a tokenized key (docs/FORMAT.md section 13). */
    static final class Tokenized {
        /** The e2ee header value. */
        final byte[] header;
        /** The e2ee.h value, or null if the record has no sealed headers. */
        final byte[] sealedHeaders;
        /** What goes on the wire as the record's key. */
        final byte[] token;
        /** The e2ee.k value. */
        final byte[] sealedKey;

        Tokenized(byte[] header, byte[] sealedHeaders, byte[] token, byte[] sealedKey) {
            this.header = header;
            this.sealedHeaders = sealedHeaders;
            this.token = token;
            this.sealedKey = sealedKey;
        }
    }

    /** What {@link #openRecordParts} restored besides the value. */
    static final class OpenedParts {
        /** False: plaintext of an unprotected topic. */
        final boolean decrypted;
        /** The encoded header list to restore, or null if the record had none. */
        final byte[] headers;
        /** The real record key, or null if the key on the wire was not a token. */
        final byte[] key;

        OpenedParts(boolean decrypted, byte[] headers, byte[] key) {
            this.decrypted = decrypted;
            this.headers = headers;
            this.key = key;
        }
    }

    /**
     * The token of {@code key} on {@code topic} (docs/FORMAT.md 13.1). E2eeException TOKEN_PENDING
     * while the topic's token secret has not arrived; BAD_RECORD for a key that cannot be tokenized.
     */
    byte[] tokenize(String topic, byte[] key) {
        Topic t = topic(topic);
        long h = acquire();
        byte[] token;
        try {
            token = tokenize0(h, t.name, key);
        } finally {
            release();
        }
        if (token == null || token.length != key.length) {
            throw new E2eeException(E2eeException.Kind.INTERNAL, null, "malformed answer from the native engine");
        }
        return token;
    }

    /**
     * Encrypts {@code value} in place (an empty array for a tombstone), seals {@code headers} (an
     * encoded header list, or null for none) and the real {@code key}, and tokenizes the key.
     * E2eeException TOKEN_PENDING while the topic's token secret has not arrived.
     */
    Tokenized sealTokenized(String topic, byte[] key, byte[] value, byte[] headers) {
        Topic t = topic(topic);
        long h = acquire();
        byte[][] out;
        try {
            out = sealRecordTokenized0(h, t.name, key, value, headers);
        } finally {
            release();
        }
        if (out == null || out.length != 4 || out[0] == null || out[0].length != HEADER_LEN
                || (out[1] == null) != (headers == null) || out[2] == null || out[2].length != key.length
                || out[3] == null) {
            throw new E2eeException(E2eeException.Kind.INTERNAL, null, "malformed answer from the native engine");
        }
        return new Tokenized(out[0], out[1], out[2], out[3]);
    }

    /**
     * Decrypts {@code value} in place, opening and checking the record's sealed headers and sealed
     * key: as {@link #openRecord}, plus {@code wireKey} (the key as it came off the wire, null for
     * a null key) and {@code sealedKeys} (its e2ee.k values, in order).
     */
    OpenedParts openRecordParts(String topic, byte[] header, byte[][] sealed, byte[] visible, byte[] wireKey,
            byte[][] sealedKeys, int binding, byte[] key, byte[] value) {
        Topic t = topic(topic);
        long h = acquire();
        byte[][] out;
        try {
            out = openRecordParts0(h, t.name, header, sealed, visible, wireKey, sealedKeys, binding, key, value);
        } finally {
            release();
        }
        if (out == null || out.length != 3 || out[0] == null || out[0].length != 1 || out[0][0] < 0
                || out[0][0] > 1 || (out[0][0] == 0 && (out[1] != null || out[2] != null))) {
            throw new E2eeException(E2eeException.Kind.INTERNAL, null, "malformed answer from the native engine");
        }
        return new OpenedParts(out[0][0] == 1, out[1], out[2]);
    }

    /**
     * The control plane has read the keys topic up to its end: the engine may now found a token
     * secret that nobody has claimed (docs/PROTOCOL.md 5e).
     */
    void keysTopicRead() {
        long h = acquire();
        try {
            keysTopicRead0(h);
        } finally {
            release();
        }
    }

    /** Decrypts {@code value} in place; false if it is plaintext of an unprotected topic. */
    boolean open(String topic, byte[] header, int binding, byte[] key, byte[] value) {
        return open(topic, null, header, binding, key, value);
    }

    /**
     * Decrypts {@code value} in place, opened as {@code topic}; {@code mirrored}, the topic the record
     * was read from when that is another name (a mirror mapped by e2ee.topic.source.prefix), else null:
     * plaintext is refused (MISSING_HEADER) if either name is protected. False if it is plaintext of
     * unprotected topics.
     */
    boolean open(String topic, String mirrored, byte[] header, int binding, byte[] key, byte[] value) {
        Topic t = topic(topic);
        byte[] m = mirrored == null || mirrored.equals(topic) ? null : topic(mirrored).name;
        long h = acquire();
        try {
            return open0(h, t.name, m, header, binding, key, value);
        } finally {
            release();
        }
    }

    /**
     * Checks {@code e2ee.*} settings as {@link #create} does, without an engine; throws E2eeException
     * (CONFIG, naming the property) if they are wrong.
     */
    static void checkProperties(Map<String, String> e2eeProperties) {
        NativeLibrary.load();
        checkProperties0(pairs(e2eeProperties));
    }

    /**
     * The name a consumer with {@code e2ee.topic.source.prefix=prefix} (empty: none) opens a record of
     * {@code topic} under: the core's mapping (docs/PROTOCOL.md, section 5c).
     */
    static String sourceTopic(String prefix, String topic) {
        NativeLibrary.load();
        return sourceTopic0(prefix, topic);
    }

    /** Null if the record's key is held or not asked for, else why it is missing. */
    E2eeException.Kind wantStatus(String topic, byte[] header) {
        Topic t = topic(topic);
        long h = acquire();
        try {
            int code = wantStatus0(h, t.name, header);
            return code < 0 ? null : E2eeException.Kind.of(code);
        } finally {
            release();
        }
    }

    boolean isProtected(String topic) {
        if (users.get() < 0) { // a cached answer must not outlive close()
            throw closed();
        }
        return topic(topic).isProtected;
    }

    long keyGeneration() {
        long h = acquire();
        try {
            return keyGeneration0(h);
        } finally {
            release();
        }
    }

    /** Counts a record rejected before it could be opened (more than one e2ee header). */
    void noteRejected() {
        long h = acquire();
        try {
            noteRejected0(h);
        } finally {
            release();
        }
    }

    /** Null if the control message was accepted, else why not (safe to log). */
    String handleControl(long nowMs, byte[] message) {
        long h = acquire();
        try {
            return handleControl0(h, nowMs, message);
        } finally {
            release();
        }
    }

    /** Null if all is well, else what went wrong (safe to log). */
    String handleTimeout(long nowMs) {
        long h = acquire();
        try {
            return handleTimeout0(h, nowMs);
        } finally {
            release();
        }
    }

    long pollTimeout() {
        long h = acquire();
        try {
            return pollTimeout0(h);
        } finally {
            release();
        }
    }

    /** The next message to publish, or null if none is queued. */
    Transmit pollTransmit() {
        byte[][] m;
        long h = acquire();
        try {
            m = pollTransmit0(h);
        } finally {
            release();
        }
        if (m == null) {
            return null;
        }
        if (m.length != 3 || m[1] == null || m[2] == null || m[2].length != 1
                || (m[2][0] != CHANNEL_CONTROL && m[2][0] != CHANNEL_KEYS)) {
            // A native library of another shape: never guess the topic (fail closed).
            throw new E2eeException(E2eeException.Kind.INTERNAL, null, "malformed message from the native engine");
        }
        return new Transmit(m[0], m[1], m[2][0] == CHANNEL_KEYS);
    }

    String instanceId() {
        long h = acquire();
        try {
            return instanceId0(h);
        } finally {
            release();
        }
    }

    long[] metrics() {
        long h = acquire();
        try {
            return metrics0(h);
        } finally {
            release();
        }
    }

    /** Wakes the threads waiting in {@link #awaitKeyArrival}. */
    void signalKeyArrival() {
        synchronized (keyArrival) {
            keyArrival.notifyAll();
        }
    }

    /** Waits up to {@code maxMs} for the key generation to move past {@code seen}. */
    void awaitKeyArrival(long seen, long maxMs) throws InterruptedException {
        if (maxMs <= 0) {
            return;
        }
        synchronized (keyArrival) {
            if (keyGeneration() == seen) {
                keyArrival.wait(maxMs);
            }
        }
    }

    @Override
    public void close() {
        if (!users.compareAndSet(0, -1)) {
            if (users.get() < 0) {
                return;
            }
            throw new IllegalStateException("the kafka-e2ee engine is in use; close it after the last call returns");
        }
        destroy0(handle);
    }

    private static native String version0();

    private static native long create0(String cluster, String[] keysAndValues);

    private static native void destroy0(long handle);

    private static native void seal0(
            long handle, byte[] topic, int binding, byte[] key, byte[] value, byte[] header);

    private static native void checkProperties0(String[] keysAndValues);

    private static native String sourceTopic0(String prefix, String topic);

    private static native byte[] sealRecord0(
            long handle, byte[] topic, int binding, byte[] key, byte[] value, byte[] headers);

    private static native byte[] openRecord0(long handle, byte[] topic, byte[] header, byte[][] sealed,
            byte[] visible, int binding, byte[] key, byte[] value);

    private static native byte[] tokenize0(long handle, byte[] topic, byte[] key);

    private static native byte[][] sealRecordTokenized0(
            long handle, byte[] topic, byte[] key, byte[] value, byte[] headers);

    private static native byte[][] openRecordParts0(long handle, byte[] topic, byte[] header, byte[][] sealed,
            byte[] visible, byte[] wireKey, byte[][] sealedKeys, int binding, byte[] key, byte[] value);

    private static native void keysTopicRead0(long handle);

    private static native boolean open0(
            long handle, byte[] topic, byte[] mirrored, byte[] header, int binding, byte[] key, byte[] value);

    private static native int wantStatus0(long handle, byte[] topic, byte[] header);

    private static native boolean isProtected0(long handle, String topic);

    private static native long keyGeneration0(long handle);

    private static native void noteRejected0(long handle);

    private static native String handleControl0(long handle, long nowMs, byte[] message);

    private static native String handleTimeout0(long handle, long nowMs);

    private static native long pollTimeout0(long handle);

    private static native byte[][] pollTransmit0(long handle);

    private static native String instanceId0(long handle);

    private static native long[] metrics0(long handle);
}
