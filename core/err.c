/* fed_strerror and the thread-local last-error text. The table lives in err.h so the
 * enum and the messages cannot drift apart. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_msg[512];

const char *fed_strerror(fed_err err) {
    switch (err) {
#define FED_ERR_CASE(name, value, msg)                                                             \
    case name:                                                                                     \
        return msg;
        FED_ERR_TABLE(FED_ERR_CASE)
#undef FED_ERR_CASE
    }
    return "unknown error";
}

const char *fed_errname(fed_err err) {
    switch (err) {
#define FED_ERR_NAME(name, value, msg)                                                             \
    case name:                                                                                     \
        return #name;
        FED_ERR_TABLE(FED_ERR_NAME)
#undef FED_ERR_NAME
    }
    return "FED_E?";
}

fed_err fed_errorf(fed_err err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    return err;
}

fed_err fed_errprefix(fed_err err, const char *fmt, ...) {
    char old[sizeof last_msg], pre[sizeof last_msg];
    snprintf(old, sizeof old, "%s", fed_errdetail(err));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    /* Truncation is fine: the detail is documented to stop at 511 bytes. */
    size_t n = strlen(pre);
    if (n > sizeof last_msg - 3) n = sizeof last_msg - 3;
    memcpy(last_msg, pre, n);
    memcpy(last_msg + n, ": ", 2);
    size_t room = sizeof last_msg - n - 3, m = strlen(old);
    if (m > room) m = room;
    memcpy(last_msg + n + 2, old, m);
    last_msg[n + 2 + m] = '\0';
    return err;
}

const char *fed_errmsg(void) {
    return last_msg;
}

const char *fed_errdetail(fed_err err) {
    return last_msg[0] ? last_msg : fed_strerror(err);
}

void fed_errclear(void) {
    last_msg[0] = '\0';
}
