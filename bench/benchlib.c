/* The benchmarks' shared option parser, clock and median (see benchlib.h). */
#include "bench/benchlib.h"

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
