/* The one monotonic clock: milliseconds and seconds since an unspecified start
 * (CLOCK_MONOTONIC), for deadlines, backoff and timings. Not wall time: log stamps and
 * metrics timestamps use time(). */
#ifndef FED_CLOCK_H
#define FED_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t fed_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline double fed_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
