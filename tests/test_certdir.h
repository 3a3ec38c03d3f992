/* Shared by the tests that make certificates with the openssl command line or
 * certs/fedtune-certs: the temporary folder they go into, paths inside it, and a
 * printf-style shell command that reports its failure. */
#ifndef FED_TEST_CERTDIR_H
#define FED_TEST_CERTDIR_H

#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static char certdir[128];

/* certdir/rel in one of a few rotating buffers. */
static inline const char *cpath(const char *rel) {
    static char bufs[16][320];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof bufs[0], "%s/%s", certdir, rel);
    return b;
}

/* Runs the formatted command with system(); its exit status, 0 on success. */
static inline int sh(const char *fmt, ...) FED_PRINTF(1, 2);
static inline int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

#endif
