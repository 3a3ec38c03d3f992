/* Error codes shared by every fedtune library, their messages, and the thread-local
 * "last error" text that names the file, line, field or peer at fault.
 *
 * Codes are append-only: a code's number never changes once released. Libraries
 * return a fed_err and, for anything a user must act on, also record one line of
 * detail with fed_errorf(); the executable prints fed_errmsg(). Nothing here prints. */
#ifndef FED_ERR_H
#define FED_ERR_H

#include <stddef.h>

/* X(name, value, message). Append new codes at the end, never renumber. */
#define FED_ERR_TABLE(X)                                                                           \
    X(FED_OK, 0, "success")                                                                        \
    X(FED_ENOMEM, 1, "out of memory")                                                              \
    X(FED_EINVAL, 2, "invalid argument")                                                           \
    X(FED_EFORMAT, 3, "malformed input")                                                           \
    X(FED_EIO, 4, "input/output error")                                                            \
    X(FED_ERANGE, 5, "value out of range")                                                         \
    X(FED_ENOTFOUND, 6, "not found")                                                               \
    X(FED_ESHAPE, 7, "shape mismatch")                                                             \
    X(FED_EUNSUPPORTED, 8, "not supported")                                                        \
    X(FED_ENONFINITE, 9, "non-finite value")                                                       \
    X(FED_EDIGEST, 10, "digest mismatch")                                                          \
    X(FED_EPROTO, 11, "protocol error")                                                            \
    X(FED_ETLS, 12, "TLS error")                                                                   \
    X(FED_EAUTH, 13, "authentication failed")                                                      \
    X(FED_ETIMEOUT, 14, "timed out")                                                               \
    X(FED_ECLOSED, 15, "connection closed")                                                        \
    X(FED_EAGAIN, 16, "try again")                                                                 \
    X(FED_ECANCELED, 17, "canceled")                                                               \
    X(FED_EEXIST, 18, "already exists")                                                            \
    X(FED_EINTERNAL, 19, "internal error")

typedef enum fed_err {
#define FED_ERR_ENUM(name, value, msg) name = value,
    FED_ERR_TABLE(FED_ERR_ENUM)
#undef FED_ERR_ENUM
} fed_err;

#if defined(__GNUC__)
#define FED_MUST_USE     __attribute__((warn_unused_result))
#define FED_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FED_MUST_USE
#define FED_PRINTF(f, a)
#endif

/* Static message for a code; never NULL ("unknown error" for codes not in the table). */
const char *fed_strerror(fed_err err);

/* Symbolic name of a code ("FED_EFORMAT"); never NULL. */
const char *fed_errname(fed_err err);

/* Records a one-line detail for the calling thread and returns err, so that
 * `return fed_errorf(FED_EFORMAT, "%s:%d: ...", file, line);` reads naturally.
 * The text is truncated to 511 bytes. */
fed_err fed_errorf(fed_err err, const char *fmt, ...) FED_PRINTF(2, 3);

/* Prepends a formatted prefix and ": " to the calling thread's last detail (or to
 * fed_strerror(err) when there is none) and returns err: adds the file or peer to an
 * error raised deeper down. */
fed_err fed_errprefix(fed_err err, const char *fmt, ...) FED_PRINTF(2, 3);

/* The calling thread's last detail; "" when none was recorded. Valid until the next
 * fed_errorf on this thread. */
const char *fed_errmsg(void);

/* What to show a user for err: the last detail if one was recorded, else
 * fed_strerror(err). */
const char *fed_errdetail(fed_err err);

/* Forgets the calling thread's last detail. */
void fed_errclear(void);

#endif
