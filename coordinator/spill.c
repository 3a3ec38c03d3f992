/* The round's updates in an unlinked, memory-mapped file (spill.h). */
#define _GNU_SOURCE /* mremap */
#include "coordinator/spill.h"
#include "core/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE_BYTES  4096u
#define PAGE_FLOATS (PAGE_BYTES / sizeof(float))
#define BLOCK_BYTES (16u << 20) /* rows x block of a gather */
#define FIRST_ROWS  8
#define WRITE_BYTES (1u << 20) /* a row is written and dropped this much at a time */

typedef struct row_info {
    double weight, norm;
} row_info;

struct fed_spill {
    int fd;
    size_t n;           /* floats per row */
    size_t stride;      /* bytes per row: n floats rounded up to a page */
    size_t cap;         /* rows the file and the mapping hold */
    size_t rows;        /* rows written this round */
    size_t reserved;    /* rows whose disk space is reserved */
    unsigned char *map; /* cap x stride bytes, or NULL while cap is 0 */
    row_info *info;     /* (cap) */
    char dir[256];      /* for errors */
};

static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : PAGE_BYTES;
}

/* Drops the pages under [p, p + len) from the mapping. */
static void drop(unsigned char *p, size_t len) {
#ifdef MADV_DONTNEED
    size_t ps = page_size();
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(ps - 1);
    uintptr_t e = ((uintptr_t)p + len + ps - 1) & ~(uintptr_t)(ps - 1);
    (void)madvise((void *)a, (size_t)(e - a), MADV_DONTNEED);
#else
    (void)p;
    (void)len;
#endif
}

fed_err fed_spill_new(fed_spill **out, const char *dir, size_t n) {
    *out = NULL;
    if (n == 0) return fed_errorf(FED_EINVAL, "spill: row size 0");
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    size_t stride;
    if (!fed_mul_ok(n, sizeof(float), &stride) || !fed_add_ok(stride, PAGE_BYTES - 1, &stride))
        return fed_errorf(FED_ENOMEM, "spill: rows of %zu floats overflow", n);
    stride -= stride % PAGE_BYTES;
    fed_spill *sp = fed_calloc(1, sizeof *sp);
    if (!sp) return FED_ENOMEM;
    sp->fd = -1;
    sp->n = n;
    sp->stride = stride;
    snprintf(sp->dir, sizeof sp->dir, "%s", dir);
    char path[300];
    snprintf(path, sizeof path, "%s/fedtune-spill-XXXXXX", dir);
    sp->fd = mkstemp(path);
    if (sp->fd < 0) {
        fed_err err =
            fed_errorf(FED_EIO, "spill: cannot create a file in %s: %s", dir, strerror(errno));
        fed_free(sp);
        return err;
    }
    (void)unlink(path); /* nothing left behind, whatever happens */
    *out = sp;
    return FED_OK;
}

void fed_spill_destroy(fed_spill **sp) {
    if (!sp || !*sp) return;
    fed_spill *s = *sp;
    if (s->map) munmap(s->map, s->cap * s->stride);
    if (s->fd >= 0) close(s->fd);
    fed_free(s->info);
    fed_free(s);
    *sp = NULL;
}

void fed_spill_reset(fed_spill *sp) {
    sp->rows = 0;
}

/* Room for one more row than now: the file and the mapping double. */
static fed_err grow(fed_spill *sp) {
    size_t cap = sp->cap ? 2 * sp->cap : FIRST_ROWS, bytes;
    if (!fed_mul_ok(cap, sp->stride, &bytes) || bytes > (size_t)INT64_MAX)
        return fed_errorf(FED_ENOMEM, "spill: %zu rows of %zu bytes overflow", cap, sp->stride);
    row_info *info = fed_realloc(sp->info, cap * sizeof *info);
    if (!info) return FED_ENOMEM;
    sp->info = info;
    if (ftruncate(sp->fd, (off_t)bytes) != 0)
        return fed_errorf(FED_EIO, "spill: cannot grow the file in %s to %zu bytes: %s", sp->dir,
                          bytes, strerror(errno));
    void *m = sp->map ? mremap(sp->map, sp->cap * sp->stride, bytes, MREMAP_MAYMOVE)
                      : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, sp->fd, 0);
    if (m == MAP_FAILED)
        return fed_errorf(FED_ENOMEM, "spill: cannot map %zu bytes: %s", bytes, strerror(errno));
    sp->map = m;
    sp->cap = cap;
    return FED_OK;
}

fed_err fed_spill_add(fed_spill *sp, const float *d, double weight, double norm) {
    if (sp->rows == sp->cap) {
        fed_err err = grow(sp);
        if (err) return err;
    }
    if (sp->rows >= sp->reserved) { /* disk space first: a full disk is an error, not SIGBUS */
        int e = posix_fallocate(sp->fd, (off_t)(sp->rows * sp->stride), (off_t)sp->stride);
        if (e != 0 && e != EOPNOTSUPP && e != EINVAL)
            return fed_errorf(FED_EIO, "spill: no room in %s for an update of %zu bytes: %s",
                              sp->dir, sp->n * sizeof(float), strerror(e));
        sp->reserved = sp->rows + 1;
    }
    unsigned char *row = sp->map + sp->rows * sp->stride;
    const unsigned char *src = (const unsigned char *)d;
    size_t bytes = sp->n * sizeof(float);
    for (size_t o = 0; o < bytes; o += WRITE_BYTES) { /* a piece at a time: RSS stays low */
        size_t len = bytes - o < WRITE_BYTES ? bytes - o : WRITE_BYTES;
        memcpy(row + o, src + o, len);
        drop(row + o, len);
    }
    sp->info[sp->rows] = (row_info){weight, norm};
    sp->rows++;
    return FED_OK;
}

size_t fed_spill_rows(const fed_spill *sp) {
    return sp->rows;
}

size_t fed_spill_size(const fed_spill *sp) {
    return sp->n;
}

double fed_spill_weight(const fed_spill *sp, size_t row) {
    return sp->info[row].weight;
}

double fed_spill_norm(const fed_spill *sp, size_t row) {
    return sp->info[row].norm;
}

size_t fed_spill_block(const fed_spill *sp) {
    size_t rows = sp->rows ? sp->rows : 1;
    size_t b = BLOCK_BYTES / sizeof(float) / rows;
    b -= b % PAGE_FLOATS;
    if (b < PAGE_FLOATS) b = PAGE_FLOATS;
    size_t whole = sp->n + (PAGE_FLOATS - sp->n % PAGE_FLOATS) % PAGE_FLOATS;
    return b < whole ? b : whole;
}

void fed_spill_gather(fed_spill *sp, size_t off, size_t cnt, float *out) {
    for (size_t r = 0; r < sp->rows; r++) {
        unsigned char *p = sp->map + r * sp->stride + off * sizeof(float);
        memcpy(out + r * cnt, p, cnt * sizeof(float));
        drop(p, cnt * sizeof(float));
    }
}
