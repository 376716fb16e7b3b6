/* A worker's wall clock set off by a test: an LD_PRELOAD shim (tests/support/skew.py).
 *
 * CLOCK_REALTIME (clock_gettime, gettimeofday, time) reads the real clock plus
 * the seconds written in the file $BACKFILL_SKEW_FILE, re-read at most every
 * 50 ms, so a test can step the clock of a running process. Monotonic clocks,
 * sleeps and timed waits are untouched (libfaketime fakes those too, and
 * Python's timed waits then never return).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime(void) {
    static clock_gettime_fn real;
    if (!real) real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    return real;
}

static long long skew_ns(void) {
    static volatile long long skew, read_at;
    struct timespec mono;
    real_clock_gettime()(CLOCK_MONOTONIC, &mono);
    long long now = mono.tv_sec * 1000000000LL + mono.tv_nsec;
    if (read_at && now - read_at < 50000000LL) return skew;
    read_at = now;
    const char *path = getenv("BACKFILL_SKEW_FILE");
    int fd = path ? open(path, O_RDONLY) : -1;
    if (fd < 0) return skew;
    char text[64] = {0};
    ssize_t got = read(fd, text, sizeof text - 1);
    close(fd);
    if (got > 0) skew = (long long)(strtod(text, NULL) * 1e9);
    return skew;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int result = real_clock_gettime()(clock, ts);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        long long ns = ts->tv_sec * 1000000000LL + ts->tv_nsec + skew_ns();
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
    }
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int result = clock_gettime(CLOCK_REALTIME, &ts);
    if (result == 0 && tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    (void)tz;
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
