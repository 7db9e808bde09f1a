/* Large records and the delivery report, against a real broker, under ASan.
 *
 * The plugin gives the delivery report its plaintext back in
 * on_acknowledgement: it frees the ciphertext buffer it swapped in for an
 * app's payload, or decrypts librdkafka's own copy in place (F_COPY). Both
 * are only safe if no produce request still references the payload then.
 * Records of 64 KiB to 1 MiB are above message.copy.max.bytes (65535 by
 * default), so librdkafka's produce requests point at the payload instead of
 * copying it; uncompressed, nothing else copies it either. This drives them
 * through every way a delivery report can come early:
 *   A. plain delivery (F_COPY, F_FREE and app-owned payloads);
 *   B. rd_kafka_purge(QUEUE | INFLIGHT) while records are queued, and with
 *      the broker frozen (SIGSTOP) while requests are written or awaited;
 *   C. request timeouts: the broker frozen (SIGSTOP) while records go out,
 *      so requests time out part-written or unanswered, are retried, and
 *      the messages time out;
 *   D. the broker stopped while requests are in flight, records produced
 *      while it is down, and the broker started again.
 * ASan reports any read of a freed payload (use after free); every delivery
 * report must see the app's own bytes; and no record on the broker may hold
 * plaintext (a payload decrypted in place while still being sent would).
 * A plugin consumer then opens every delivered record.
 *
 * Run by tests/plugin/run (ASan only: the records are large) with a broker
 * from scripts/test-broker. Environment: E2EE_PLUGIN, E2EE_TRUST,
 * E2EE_WRITER, E2EE_READER, E2EE_BOOTSTRAP, E2EE_BROKER_DIR, E2EE_TEST_BROKER
 * (the scripts/test-broker path), E2EE_TOPIC (a fresh topic for this run). */
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/types.h>
#include <time.h>

#include "check.h"

static const char *topic;

/* Each record's plaintext: a marker no ciphertext contains, its id, and a
 * pattern, so that a delivery report can be checked byte for byte. */
#define MARKER "LARGE-PLAINTEXT-"
#define MAX_RECORDS 256
static const size_t sizes[] = {65536, 65537, 100000, 262144, 524287, 1048576};
#define N_SIZES (sizeof(sizes) / sizeof(*sizes))

typedef struct {
        int id;
        size_t len;
        char *app_owned; /* the app's buffer (no F_COPY / F_FREE), or NULL */
} expect_t;
static expect_t expects[MAX_RECORDS];
static int n_expects = 0;
static int dr_ok = 0, dr_failed = 0, dr_mismatch = 0, dr_seen = 0, dr_purged_inflight = 0;
static int delivered[MAX_RECORDS];

static void fill(char *p, size_t len, int id) {
        char head[32];
        int n = snprintf(head, sizeof(head), MARKER "%04d-", id);
        for (size_t i = 0; i < len; i++)
                p[i] = i < (size_t)n ? head[i] : (char)('a' + (i * 7 + (size_t)id) % 26);
}

static int matches(const void *p, size_t len, int id) {
        char *want = malloc(len ? len : 1);
        fill(want, len, id);
        int ok = p && !memcmp(p, want, len);
        free(want);
        return ok;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
        (void)rk;
        (void)opaque;
        expect_t *e = m->_private;
        dr_seen++;
        if (m->err)
                dr_failed++;
        else
                dr_ok++;
        if (m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
                dr_purged_inflight++;
        if (!e || m->len != e->len || !matches(m->payload, m->len, e->id)) {
                dr_mismatch++;
                fprintf(stderr, "delivery report of record %d (%s) saw another payload\n",
                        e ? e->id : -1, rd_kafka_err2str(m->err));
        } else if (!m->err) {
                delivered[e->id] = 1;
        }
}

static rd_kafka_conf_t *base_conf(int plugin, const char *cred) {
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        set(c, "bootstrap.servers", env("E2EE_BOOTSTRAP"));
        if (plugin) {
                set(c, "plugin.library.paths", env("E2EE_PLUGIN"));
                set(c, "e2ee.credential", cred);
                set(c, "e2ee.trust", env("E2EE_TRUST"));
                set(c, "e2ee.key.wait.ms", "30000");
        }
        set(c, "message.max.bytes", "4194304");
        set(c, "log_level", "2");
        return c;
}

static rd_kafka_t *producer(const char *request_timeout_ms, const char *message_timeout_ms,
                            const char *linger_ms) {
        char err[512];
        rd_kafka_conf_t *c = base_conf(1, env("E2EE_WRITER"));
        set(c, "compression.type", "none");
        set(c, "message.copy.max.bytes", "65535"); /* the default, said out loud */
        set(c, "linger.ms", linger_ms);
        set(c, "request.timeout.ms", request_timeout_ms);
        set(c, "message.timeout.ms", message_timeout_ms);
        set(c, "retry.backoff.ms", "50");
        rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
        if (!rk) {
                fprintf(stderr, "producer: %s\n", err);
                exit(2);
        }
        return rk;
}

/* Produces `n` records, cycling through sizes and the three ways to hand
 * librdkafka a payload. Returns how many produce() accepted; the rest got no
 * delivery report and count as done. */
static int produce_some(rd_kafka_t *rk, int n) {
        int accepted = 0;
        for (int i = 0; i < n && n_expects < MAX_RECORDS; i++) {
                expect_t *e = &expects[n_expects];
                e->id = n_expects++;
                e->len = sizes[e->id % N_SIZES];
                char *p = malloc(e->len);
                fill(p, e->len, e->id);
                int how = e->id % 3, flags = how == 0 ? RD_KAFKA_MSG_F_COPY
                                                     : how == 1 ? RD_KAFKA_MSG_F_FREE : 0;
                if (how == 2)
                        e->app_owned = p; /* must stay valid until its report */
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                    RD_KAFKA_V_VALUE(p, e->len), RD_KAFKA_V_MSGFLAGS(flags),
                    RD_KAFKA_V_OPAQUE(e), RD_KAFKA_V_END);
                if (err) {
                        fprintf(stderr, "produce %d: %s\n", e->id, rd_kafka_err2str(err));
                        free(p);
                        e->app_owned = NULL;
                        continue;
                }
                accepted++;
                if (how == 0)
                        free(p); /* librdkafka copied it */
        }
        return accepted;
}

/* Waits until every accepted record has its report (flush, then poll). */
static void wait_reports(rd_kafka_t *rk, int want, int timeout_ms, const char *phase) {
        rd_kafka_flush(rk, timeout_ms);
        for (int i = 0; i < 100 && dr_seen < want; i++)
                rd_kafka_poll(rk, 100);
        CHECK(dr_seen == want, "%s: %d of %d delivery reports", phase, dr_seen, want);
        CHECK(dr_mismatch == 0, "%s: %d delivery reports saw a payload other than the app's", phase,
              dr_mismatch);
        fprintf(stderr, "%s: %d delivered, %d failed\n", phase, dr_ok, dr_failed);
}

static void reset(void) {
        dr_ok = dr_failed = dr_mismatch = dr_seen = 0;
}

static void free_app_owned(void) {
        for (int i = 0; i < n_expects; i++) {
                free(expects[i].app_owned);
                expects[i].app_owned = NULL;
        }
}

static const char *pid_path(void) {
        static char path[4096];
        snprintf(path, sizeof(path), "%s/broker.pid", env("E2EE_BROKER_DIR"));
        return path;
}

static long read_broker_pid(void) {
        FILE *pf = fopen(pid_path(), "r");
        long pid = 0;
        CHECK(pf && fscanf(pf, "%ld", &pid) == 1 && pid > 0, "broker pid");
        if (pf)
                fclose(pf);
        return pid;
}

static void broker(const char *verb) {
        char cmd[4096];
        snprintf(cmd, sizeof(cmd), "'%s' %s '%s' >/dev/null", env("E2EE_TEST_BROKER"), verb,
                 env("E2EE_BROKER_DIR"));
        fprintf(stderr, "broker %s\n", verb);
        CHECK(system(cmd) == 0, "test-broker %s failed", verb);
}

/* Reads the partition to its end, plugin-less (raw) or through the
 * plugin; counts records, those holding the marker, and (plugin) the ids
 * that open to their exact plaintext. */
static void read_back(int plugin, int *records, int *plaintext, int *opened) {
        char err[512];
        rd_kafka_conf_t *c = base_conf(plugin, env("E2EE_READER"));
        set(c, "group.id", plugin ? "large-plugin" : "large-raw");
        set(c, "enable.auto.commit", "false");
        set(c, "enable.partition.eof", "true");
        set(c, "fetch.max.bytes", "8388608");
        set(c, "max.partition.fetch.bytes", "4194304");
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        if (!rk) {
                fprintf(stderr, "consumer: %s\n", err);
                exit(2);
        }
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(a, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, a);
        rd_kafka_topic_partition_list_destroy(a);
        int eof = 0;
        *records = *plaintext = 0;
        for (int tries = 0; tries < 1200 && eof < 1; tries++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        eof++;
                } else if (m->err) {
                        fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
                        CHECK(!plugin, "a plugin consumer got an error: %s", rd_kafka_message_errstr(m));
                } else {
                        (*records)++;
                        if (m->len >= strlen(MARKER) && memmem(m->payload, m->len, MARKER, strlen(MARKER)))
                                (*plaintext)++;
                        if (plugin && m->len >= 21) {
                                int id = atoi((const char *)m->payload + strlen(MARKER));
                                if (id >= 0 && id < n_expects && m->len == expects[id].len &&
                                    matches(m->payload, m->len, id))
                                        opened[id] = 1;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        CHECK(eof == 1, "%s consumer did not reach the end of the partition", plugin ? "plugin" : "raw");
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

int main(int argc, char **argv) {
        if (version_asked(argc, argv))
                return 0;
        topic = env("E2EE_TOPIC");

        /* A. Plain delivery. The writer stays up to serve its keys. */
        rd_kafka_t *p = producer("30000", "120000", "5");
        reset();
        int want = produce_some(p, 18);
        wait_reports(p, want, 120000, "A. delivery");
        CHECK(dr_ok == want, "A: %d of %d delivered", dr_ok, want);

        /* B. Purge, 0 to 160 ms after producing, with linger.ms=100: early
         * rounds purge queued records, later ones catch requests being
         * written or awaited (RD_KAFKA_RESP_ERR__PURGE_INFLIGHT). */
        rd_kafka_t *b = producer("30000", "120000", "100");
        int purged = 0, inflight = 0;
        for (int delay = 0; delay <= 160; delay += 20) {
                reset();
                dr_purged_inflight = 0;
                want = produce_some(b, 4);
                rd_kafka_poll(b, delay);
                CHECK(!rd_kafka_purge(b, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT),
                      "purge");
                wait_reports(b, want, 60000, "B. purge");
                purged += dr_failed;
                inflight += dr_purged_inflight;
        }
        CHECK(purged > 0, "B: no purge caught a record before its delivery");
        /* Then with the broker frozen (SIGSTOP): the requests are written
         * (into its socket buffer, or part-written) and never answered, so
         * the purge fails them in flight (and part-written ones, after which
         * librdkafka drops the connection). */
        long broker_pid = read_broker_pid();
        if (broker_pid > 0)
                kill((pid_t)broker_pid, SIGSTOP);
        reset();
        dr_purged_inflight = 0;
        want = produce_some(b, 6);
        /* Long enough for the (ASan-slowed, 1 MiB) requests to be written on
         * a loaded machine; far below the request and message timeouts. */
        rd_kafka_poll(b, 3000);
        CHECK(!rd_kafka_purge(b, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT), "purge");
        wait_reports(b, want, 60000, "B. purge, broker frozen");
        if (broker_pid > 0)
                kill((pid_t)broker_pid, SIGCONT);
        purged += dr_failed;
        inflight += dr_purged_inflight;
        fprintf(stderr, "B: %d purged, %d of them in flight\n", purged, inflight);
        CHECK(inflight > 0, "B: no purge caught a request in flight");
        free_app_owned();
        rd_kafka_destroy(b);

        /* C. Request timeouts: the broker is frozen (SIGSTOP) while 12 MiB
         * go out, so the socket fills, requests stay part-written or
         * unanswered, time out after 1 s and are retried until the messages
         * time out (4 s); then it thaws. */
        rd_kafka_t *t = producer("1000", "4000", "5");
        reset();
        if (broker_pid > 0)
                kill((pid_t)broker_pid, SIGSTOP);
        want = produce_some(t, 18);
        for (int i = 0; i < 70 && dr_seen < want; i++)
                rd_kafka_poll(t, 100);
        if (broker_pid > 0)
                kill((pid_t)broker_pid, SIGCONT);
        wait_reports(t, want, 60000, "C. request timeouts");
        CHECK(dr_failed > 0, "C: no record timed out");
        free_app_owned();
        rd_kafka_destroy(t);

        /* D. The broker goes away with requests in flight, records are
         * produced while it is down, and it comes back. */
        reset();
        want = produce_some(p, 12);
        rd_kafka_poll(p, 10);
        broker("stop");
        want += produce_some(p, 12);
        rd_kafka_poll(p, 1000);
        broker("restart");
        wait_reports(p, want, 120000, "D. broker restart");
        free_app_owned();

        /* Nothing on the broker is plaintext, and a plugin consumer opens
         * every record that was reported delivered. */
        int records = 0, plaintext = 0;
        static int opened[MAX_RECORDS];
        read_back(0, &records, &plaintext, opened);
        CHECK(records > 0 && plaintext == 0, "%d of %d records on the broker hold plaintext",
              plaintext, records);
        int raw_records = records;
        read_back(1, &records, &plaintext, opened);
        CHECK(records == raw_records, "the plugin consumer read %d records, the raw one %d", records,
              raw_records);
        int missing = 0;
        for (int i = 0; i < n_expects; i++)
                if (delivered[i] && !opened[i])
                        missing++;
        CHECK(missing == 0, "%d delivered records did not open to their plaintext", missing);
        rd_kafka_destroy(p);
        if (failures) {
                fprintf(stderr, "%d failures\n", failures);
                return 1;
        }
        printf("large_records: ok (%d records of 64 KiB to 1 MiB, %d on the broker)\n", n_expects,
               raw_records);
        return 0;
}
