package dev.kafkae2ee;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Range;
import org.apache.kafka.common.config.ConfigDef.Type;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.utils.Utils;

/**
 * Every {@code e2ee.*} property, documented, defaulted and validated with Kafka's {@link
 * ConfigDef}. A client that names an unknown {@code e2ee.*} property fails to construct (a typo
 * must not silently turn a setting off).
 */
public final class E2eeConfig extends AbstractConfig {
    public static final String PREFIX = "e2ee.";
    public static final String CREDENTIAL = "e2ee.credential";
    public static final String TRUST = "e2ee.trust";
    public static final String INNER_VALUE_SERIALIZER = "e2ee.inner.value.serializer";
    public static final String INNER_VALUE_DESERIALIZER = "e2ee.inner.value.deserializer";
    public static final String INNER_VALUE_SERDE = "e2ee.inner.value.serde";
    public static final String TOPICS = "e2ee.topics";
    public static final String KEY_ROTATION_MS = "e2ee.key.rotation.ms";
    public static final String KEY_ROTATION_RECORDS = "e2ee.key.rotation.records";
    public static final String KEY_RETENTION_MS = "e2ee.key.retention.ms";
    public static final String KEY_WAIT_MS = "e2ee.key.wait.ms";
    public static final String STATE_DIR = "e2ee.state.dir";
    public static final String CONTROL_TOPIC = "e2ee.control.topic";
    public static final String KEYS_TOPIC = "e2ee.keys.topic";
    public static final String CLOSE_TIMEOUT_MS = "e2ee.close.timeout.ms";
    public static final String BIND_KEY = "e2ee.bind.key";
    public static final String CIPHER = "e2ee.cipher";
    public static final String COMPRESSION = "e2ee.compression";
    public static final String KEX_HYBRID = "e2ee.kex.hybrid";
    public static final String CONTROL_BOOTSTRAP_SERVERS = "e2ee.control.bootstrap.servers";
    public static final String TOPIC_SOURCE_PREFIX = "e2ee.topic.source.prefix";
    public static final String HEADERS = "e2ee.headers";
    public static final String HEADERS_CLEAR = "e2ee.headers.clear";
    public static final String KEYS = "e2ee.keys";
    public static final String INNER_KEY_SERIALIZER = "e2ee.inner.key.serializer";
    public static final String INNER_KEY_DESERIALIZER = "e2ee.inner.key.deserializer";

    /** The properties the native engine reads (everything but the Java-only inner serdes). */
    static final List<String> NATIVE = List.of(
            CREDENTIAL, TRUST, TOPICS, KEY_ROTATION_MS, KEY_ROTATION_RECORDS, KEY_RETENTION_MS,
            KEY_WAIT_MS, STATE_DIR, CONTROL_TOPIC, KEYS_TOPIC, CLOSE_TIMEOUT_MS, BIND_KEY, CIPHER, COMPRESSION,
            KEX_HYBRID, CONTROL_BOOTSTRAP_SERVERS, TOPIC_SOURCE_PREFIX, KEYS);

    public static final ConfigDef CONFIG_DEF = new ConfigDef()
            .define(CREDENTIAL, Type.STRING, null, new ReadableFile(
                            "this client's credential file (kafka-e2ee credential issue ... --out FILE)"),
                    Importance.HIGH,
                    "Path of this client's credential file, issued by the authority with `kafka-e2ee "
                            + "credential issue`. It names the topics the client may produce and consume. Required.")
            .define(TRUST, Type.STRING, null, new ReadableFile(
                            "the trust file of your authority (kafka-e2ee authority init writes DIR/trust)"),
                    Importance.HIGH,
                    "Path of the trust file (`kafka-e2ee authority init` writes one): the authority whose "
                            + "credentials this client accepts from its peers. Required.")
            .define(INNER_VALUE_SERIALIZER, Type.CLASS, null, Importance.HIGH,
                    "For value.serializer=dev.kafkae2ee.EncryptingSerializer: the serializer that turns "
                            + "values into bytes before they are encrypted (any Serializer class, e.g. "
                            + "org.apache.kafka.common.serialization.StringSerializer). Configured and closed "
                            + "with the producer's settings.")
            .define(INNER_KEY_SERIALIZER, Type.CLASS, null, Importance.MEDIUM,
                    "With e2ee.keys=tokenize, for key.serializer=dev.kafkae2ee.EncryptingSerializer: the "
                            + "serializer that turns keys into bytes before they are tokenized (any Serializer "
                            + "class, e.g. org.apache.kafka.common.serialization.StringSerializer). Configured and "
                            + "closed with the producer's settings. (Or use E2eeProducerInterceptor with byte[] "
                            + "keys.) Java consumers read tokenized keys with "
                            + "interceptor.classes=dev.kafkae2ee.E2eeConsumerInterceptor and byte[] keys "
                            + "(key.deserializer=org.apache.kafka.common.serialization.ByteArrayDeserializer). "
                            + "Kafka Streams refuses e2ee.keys=tokenize.")
            .define(INNER_KEY_DESERIALIZER, Type.CLASS, null, Importance.MEDIUM,
                    "For key.deserializer=dev.kafkae2ee.DecryptingDeserializer: the deserializer of your keys. "
                            + "That key deserializer is a guard for topics that may hold tokenized keys "
                            + "(e2ee.keys=tokenize): it fails every record whose key is a token (tombstones "
                            + "included, which Kafka never hands a value deserializer) instead of handing the "
                            + "application the token, and passes other keys to this deserializer. To read "
                            + "tokenized keys use interceptor.classes=dev.kafkae2ee.E2eeConsumerInterceptor with "
                            + "key.deserializer=org.apache.kafka.common.serialization.ByteArrayDeserializer.")
            .define(INNER_VALUE_DESERIALIZER, Type.CLASS, null, Importance.HIGH,
                    "For value.deserializer=dev.kafkae2ee.DecryptingDeserializer: the deserializer that "
                            + "turns decrypted bytes into values. Configured and closed with the consumer's settings.")
            .define(INNER_VALUE_SERDE, Type.CLASS, null, Importance.HIGH,
                    "Kafka Streams, for default.value.serde=dev.kafkae2ee.E2eeSerde: the Serde of your values "
                            + "(any Serde class, e.g. org.apache.kafka.common.serialization.Serdes$StringSerde). "
                            + "E2eeSerde requires consumer.interceptor.classes=dev.kafkae2ee.E2eeConsumerInterceptor "
                            + "and producer.interceptor.classes=dev.kafkae2ee.E2eeProducerInterceptor: they "
                            + "encrypt every topic the application writes, changelogs included (docs/QUICKSTART.md, "
                            + "Kafka Streams).")
            .define(TOPICS, Type.LIST, "*", (name, value) -> {
                        if (value instanceof List && ((List<?>) value).isEmpty()) {
                            throw new ConfigException(name, value,
                                    "list at least one topic pattern (use * for all topics)");
                        }
                    }, Importance.MEDIUM,
                    "Comma-separated patterns of the topics whose records are encrypted: `*` is every "
                            + "topic, `prefix.*` a prefix. A consumer rejects records without the e2ee "
                            + "header on these topics.")
            .define(KEY_ROTATION_MS, Type.LONG, 900_000L, Range.atLeast(1), Importance.MEDIUM,
                    "A producer moves to a new epoch key after this many milliseconds.")
            .define(KEY_ROTATION_RECORDS, Type.LONG, 100_000_000L, Range.between(1, 4_294_967_295L),
                    Importance.LOW, "... or after sealing this many records, whichever comes first.")
            .define(KEY_RETENTION_MS, Type.LONG, 604_800_000L, Range.atLeast(1), Importance.MEDIUM,
                    "Epoch keys are deleted everywhere this many milliseconds after their epoch ended; "
                            + "records older than that can no longer be decrypted (crypto-shredding). "
                            + "At least e2ee.key.rotation.ms.")
            .define(KEY_WAIT_MS, Type.LONG, 30_000L, Range.atLeast(0), Importance.MEDIUM,
                    "How long a consumer waits for a key it lacks before it fails the record; and how long a "
                            + "producer with e2ee.keys=tokenize waits for its topic's token secret (from a running "
                            + "party that holds it, or made by this producer once it has read the keys topic) "
                            + "before it fails the record.")
            .define(STATE_DIR, Type.STRING, "", Importance.LOW,
                    "Directory for this client's encrypted key state, so that keys survive a restart; "
                            + "one per process. Empty: keys are kept in memory only.")
            .define(CONTROL_TOPIC, Type.STRING, "_e2ee_control", new ConfigDef.NonEmptyString(),
                    Importance.LOW,
                    "The topic that carries the key exchange. Created when missing (1 partition, "
                            + "retention 1 hour). All clients of one deployment must use the same one.")
            .define(KEYS_TOPIC, Type.STRING, "_e2ee_keys", new ConfigDef.NonEmptyString(), Importance.LOW,
                    "The topic that keeps consumers' prekeys and the key envelopes producers seal to them, so "
                            + "records stay readable after their producer has exited. Read from the beginning; "
                            + "created when missing (1 partition, cleanup.policy=compact,delete, retention.ms = "
                            + "e2ee.key.retention.ms + e2ee.key.rotation.ms + 1 day). All clients of one "
                            + "deployment must use the same one, and may need Read and Write on it.")
            .define(CLOSE_TIMEOUT_MS, Type.LONG, 30_000L, Range.atLeast(0), Importance.LOW,
                    "How long closing a producer may wait for the broker to acknowledge the key envelopes "
                            + "of what it sealed (after reading the keys topic up to its end). What is still "
                            + "unacknowledged then is logged at ERROR and counted in the "
                            + "key-envelopes-unacknowledged metric. Consumers close at once.")
            .define(CIPHER, Type.STRING, "auto",
                    ConfigDef.ValidString.in("auto", "chacha20-poly1305", "aes-256-gcm"), Importance.LOW,
                    "The cipher producers seal values with: auto (AES-256-GCM where the CPU has AES and "
                            + "carry-less-multiply instructions, ChaCha20-Poly1305 elsewhere), aes-256-gcm "
                            + "(2.6x faster for 1 KiB values with AES-NI, see docs/PERFORMANCE.md) or "
                            + "chacha20-poly1305 (fast and constant-time on every CPU). Each record's header "
                            + "names its cipher, so consumers open both whatever they set.")
            .define(COMPRESSION, Type.STRING, "none", ConfigDef.ValidString.in("none", "zstd", "lz4"),
                    Importance.LOW,
                    "Producers compress each value before sealing it: none, zstd or lz4. The value keeps its "
                            + "length (the saved bytes become zero padding), so set the producer's "
                            + "compression.type (e.g. zstd or lz4) too: that is what removes them on the wire and "
                            + "on disk. Caution: a compressed value's size reveals something about its content; "
                            + "do not enable it for values that mix attacker-influenced data with secrets "
                            + "(CRIME/BREACH-style attacks).")
            .define(BIND_KEY, Type.BOOLEAN, true, Importance.LOW,
                    "Whether producers bind the record key into each record's authentication, so a broker "
                            + "cannot move a value to another key. librdkafka producers honour it; Java producers "
                            + "never bind (their hooks do not see the serialized key). Java's DecryptingDeserializer "
                            + "cannot open key-bound records (it does not see the key): set false on librdkafka "
                            + "producers whose topics it reads; E2eeConsumerInterceptor opens both.")
            .define(HEADERS, Type.STRING, "encrypt", ConfigDef.ValidString.in("encrypt", "clear"),
                    Importance.MEDIUM,
                    "What producers do with a record's application headers: encrypt (seal them with the "
                            + "value in one extra header, e2ee.h; consumers get exactly the original headers "
                            + "back, in order, duplicates and nulls kept, and any tampering is rejected) or clear "
                            + "(leave them readable and unauthenticated, as before). Consumers follow each record, "
                            + "whatever they set. Consumers of the previous version reject records with sealed "
                            + "headers: upgrade consumers first, or set clear until they are (docs/FORMAT.md, "
                            + "section 12).")
            .define(HEADERS_CLEAR, Type.LIST, "", new ClearNames(), Importance.LOW,
                    "With e2ee.headers=encrypt: comma-separated header names that stay readable on the record "
                            + "for the broker and tooling (routing, tracing). They are still authenticated: "
                            + "consumers reject a record whose clear copies were changed, removed, added or "
                            + "reordered. Empty = none.")
            .define(KEYS, Type.STRING, "clear", ConfigDef.ValidString.in("clear", "tokenize"),
                    Importance.MEDIUM,
                    "What producers do with record keys: `clear` (send them as they are) or `tokenize` (send a "
                            + "deterministic token of each key instead, of the key's own length, so equal keys "
                            + "still go to one partition and a compacted topic still keeps the newest value per "
                            + "key, while the broker learns only which records share a key; the real key travels "
                            + "sealed in one extra header, `e2ee.k`, and consumers get it back). Keys of 1 or 2 "
                            + "bytes, or over 8,160, cannot be tokenized: such a record fails. The topic's token "
                            + "secret is shared among its producers through the keys topic and never rotates by "
                            + "itself (docs/FORMAT.md section 13, docs/PROTOCOL.md section 5e). Consumers follow "
                            + "each record, whatever they set; consumers of the previous version reject tokenized "
                            + "records: upgrade consumers first.")
            .define(KEX_HYBRID, Type.STRING, "prefer", ConfigDef.ValidString.in("prefer", "require", "off"),
                    Importance.LOW,
                    "The key exchange mixes an ML-KEM-768 (post-quantum) secret into every X25519 Noise "
                            + "session and every key envelope on the keys topic, so the topic keys stay secret from "
                            + "a broker that records them until it has a quantum computer (docs/PROTOCOL.md, "
                            + "sections 4a and 5d): prefer (hybrid with every party that speaks it, classical only with "
                            + "earlier versions; two hybrid-capable parties never settle for classical in a session), "
                            + "require (refuse classical sessions and envelopes: set once every client is upgraded) "
                            + "or off (the wire behaviour of the previous version; only for a measured reason, see "
                            + "docs/PERFORMANCE.md).")
            .define(CONTROL_BOOTSTRAP_SERVERS, Type.LIST, "", (name, value) -> checkBootstrap(value),
                    Importance.LOW,
                    "Consumers of a mirrored cluster (MirrorMaker 2): the source cluster's bootstrap servers "
                            + "(host:port,...). The key exchange (e2ee.control.topic and e2ee.keys.topic) runs "
                            + "there instead of on bootstrap.servers, reached with the client's own security "
                            + "settings (security.protocol, ssl.*, sasl.*). Empty: the client's own cluster. "
                            + "Producers refuse it (docs/PROTOCOL.md, section 5c).")
            .define(TOPIC_SOURCE_PREFIX, Type.STRING, "", Importance.LOW,
                    "Consumers of a mirrored cluster: a record of a topic named with this prefix is opened, "
                            + "authorized and key-requested as the topic named by the rest, its source topic "
                            + "(MirrorMaker 2's DefaultReplicationPolicy: `<source alias>.`, e.g. `A.` opens "
                            + "A.orders as orders); other topics under their own name. Only from this "
                            + "setting, never from the broker. Plaintext on a mapped topic is refused if either "
                            + "name matches e2ee.topics. Empty: none (and for the identity replication policy). "
                            + "Producers refuse it (docs/PROTOCOL.md, section 5c).");

    public E2eeConfig(Map<?, ?> originals) {
        super(CONFIG_DEF, checkNames(originals), false);
        requirePath(CREDENTIAL, "this client's credential file (kafka-e2ee credential issue ... --out FILE)");
        requirePath(TRUST, "the trust file of your authority (kafka-e2ee authority init writes DIR/trust)");
        if (getLong(KEY_RETENTION_MS) < getLong(KEY_ROTATION_MS)) {
            throw new ConfigException(KEY_RETENTION_MS, getLong(KEY_RETENTION_MS),
                    "must be at least " + KEY_ROTATION_MS + " (" + getLong(KEY_ROTATION_MS) + ")");
        }
    }

    private void requirePath(String name, String what) {
        String v = getString(name);
        if (v == null || v.trim().isEmpty()) {
            throw new ConfigException(name + " is required: set it to the path of " + what);
        }
    }

    private static Map<?, ?> checkNames(Map<?, ?> originals) {
        for (Object k : originals.keySet()) {
            String key = String.valueOf(k);
            if (key.startsWith(PREFIX) && !CONFIG_DEF.names().contains(key)) {
                throw new ConfigException(key, originals.get(k),
                        "unknown kafka-e2ee property (a typo?); the e2ee.* properties are: "
                                + String.join(", ", new TreeSet<>(CONFIG_DEF.names())));
            }
        }
        return originals;
    }

    /**
     * e2ee.control.bootstrap.servers: empty, or host:port entries as Kafka's clients parse
     * bootstrap.servers (the control clients connect there), so a wrong value fails client
     * construction rather than the control thread's first connection.
     */
    private static void checkBootstrap(Object value) {
        if (!(value instanceof List)) {
            return;
        }
        for (Object o : (List<?>) value) {
            String entry = String.valueOf(o).trim();
            if (entry.isEmpty()) {
                continue;
            }
            String host = Utils.getHost(entry);
            Integer port = Utils.getPort(entry);
            if (host == null || host.isEmpty() || port == null || port < 1 || port > 65535) {
                throw new ConfigException(CONTROL_BOOTSTRAP_SERVERS, value, "'" + entry + "' is not host:port; "
                        + "set it to the source cluster's bootstrap servers (host:port,...), or remove it to "
                        + "exchange keys on this client's own cluster (bootstrap.servers)");
            }
        }
    }

    /**
     * e2ee.control.bootstrap.servers as one string (host:port,...), or "" when unset: the cluster
     * this client exchanges keys on, when it is not its own.
     */
    String controlBootstrap() {
        StringBuilder b = new StringBuilder();
        for (String s : getList(CONTROL_BOOTSTRAP_SERVERS)) {
            if (!s.trim().isEmpty()) {
                b.append(b.length() > 0 ? "," : "").append(s.trim());
            }
        }
        return b.toString();
    }

    /** e2ee.topic.source.prefix, trimmed; "" when unset. */
    String sourcePrefix() {
        String p = getString(TOPIC_SOURCE_PREFIX);
        return p == null ? "" : p.trim();
    }

    /**
     * For the producer hooks: the mirror settings are for consumers of a mirrored cluster only (a
     * producer seals under the topic it writes to, and exchanges keys on its own cluster), so a
     * producer that has one fails, naming it and the fix.
     */
    void refuseConsumerOnly(String hook) {
        for (String name : List.of(CONTROL_BOOTSTRAP_SERVERS, TOPIC_SOURCE_PREFIX)) {
            boolean set = name.equals(TOPIC_SOURCE_PREFIX) ? !sourcePrefix().isEmpty() : !controlBootstrap().isEmpty();
            if (set) {
                throw new ConfigException(name, originals().get(name), "is a consumer setting (reading topics "
                        + "mirrored by MirrorMaker 2, docs/PROTOCOL.md section 5c) and " + hook + " is a "
                        + "producer hook: producers seal under the topic they write to and exchange keys on "
                        + "their own cluster. Remove it from the producer's configuration");
            }
        }
    }

    /** The settings the native engine reads, as strings. */
    Map<String, String> nativeProperties() {
        Map<String, String> out = new LinkedHashMap<>();
        for (String name : NATIVE) {
            Object v = get(name);
            out.put(name, v instanceof List ? String.join(",", getList(name)) : String.valueOf(v));
        }
        return out;
    }

    /**
     * The cluster this client exchanges keys on: e2ee.control.bootstrap.servers when set, else its
     * own bootstrap servers (engines are shared per key-exchange cluster, as in the plugin).
     */
    String keyExchangeCluster(Map<?, ?> originals) {
        String control = controlBootstrap();
        return control.isEmpty() ? cluster(originals) : control;
    }

    /** The cluster this client talks to: its bootstrap servers, as one string. */
    static String cluster(Map<?, ?> originals) {
        Object v = originals.get("bootstrap.servers");
        if (v instanceof List) {
            StringBuilder b = new StringBuilder();
            for (Object o : (List<?>) v) {
                if (b.length() > 0) {
                    b.append(',');
                }
                b.append(String.valueOf(o).trim());
            }
            return b.toString();
        }
        return v == null ? "" : String.valueOf(v).trim();
    }

    /** Turns a native configuration failure into Kafka's ConfigException naming the property. */
    ConfigException configException(E2eeException e) {
        String property = e.property() == null ? "e2ee" : e.property();
        Object value = originals().get(property);
        return new ConfigException(property, value == null ? "(default)" : value, e.getMessage());
    }

    /** e2ee.headers.clear: application header names, never kafka-e2ee's own. */
    private static final class ClearNames implements ConfigDef.Validator {
        @Override
        public void ensureValid(String name, Object value) {
            if (!(value instanceof List)) {
                return;
            }
            for (Object n : (List<?>) value) {
                String s = String.valueOf(n).trim();
                if (SealedHeaders.isOurs(s)) {
                    throw new ConfigException(name, value,
                            "'" + s + "' is kafka-e2ee's own header, not an application header");
                }
            }
        }

        @Override
        public String toString() {
            return "comma-separated header names";
        }
    }

    /** A path property that must name a readable file. */
    private static final class ReadableFile implements ConfigDef.Validator {
        private final String what;

        ReadableFile(String what) {
            this.what = what;
        }

        @Override
        public void ensureValid(String name, Object value) {
            if (value == null) {
                return; // unset: the E2eeConfig constructor says it is required
            }
            String path = String.valueOf(value).trim();
            if (path.isEmpty()) {
                throw new ConfigException(name + " is required: set it to the path of " + what);
            }
            Path p = Path.of(path);
            if (!Files.isRegularFile(p)) {
                throw new ConfigException(name, path, "no such file; set it to the path of " + what);
            }
            if (!Files.isReadable(p)) {
                throw new ConfigException(name, path,
                        "the file is not readable by this process; fix its permissions or the path");
            }
        }

        @Override
        public String toString() {
            return "path of a readable file";
        }
    }
}
