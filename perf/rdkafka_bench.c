/*
 * rdkafka_bench: producer, consumer and latency throughput of a librdkafka
 * client, with or without the kafka-e2ee plugin (which is configuration only:
 * --config plugin.library.paths=... then the e2ee.* properties).
 *
 *   rdkafka_bench produce --bootstrap B --topic T --records N --size S
 *                         [--warmup W] [--hold] [--config k=v]...
 *       Sends W warm-up records, flushes, then N timed records at the maximum
 *       rate and flushes again. With --hold it then stays up (serving the keys
 *       of what it sealed) until stdin reaches EOF.
 *   rdkafka_bench consume --bootstrap B --topic T --records N --size S
 *                         [--timeout-ms MS] [--config k=v]...
 *       Subscribes and reads N records. The timed window starts at the first
 *       record (so group join and a key fetch are outside it and reported as
 *       first_record_ms) and ends at the N-th.
 *   rdkafka_bench latency --bootstrap B --topic T --records N --size S --rate R
 *                         [--warmup W] [--warmup-max-ms MS] [--producer-config k=v]...
 *                         [--consumer-config k=v]... [--config k=v]...
 *       One producer and one consumer in this process. The producer sends at
 *       R records/s: warm-up records (at least W, and until the consumer has
 *       joined, got its keys and caught up to within 50 ms of the producer;
 *       at most --warmup-max-ms (default 30000) more, caught_up says whether
 *       it was),
 *       then N measured records. Each value carries its send time
 *       (CLOCK_MONOTONIC); the consumer takes now minus that. Percentiles are
 *       over the N measured records; cpu_s is this process's CPU (both
 *       clients) while the measured records were sent and received.
 *
 * produce and consume also print cpu_s: the process's CPU seconds (every
 * thread, CLOCK_PROCESS_CPUTIME_ID) over the timed window.
 *
 * Every value is MARKER + sequence + filler, exactly S bytes; the consumer
 * checks each value it gets still holds the marker, so a record handed over
 * as ciphertext is counted as "corrupt", never as consumed. The bench script
 * searches the broker's segment files for the same marker.
 *
 * Build (scripts/bench does this into target/perf/):
 *   gcc -std=c11 -O2 -Wall -Wextra -o target/perf/rdkafka_bench perf/rdkafka_bench.c -lrdkafka -lpthread
 *
 * Prints one JSON line with the results on stdout; diagnostics go to stderr.
 * Exit status: 0 when every record was acknowledged / consumed intact, 1 if
 * not, 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MARKER "E2EE-BENCH-PLAINTEXT-MARKER:"
#define MARKER_LEN (sizeof(MARKER) - 1)
/* Value layout: MARKER, 8-byte sequence, 8-byte send time (ns), 8-byte index
 * of a measured latency record (NOT_MEASURED otherwise), filler. */
#define SEQ_AT MARKER_LEN
#define TIME_AT (MARKER_LEN + 8)
#define INDEX_AT (MARKER_LEN + 16)
#define MIN_SIZE (MARKER_LEN + 24)
#define NOT_MEASURED UINT64_MAX
#define MAX_CONFIG 64

struct options {
    const char *command;
    const char *bootstrap;
    const char *topic;
    long records;
    long size;
    long warmup;
    double rate;
    long timeout_ms;
    long warmup_max_ms;
    int hold;
    /* k=v settings, applied in order (plugin.library.paths before e2ee.*). */
    const char *common[MAX_CONFIG];
    int n_common;
    const char *producer[MAX_CONFIG];
    int n_producer;
    const char *consumer[MAX_CONFIG];
    int n_consumer;
};

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("rdkafka_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU seconds (user + system, every thread) this process has used so far:
 * the bench's "CPU per MB" columns. CLOCK_PROCESS_CPUTIME_ID counts in
 * nanoseconds; /proc/self/stat's clock ticks (10 ms) were coarser than a
 * whole librdkafka window of 1 KiB records (0.3-0.5 s: 0-2 ms per MB, all
 * rounding). -1 if it cannot be read. */
static double cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return -1;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void fill_value(unsigned char *buf, long size) {
    memcpy(buf, MARKER, MARKER_LEN);
    memset(buf + MARKER_LEN, 0, 24);
    for (long i = MIN_SIZE; i < size; i++) buf[i] = (unsigned char)('a' + i % 26);
}

static long parse_long(const char *name, const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0) die("%s: '%s' is not a non-negative integer", name, s);
    return v;
}

static void add_config(const char **list, int *n, const char *kv) {
    if (*n >= MAX_CONFIG) die("too many --config settings");
    if (!strchr(kv, '=')) die("--config '%s' is not k=v", kv);
    list[(*n)++] = kv;
}

static void parse(int argc, char **argv, struct options *o) {
    memset(o, 0, sizeof *o);
    o->timeout_ms = 60000;
    o->warmup_max_ms = 30000;
    if (argc < 2) die("usage: rdkafka_bench produce|consume|latency --bootstrap B --topic T --records N --size S ...");
    o->command = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--hold")) {
            o->hold = 1;
            continue;
        }
        if (i + 1 >= argc) die("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--bootstrap")) o->bootstrap = v;
        else if (!strcmp(a, "--topic")) o->topic = v;
        else if (!strcmp(a, "--records")) o->records = parse_long(a, v);
        else if (!strcmp(a, "--size")) o->size = parse_long(a, v);
        else if (!strcmp(a, "--warmup")) o->warmup = parse_long(a, v);
        else if (!strcmp(a, "--rate")) o->rate = (double)parse_long(a, v);
        else if (!strcmp(a, "--timeout-ms")) o->timeout_ms = parse_long(a, v);
        else if (!strcmp(a, "--warmup-max-ms")) o->warmup_max_ms = parse_long(a, v);
        else if (!strcmp(a, "--config")) add_config(o->common, &o->n_common, v);
        else if (!strcmp(a, "--producer-config")) add_config(o->producer, &o->n_producer, v);
        else if (!strcmp(a, "--consumer-config")) add_config(o->consumer, &o->n_consumer, v);
        else die("unknown option %s", a);
    }
    if (!o->bootstrap || !o->topic) die("--bootstrap and --topic are required");
    if (o->records <= 0) die("--records must be positive");
    if (o->size < (long)MIN_SIZE) die("--size must be at least %zu bytes (marker, sequence, time)", MIN_SIZE);
    if (!strcmp(o->command, "latency") && o->rate <= 0) die("latency needs --rate");
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK)
        die("config %s: %s", key, err);
}

static void set_kv(rd_kafka_conf_t *conf, const char *kv) {
    const char *eq = strchr(kv, '=');
    char key[256];
    size_t n = (size_t)(eq - kv);
    if (n >= sizeof key) die("config key too long: %s", kv);
    memcpy(key, kv, n);
    key[n] = 0;
    set(conf, key, eq + 1);
}

static rd_kafka_conf_t *base_conf(const struct options *o, const char *const *extra, int n_extra) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", o->bootstrap);
    for (int i = 0; i < o->n_common; i++) set_kv(conf, o->common[i]);
    for (int i = 0; i < n_extra; i++) set_kv(conf, extra[i]);
    return conf;
}

static rd_kafka_t *new_client(rd_kafka_type_t type, rd_kafka_conf_t *conf) {
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) die("creating the %s failed: %s", type == RD_KAFKA_PRODUCER ? "producer" : "consumer", err);
    return rk;
}

/* ---- producing ------------------------------------------------------------ */

struct delivery {
    atomic_long acked;
    atomic_long failed;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    struct delivery *d = opaque;
    if (m->err) {
        if (atomic_fetch_add(&d->failed, 1) < 5)
            fprintf(stderr, "rdkafka_bench: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        atomic_fetch_add(&d->acked, 1);
    }
}

static rd_kafka_t *new_producer(const struct options *o, struct delivery *d) {
    rd_kafka_conf_t *conf = base_conf(o, o->producer, o->n_producer);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, d);
    return new_client(RD_KAFKA_PRODUCER, conf);
}

/* Sends one value (copied by librdkafka); waits while the local queue is full. */
static void send_value(rd_kafka_t *rk, const char *topic, unsigned char *value, long size) {
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(value, (size_t)size),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("produce failed: %s", rd_kafka_err2str(err));
        rd_kafka_poll(rk, 1);
    }
}

static void flush_all(rd_kafka_t *rk, long timeout_ms) {
    rd_kafka_resp_err_t err = rd_kafka_flush(rk, (int)timeout_ms);
    if (err) fprintf(stderr, "rdkafka_bench: flush: %s\n", rd_kafka_err2str(err));
}

/* Keeps the client polled until stdin closes: a producer that holds keys. */
static void hold_until_stdin_closes(rd_kafka_t *rk) {
    char buf[256];
    fflush(stdout);
    while (read(STDIN_FILENO, buf, sizeof buf) > 0) rd_kafka_poll(rk, 0);
    rd_kafka_poll(rk, 0);
}

static int cmd_produce(const struct options *o) {
    struct delivery d = {0};
    rd_kafka_t *rk = new_producer(o, &d);
    unsigned char *value = malloc((size_t)o->size);
    if (!value) die("out of memory");
    fill_value(value, o->size);
    long seq = 0;
    for (long i = 0; i < o->warmup; i++, seq++) {
        put_u64(value + SEQ_AT, (uint64_t)seq);
        send_value(rk, o->topic, value, o->size);
        rd_kafka_poll(rk, 0);
    }
    flush_all(rk, o->timeout_ms);
    long warm_acked = atomic_load(&d.acked);
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long i = 0; i < o->records; i++, seq++) {
        put_u64(value + SEQ_AT, (uint64_t)seq);
        send_value(rk, o->topic, value, o->size);
        rd_kafka_poll(rk, 0);
    }
    flush_all(rk, o->timeout_ms);
    double secs = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    long acked = atomic_load(&d.acked), failed = atomic_load(&d.failed);
    printf("{\"command\":\"produce\",\"records\":%ld,\"warmup\":%ld,\"size\":%ld,\"acked\":%ld,"
           "\"failed\":%ld,\"seconds\":%.6f,\"cpu_s\":%.6f,\"records_per_s\":%.1f,\"mb_per_s\":%.3f}\n",
           o->records, o->warmup, o->size, acked, failed, secs, cpu, (double)(acked - warm_acked) / secs,
           (double)(acked - warm_acked) * (double)o->size / 1048576.0 / secs);
    if (o->hold) hold_until_stdin_closes(rk);
    rd_kafka_destroy(rk);
    free(value);
    return acked == o->records + o->warmup && failed == 0 ? 0 : 1;
}

/* ---- consuming ------------------------------------------------------------ */

static rd_kafka_t *new_consumer(const struct options *o) {
    rd_kafka_conf_t *conf = base_conf(o, o->consumer, o->n_consumer);
    char group[64];
    snprintf(group, sizeof group, "rdkafka-bench-%d-%" PRIu64, (int)getpid(), now_ns());
    /* Only set when the caller did not: --config may override them. */
    char buf[64];
    size_t len = sizeof buf;
    if (rd_kafka_conf_get(conf, "group.id", buf, &len) != RD_KAFKA_CONF_OK || len <= 1) set(conf, "group.id", group);
    set(conf, "auto.offset.reset", "earliest");
    set(conf, "enable.auto.commit", "false");
    rd_kafka_t *rk = new_client(RD_KAFKA_CONSUMER, conf);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, o->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) die("subscribe: %s", rd_kafka_err2str(err));
    return rk;
}

/* A value the app may use: the expected length and the marker in place. */
static int intact(const rd_kafka_message_t *m, long size) {
    return m->len == (size_t)size && m->payload && memcmp(m->payload, MARKER, MARKER_LEN) == 0;
}

struct tally {
    long consumed;  /* intact records */
    long corrupt;   /* records handed over that are not the plaintext */
    long errors;    /* error events (e.g. the plugin rejected a record) */
};

/* Counts one message or error event; returns 1 if it was a record (intact
 * or not), 0 for an event. */
static int count(struct tally *t, const rd_kafka_message_t *m, long size) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return 0;
    if (m->err) {
        if (t->errors++ < 5) fprintf(stderr, "rdkafka_bench: consume error: %s\n", rd_kafka_message_errstr(m));
        return 0;
    }
    if (intact(m, size))
        t->consumed++;
    else
        t->corrupt++;
    return 1;
}

static int cmd_consume(const struct options *o) {
    rd_kafka_t *rk = new_consumer(o);
    struct tally t = {0};
    uint64_t start = now_ns(), first = 0, last = 0, idle_since = start;
    double cpu_first = 0, cpu_last = 0;
    while (t.consumed + t.corrupt < o->records) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        uint64_t now = now_ns();
        if (!m) {
            if ((now - idle_since) / 1000000 > (uint64_t)o->timeout_ms) {
                fprintf(stderr, "rdkafka_bench: no record for %ld ms; giving up\n", o->timeout_ms);
                break;
            }
            continue;
        }
        idle_since = now;
        if (count(&t, m, o->size)) {
            if (!first) {
                first = now;
                cpu_first = cpu_seconds();
            }
            last = now;
        }
        rd_kafka_message_destroy(m);
    }
    cpu_last = cpu_seconds(); /* read once: the window ends at the last record */
    /* The window runs from the first record to the last: records 2..N. */
    double secs = first && last > first ? (double)(last - first) / 1e9 : 0;
    long timed = t.consumed > 0 ? t.consumed - 1 : 0;
    printf("{\"command\":\"consume\",\"records\":%ld,\"size\":%ld,\"consumed\":%ld,\"corrupt\":%ld,"
           "\"errors\":%ld,\"first_record_ms\":%.1f,\"seconds\":%.6f,\"cpu_s\":%.6f,\"records_per_s\":%.1f,"
           "\"mb_per_s\":%.3f}\n",
           o->records, o->size, t.consumed, t.corrupt, t.errors, first ? (double)(first - start) / 1e6 : -1.0,
           secs, cpu_last - cpu_first, secs > 0 ? (double)timed / secs : 0, secs > 0 ? (double)timed * (double)o->size / 1048576.0 / secs : 0);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return t.consumed == o->records && t.corrupt == 0 && t.errors == 0 ? 0 : 1;
}

/* ---- latency -------------------------------------------------------------- */

struct latency_run {
    const struct options *o;
    rd_kafka_t *producer;
    struct delivery d;
    atomic_ulong sent;     /* records sent so far (sequence of the next) */
    atomic_ulong received; /* sequence of the last record the consumer got, + 1 */
    atomic_int stop;       /* the consumer gave up: stop producing */
    atomic_int caught_up;  /* measuring began with the consumer caught up */
    atomic_int producer_failed;
    atomic_ulong cpu_us_at_measuring; /* process CPU when the measured records began */
};

static void sleep_until(uint64_t deadline_ns) {
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u), .tv_nsec = (long)(deadline_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Sends one record at the next tick of the fixed rate. A producer that
 * falls behind catches up at full speed; latency counts from the actual send. */
static void send_paced(struct latency_run *run, unsigned char *value, uint64_t index, uint64_t *next) {
    const struct options *o = run->o;
    sleep_until(*next);
    *next += (uint64_t)(1e9 / o->rate);
    put_u64(value + SEQ_AT, atomic_load(&run->sent));
    put_u64(value + INDEX_AT, index);
    put_u64(value + TIME_AT, now_ns());
    send_value(run->producer, o->topic, value, o->size);
    atomic_fetch_add(&run->sent, 1);
    rd_kafka_poll(run->producer, 0);
}

static void *latency_producer(void *arg) {
    struct latency_run *run = arg;
    const struct options *o = run->o;
    unsigned char *value = malloc((size_t)o->size);
    if (!value) {
        atomic_store(&run->producer_failed, 1);
        return NULL;
    }
    fill_value(value, o->size);
    uint64_t next = now_ns();
    /* Warm-up: the consumer's group join and first key fetch happen here, and
     * the backlog they leave is drained before anything is measured. */
    uint64_t lag_ok = (uint64_t)(o->rate * 0.05) + 1;
    uint64_t warmup_end = next + (uint64_t)((double)o->warmup / o->rate * 1e9) +
                          (uint64_t)o->warmup_max_ms * 1000000u;
    while (!atomic_load(&run->stop) && now_ns() < warmup_end &&
           (atomic_load(&run->sent) < (uint64_t)o->warmup ||
            atomic_load(&run->sent) - atomic_load(&run->received) > lag_ok))
        send_paced(run, value, NOT_MEASURED, &next);
    atomic_store(&run->caught_up, atomic_load(&run->sent) - atomic_load(&run->received) <= lag_ok);
    atomic_store(&run->cpu_us_at_measuring, (unsigned long)(cpu_seconds() * 1e6));
    for (long i = 0; i < o->records && !atomic_load(&run->stop); i++) send_paced(run, value, (uint64_t)i, &next);
    flush_all(run->producer, o->timeout_ms);
    free(value);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_ms(const uint64_t *sorted, long n, double p) {
    if (n == 0) return -1;
    /* Nearest rank. */
    long rank = (long)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return (double)sorted[rank - 1] / 1e6;
}

static int cmd_latency(const struct options *o) {
    struct latency_run run = {.o = o};
    run.producer = new_producer(o, &run.d);
    rd_kafka_t *consumer = new_consumer(o);
    uint64_t *lat = calloc((size_t)o->records, sizeof *lat);
    unsigned char *seen = calloc((size_t)o->records, 1);
    if (!lat || !seen) die("out of memory");
    pthread_t producer;
    if (pthread_create(&producer, NULL, latency_producer, &run)) die("pthread_create failed");

    struct tally t = {0};
    long measured = 0, duplicates = 0;
    uint64_t idle_since = now_ns();
    while (measured < o->records) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        uint64_t now = now_ns();
        if (!m) {
            if ((now - idle_since) / 1000000 > (uint64_t)o->timeout_ms) {
                fprintf(stderr, "rdkafka_bench: no record for %ld ms; giving up\n", o->timeout_ms);
                atomic_store(&run.stop, 1);
                break;
            }
            continue;
        }
        idle_since = now;
        if (count(&t, m, o->size) && intact(m, o->size)) {
            const unsigned char *p = m->payload;
            uint64_t index = get_u64(p + INDEX_AT), sent = get_u64(p + TIME_AT);
            atomic_store(&run.received, get_u64(p + SEQ_AT) + 1);
            if (index < (uint64_t)o->records) {
                long i = (long)index;
                if (seen[i]) {
                    duplicates++;
                } else {
                    seen[i] = 1;
                    lat[i] = now > sent ? now - sent : 0;
                    measured++;
                }
            }
        }
        rd_kafka_message_destroy(m);
    }
    double cpu_measured = cpu_seconds() - (double)atomic_load(&run.cpu_us_at_measuring) / 1e6;
    pthread_join(producer, NULL);
    long acked = atomic_load(&run.d.acked), failed = atomic_load(&run.d.failed);
    /* Unfilled slots (lost records) would read as 0 ms: sort only what arrived. */
    uint64_t *got = calloc((size_t)(measured ? measured : 1), sizeof *got);
    if (!got) die("out of memory");
    long k = 0;
    for (long i = 0; i < o->records; i++)
        if (seen[i]) got[k++] = lat[i];
    qsort(got, (size_t)k, sizeof *got, cmp_u64);
    printf("{\"command\":\"latency\",\"records\":%ld,\"warmup\":%ld,\"size\":%ld,\"rate\":%.0f,"
           "\"sent\":%lu,\"caught_up\":%s,\"measured\":%ld,\"duplicates\":%ld,\"corrupt\":%ld,\"errors\":%ld,\"acked\":%ld,"
           "\"failed\":%ld,\"cpu_s\":%.6f,"
           "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f}\n",
           o->records, o->warmup, o->size, o->rate, (unsigned long)atomic_load(&run.sent),
           atomic_load(&run.caught_up) ? "true" : "false", measured, duplicates, t.corrupt, t.errors, acked, failed,
           cpu_measured,
           percentile_ms(got, k, 50), percentile_ms(got, k, 99), percentile_ms(got, k, 99.9),
           percentile_ms(got, k, 100));
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_destroy(run.producer);
    free(lat);
    free(seen);
    free(got);
    return measured == o->records && t.corrupt == 0 && t.errors == 0 && failed == 0 &&
                   !atomic_load(&run.producer_failed)
               ? 0
               : 1;
}

int main(int argc, char **argv) {
    struct options o;
    parse(argc, argv, &o);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(o.command, "produce")) return cmd_produce(&o);
    if (!strcmp(o.command, "consume")) return cmd_consume(&o);
    if (!strcmp(o.command, "latency")) return cmd_latency(&o);
    die("unknown command '%s' (produce | consume | latency)", o.command);
}
