/* What every C test of the plugin shares: the failure counter and CHECK
 * (record a failure and go on, so one run reports every broken property),
 * a required environment variable, and a librdkafka setting that must take.
 * Each test is one translation unit, so these are static. */
#ifndef KAFKA_E2EE_TEST_CHECK_H
#define KAFKA_E2EE_TEST_CHECK_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...)                                                       \
        do {                                                                   \
                if (!(cond)) {                                                 \
                        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
                        fprintf(stderr, __VA_ARGS__);                          \
                        fprintf(stderr, "\n");                                 \
                        failures++;                                            \
                }                                                              \
        } while (0)

static inline const char *env(const char *name) {
        const char *v = getenv(name);
        if (!v) {
                fprintf(stderr, "missing environment variable %s\n", name);
                exit(2);
        }
        return v;
}

static inline void set(rd_kafka_conf_t *c, const char *k, const char *v) {
        char err[512];
        if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "conf %s: %s\n", k, err);
                exit(2);
        }
}

/* A client configuration that loads the plugin at PLUGIN and speaks as the
 * credential file CRED, trusting E2EE_TRUST. */
static inline rd_kafka_conf_t *plugin_conf_at(const char *bootstraps, const char *plugin,
                                              const char *cred) {
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        set(c, "bootstrap.servers", bootstraps);
        set(c, "plugin.library.paths", plugin);
        set(c, "e2ee.credential", cred);
        set(c, "e2ee.trust", env("E2EE_TRUST"));
        set(c, "log_level", "3");
        return c;
}

/* Moves consumer C past a record that failed, as a librdkafka app that skips
 * it does: the plugin seeks back to a failed record, so the app must seek on. */
static inline void seek_past(rd_kafka_t *c, const char *topic, int32_t partition, int64_t at) {
        rd_kafka_topic_partition_list_t *s = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(s, topic, partition)->offset = at + 1;
        rd_kafka_error_t *se = rd_kafka_seek_partitions(c, s, 5000);
        if (se)
                rd_kafka_error_destroy(se);
        rd_kafka_topic_partition_list_destroy(s);
}

/* tests/plugin/run asks each build which librdkafka it linked. */
static inline int version_asked(int argc, char **argv) {
        if (argc > 1 && !strcmp(argv[1], "--version")) {
                printf("%s\n", rd_kafka_version_str());
                return 1;
        }
        return 0;
}

/* librdkafka's mock cluster, owned by a plugin-less handle (*OWNER, to
 * destroy last), with TOPIC and both e2ee topics (the mock answers no
 * CreateTopics, so the plugin must find them); its bootstraps go to OUT. */
static inline rd_kafka_mock_cluster_t *mock_cluster(rd_kafka_t **owner, const char *topic,
                                                    int partitions, char *out, size_t n) {
        char err[512];
        rd_kafka_conf_t *mc = rd_kafka_conf_new();
        set(mc, "log_level", "3");
        *owner = rd_kafka_new(RD_KAFKA_PRODUCER, mc, err, sizeof(err));
        if (!*owner) {
                fprintf(stderr, "mock owner: %s\n", err);
                exit(2);
        }
        rd_kafka_mock_cluster_t *mock = rd_kafka_mock_cluster_new(*owner, 1);
        snprintf(out, n, "%s", rd_kafka_mock_cluster_bootstraps(mock));
        rd_kafka_mock_topic_create(mock, topic, partitions, 1);
        rd_kafka_mock_topic_create(mock, "_e2ee_control", 1, 1);
        rd_kafka_mock_topic_create(mock, "_e2ee_keys", 1, 1);
        return mock;
}

#endif
