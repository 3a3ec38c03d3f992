/* The process-wide log handler. Set once at start-up by the executable; reads are
 * unsynchronised by design (setting it while other threads log is not supported). */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

static fed_log_fn log_fn;
static void *log_user;
static fed_log_level log_max = FED_LOG_INFO;

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

void fed_log_write(fed_log_level level, const char *fmt, ...) {
    if (!fed_log_enabled(level)) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
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
