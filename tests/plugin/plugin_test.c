/* The plugin in a C program, against librdkafka's in-process mock cluster:
 * produce, producev (app headers kept), produce_batch, null and empty values,
 * F_FREE payloads, retried produce requests, delivery reports that read the
 * payload, purge, a fail-closed send, a consumer group that decrypts while a
 * second member joins and leaves (two rebalances), and destroy without flush.
 * tests/plugin/run builds it against the system librdkafka and against the
 * current one bundled in confluent-kafka's wheel. Built with ASan/LSan and run under valgrind by
 * tests/plugin/run. Environment: E2EE_PLUGIN, E2EE_TRUST, E2EE_WRITER,
 * E2EE_READER, E2EE_NARROW (a credential that may produce only "allowed.*"). */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define N_PRODUCE 20
#define TOPIC "c-orders"

static char bootstraps[256];
static int dr_ok = 0, dr_failed = 0, dr_mismatch = 0;

/* Every message's opaque is the expected value (NUL-terminated) or NULL. */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
        const char *want = m->_private;
        (void)rk;
        (void)opaque;
        if (m->err)
                dr_failed++;
        else
                dr_ok++;
        if (want && (m->len != strlen(want) || memcmp(m->payload, want, m->len)))
                dr_mismatch++;
        if (!want && m->payload && m->len)
                dr_mismatch++;
}

static rd_kafka_conf_t *conf_for(const char *cred) {
        rd_kafka_conf_t *c = plugin_conf_at(bootstraps, env("E2EE_PLUGIN"), cred);
        set(c, "e2ee.key.wait.ms", "15000");
        return c;
}

static rd_kafka_t *producer(const char *cred) {
        char err[512];
        rd_kafka_conf_t *c = conf_for(cred);
        rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
        if (!rk) {
                fprintf(stderr, "producer: %s\n", err);
                exit(2);
        }
        return rk;
}

static char values[N_PRODUCE][64];

static void produce_all(rd_kafka_t *rk) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, TOPIC, NULL);
        int i = 0;
        /* produce(), F_COPY, with a key. */
        for (; i < 10; i++) {
                snprintf(values[i], sizeof(values[i]), "plain-secret-%02d", i);
                char key[16];
                snprintf(key, sizeof(key), "k%d", i);
                CHECK(rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                       values[i], strlen(values[i]), key, strlen(key),
                                       values[i]) == 0,
                      "produce");
        }
        /* produce() with F_FREE: librdkafka owns the payload. */
        for (; i < 12; i++) {
                snprintf(values[i], sizeof(values[i]), "plain-secret-%02d", i);
                char *owned = strdup(values[i]);
                CHECK(rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE,
                                       owned, strlen(owned), NULL, 0, values[i]) == 0,
                      "produce F_FREE");
        }
        /* producev() with an app header: the e2ee header is appended. */
        for (; i < 14; i++) {
                snprintf(values[i], sizeof(values[i]), "plain-secret-%02d", i);
                CHECK(!rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC),
                                         RD_KAFKA_V_VALUE(values[i], strlen(values[i])),
                                         RD_KAFKA_V_KEY("hk", 2),
                                         RD_KAFKA_V_HEADER("app", "yes", 3),
                                         RD_KAFKA_V_OPAQUE(values[i]),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_END),
                      "producev");
        }
        /* produce_batch() */
        rd_kafka_message_t batch[4];
        memset(batch, 0, sizeof(batch));
        for (int b = 0; b < 4; b++, i++) {
                snprintf(values[i], sizeof(values[i]), "plain-secret-%02d", i);
                batch[b].payload = values[i];
                batch[b].len = strlen(values[i]);
                batch[b]._private = values[i];
        }
        CHECK(rd_kafka_produce_batch(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                     batch, 4) == 4,
              "produce_batch");
        /* an empty value and a tombstone */
        values[i][0] = '\0';
        CHECK(rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, "", 0,
                               "e", 1, values[i]) == 0,
              "produce empty");
        i++;
        CHECK(rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, 0, NULL, 0, "t", 1, NULL) == 0,
              "produce tombstone");
        rd_kafka_topic_destroy(rkt);
}

static void consume_all(void) {
        char err[512];
        rd_kafka_conf_t *c = conf_for(env("E2EE_READER"));
        rd_kafka_conf_set(c, "group.id", "c-test", err, sizeof(err));
        rd_kafka_conf_set(c, "auto.offset.reset", "earliest", err, sizeof(err));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
        CHECK(rk != NULL, "consumer: %s", err);
        if (!rk)
                return;
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, TOPIC, RD_KAFKA_PARTITION_UA);
        CHECK(!rd_kafka_subscribe(rk, t), "subscribe");
        rd_kafka_topic_partition_list_destroy(t);
        int seen[N_PRODUCE] = {0}, tombstones = 0, got = 0, errors = 0;
        /* A second member joins once records flow and leaves a little later:
         * two rebalances while records are being decrypted. */
        rd_kafka_t *second = NULL;
        int second_polls = 0;
        int distinct = 0; /* values seen at least once, and the tombstone */
        for (int tries = 0; tries < 600 && distinct < N_PRODUCE; tries++) {
                if (got >= 3 && !second && second_polls == 0) {
                        rd_kafka_conf_t *c2 = conf_for(env("E2EE_READER"));
                        rd_kafka_conf_set(c2, "group.id", "c-test", err, sizeof(err));
                        rd_kafka_conf_set(c2, "auto.offset.reset", "earliest", err, sizeof(err));
                        second = rd_kafka_new(RD_KAFKA_CONSUMER, c2, err, sizeof(err));
                        CHECK(second != NULL, "second consumer: %s", err);
                        if (second) {
                                rd_kafka_poll_set_consumer(second);
                                rd_kafka_topic_partition_list_t *t2 = rd_kafka_topic_partition_list_new(1);
                                rd_kafka_topic_partition_list_add(t2, TOPIC, RD_KAFKA_PARTITION_UA);
                                CHECK(!rd_kafka_subscribe(second, t2), "subscribe second");
                                rd_kafka_topic_partition_list_destroy(t2);
                        }
                }
                rd_kafka_t *from = rk;
                if (second && (tries % 2)) {
                        from = second;
                        if (++second_polls >= 40) {
                                /* Leave the group; its partitions go back. */
                                rd_kafka_consumer_close(second);
                                rd_kafka_destroy(second);
                                second = NULL;
                                continue;
                        }
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(from, 100);
                if (!m)
                        continue;
                if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                                fprintf(stderr, "consume error: %s\n", rd_kafka_message_errstr(m));
                                errors++;
                        }
                        rd_kafka_message_destroy(m);
                        continue;
                }
                got++;
                if (!m->payload) {
                        if (tombstones++ == 0)
                                distinct++;
                } else {
                        int found = 0;
                        for (int i = 0; i < N_PRODUCE - 1; i++)
                                if (strlen(values[i]) == m->len && !memcmp(values[i], m->payload, m->len)) {
                                        if (seen[i]++ == 0)
                                                distinct++;
                                        found = 1;
                                }
                        CHECK(found, "unexpected value of %zu bytes", m->len);
                        rd_kafka_headers_t *h = NULL;
                        const void *v;
                        size_t n;
                        if (!rd_kafka_message_headers(m, &h)) {
                                CHECK(rd_kafka_header_get_last(h, "e2ee", &v, &n) ==
                                          RD_KAFKA_RESP_ERR__NOENT,
                                      "e2ee header left on a decrypted record");
                                if (m->key_len == 2 && !memcmp(m->key, "hk", 2))
                                        CHECK(!rd_kafka_header_get_last(h, "app", &v, &n) &&
                                                  n == 3 && !memcmp(v, "yes", 3),
                                              "app header lost");
                        }
                }
                rd_kafka_message_destroy(m);
        }
        if (second) {
                rd_kafka_consumer_close(second);
                rd_kafka_destroy(second);
        }
        CHECK(second_polls > 0, "the second member never joined");
        CHECK(got >= N_PRODUCE, "consumed %d of %d", got, N_PRODUCE);
        CHECK(tombstones >= 1, "tombstones %d", tombstones); /* a rebalance may redeliver */
        CHECK(errors == 0, "%d consume errors", errors);
        for (int i = 0; i < N_PRODUCE - 1; i++)
                CHECK(seen[i] >= 1, "value %d not seen", i);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

int main(int argc, char **argv) {
        if (version_asked(argc, argv))
                return 0;
        rd_kafka_t *mock_owner;
        rd_kafka_mock_cluster_t *mock =
            mock_cluster(&mock_owner, TOPIC, 2, bootstraps, sizeof(bootstraps));
        rd_kafka_mock_topic_create(mock, "other", 1, 1);

        /* 1. Produce every kind of message; the writer stays up to serve keys.
         * The first produce requests fail with retriable errors, so messages
         * are retried: the same sealed payload is sent again. */
        rd_kafka_t *p = producer(env("E2EE_WRITER"));
        rd_kafka_mock_push_request_errors(mock, 0 /* Produce */, 3,
                                          RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                          RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                          RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
        produce_all(p);
        CHECK(rd_kafka_flush(p, 10000) == 0, "flush");
        CHECK(dr_ok == N_PRODUCE && dr_failed == 0, "dr ok %d failed %d", dr_ok, dr_failed);
        CHECK(dr_mismatch == 0, "%d delivery reports saw a payload other than the app's", dr_mismatch);

        /* 2. A group consumer in the same process (its own engine) decrypts. */
        consume_all();

        /* 3. Purge: the delivery reports still see the original payloads. */
        dr_ok = dr_failed = dr_mismatch = 0;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(p, TOPIC, NULL);
        for (int i = 0; i < 5; i++)
                rd_kafka_produce(rkt, 0, RD_KAFKA_MSG_F_COPY, values[i], strlen(values[i]),
                                 NULL, 0, values[i]);
        rd_kafka_purge(p, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p, 5000);
        CHECK(dr_ok + dr_failed == 5 && dr_mismatch == 0, "purge dr %d/%d mismatch %d",
              dr_ok, dr_failed, dr_mismatch);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(p);

        /* 4. Fail closed: a credential that may not produce "other". */
        dr_ok = dr_failed = dr_mismatch = 0;
        rd_kafka_t *narrow = producer(env("E2EE_NARROW"));
        rkt = rd_kafka_topic_new(narrow, "other", NULL);
        int rejected = 0;
        for (int i = 0; i < 3; i++)
                if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                     values[i], strlen(values[i]), NULL, 0, values[i]) != 0)
                        rejected++;
        rd_kafka_flush(narrow, 10000);
        CHECK(rejected + dr_failed == 3 && dr_ok == 0, "unsealable messages: %d rejected, %d failed, %d delivered",
              rejected, dr_failed, dr_ok);
        CHECK(dr_mismatch == 0, "dr mismatch %d", dr_mismatch);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(narrow);

        /* 5. Destroy without flush, F_COPY and F_FREE messages pending. */
        p = producer(env("E2EE_WRITER"));
        rkt = rd_kafka_topic_new(p, TOPIC, NULL);
        for (int i = 0; i < 20; i++) {
                rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, values[1],
                                 strlen(values[1]), NULL, 0, NULL);
                char *owned = strdup(values[2]);
                if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE, owned,
                                     strlen(owned), NULL, 0, NULL))
                        free(owned);
        }
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(p);

        rd_kafka_mock_cluster_destroy(mock);
        rd_kafka_destroy(mock_owner);
        if (failures) {
                fprintf(stderr, "%d failures\n", failures);
                return 1;
        }
        printf("plugin_test: ok\n");
        return 0;
}
