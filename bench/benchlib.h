/* What the benchmark programs share: a table-driven option parser (every option is a
 * flag, a number, an integer or a string; defaults, ranges and --help come from one
 * table), a monotonic clock, a median and the sgemm reference. Benchmarks print; this
 * only helps them. */
#ifndef FED_BENCHLIB_H
#define FED_BENCHLIB_H

#include "core/clock.h"
#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum bench_opt_kind {
    BENCH_FLAG,
    BENCH_NUMBER,
    BENCH_INTEGER,
    BENCH_STRING
} bench_opt_kind;

/* One option. Numbers and integers are stored as double, flags as bool, strings as a
 * const char * pointing into argv; offset is the field's offsetof in the options struct. */
typedef struct bench_opt {
    const char *name;    /* "--size" */
    bench_opt_kind kind; /* how the value is parsed */
    size_t offset;       /* field in the caller's options struct */
    double lo, hi;       /* accepted range for numbers */
    const char *arg;     /* value placeholder in --help, NULL for flags */
    const char *help;    /* one line for --help */
} bench_opt;

/* Prints "usage: PROG [options]", the summary and one line per option, with the value in
 * defaults (the options struct filled with defaults) for numbers. */
void bench_usage(FILE *f, const char *prog, const char *summary, const bench_opt *t, size_t n,
                 const void *defaults);

/* Parses argv[1..argc) into o (already holding the defaults). On a bad argument prints
 * "PROG: ..." on stderr and returns false. */
bool bench_parse(const char *prog, const bench_opt *t, size_t n, void *o, int argc, char **argv);

/* Median of v[0..n) (sorts v); n >= 1. */
double bench_median(double *v, size_t n);

/* This machine's sgemm speed in the current OpenBLAS thread setting: the median GFLOP/s
 * (2 n^3 / t) of C = A @ B on square n x n matrices over `repeats` timed runs of at least
 * `seconds` each, after a warm-up; into *gflops. FED_ENOMEM if the matrices cannot be
 * allocated. The reference row the training benchmarks print their %peak against. */
fed_err bench_sgemm_gflops(size_t n, double seconds, size_t repeats, double *gflops) FED_MUST_USE;

#endif
