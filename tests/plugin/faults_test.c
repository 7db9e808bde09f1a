/* The plugin's fail-closed and rejection paths on librdkafka's mock cluster:
 * 1. on_send panics, or cannot read the message's topic name: the message
 *    must fail (produce() error or a failed delivery report), never reach
 *    the broker, plaintext or not. These states never happen with a real
 *    librdkafka, so a debug build of the plugin is told to fake them
 *    (KAFKA_E2EE_TEST_FAULT; release builds have no such switch). So this
 *    test loads E2EE_DEBUG_PLUGIN (target/debug/libkafka_e2ee.so).
 * 2. A sealed record copied with its e2ee header twice (a hostile producer
 *    or broker adds the second): the reader rejects it, although either
 *    header alone opens it (docs/FORMAT.md section 9).
 * 3. The app gets the whole rejection reason through the normal per-message
 *    error path (rd_kafka_message_errstr), not one cut to the record's length.
 * Run under ASan/LSan/UBSan and valgrind by tests/plugin/run.
 * Environment: E2EE_DEBUG_PLUGIN, E2EE_TRUST, E2EE_WRITER, E2EE_READER. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define TOPIC "f-orders"
#define SECRET "fault-secret-value"

static char bootstraps[256];
static int dr_ok = 0, dr_failed = 0;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
        (void)rk;
        (void)opaque;
        if (m->err)
                dr_failed++;
        else
                dr_ok++;
}

static rd_kafka_conf_t *plugin_conf(const char *cred) {
        rd_kafka_conf_t *c = plugin_conf_at(bootstraps, env("E2EE_DEBUG_PLUGIN"), cred);
        set(c, "e2ee.key.wait.ms", "15000");
        return c;
}

static rd_kafka_t *plain_client(rd_kafka_type_t type, const char *group) {
        char err[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        set(c, "bootstrap.servers", bootstraps);
        set(c, "log_level", "3");
        if (group) {
                set(c, "group.id", group);
                set(c, "enable.auto.commit", "false");
        }
        rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
        if (!rk) {
                fprintf(stderr, "client: %s\n", err);
                exit(2);
        }
        return rk;
}

/* Every record of partition 0 from `from` on, as a plugin-less consumer sees it. */
typedef struct {
        size_t len;
        char *value;
        char header[64];
        size_t header_len;
        int headers; /* how many e2ee headers */
} raw_record;

static int read_raw(raw_record *out, int max) {
        rd_kafka_t *c = plain_client(RD_KAFKA_CONSUMER, "f-raw");
        rd_kafka_poll_set_consumer(c);
        rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(a, TOPIC, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(c, a);
        rd_kafka_topic_partition_list_destroy(a);
        int n = 0, idle = 0;
        while (n < max && idle < 30) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
                if (!m) {
                        idle++;
                        continue;
                }
                if (!m->err) {
                        idle = 0;
                        raw_record *r = &out[n++];
                        memset(r, 0, sizeof(*r));
                        r->len = m->len;
                        r->value = malloc(m->len + 1);
                        memcpy(r->value, m->payload, m->len);
                        rd_kafka_headers_t *h = NULL;
                        const void *v;
                        size_t vn;
                        if (!rd_kafka_message_headers(m, &h)) {
                                while (!rd_kafka_header_get(h, (size_t)r->headers, "e2ee", &v, &vn)) {
                                        if (vn <= sizeof(r->header)) {
                                                memcpy(r->header, v, vn);
                                                r->header_len = vn;
                                        }
                                        r->headers++;
                                }
                        }
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
        return n;
}

/* Produces three messages with `fault` injected; none may be delivered. */
static void produce_with_fault(rd_kafka_t *p, const char *fault) {
        setenv("KAFKA_E2EE_TEST_FAULT", fault, 1);
        dr_ok = dr_failed = 0;
        int refused = 0;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(p, TOPIC, NULL);
        /* F_COPY (sealed in librdkafka's copy), the app's own buffer, and
         * producev with a key: each way a message reaches on_send. */
        if (rd_kafka_produce(rkt, 0, RD_KAFKA_MSG_F_COPY, SECRET, strlen(SECRET), NULL, 0, NULL))
                refused++;
        static char app_owned[] = SECRET;
        if (rd_kafka_produce(rkt, 0, 0, app_owned, strlen(app_owned), NULL, 0, NULL))
                refused++;
        if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                              RD_KAFKA_V_VALUE(SECRET, strlen(SECRET)), RD_KAFKA_V_KEY("k", 1),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END))
                refused++;
        rd_kafka_flush(p, 10000);
        unsetenv("KAFKA_E2EE_TEST_FAULT");
        CHECK(dr_ok == 0 && refused + dr_failed == 3,
              "%s: %d delivered, %d refused, %d failed (all 3 must fail closed)", fault, dr_ok,
              refused, dr_failed);
        CHECK(!strcmp(app_owned, SECRET), "%s: the app's own buffer was written", fault);
        rd_kafka_topic_destroy(rkt);
}

int main(int argc, char **argv) {
        char err[512];
        if (version_asked(argc, argv))
                return 0;
        rd_kafka_t *mock_owner;
        rd_kafka_mock_cluster_t *mock =
            mock_cluster(&mock_owner, TOPIC, 1, bootstraps, sizeof(bootstraps));

        /* 1. Faults on the send path fail the message closed. */
        rd_kafka_conf_t *pc = plugin_conf(env("E2EE_WRITER"));
        rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
        rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
        CHECK(p != NULL, "producer: %s", err);
        if (!p)
                return 1;
        produce_with_fault(p, "on_send_panic");
        produce_with_fault(p, "topic_unreadable");
        /* The same client seals again once the fault is gone: offset 0. */
        dr_ok = dr_failed = 0;
        CHECK(!rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                                 RD_KAFKA_V_VALUE(SECRET, strlen(SECRET)),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              "produce without a fault");
        rd_kafka_flush(p, 10000);
        CHECK(dr_ok == 1 && dr_failed == 0, "without a fault: %d delivered, %d failed", dr_ok,
              dr_failed);

        /* Nothing but that one sealed record reached the broker. */
        raw_record recs[8];
        int n = read_raw(recs, 8);
        CHECK(n == 1, "%d records on the broker, want the one sealed record", n);
        for (int i = 0; i < n; i++)
                CHECK(recs[i].len != strlen(SECRET) || memcmp(recs[i].value, SECRET, recs[i].len),
                      "record %d on the broker is plaintext", i);
        CHECK(n >= 1 && recs[0].headers == 1 && recs[0].header_len == 34,
              "the sealed record has %d e2ee headers", n >= 1 ? recs[0].headers : -1);

        /* 2. Offset 1: that record again with its e2ee header twice (each
         * alone opens it); offset 2: once more as it was, which opens. */
        if (n >= 1 && recs[0].header_len == 34) {
                rd_kafka_t *raw = plain_client(RD_KAFKA_PRODUCER, NULL);
                for (int copies = 2; copies >= 1; copies--) {
                        rd_kafka_headers_t *h = rd_kafka_headers_new(2);
                        for (int k = 0; k < copies; k++)
                                rd_kafka_header_add(h, "e2ee", -1, recs[0].header, 34);
                        rd_kafka_resp_err_t e = rd_kafka_producev(
                            raw, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                            RD_KAFKA_V_VALUE(recs[0].value, recs[0].len), RD_KAFKA_V_HEADERS(h),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                        CHECK(!e, "raw produce: %s", rd_kafka_err2str(e));
                        if (e)
                                rd_kafka_headers_destroy(h);
                }
                CHECK(rd_kafka_flush(raw, 10000) == 0, "flush raw");
                rd_kafka_destroy(raw);
        }
        for (int i = 0; i < n; i++)
                free(recs[i].value);

        /* 3. A plugin consumer: offset 0 opens, offset 1 is an error with
         * the whole reason, offset 2 opens. */
        rd_kafka_conf_t *cc = plugin_conf(env("E2EE_READER"));
        set(cc, "group.id", "f-test");
        set(cc, "enable.auto.commit", "false");
        rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof(err));
        CHECK(c != NULL, "consumer: %s", err);
        rd_kafka_poll_set_consumer(c);
        rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(a, TOPIC, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
        CHECK(!rd_kafka_assign(c, a), "assign");
        rd_kafka_topic_partition_list_destroy(a);
        int opened[3] = {0}, rejected = 0;
        static const char want[] =
            "kafka-e2ee: record at offset 1 rejected: the record has more than one e2ee header "
            "(a sealed record has exactly one)";
        for (int tries = 0; tries < 600 && !(opened[0] && rejected && opened[2]); tries++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__VALUE_DESERIALIZATION) {
                        const char *why = rd_kafka_message_errstr(m);
                        int64_t at = m->offset + 1; /* moved back by one for the store */
                        CHECK(at == 1, "offset %lld rejected: %s", (long long)at, why);
                        /* The whole reason, longer than the record's value,
                         * through librdkafka's per-message error path. */
                        CHECK(why && !strcmp(why, want), "reason: '%s'\n  want: '%s'",
                              why ? why : "(null)", want);
                        CHECK(m->len == strlen(want), "error payload length %zu, reason %zu",
                              m->len, strlen(want));
                        CHECK(strlen(want) > strlen(SECRET), "the test's reason must outgrow the value");
                        rejected++;
                        seek_past(c, TOPIC, 0, at);
                } else if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
                } else {
                        CHECK(m->offset == 0 || m->offset == 2, "offset %lld reached the app as data",
                              (long long)m->offset);
                        CHECK(m->len == strlen(SECRET) && !memcmp(m->payload, SECRET, m->len),
                              "offset %lld did not decrypt", (long long)m->offset);
                        if (m->offset == 0 || m->offset == 2)
                                opened[m->offset]++;
                }
                rd_kafka_message_destroy(m);
        }
        CHECK(opened[0] && opened[2], "sealed records opened: offset 0 %d, offset 2 %d", opened[0],
              opened[2]);
        CHECK(rejected >= 1, "the record with two e2ee headers was never rejected");
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
        rd_kafka_destroy(p);
        rd_kafka_mock_cluster_destroy(mock);
        rd_kafka_destroy(mock_owner);
        if (failures) {
                fprintf(stderr, "%d failures\n", failures);
                return 1;
        }
        printf("faults_test: ok\n");
        return 0;
}
