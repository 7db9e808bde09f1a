/* The plugin's hooks fed malformed input, on librdkafka's mock cluster:
 * bad e2ee.* values through rd_kafka_conf_set (malformed numbers, out of
 * range, empty, NULL value, NULL errstr, a 64 KiB value), and records that a
 * plugin-less producer (a hostile one, or the broker) wrote: no e2ee header,
 * e2ee headers of wrong sizes (0, 1, 33, 35, 1000 bytes, NULL, length -1 =
 * strlen), two e2ee headers, random 34-byte headers, a 512 KiB value, an
 * empty value. Every one must reach the app as a _VALUE_DESERIALIZATION error
 * that holds no ciphertext but the whole reason (rd_kafka_message_errstr),
 * never as data and never as a crash; a record the
 * plugin sealed, with an app header also named e2ee, still opens.
 * Run under ASan/LSan/UBSan and valgrind by tests/plugin/run (valgrind also
 * finds the plugin state leaked if librdkafka unloads the plugin).
 * Environment: E2EE_PLUGIN, E2EE_TRUST, E2EE_WRITER, E2EE_READER. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define TOPIC "m-orders"

static char bootstraps[256];

static rd_kafka_conf_t *plugin_conf(const char *cred) {
        return plugin_conf_at(bootstraps, env("E2EE_PLUGIN"), cred);
}

/* Bad e2ee.* values fail rd_kafka_conf_set, naming the property. */
static void bad_conf_values(void) {
        static char huge[65536];
        memset(huge, '7', sizeof(huge) - 1);
        const char *bad[][2] = {
            {"e2ee.key.rotation.ms", "-1"},
            {"e2ee.key.rotation.ms", "abc"},
            {"e2ee.key.rotation.ms", ""},
            {"e2ee.key.rotation.ms", "99999999999999999999999999"},
            {"e2ee.key.rotation.ms", huge},
            {"e2ee.key.rotation.records", "4294967296"},
            {"e2ee.key.retention.ms", "1e3"},
            {"e2ee.key.wait.ms", " -0"},
            {"e2ee.bind.key", "maybe"},
            {"e2ee.topics", ""},
            {"e2ee.topics", ","},
            {"e2ee.control.topic", ""},
            {"e2ee.credential", "/nonexistent/x.cred"},
            {"e2ee.credential", "/dev/null"},
            {"e2ee.credential", huge},
            {"e2ee.no.such.property", "1"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                rd_kafka_conf_t *c = plugin_conf(env("E2EE_WRITER"));
                char err[512] = "";
                rd_kafka_conf_res_t r = rd_kafka_conf_set(c, bad[i][0], bad[i][1], err, sizeof(err));
                CHECK(r != RD_KAFKA_CONF_OK, "%s=%.20s was accepted", bad[i][0], bad[i][1]);
                CHECK(!strncmp(err, bad[i][0], strlen(bad[i][0])), "%s: errstr '%s' does not name it",
                      bad[i][0], err);
                /* The same without an error buffer. */
                r = rd_kafka_conf_set(c, bad[i][0], bad[i][1], NULL, 0);
                CHECK(r != RD_KAFKA_CONF_OK, "%s (no errstr) was accepted", bad[i][0]);
                rd_kafka_conf_destroy(c);
        }
        /* A NULL value: librdkafka hands it to the plugin as is. */
        rd_kafka_conf_t *c = plugin_conf(env("E2EE_WRITER"));
        char err[512] = "";
        CHECK(rd_kafka_conf_set(c, "e2ee.key.rotation.ms", NULL, err, sizeof(err)) != RD_KAFKA_CONF_OK,
              "a NULL e2ee.key.rotation.ms was accepted");
        rd_kafka_conf_set(c, "e2ee.state.dir", NULL, err, sizeof(err)); /* empty = none: either answer */
        /* A duplicated configuration carries the good values and none of the bad. */
        rd_kafka_conf_t *d = rd_kafka_conf_dup(c);
        rd_kafka_conf_destroy(c);
        rd_kafka_conf_destroy(d);
}

/* A record as a hostile producer (or broker) would write it: no plugin. */
struct bad_record {
        const char *what;
        int headers;         /* how many e2ee headers */
        ssize_t header_len;  /* for each: its length (-1 = strlen, with a string value) */
        int null_header;     /* header value NULL */
        size_t value_len;
};

static const struct bad_record bad_records[] = {
    {"no e2ee header (plaintext injection)", 0, 0, 0, 100},
    {"empty e2ee header", 1, 0, 0, 100},
    {"1-byte e2ee header", 1, 1, 0, 100},
    {"33-byte e2ee header", 1, 33, 0, 100},
    {"35-byte e2ee header", 1, 35, 0, 100},
    {"1000-byte e2ee header", 1, 1000, 0, 100},
    {"NULL e2ee header", 1, 0, 1, 100},
    {"e2ee header of length -1 (strlen)", 1, -1, 0, 100},
    {"random 34-byte e2ee header", 1, 34, 0, 100},
    {"two random 34-byte e2ee headers", 2, 34, 0, 100},
    {"random 34-byte header, 512 KiB value", 1, 34, 0, 512 * 1024},
    {"random 34-byte header, empty value", 1, 34, 0, 0},
};
#define N_BAD (sizeof(bad_records) / sizeof(*bad_records))

static void produce_bad_records(rd_kafka_t *raw) {
        for (size_t i = 0; i < N_BAD; i++) {
                const struct bad_record *b = &bad_records[i];
                char *value = malloc(b->value_len + 1);
                for (size_t j = 0; j < b->value_len; j++)
                        value[j] = (char)(rand() & 0xff);
                rd_kafka_headers_t *h = rd_kafka_headers_new(4);
                rd_kafka_header_add(h, "app", -1, "x", 1);
                for (int n = 0; n < b->headers; n++) {
                        char hv[1001];
                        for (size_t j = 0; j < sizeof(hv); j++)
                                hv[j] = (char)(1 + rand() % 255); /* no NUL: strlen is the length */
                        hv[0] = 1;                                /* version 1: parsed further */
                        hv[1] = 0;                                /* flags: unbound */
                        if (b->header_len < 0)
                                hv[40] = '\0';
                        rd_kafka_header_add(h, "e2ee", -1, b->null_header ? NULL : hv, b->header_len);
                }
                rd_kafka_resp_err_t e = rd_kafka_producev(
                    raw, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                    RD_KAFKA_V_VALUE(value, b->value_len), RD_KAFKA_V_KEY("k", 1),
                    RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                CHECK(!e, "produce %s: %s", b->what, rd_kafka_err2str(e));
                if (e)
                        rd_kafka_headers_destroy(h);
                free(value);
        }
        CHECK(rd_kafka_flush(raw, 10000) == 0, "flush raw");
}

int main(int argc, char **argv) {
        char err[512];
        if (version_asked(argc, argv))
                return 0;
        rd_kafka_t *mock_owner;
        rd_kafka_mock_cluster_t *mock =
            mock_cluster(&mock_owner, TOPIC, 1, bootstraps, sizeof(bootstraps));

        bad_conf_values();

        /* Offsets 0..N_BAD-1: malformed, by a producer without the plugin. */
        rd_kafka_conf_t *rc = rd_kafka_conf_new();
        set(rc, "bootstrap.servers", bootstraps);
        set(rc, "log_level", "3");
        rd_kafka_t *raw = rd_kafka_new(RD_KAFKA_PRODUCER, rc, err, sizeof(err));
        produce_bad_records(raw);
        rd_kafka_destroy(raw);

        /* Offset N_BAD: sealed by the plugin, with an app header also named
         * e2ee, which the plugin replaces (a record carries one). It stays
         * up to serve its key. */
        rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, plugin_conf(env("E2EE_WRITER")), err, sizeof(err));
        CHECK(p != NULL, "plugin producer: %s", err);
        const char *good = "the one good record";
        CHECK(!rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                                 RD_KAFKA_V_VALUE((void *)good, strlen(good)), RD_KAFKA_V_KEY("k", 1),
                                 RD_KAFKA_V_HEADER("e2ee", "app's own", 9),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              "produce good");
        CHECK(rd_kafka_flush(p, 10000) == 0, "flush plugin producer");

        /* A plugin consumer reads them all; on each error it seeks past the
         * record (the plugin seeks back to it, so that it is not committed past). */
        rd_kafka_conf_t *cc = plugin_conf(env("E2EE_READER"));
        set(cc, "group.id", "m-test");
        set(cc, "e2ee.key.wait.ms", "500"); /* random key ids never arrive */
        set(cc, "enable.auto.commit", "false");
        rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof(err));
        CHECK(c != NULL, "consumer: %s", err);
        rd_kafka_poll_set_consumer(c);
        rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(a, TOPIC, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
        CHECK(!rd_kafka_assign(c, a), "assign");
        rd_kafka_topic_partition_list_destroy(a);
        int errored[N_BAD + 1] = {0}, good_seen = 0;
        for (int tries = 0; tries < 1200 && !good_seen; tries++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__VALUE_DESERIALIZATION) {
                        /* The plugin moved the offset back by one for the store. */
                        int64_t at = m->offset + 1;
                        /* The whole reason and nothing else, however short the
                         * record, as librdkafka's own errors carry theirs: the
                         * payload is the NUL-terminated text, len its length. */
                        char head[64];
                        snprintf(head, sizeof(head), "kafka-e2ee: record at offset %lld rejected: ",
                                 (long long)at);
                        const char *why = rd_kafka_message_errstr(m);
                        CHECK(why && why == (const char *)m->payload && strlen(why) == m->len &&
                                  !strncmp(why, head, strlen(head)) && m->len > strlen(head) + 10,
                              "an error message carries something other than the whole reason: "
                              "%zu bytes '%.*s'",
                              m->len, (int)m->len, m->payload ? (const char *)m->payload : "");
                        if (at == (int64_t)N_BAD) {
                                /* The good record's key is still on its way: the
                                 * plugin sought back to it; it comes again. */
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        CHECK(at >= 0 && at < (int64_t)N_BAD, "offset %lld failed", (long long)at);
                        if (at >= 0 && at < (int64_t)N_BAD)
                                errored[at]++;
                        seek_past(c, TOPIC, 0, at);
                } else if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
                } else {
                        CHECK(m->offset == (int64_t)N_BAD, "offset %lld reached the app as data",
                              (long long)m->offset);
                        if (m->offset == (int64_t)N_BAD) {
                                CHECK(m->len == strlen(good) && !memcmp(m->payload, good, m->len),
                                      "the good record did not decrypt");
                                good_seen = 1;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        for (size_t i = 0; i < N_BAD; i++)
                CHECK(errored[i] >= 1, "%s: no error reached the app", bad_records[i].what);
        CHECK(good_seen, "the good record never arrived");
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
        rd_kafka_destroy(p);
        rd_kafka_mock_cluster_destroy(mock);
        rd_kafka_destroy(mock_owner);
        if (failures) {
                fprintf(stderr, "%d failures\n", failures);
                return 1;
        }
        printf("malformed_test: ok (%zu malformed records, %d bad settings)\n", N_BAD, 16);
        return 0;
}
