package dev.kafkae2ee;

import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What E2eeConsumerInterceptor does instead of dropping a record in a Kafka Streams restore or
 * global consumer. Those consumers write what they read straight into a state store (no
 * deserializer runs, no one else reads it), so a dropped changelog record is a state that is
 * silently wrong ("restored 0 records", then alpha:3 instead of alpha:16), and ciphertext handed on
 * is a corrupt store.
 *
 * <p>Recognised by the client.id Streams gives them (StreamsConfig.getRestoreConsumerConfigs and
 * getGlobalConsumerConfigs; ClientUtils: {@code <thread client id>-restore-consumer} and {@code
 * <client id>-global-consumer}), so it is right without any setting.
 *
 * <p>A missing key: it waits, without end, logging at WARN every {@code e2ee.key.wait.ms} (at least
 * 1 s) which key of which record it waits for. A key that arrives (from its producer, a consumer
 * that holds it, or a keeper) resumes the restore where it stopped; KafkaStreams.close cannot end
 * the wait (Streams signals its restore thread, never interrupts it). Anything else (a forged or
 * damaged record, a key refused or expired, a missing header): it logs at ERROR and throws {@link
 * Stopped}, an Error, because Kafka's ConsumerInterceptors catches Exception (kafka-clients 4.4:
 * {@code catch (Exception e)}, logged at WARN) and would hand the undecrypted batch on to the store.
 */
final class StreamsRestore {
    private static final Logger log = LoggerFactory.getLogger(StreamsRestore.class);
    private static final long MIN_WAIT_MS = 1_000;

    /** Stops a Streams restore that cannot continue without a wrong state. */
    static final class Stopped extends Error {
        private static final long serialVersionUID = 1L;

        Stopped(String message) {
            super(message);
        }
    }

    private final Engines.Lease lease;
    private final String clientId;

    private StreamsRestore(Engines.Lease lease, String clientId) {
        this.lease = lease;
        this.clientId = clientId;
    }

    /** Non-null for a Streams restore or global consumer. */
    static StreamsRestore of(Map<String, ?> configs, Engines.Lease lease) {
        Object id = configs.get("client.id");
        String clientId = id == null ? "" : String.valueOf(id);
        if (clientId.endsWith("-restore-consumer") || clientId.endsWith("-global-consumer")) {
            log.info("kafka-e2ee: {} is a Kafka Streams restore/global consumer: a record it cannot open "
                    + "stops or holds the restore, it is never skipped", clientId);
            return new StreamsRestore(lease, clientId);
        }
        return null;
    }

    /** Opens {@code value} in place, waiting as long as its key is pending; throws Stopped otherwise. */
    void openOrStop(ConsumerRecord<?, ?> r, byte[] header, int binding, byte[] key, byte[] value,
            E2eeException first) {
        untilOpened(r, header, first, waitMs -> RecordCrypto.open(lease, r.topic(), header, binding, key, value,
                waitMs));
    }

    /**
     * {@link #openOrStop} for a record with sealed headers (docs/FORMAT.md section 12): returns what
     * {@link RecordCrypto#openRecord} does once its key arrived.
     */
    byte[] openRecordOrStop(ConsumerRecord<?, ?> r, byte[] header, byte[][] sealed, byte[] visible, int binding,
            byte[] key, byte[] value, E2eeException first) {
        return untilOpened(r, header, first, waitMs -> RecordCrypto.openRecord(lease, r.topic(), header, sealed,
                visible, binding, key, value, waitMs));
    }

    /**
     * Retries {@code attempt} (given how long to wait for the key) while the record's key is pending,
     * logging each round; a record is never skipped. Throws Stopped on any other failure. Off the
     * hot path: it runs only after a record's key wait ran out once already.
     */
    private <T> T untilOpened(ConsumerRecord<?, ?> r, byte[] header, E2eeException first,
            java.util.function.LongFunction<T> attempt) {
        E2eeException e = first;
        long waitMs = Math.max(lease.keyWaitMs, MIN_WAIT_MS);
        long since = System.currentTimeMillis() - lease.keyWaitMs; // it has waited once already
        while (true) {
            if (e.kind() != E2eeException.Kind.KEY_PENDING || Thread.currentThread().isInterrupted()) {
                throw stop("the record at " + r.topic() + "-" + r.partition() + " offset " + r.offset(),
                        e.kind() + ": " + e.getMessage());
            }
            log.warn("kafka-e2ee: {} waits for key {} of topic {} (the record at {}-{} offset {}) for {} s so "
                    + "far; a Streams restore never skips a record. The key comes from a running producer or "
                    + "consumer that holds it, or a keeper (docs/KEEPER.md); a new host without its "
                    + "e2ee.state.dir needs one of them.", clientId, RecordCrypto.keyId(header), r.topic(),
                    r.topic(), r.partition(), r.offset(), (System.currentTimeMillis() - since) / 1000);
            try {
                T out = attempt.apply(waitMs);
                log.info("kafka-e2ee: {} got key {}; the restore goes on", clientId, RecordCrypto.keyId(header));
                return out;
            } catch (E2eeException next) {
                e = next;
            }
        }
    }

    /** What to throw when {@code what} (a record, a batch) cannot be opened: logged here, at ERROR. */
    Stopped stop(String what, String reason) {
        String message = "kafka-e2ee stopped " + clientId + ": " + what + " cannot be decrypted ("
                + reason + "), and a Streams restore "
                + "never skips a record (the state would be silently wrong). Fix the cause, then restart "
                + "the application.";
        try {
            log.error(message);
        } catch (Throwable ignored) {
            // the Error below is what matters
        }
        return new Stopped(message);
    }
}
