/* bench_core: how fast fedcore trains the two FedAvg models (McMahan et al. 2017) on one
 * machine, and how that compares with the machine's own sgemm peak measured in the same
 * run. For each model (2NN, CNN), batch size (10, 64) and OpenBLAS thread count (1, 2) it
 * times whole fed_train_step calls (forward, softmax cross-entropy, backward, plain SGD
 * at lr 0.01) on random inputs and labels from a fixed seed, and prints one row of an
 * aligned table: time per example, examples per second, achieved GFLOP/s (the GEMM FLOPs
 * the step really runs) and the fraction of the sgemm peak for that thread count.
 *
 * Every figure is the median of several timed repeats after a warm-up; the spread column
 * says how far the repeats disagreed, because the machines are shared. This is not a
 * test (ctest never runs it) and checks nothing about correctness: tests/ does that. */
#include "bench/benchlib.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/err.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/rng.h"
#include "core/train.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEED 20261124u
/* Distinct random batches cycled through, so the step never sees one batch forever. */
#define NUM_BATCHES   8
#define LEARNING_RATE 0.01f
#define MAX_REPEATS   101

static const char *const default_models[] = {"fedavg-2nn", "fedavg-cnn"};
static const size_t default_batches[] = {10, 64};
static const int default_threads[] = {1, 2};
static const size_t default_gemm_sizes[] = {1024, 2048};

/* ---- options: one table drives defaults, parsing, validation and --help ------------ */

typedef struct options {
    double seconds;    /* minimum wall time of one timed repeat */
    double repeats;    /* timed repeats per configuration; the median is reported */
    double batch;      /* only this batch size (0: 10 and 64) */
    double threads;    /* only this OpenBLAS thread count (0: 1 and 2) */
    const char *model; /* only this preset or JSON spec (NULL: both FedAvg models) */
    bool quick;        /* short repeats, one gemm size: a smoke run */
    bool no_sgemm;     /* skip the sgemm reference (to profile the steps alone) */
    bool help;         /* print usage and exit */
} options;

static const bench_opt opt_table[] = {
    {"--seconds", BENCH_NUMBER, offsetof(options, seconds), 0.001, 60.0, "S",
     "minimum time of each timed repeat"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "R",
     "timed repeats per configuration (median reported)"},
    {"--model", BENCH_STRING, offsetof(options, model), 0, 0, "SPEC",
     "only this preset or JSON architecture (default: fedavg-2nn and fedavg-cnn)"},
    {"--batch", BENCH_INTEGER, offsetof(options, batch), 0, 4096, "N",
     "only this batch size (default 0: 10 and 64)"},
    {"--threads", BENCH_INTEGER, offsetof(options, threads), 0, 64, "T",
     "only this OpenBLAS thread count (default 0: 1 and 2)"},
    {"--quick", BENCH_FLAG, offsetof(options, quick), 0, 0, NULL,
     "smoke run: 0.05 s repeats, 3 repeats, sgemm n=1024 only"},
    {"--no-sgemm", BENCH_FLAG, offsetof(options, no_sgemm), 0, 0, NULL,
     "skip the sgemm reference, e.g. under perf record (%peak shows -)"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "print this help"},
};
#define NUM_OPTS (sizeof opt_table / sizeof opt_table[0])

static options default_options(void) {
    options o = {.seconds = 0.5, .repeats = 5, .batch = 0, .threads = 0, .model = NULL};
    return o;
}

static void usage(FILE *f) {
    options d = default_options();
    bench_usage(f, "bench_core",
                "Times fed_train_step (forward + backward + SGD) per example for the FedAvg 2NN\n"
                "and CNN and compares it with this machine's sgemm peak (same run, same\n"
                "thread count).",
                opt_table, NUM_OPTS, &d);
}

/* Parses argv into *o; on a bad argument prints why and returns false. */
static bool parse_args(options *o, int argc, char **argv) {
    *o = default_options();
    if (!bench_parse("bench_core", opt_table, NUM_OPTS, o, argc, argv)) return false;
    if (o->quick) {
        o->seconds = 0.05;
        o->repeats = 3;
    }
    return true;
}

/* ---- timing ------------------------------------------------------------------------ */

/* Median, minimum and maximum of v[0..n) (sorts v). */
typedef struct summary {
    double median, min, max;
} summary;

static summary summarize(double *v, size_t n) {
    double med = bench_median(v, n); /* sorts v */
    summary s = {med, v[0], v[n - 1]};
    return s;
}

/* ---- training step ------------------------------------------------------------------ */

/* Everything one configuration trains with. */
typedef struct trainer {
    fed_model *m;         /* the model, initialised from SEED */
    fed_optim *opt;       /* plain SGD */
    fed_arena *arena;     /* per-step scratch */
    float *x;             /* (NUM_BATCHES * batch, in) inputs in [0, 1) */
    int32_t *labels;      /* (NUM_BATCHES * batch) class ids */
    size_t batch;         /* examples per step */
    size_t in;            /* floats per example */
    size_t k;             /* steps taken so far */
    fed_rng drop;         /* for dropout layers, if a spec has any */
    fed_step_stats stats; /* of the last step */
} trainer;

static void trainer_destroy(trainer *t) {
    fed_free(t->x);
    fed_free(t->labels);
    fed_arena_destroy(&t->arena);
    fed_optim_destroy(&t->opt);
    fed_model_destroy(&t->m);
}

static fed_err trainer_init(trainer *t, const char *spec, size_t batch) {
    memset(t, 0, sizeof *t);
    fed_arch *arch = NULL;
    fed_err err;
    if ((err = fed_arch_parse(&arch, spec))) goto fail;
    if ((err = fed_model_new(&t->m, arch))) goto fail;
    fed_model_init(t->m, SEED);
    fed_optim_config oc = fed_optim_defaults(FED_OPT_SGD);
    if ((err = fed_optim_new(&t->opt, t->m, &oc))) goto fail;
    if ((err = fed_arena_new(&t->arena, 0))) goto fail;

    t->batch = batch;
    t->in = fed_model_input_size(t->m);
    size_t classes = fed_model_output_size(t->m), nex, nx;
    err = FED_ENOMEM;
    if (!fed_mul_ok(batch, NUM_BATCHES, &nex) || !fed_mul_ok(nex, t->in, &nx)) goto fail;
    t->x = fed_aligned_alloc(nx, sizeof(float));
    t->labels = fed_mallocarray(nex, sizeof *t->labels);
    if (!t->x || !t->labels) goto fail;
    fed_rng r = fed_rng_stream(SEED, batch);
    for (size_t i = 0; i < nx; i++) t->x[i] = fed_rng_uniform(&r);
    for (size_t i = 0; i < nex; i++) t->labels[i] = (int32_t)fed_rng_below(&r, classes);
    t->drop = fed_rng_stream(SEED, 1000);
    err = FED_OK;
fail:
    fed_arch_destroy(&arch);
    if (err) trainer_destroy(t);
    return err;
}

/* One fed_train_step on the next of the NUM_BATCHES batches. */
static fed_err trainer_step(trainer *t) {
    size_t j = t->k++ % NUM_BATCHES;
    fed_batch b = {t->x + j * t->batch * t->in, t->labels + j * t->batch, NULL, t->batch};
    fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.0f};
    return fed_train_step(t->m, t->opt, t->arena, &b, &loss, LEARNING_RATE, &t->drop, &t->stats);
}

typedef struct step_result {
    summary us_per_example; /* microseconds per example over the repeats */
    double cpu_us;          /* median process CPU microseconds per example */
    double flops;           /* per example: forward + backward as run */
    double last_loss;       /* loss of the last step: finite, or the figures are suspect */
} step_result;

/* CPU time of the whole process (all OpenBLAS threads): on a shared machine, time taken
 * away by other processes does not count, so one thread's figure is steadier than the
 * wall clock (cache and memory-bandwidth contention still show). */
static double cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static fed_err time_train_step(const char *spec, size_t batch, const options *o, step_result *res) {
    trainer t;
    fed_err err = trainer_init(&t, spec, batch);
    if (err) return err;
    res->flops = fed_model_train_flops(t.m);
    /* Warm-up: the arena settles into one block, pages are touched, caches filled. */
    double t0 = fed_now_s();
    do {
        if ((err = trainer_step(&t))) goto fail;
    } while (t.k < 3 || fed_now_s() - t0 < 0.5 * o->seconds);

    double us[MAX_REPEATS], cpu[MAX_REPEATS];
    size_t R = (size_t)o->repeats;
    for (size_t rep = 0; rep < R; rep++) {
        size_t k0 = t.k;
        double start = fed_now_s(), cpu0 = cpu_seconds(), el;
        do {
            if ((err = trainer_step(&t))) goto fail;
        } while ((el = fed_now_s() - start) < o->seconds);
        double n = (double)((t.k - k0) * batch);
        us[rep] = el * 1e6 / n;
        cpu[rep] = (cpu_seconds() - cpu0) * 1e6 / n;
    }
    res->us_per_example = summarize(us, R);
    res->cpu_us = bench_median(cpu, R);
    res->last_loss = t.stats.loss;
fail:
    trainer_destroy(&t);
    return err;
}

/* The 1-minute load average from /proc/loadavg, or -1 where there is none: the machines
 * are shared, and a busy neighbour explains a slow row better than any guess. */
static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1.0;
    double l;
    if (fscanf(f, "%lf", &l) != 1) l = -1.0;
    fclose(f);
    return l;
}

/* ---- main --------------------------------------------------------------------------- */

static int fail_with(const char *what, fed_err err) {
    fprintf(stderr, "bench_core: %s: %s\n", what, fed_errdetail(err));
    return 1;
}

int main(int argc, char **argv) {
    options o;
    if (!parse_args(&o, argc, argv)) return 2;
    if (o.help) {
        usage(stdout);
        return 0;
    }

    const char *const *models = default_models;
    size_t nmodels = sizeof default_models / sizeof default_models[0];
    if (o.model) {
        models = &o.model;
        nmodels = 1;
    }
    size_t one_batch = (size_t)o.batch;
    const size_t *batches = default_batches;
    size_t nbatches = sizeof default_batches / sizeof default_batches[0];
    if (one_batch) {
        batches = &one_batch;
        nbatches = 1;
    }
    int one_thread = (int)o.threads;
    const int *threads = default_threads;
    size_t nthreads = sizeof default_threads / sizeof default_threads[0];
    if (one_thread) {
        threads = &one_thread;
        nthreads = 1;
    }
    size_t ngemm = o.quick ? 1 : sizeof default_gemm_sizes / sizeof default_gemm_sizes[0];
    if (o.no_sgemm) ngemm = 0;

    const char *coretype = getenv("OPENBLAS_CORETYPE");
    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", gmtime(&t));
    printf("fedtune bench_core, %s UTC\n", date);
    printf("OpenBLAS: %s (OPENBLAS_CORETYPE=%s)\n", fed_blas_config(),
           coretype ? coretype : "unset");
    printf("one step = fed_train_step (forward + softmax CE + backward + SGD lr %g);\n"
           "FLOPs/example = forward + weight and input gradients as computed (the first\n"
           "layer's input gradient is skipped); median of %d repeats of >= %.2f s each\n",
           (double)LEARNING_RATE, (int)o.repeats, o.seconds);
    printf("load average (1 min) at start: %.2f on %ld CPUs\n\n", load_average(),
           sysconf(_SC_NPROCESSORS_ONLN));

    printf("%-12s %5s %7s %11s %11s %9s %7s %7s %10s\n", "model", "batch", "threads", "us/example",
           "examples/s", "GFLOP/s", "%peak", "spread", "cpu us/ex");
    printf("%-12s %5s %7s %11s %11s %9s %7s %7s %10s\n", "------------", "-----", "-------",
           "----------", "----------", "-------", "-----", "------", "---------");
    for (size_t ti = 0; ti < nthreads; ti++) {
        fed_blas_set_threads(threads[ti]);
        double peak = 0.0;
        for (size_t gi = 0; gi < ngemm; gi++) {
            size_t n = default_gemm_sizes[gi];
            double g;
            fed_err err = bench_sgemm_gflops(n, o.seconds, (size_t)o.repeats, &g);
            if (err) return fail_with("sgemm", err);
            char label[32];
            snprintf(label, sizeof label, "sgemm n=%zu", n);
            printf("%-12s %5s %7d %11s %11s %9.1f %7s %7s\n", label, "-", fed_blas_threads(), "-",
                   "-", g, "ref", "-");
            if (g > peak) peak = g;
        }
        for (size_t mi = 0; mi < nmodels; mi++) {
            for (size_t bi = 0; bi < nbatches; bi++) {
                step_result r = {{0.0, 0.0, 0.0}, 0.0, 0.0, 0.0};
                fed_err err = time_train_step(models[mi], batches[bi], &o, &r);
                if (err) return fail_with(models[mi], err);
                double us = r.us_per_example.median;
                double gflops = r.flops / (us * 1e3);
                double spread = 100.0 * (r.us_per_example.max - r.us_per_example.min) / us;
                char pct[16] = "-";
                if (peak > 0.0) snprintf(pct, sizeof pct, "%.1f%%", 100.0 * gflops / peak);
                printf("%-12.12s %5zu %7d %11.1f %11.0f %9.2f %7s %6.0f%% %10.1f%s\n", models[mi],
                       batches[bi], fed_blas_threads(), us, 1e6 / us, gflops, pct, spread, r.cpu_us,
                       isfinite(r.last_loss) ? "" : "  (loss not finite!)");
                fflush(stdout);
            }
        }
    }
    printf("\nsgemm rows: GFLOP/s = 2 n^3 / t; %%peak = GFLOP/s over the best sgemm row with\n"
           "the same thread count; spread = (slowest - fastest repeat) / median;\n"
           "cpu us/ex = median process CPU time per example (all threads; with 1 thread\n"
           "the figure a busy machine disturbs least).\n"
           "load average (1 min) at end: %.2f (this run itself adds up to the thread count)\n",
           load_average());
    return 0;
}
