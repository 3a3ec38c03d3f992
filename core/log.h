/* Logging for libraries that must never print: they call FED_LOG(), the executable
 * installs a handler. The level is checked before any formatting, so a disabled debug
 * line costs one comparison. Never log keys, raw tensors or training examples. */
#ifndef FED_LOG_H
#define FED_LOG_H

#include "core/err.h"

typedef enum fed_log_level {
    FED_LOG_ERROR = 0,
    FED_LOG_WARN = 1,
    FED_LOG_INFO = 2,
    FED_LOG_DEBUG = 3,
} fed_log_level;

/* Receives one formatted line without a trailing newline. Must be thread-safe if the
 * program logs from several threads. */
typedef void (*fed_log_fn)(void *user, fed_log_level level, const char *line);

/* Installs the handler (NULL discards everything) and the most verbose level passed. */
void fed_log_set_handler(fed_log_fn fn, void *user, fed_log_level max_level);
/* Changes only the most verbose level passed (same caveat: before other threads log). */
void fed_log_set_level(fed_log_level max_level);
/* True when a line at this level would reach a handler. */
int fed_log_enabled(fed_log_level level);
/* Formats and delivers one line; use FED_LOG so the level check comes first. */
void fed_log_write(fed_log_level level, const char *fmt, ...) FED_PRINTF(2, 3);
/* Rate limit for floods: a line identical to the previous one (level and text) that
 * comes within window_ms of the last one passed on is held back and counted; the next
 * line that is passed on (a different one, or the same after the window) is preceded by
 * "last line repeated N times". 0 turns it off (the default). Thread-safe. */
void fed_log_set_repeat_window(long window_ms);
/* Passes on the "last line repeated N times" of lines still held back (at exit). */
void fed_log_flush(void);
/* "error", "warn", "info", "debug". */
const char *fed_log_level_name(fed_log_level level);

#define FED_LOG(level, ...)                                                                        \
    do {                                                                                           \
        if (fed_log_enabled(level)) fed_log_write(level, __VA_ARGS__);                             \
    } while (0)

#endif
