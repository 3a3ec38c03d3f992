/* The benchmarks' shared option parser, clock, median and sgemm reference (see
 * benchlib.h). */
#include "bench/benchlib.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void bench_usage(FILE *f, const char *prog, const char *summary, const bench_opt *t, size_t n,
                 const void *defaults) {
    fprintf(f, "usage: %s [options]\n%s\n\noptions:\n", prog, summary);
    for (size_t i = 0; i < n; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s%s%s", t[i].name, t[i].arg ? " " : "",
                 t[i].arg ? t[i].arg : "");
        fprintf(f, "  %-24s %s", left, t[i].help);
        if (t[i].kind == BENCH_NUMBER || t[i].kind == BENCH_INTEGER) {
            double v;
            memcpy(&v, (const char *)defaults + t[i].offset, sizeof v);
            fprintf(f, " [%g]", v);
        }
        fputc('\n', f);
    }
}

bool bench_parse(const char *prog, const bench_opt *t, size_t n, void *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const bench_opt *od = NULL;
        for (size_t k = 0; k < n; k++)
            if (strcmp(argv[i], t[k].name) == 0) od = &t[k];
        if (!od) {
            fprintf(stderr, "%s: unknown option \"%s\" (try --help)\n", prog, argv[i]);
            return false;
        }
        char *field = (char *)o + od->offset;
        if (od->kind == BENCH_FLAG) {
            bool on = true;
            memcpy(field, &on, sizeof on);
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", prog, od->name);
            return false;
        }
        const char *val = argv[++i];
        if (od->kind == BENCH_STRING) {
            memcpy(field, &val, sizeof val);
            continue;
        }
        char *end;
        double v = strtod(val, &end);
        if (end == val || *end != '\0' || !(v >= od->lo && v <= od->hi) ||
            (od->kind == BENCH_INTEGER && v != floor(v))) {
            fprintf(stderr, "%s: %s \"%s\": must be %s in [%g, %g]\n", prog, od->name, val,
                    od->kind == BENCH_INTEGER ? "an integer" : "a number", od->lo, od->hi);
            return false;
        }
        memcpy(field, &v, sizeof v);
    }
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Most timed repeats of the sgemm reference. */
#define SGEMM_MAX_REPEATS 101

fed_err bench_sgemm_gflops(size_t n, double seconds, size_t repeats, double *gflops) {
    fed_err err = FED_ENOMEM;
    float *A = fed_aligned_alloc(n * n, sizeof(float));
    float *B = fed_aligned_alloc(n * n, sizeof(float));
    float *C = fed_aligned_alloc(n * n, sizeof(float));
    if (!A || !B || !C) goto fail;
    fed_rng r;
    fed_rng_seed(&r, 20261124u);
    for (size_t i = 0; i < n * n; i++) {
        A[i] = fed_rng_uniform(&r) - 0.5f;
        B[i] = fed_rng_uniform(&r) - 0.5f;
        C[i] = 0.0f;
    }
    const double flop = 2.0 * (double)n * (double)n * (double)n;
    /* Warm-up: thread pool start, page faults on C, OpenBLAS buffers. */
    double t0 = fed_now_s();
    do {
        fed_gemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
    } while (fed_now_s() - t0 < 0.5 * seconds);
    double rates[SGEMM_MAX_REPEATS];
    if (repeats > SGEMM_MAX_REPEATS) repeats = SGEMM_MAX_REPEATS;
    if (repeats < 1) repeats = 1;
    for (size_t rep = 0; rep < repeats; rep++) {
        size_t calls = 0;
        double start = fed_now_s(), el;
        do {
            fed_gemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
            calls++;
        } while ((el = fed_now_s() - start) < seconds);
        rates[rep] = flop * (double)calls / el / 1e9;
    }
    *gflops = bench_median(rates, repeats);
    err = FED_OK;
fail:
    fed_free(A);
    fed_free(B);
    fed_free(C);
    return err;
}
