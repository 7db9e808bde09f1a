/* A wrong wall clock for one process, for the clock-skew test in
 * test_faults_trust.py: LD_PRELOAD this library and set CLOCKSHIFT_MS (e.g.
 * 300000 or -300000). It moves the wall-clock reads a program makes through
 * libc's public functions (clock_gettime on CLOCK_REALTIME and
 * CLOCK_REALTIME_COARSE, gettimeofday, time, timespec_get), and moves a C11
 * timed wait's wall-clock deadline back, so every wait lasts as long as it
 * asked. Monotonic clocks and sleeps stay real: as on a machine whose clock
 * is set wrong. The JVM's System.currentTimeMillis, Python's time.time,
 * Rust's SystemTime::now and librdkafka's record timestamps all read the
 * moved clock.
 *
 * Why not libfaketime (Debian 12 has 0.9.10), checked on this machine:
 * librdkafka (the confluent-kafka wheel's, built with C11 threads) computes
 * each timed wait's deadline from the wall clock and waits in cnd_timedwait,
 * which libfaketime does not intercept, so a client 5 minutes ahead waits 5
 * minutes too long every time (a plain consumer never joins its group) and
 * one behind spins. By default libfaketime also fakes the monotonic clock,
 * which then reads the wall clock's value (~1.8e9 s), and Rust's futex-based
 * Condvar::wait_timeout sleeps for decades; with
 * FAKETIME_DONT_FAKE_MONOTONIC=1, Python 3.11's time.sleep fails with EINVAL
 * (wolfcw/libfaketime#426). A JVM alone works under it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <threads.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static long long shift_ns(void) {
    static long long shift;
    static int known;
    if (!__atomic_load_n(&known, __ATOMIC_ACQUIRE)) {
        const char *v = getenv("CLOCKSHIFT_MS");
        __atomic_store_n(&shift, v ? strtoll(v, NULL, 10) * 1000000LL : 0, __ATOMIC_RELAXED);
        __atomic_store_n(&known, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&shift, __ATOMIC_RELAXED);
}

static int real_clock_gettime(clockid_t clock, struct timespec *ts) {
    static clock_gettime_fn real;
    clock_gettime_fn f = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
        __atomic_store_n(&real, f, __ATOMIC_RELEASE);
    }
    return f(clock, ts);
}

static struct timespec shifted(struct timespec ts, long long by_ns) {
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + by_ns;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int r = real_clock_gettime(clock, ts);
    if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        *ts = shifted(*ts, shift_ns());
    }
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timespec ts;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return r;
}

int timespec_get(struct timespec *ts, int base) {
    if (base != TIME_UTC || clock_gettime(CLOCK_REALTIME, ts) != 0) {
        return 0;
    }
    return base;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return (time_t)-1;
    }
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}

/* A C11 timed wait's deadline is on the wall clock (TIME_UTC): a program
 * computes it from the moved clock, so it is moved back before the real wait,
 * as if the kernel's own clock were wrong. librdkafka (the confluent-kafka
 * wheel's, built with C11 threads) waits this way on every queue. */
typedef int (*cnd_timedwait_fn)(cnd_t *, mtx_t *, const struct timespec *);

int cnd_timedwait(cnd_t *restrict cond, mtx_t *restrict mutex, const struct timespec *restrict deadline) {
    static cnd_timedwait_fn real;
    cnd_timedwait_fn f = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (cnd_timedwait_fn)dlsym(RTLD_NEXT, "cnd_timedwait");
        __atomic_store_n(&real, f, __ATOMIC_RELEASE);
    }
    struct timespec real_deadline = shifted(*deadline, -shift_ns());
    return f(cond, mutex, &real_deadline);
}
