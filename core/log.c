/* The process-wide log handler and its flood limit. The handler is set once at start-up
 * by the executable; reads of it are unsynchronised by design (setting it while other
 * threads log is not supported). The repeat filter keeps the previous line under a
 * mutex, since the simulator logs from several threads. */
#include "core/log.h"

#include "core/clock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LINE_MAX_LEN 1024

static fed_log_fn log_fn;
static void *log_user;
static fed_log_level log_max = FED_LOG_INFO;

/* The repeat filter (window 0: off). */
static pthread_mutex_t rep_mu = PTHREAD_MUTEX_INITIALIZER;
static long rep_window;             /* ms */
static char rep_line[LINE_MAX_LEN]; /* the last line passed on */
static fed_log_level rep_level;
static long long rep_at;       /* monotonic ms when it was passed on */
static unsigned long rep_held; /* identical lines held back since */

void fed_log_set_handler(fed_log_fn fn, void *user, fed_log_level max_level) {
    log_fn = fn;
    log_user = user;
    log_max = max_level;
}

void fed_log_set_level(fed_log_level max_level) {
    log_max = max_level;
}

int fed_log_enabled(fed_log_level level) {
    return log_fn != NULL && level <= log_max;
}

/* With rep_mu held: the count of held-back lines, if any. */
static void flush_held(void) {
    if (rep_held == 0 || !log_fn) return;
    char note[64];
    snprintf(note, sizeof note, "last line repeated %lu times", rep_held);
    log_fn(log_user, rep_level, note);
    rep_held = 0;
}

void fed_log_set_repeat_window(long window_ms) {
    pthread_mutex_lock(&rep_mu);
    flush_held();
    rep_window = window_ms > 0 ? window_ms : 0;
    rep_line[0] = '\0';
    pthread_mutex_unlock(&rep_mu);
}

void fed_log_flush(void) {
    pthread_mutex_lock(&rep_mu);
    flush_held();
    pthread_mutex_unlock(&rep_mu);
}

void fed_log_write(fed_log_level level, const char *fmt, ...) {
    if (!fed_log_enabled(level)) return;
    char line[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&rep_mu);
    if (rep_window > 0) {
        long long now = fed_now_ms();
        if (level == rep_level && strcmp(line, rep_line) == 0 && now - rep_at < rep_window) {
            rep_held++;
            pthread_mutex_unlock(&rep_mu);
            return;
        }
        flush_held();
        memcpy(rep_line, line, sizeof line);
        rep_level = level;
        rep_at = now;
    }
    pthread_mutex_unlock(&rep_mu);
    log_fn(log_user, level, line);
}

const char *fed_log_level_name(fed_log_level level) {
    switch (level) {
    case FED_LOG_ERROR:
        return "error";
    case FED_LOG_WARN:
        return "warn";
    case FED_LOG_INFO:
        return "info";
    case FED_LOG_DEBUG:
        return "debug";
    }
    return "?";
}
