/* bench_robust: the robust rules (coordinator/stage_robust.c) at the size the issue names,
 * 100 updates of a 10 M-parameter model, against references measured in the same run.
 *
 * For each rule, a fresh child process holds what a coordinator holds (the global model,
 * the aggregator with one slot) and commits the updates through the aggregator, whose
 * per-update hook spills them (coordinator/spill.h); then it closes the round. Printed:
 *   peak RSS       the child's ru_maxrss, against the model's size and against what
 *                  holding every update in RAM would take (updates x model);
 *   commit         seconds for all commits (the check, the fold and the spill write);
 *   close          seconds of the rule's close, and the spill's read rate during it
 *                  (bytes the rule read / close time) against a memcpy of the model in
 *                  the same run.
 * Update i is u_i v (v a fixed positive vector, u_i distinct scalars), so the median and
 * the trimmed mean are known exactly and are checked: a broken rule cannot look fast.
 * Not a test (ctest never runs it). */
#include "bench/benchlib.h"
#include "coordinator/internal.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct options {
    double params;  /* floats per update */
    double updates; /* updates per round */
    const char *dir;
    const char *rules; /* comma-separated */
    bool help;
} options;

static const bench_opt opt_table[] = {
    {"--params", BENCH_INTEGER, offsetof(options, params), 1024, 1e9, "N", "floats per update"},
    {"--updates", BENCH_INTEGER, offsetof(options, updates), 3, 10000, "M", "updates per round"},
    {"--dir", BENCH_STRING, offsetof(options, dir), 0, 0, "DIR",
     "the spill file's folder (default $TMPDIR or /tmp)"},
    {"--rules", BENCH_STRING, offsetof(options, rules), 0, 0, "LIST",
     "comma-separated rules (default: mean,median,trimmed-mean,krum,multi-krum,norm,rfa)"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "print this help"},
};
#define NUM_OPTS (sizeof opt_table / sizeof opt_table[0])

/* u_i: distinct, spread around 1, in a shuffled order (i * 37 mod m is a permutation for
 * m not a multiple of 37). */
static float scalar_of(size_t i, size_t m) {
    size_t k = (i * 37) % m;
    return 0.5f + (float)k / (float)m;
}

/* v, positive, computed where needed (not held: the bench's RSS is the coordinator's). */
static float v_at(size_t j) {
    return 0.25f + (float)((j * 2654435761u) % 1000u) / 1000.0f;
}

typedef struct result {
    double commit_s, close_s, peak_mb, max_err;
} result;

static double peak_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0 / 1e6; /* KiB -> MB */
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The factor the rule's answer must be of v (NaN: not checked): the median or the
 * trimmed mean of the u_i. */
static double expected(fed_robust_rule rule, const fed_coord_robust_config *rc, size_t m) {
    double *u = malloc(m * sizeof *u), want = (double)NAN;
    if (!u) return want;
    for (size_t i = 0; i < m; i++) u[i] = (double)scalar_of(i, m);
    qsort(u, m, sizeof *u, cmp_double);
    if (rule == FED_ROBUST_MEDIAN) {
        want = m % 2 ? u[m / 2] : 0.5 * (u[m / 2 - 1] + u[m / 2]);
    } else if (rule == FED_ROBUST_TRIMMED_MEAN) {
        double s = 0.0;
        for (size_t i = rc->byzantine; i < m - rc->byzantine; i++) s += u[i];
        want = s / (double)(m - 2 * rc->byzantine);
    } else if (rule == FED_ROBUST_MEAN) {
        double s = 0.0;
        for (size_t i = 0; i < m; i++) s += u[i];
        want = s / (double)m;
    }
    free(u);
    return want;
}

/* In the child: one round of rule over m updates of n floats. */
static int run_rule(const options *o, fed_robust_rule rule, result *res) {
    size_t n = (size_t)o->params, m = (size_t)o->updates;
    float *model = fed_aligned_alloc(n, sizeof(float));
    fed_agg *agg = NULL;
    fed_stage *chain = NULL;
    if (!model || fed_agg_new(&agg, n, 1)) return 1;
    fed_rng r;
    fed_rng_seed(&r, 11);
    for (size_t j = 0; j < n; j++) model[j] = fed_rng_normal(&r); /* what a coordinator holds */
    if (fed_stage_mean_new(&chain, agg)) return 1;
    fed_coord_robust_config rc = {.rule = rule, .byzantine = (m - 3) / 2 > 10 ? 10 : (m - 3) / 2};
    if (rule != FED_ROBUST_MEAN && fed_stage_robust_new(&chain, &rc, n, o->dir)) {
        fprintf(stderr, "bench_robust: %s\n", fed_errmsg());
        return 1;
    }
    if (fed_stage_wants_updates(chain)) fed_agg_set_observer(agg, fed_stage_update_all, chain);
    double t0 = fed_now_s(), gen = 0.0;
    for (size_t i = 0; i < m; i++) {
        fed_agg_slot s;
        float *buf;
        if (fed_agg_slot_open(agg, &s, 1.0) || fed_agg_slot_buffer(agg, s, &buf)) return 1;
        double g0 = fed_now_s();
        float u = scalar_of(i, m);
        for (size_t j = 0; j < n; j++) buf[j] = u * v_at(j);
        gen += fed_now_s() - g0;
        if (fed_agg_slot_commit_buffer(agg, s, 0)) {
            fprintf(stderr, "bench_robust: %s\n", fed_errmsg());
            return 1;
        }
    }
    res->commit_s = fed_now_s() - t0 - gen;
    fed_round_agg ra = {.n = n};
    t0 = fed_now_s();
    if (fed_stage_close_round(chain, &ra)) {
        fprintf(stderr, "bench_robust: %s\n", fed_errmsg());
        return 1;
    }
    res->close_s = fed_now_s() - t0;
    double want = expected(rule, &rc, m);
    res->max_err = 0.0;
    for (size_t j = 0; j < n; j++) {
        double e = isnan(want)
                       ? (isfinite(ra.mean[j]) ? 0.0 : (double)INFINITY)
                       : fabs((double)ra.mean[j] - want * (double)v_at(j)) / (double)v_at(j);
        if (!(e <= res->max_err)) res->max_err = e;
    }
    res->peak_mb = peak_mb();
    fed_stage_destroy_all(&chain);
    fed_agg_destroy(&agg);
    fed_free(model);
    return 0;
}

/* Runs rule in a child process (its own peak RSS); false on failure. */
static bool in_child(const options *o, fed_robust_rule rule, result *res) {
    int fd[2];
    if (pipe(fd) != 0) return false;
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        close(fd[0]);
        result rr;
        int rc = run_rule(o, rule, &rr);
        if (rc == 0 && write(fd[1], &rr, sizeof rr) != (ssize_t)sizeof rr) rc = 1;
        _exit(rc);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], res, sizeof *res);
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return got == (ssize_t)sizeof *res && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* memcpy of n floats: the median GB/s (read + write counted once each) over 5 runs. */
static double memcpy_gbs(size_t n) {
    float *a = fed_aligned_alloc(n, sizeof(float)), *b = fed_aligned_alloc(n, sizeof(float));
    double t[5], gbs = 0.0;
    if (a && b) {
        memset(a, 1, n * sizeof(float));
        memset(b, 2, n * sizeof(float));
        for (int k = 0; k < 5; k++) {
            double t0 = fed_now_s();
            memcpy(b, a, n * sizeof(float));
            t[k] = fed_now_s() - t0;
        }
        gbs = 2.0 * (double)n * sizeof(float) / bench_median(t, 5) / 1e9;
    }
    fed_free(a);
    fed_free(b);
    return gbs;
}

/* How many times the rule's close reads the spill (for the read rate; NaN: it varies). */
static double passes(fed_robust_rule rule) {
    switch (rule) {
    case FED_ROBUST_MEAN:
        return 0;
    case FED_ROBUST_RFA: /* one pass per Weiszfeld iteration: as many as it takes */
        return (double)NAN;
    default:
        return 1;
    }
}

int main(int argc, char **argv) {
    options o = {.params = 10e6, .updates = 100};
    if (!bench_parse("bench_robust", opt_table, NUM_OPTS, &o, argc, argv)) return 2;
    if (o.help) {
        bench_usage(stdout, "bench_robust", "robust rules: peak RSS and time per round", opt_table,
                    NUM_OPTS, &o);
        return 0;
    }
    size_t n = (size_t)o.params, m = (size_t)o.updates;
    double model_mb = (double)n * 4 / 1e6, cp = memcpy_gbs(n);
    printf("%zu updates of %zu floats (%.1f MB each, %.0f MB together); memcpy %.1f GB/s\n", m, n,
           model_mb, model_mb * (double)m, cp);
    printf("%-13s %10s %8s %9s %9s %9s %10s %9s\n", "rule", "peak RSS", "x model", "x all",
           "commit", "close", "read GB/s", "max err");
    char list[256];
    snprintf(list, sizeof list, "%s",
             o.rules ? o.rules : "mean,median,trimmed-mean,krum,multi-krum,norm,rfa");
    int bad = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        fed_robust_rule rule;
        if (fed_robust_parse(tok, &rule)) {
            fprintf(stderr, "bench_robust: %s\n", fed_errmsg());
            return 2;
        }
        result res;
        if (!in_child(&o, rule, &res)) {
            printf("%-13s failed\n", tok);
            bad = 1;
            continue;
        }
        double rate = passes(rule) * model_mb * (double)m / 1e3 / res.close_s;
        printf("%-13s %7.0f MB %7.2fx %8.3fx %8.2fs %8.2fs %10.2f %9.1e\n", tok, res.peak_mb,
               res.peak_mb / model_mb, res.peak_mb / (model_mb * (double)m), res.commit_s,
               res.close_s, rate, res.max_err);
        if (!(res.max_err <= 1e-5)) bad = 1;
        fflush(stdout);
    }
    return bad;
}
