package dev.kafkae2ee;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Utils;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Kafka Streams: {@code default.value.serde=dev.kafkae2ee.E2eeSerde} with {@code
 * e2ee.inner.value.serde} naming the Serde of your values.
 *
 * <p>It does no cryptography itself, on purpose. State stores call a serde without headers, and
 * their changelog records are produced from the bytes the store holds, so a serde cannot seal a
 * changelog (a serde that tried wrote either plaintext or a header-less record that fails later).
 * The interceptors, which Streams installs on all of its clients, see every record of every topic
 * on the wire: input, repartition, changelog and output. So E2eeSerde is the configuration check
 * that makes a Streams application correct by configuration: at start it fails with a
 * ConfigException naming the property unless both interceptors are set for the producer and for
 * every consumer (main, restore, global), and it logs once that record keys stay plaintext. Its
 * deserializer refuses a value that still carries an e2ee header (it was not decrypted): ciphertext
 * never reaches the inner deserializer. Outside Streams use EncryptingSerializer and
 * DecryptingDeserializer.
 */
public class E2eeSerde<T> implements Serde<T> {
    private static final Logger log = LoggerFactory.getLogger(E2eeSerde.class);
    private static final AtomicBoolean KEYS_WARNED = new AtomicBoolean();
    static final String PRODUCER_INTERCEPTOR = E2eeProducerInterceptor.class.getName();
    static final String CONSUMER_INTERCEPTOR = E2eeConsumerInterceptor.class.getName();

    private Serde<T> inner;

    @Override
    @SuppressWarnings("unchecked")
    public void configure(Map<String, ?> configs, boolean isKey) {
        if (isKey) {
            throw new ConfigException("default.key.serde", E2eeSerde.class.getName(),
                    "kafka-e2ee encrypts record values only; set it as default.value.serde");
        }
        if (!configs.containsKey("application.id")) {
            throw new ConfigException(E2eeSerde.class.getName() + " is for Kafka Streams (default.value.serde); "
                    + "plain clients use value.serializer=dev.kafkae2ee.EncryptingSerializer and "
                    + "value.deserializer=dev.kafkae2ee.DecryptingDeserializer");
        }
        boolean tokenize = "tokenize".equals(String.valueOf(configs.get(E2eeConfig.KEYS)).trim());
        requireInterceptors(configs);
        Object innerName = configs.get(E2eeConfig.INNER_VALUE_SERDE);
        if (innerName == null || String.valueOf(innerName).trim().isEmpty()) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_SERDE + " is required with default.value.serde="
                    + E2eeSerde.class.getName() + ": set it to the Serde of your values, e.g. "
                    + "org.apache.kafka.common.serialization.Serdes$StringSerde");
        }
        Class<?> innerClass;
        try {
            innerClass = innerName instanceof Class ? (Class<?>) innerName
                    : Utils.loadClass(String.valueOf(innerName).trim(), Object.class);
        } catch (ClassNotFoundException e) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_SERDE, innerName, "class not found");
        }
        if (!Serde.class.isAssignableFrom(innerClass) || E2eeSerde.class.isAssignableFrom(innerClass)) {
            throw new ConfigException(E2eeConfig.INNER_VALUE_SERDE, innerClass.getName(),
                    "is not a Serde (or is this class itself); name the Serde of your values");
        }
        Serde<T> created = Utils.newInstance(innerClass, Serde.class);
        created.configure(configs, false);
        inner = created;
        if (tokenize) {
            warnTokenizedJoins();
        } else {
            warnPlaintextKeys();
        }
    }

    /**
     * e2ee.keys=tokenize in Kafka Streams: the producer interceptor puts each byte[] key's token on
     * every topic the application writes (repartition, changelog, output) and the consumer
     * interceptor restores the real key before Streams deserializes it, so state stores hold real
     * keys and restore from tokenized changelogs. Streams still partitions repartition topics by the
     * real key (it picks the partition itself), which keeps every key in one partition. What it
     * cannot give: co-partitioning across topics for joins. Each topic has its own token secret, so
     * one key has a different token, and a different partition, in each tokenized topic that an
     * outside producer partitioned; a join of two such topics (or of one with a repartition topic)
     * misses. Said once, at start.
     */
    static void warnTokenizedJoins() {
        if (KEYS_WARNED.compareAndSet(false, true)) {
            log.warn("kafka-e2ee tokenizes record keys (e2ee.keys=tokenize): each topic has its own token "
                    + "secret, so a key does not land in the same partition of two tokenized topics written by "
                    + "other producers; joins need co-partitioned inputs, so do not join such topics directly "
                    + "(re-key one side through selectKey/repartition first) (docs/PROTOCOL.md section 5e).");
        }
    }

    /** Once per process: a Streams app encrypts its values, never its keys. */
    static void warnPlaintextKeys() {
        if (KEYS_WARNED.compareAndSet(false, true)) {
            log.warn("kafka-e2ee encrypts record values only: the record keys of every topic this Streams "
                    + "application reads and writes stay plaintext, including the keys that groupBy, selectKey "
                    + "or map derive from values (they appear in clear on repartition, changelog and output "
                    + "topics). Keep secrets out of keys (docs/QUICKSTART.md, Kafka Streams).");
        }
    }

    /**
     * Fails unless the interceptors are set for the producer and for every consumer, where Streams
     * looks for them: the client prefix wins over the unprefixed property, and a restore. / main. /
     * global.consumer. prefix wins over consumer.
     */
    static void requireInterceptors(Map<String, ?> configs) {
        // When neither is set, the error names the prefixed one: that is the fix for Streams.
        String producer = configs.containsKey("interceptor.classes")
                && !configs.containsKey("producer.interceptor.classes")
                ? "interceptor.classes" : "producer.interceptor.classes";
        require(configs, producer, PRODUCER_INTERCEPTOR, "it seals every record the application writes, "
                + "changelogs included (state stores serialize values without headers, so no serde can)");
        String consumer = configs.containsKey("interceptor.classes")
                && !configs.containsKey("consumer.interceptor.classes")
                ? "interceptor.classes" : "consumer.interceptor.classes";
        require(configs, consumer, CONSUMER_INTERCEPTOR, "it opens every record the application reads, "
                + "including what a restore writes into the state stores");
        for (String client : List.of("main.consumer.", "restore.consumer.", "global.consumer.")) {
            if (configs.containsKey(client + "interceptor.classes")) {
                require(configs, client + "interceptor.classes", CONSUMER_INTERCEPTOR,
                        "it opens what this consumer reads");
            }
        }
    }

    private static void require(Map<String, ?> configs, String property, String interceptor, String why) {
        Object value = configs.get(property);
        if (!classNames(value).contains(interceptor)) {
            throw new ConfigException(property, value == null ? "(unset)" : value,
                    E2eeSerde.class.getName() + " needs " + property + " to include " + interceptor + ": " + why);
        }
    }

    private static List<String> classNames(Object value) {
        List<String> out = new ArrayList<>();
        if (value instanceof Class) {
            out.add(((Class<?>) value).getName());
        } else if (value instanceof List) {
            for (Object o : (List<?>) value) {
                out.addAll(classNames(o));
            }
        } else if (value != null) {
            for (String s : String.valueOf(value).split(",")) {
                out.add(s.trim());
            }
        }
        return out;
    }

    private Serde<T> inner() {
        if (inner == null) {
            // Streams configures only the default serdes; one passed to Consumed/Produced/Materialized
            // by hand is not, and has checked nothing.
            throw new IllegalStateException(E2eeSerde.class.getName() + " is not configured: use it as "
                    + "default.value.serde (Streams configures it), or call configure(props, false) yourself");
        }
        return inner;
    }

    @Override
    public Serializer<T> serializer() {
        Serializer<T> s = inner().serializer();
        return new Serializer<T>() {
            @Override
            public byte[] serialize(String topic, T data) {
                return s.serialize(topic, data);
            }

            @Override
            public byte[] serialize(String topic, Headers headers, T data) {
                return s.serialize(topic, headers, data);
            }

            @Override
            public void close() {
                s.close();
            }
        };
    }

    @Override
    public Deserializer<T> deserializer() {
        Deserializer<T> d = inner().deserializer();
        return new Deserializer<T>() {
            @Override
            public T deserialize(String topic, byte[] data) {
                return d.deserialize(topic, data); // a state store's own bytes
            }

            @Override
            public T deserialize(String topic, Headers headers, byte[] data) {
                if (data != null && headers != null && headers.lastHeader(RecordCrypto.HEADER) != null) {
                    // The consumer interceptor strips the header of what it opened: this one was not.
                    throw new SerializationException("kafka-e2ee: a record of topic '" + topic + "' reached "
                            + E2eeSerde.class.getName() + " still encrypted; set consumer.interceptor.classes="
                            + CONSUMER_INTERCEPTOR);
                }
                return d.deserialize(topic, headers, data);
            }

            @Override
            public void close() {
                d.close();
            }
        };
    }

    @Override
    public void close() {
        if (inner != null) {
            inner.close();
        }
    }
}
