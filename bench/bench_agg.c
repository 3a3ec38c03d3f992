/* bench_agg: how fast and how lean the coordinator's streaming aggregator (core/
 * aggregate.h) folds client updates, against references measured in the same run.
 *
 * Three parts:
 *   memory     in a fresh child process per slot count, 32 simulated uploads of a
 *              100 MB model go through the aggregator beside the global model and a
 *              FedAvg step, and the child's peak RSS (getrusage ru_maxrss) is compared
 *              with the model size (goal: < 4x);
 *   throughput N updates of P floats are written in 1 MiB chunks (from a pool of 8
 *              receive buffers, as the transport's credit window delivers them) and
 *              committed; the time per update is compared with one STREAM triad
 *              a[i] = b[i] + s*c[i] over P floats, which moves exactly what an ideal
 *              fold sum += w*delta must move (goal: triad time / update time >= 0.7);
 *   precision  1000 updates folded in float32 against a double-precision reference.
 *
 * Uploads are interleaved chunk by chunk across the slots, as concurrent clients are.
 * Figures are medians of repeats; the machines are shared, so read the ratios. This is
 * not a test (ctest never runs it); it does check its own means against a double
 * reference so a broken fold cannot report a good speed. */
#include "bench/benchlib.h"
#include "coordinator/aggregate.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/err.h"
#include "core/rng.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEED        20261125u
#define POOL_CHUNKS 8 /* receive buffers cycled through, like 8 credits of 1 MiB */
#define MAX_REPEATS 51

/* ---- options: one table drives defaults, parsing, validation and --help ------------ */

typedef struct options {
    double size_mb;  /* model (update) size in MB of float32 */
    double clients;  /* updates per round */
    double chunk_kb; /* chunk size in KiB */
    double slots;    /* update slots of the throughput run (memory tries 1 and 2) */
    double repeats;  /* timed rounds; medians reported */
    double prec_n;   /* clients of the precision run (0: skip) */
    bool quick;      /* smaller sizes, fewer repeats */
    bool help;       /* print usage and exit */
} options;

static const bench_opt opt_table[] = {
    {"--size", BENCH_NUMBER, offsetof(options, size_mb), 1, 4000, "MB",
     "model size in MB (10^6 bytes) of float32"},
    {"--clients", BENCH_INTEGER, offsetof(options, clients), 1, 100000, "N", "updates per round"},
    {"--chunk", BENCH_INTEGER, offsetof(options, chunk_kb), 1, 65536, "KIB", "chunk size in KiB"},
    {"--slots", BENCH_INTEGER, offsetof(options, slots), 1, FED_AGG_MAX_SLOTS, "S",
     "update slots of the throughput run"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "R",
     "timed rounds (median reported)"},
    {"--precision-clients", BENCH_INTEGER, offsetof(options, prec_n), 0, 100000, "N",
     "updates of the float-vs-double run (0: skip)"},
    {"--quick", BENCH_FLAG, offsetof(options, quick), 0, 0, NULL,
     "smoke run: 10 MB model, 8 clients, 3 repeats, 100 precision clients"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "print this help"},
};
#define NUM_OPTS (sizeof opt_table / sizeof opt_table[0])

static options default_options(void) {
    options o = {
        .size_mb = 100, .clients = 32, .chunk_kb = 1024, .slots = 2, .repeats = 5, .prec_n = 1000};
    return o;
}

static void usage(FILE *f) {
    options d = default_options();
    bench_usage(f, "bench_agg",
                "Peak RSS of a coordinator folding uploads (vs the model size), fold\n"
                "throughput (vs a STREAM triad of the same size, same run), and float32\n"
                "accuracy of the weighted mean (vs double).",
                opt_table, NUM_OPTS, &d);
}

static bool parse_args(options *o, int argc, char **argv) {
    *o = default_options();
    bool quick = false;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) quick = true;
    if (quick) { /* first, so explicit options still override it */
        o->size_mb = 10;
        o->clients = 8;
        o->repeats = 3;
        o->prec_n = 100;
    }
    return bench_parse("bench_agg", opt_table, NUM_OPTS, o, argc, argv);
}

/* ---- helpers ------------------------------------------------------------------------ */

/* Peak resident set of this process in bytes (Linux reports KiB). */
static double peak_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return 1024.0 * (double)ru.ru_maxrss;
}

static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1.0;
    double l;
    if (fscanf(f, "%lf", &l) != 1) l = -1.0;
    fclose(f);
    return l;
}

static int fail_with(const char *what, fed_err err) {
    fprintf(stderr, "bench_agg: %s: %s\n", what, fed_errdetail(err));
    return 1;
}

/* The STREAM triad, kept out of line so the timed loop is exactly this. */
__attribute__((noinline)) static void triad(size_t n, float *restrict a, const float *restrict b,
                                            const float *restrict c, float s) {
    for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

/* ---- one simulated round ------------------------------------------------------------- */

/* The receive side of the transport: a pool of chunk buffers the uploads arrive in. */
typedef struct feeder {
    size_t n;     /* floats per update */
    size_t chunk; /* floats per chunk */
    float *pool;  /* (POOL_CHUNKS, chunk) chunk contents, small values like deltas */
} feeder;

/* The values client k sends as chunk j: one of the pool buffers. */
static const float *chunk_of(const feeder *f, size_t k, size_t j) {
    return f->pool + ((k + j) % POOL_CHUNKS) * f->chunk;
}

static float weight_of(size_t k) {
    return (float)(100 + k % 900); /* example counts */
}

typedef struct round_times {
    double write, commit; /* seconds in fed_agg_slot_write and fed_agg_slot_commit */
} round_times;

/* Folds `clients` updates through agg, as many in flight as it has slots, interleaved
 * one chunk at a time; adds the time spent in the aggregator calls to *t. */
static fed_err serve_round(fed_agg *agg, const feeder *f, size_t clients, round_times *t) {
    struct upload {
        fed_agg_slot slot; /* FED_AGG_NO_SLOT: idle */
        size_t client;     /* whose update */
        size_t done;       /* values sent */
    } up[FED_AGG_MAX_SLOTS] = {{0}};
    size_t next = 0, finished = 0;
    fed_err err;
    while (finished < clients) {
        for (size_t u = 0; u < FED_AGG_MAX_SLOTS && next < clients; u++) {
            if (up[u].slot != FED_AGG_NO_SLOT) continue;
            err = fed_agg_slot_open(agg, &up[u].slot, weight_of(next));
            if (err == FED_EAGAIN) break; /* all slots busy: the upload waits */
            if (err) return err;
            up[u].client = next++;
            up[u].done = 0;
        }
        for (size_t u = 0; u < FED_AGG_MAX_SLOTS; u++) {
            if (up[u].slot == FED_AGG_NO_SLOT) continue;
            size_t len = f->n - up[u].done < f->chunk ? f->n - up[u].done : f->chunk;
            const float *src = chunk_of(f, up[u].client, up[u].done / f->chunk);
            double t0 = fed_now_s();
            err = fed_agg_slot_write(agg, up[u].slot, up[u].done, src, len);
            double t1 = fed_now_s();
            t->write += t1 - t0;
            if (err) return err;
            up[u].done += len;
            if (up[u].done == f->n) {
                err = fed_agg_slot_commit(agg, up[u].slot, 0.0);
                t->commit += fed_now_s() - t1;
                if (err) return err;
                up[u].slot = FED_AGG_NO_SLOT;
                finished++;
            }
        }
    }
    return FED_OK;
}

/* Checks a sample of the mean against the weighted mean computed in double. */
static bool mean_ok(const feeder *f, const float *mean, size_t clients) {
    fed_rng r = fed_rng_stream(SEED, 99);
    double W = 0.0;
    for (size_t k = 0; k < clients; k++) W += (double)weight_of(k);
    for (int s = 0; s < 200; s++) {
        size_t i = (size_t)fed_rng_below(&r, f->n);
        double ref = 0.0;
        for (size_t k = 0; k < clients; k++)
            ref += (double)weight_of(k) * (double)chunk_of(f, k, i / f->chunk)[i % f->chunk];
        ref /= W;
        if (!(fabs((double)mean[i] - ref) <= 1e-5 * 1e-3 + 1e-5 * fabs(ref))) {
            fprintf(stderr, "bench_agg: mean[%zu] = %.9g, expected %.9g\n", i, (double)mean[i],
                    ref);
            return false;
        }
    }
    return true;
}

static fed_err feeder_init(feeder *f, size_t n, size_t chunk) {
    f->n = n;
    f->chunk = chunk;
    f->pool = fed_aligned_alloc(POOL_CHUNKS * chunk, sizeof(float));
    if (!f->pool) return FED_ENOMEM;
    fed_rng r = fed_rng_stream(SEED, 1);
    for (size_t i = 0; i < POOL_CHUNKS * chunk; i++)
        f->pool[i] = 1e-3f * (2.0f * fed_rng_uniform(&r) - 1.0f);
    return FED_OK;
}

/* ---- part 1: peak RSS in a fresh child ------------------------------------------------ */

/* Child body: the coordinator's big buffers (global model, aggregator, receive pool,
 * strategy state), one round of `clients` uploads, the mean, the server step. Prints
 * one table row. */
static int memory_child(size_t n, size_t chunk, size_t clients, size_t slots,
                        fed_strategy_kind kind) {
    double base = peak_rss();
    fed_agg *agg = NULL;
    fed_strategy *strat = NULL;
    feeder f = {0};
    fed_strategy_config sc = fed_strategy_defaults(kind);
    float *w = fed_aligned_alloc(n, sizeof(float));
    fed_err err = w ? FED_OK : FED_ENOMEM;
    if (!err) {
        memset(w, 0, n * sizeof(float)); /* a loaded model is resident */
        err = fed_agg_new(&agg, n, slots);
    }
    if (!err) err = fed_strategy_new(&strat, &sc, n);
    if (!err) err = feeder_init(&f, n, chunk);
    round_times t = {0};
    if (!err) err = serve_round(agg, &f, clients, &t);
    const float *mean = NULL;
    if (!err) err = fed_agg_result(agg, &mean);
    if (err) return fail_with("memory run", err);
    fed_strategy_step(strat, w, mean);
    bool ok = mean_ok(&f, mean, clients);
    double peak = peak_rss(), model = (double)n * sizeof(float);
    printf("%-8s %5zu %7zu %10.1f %10.1f %9.2fx %10.2fx  %s\n", fed_strategy_name(kind), slots,
           clients, model / 1e6, peak / 1e6, peak / model, (peak - base) / model,
           ok ? "mean ok" : "MEAN WRONG");
    fflush(stdout);
    fed_free(f.pool);
    fed_free(w);
    fed_agg_destroy(&agg);
    fed_strategy_destroy(&strat);
    return ok ? 0 : 1;
}

static int memory_part(size_t n, size_t chunk, size_t clients) {
    printf("memory: %zu uploads, each run in a fresh process holding the global model, the\n"
           "aggregator, %d receive chunks and the strategy's state\n\n",
           clients, POOL_CHUNKS);
    printf("%-8s %5s %7s %10s %10s %10s %11s\n", "strategy", "slots", "uploads", "model MB",
           "peak MB", "peak/model", "added/model");
    printf("%-8s %5s %7s %10s %10s %10s %11s\n", "--------", "-----", "-------", "--------",
           "-------", "----------", "-----------");
    fflush(stdout);
    static const struct {
        fed_strategy_kind kind;
        size_t slots;
    } runs[] = {{FED_STRATEGY_FEDAVG, 1},
                {FED_STRATEGY_FEDAVG, 2},
                {FED_STRATEGY_FEDAVGM, 1},
                {FED_STRATEGY_FEDADAM, 1}};
    for (size_t ri = 0; ri < sizeof runs / sizeof runs[0]; ri++) {
        size_t slots = runs[ri].slots;
        pid_t pid = fork();
        if (pid < 0) {
            perror("bench_agg: fork");
            return 1;
        }
        if (pid == 0) _exit(memory_child(n, chunk, clients, slots, runs[ri].kind));
        int status;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_agg: memory run with %zu slots failed\n", slots);
            return 1;
        }
    }
    printf("\npeak/model counts everything resident (including the program, libraries and\n"
           "the OpenBLAS buffers); added/model only what the run added to it.\n\n");
    return 0;
}

/* ---- part 2: throughput against the triad ---------------------------------------------- */

static int throughput_part(size_t n, size_t chunk, size_t clients, size_t slots, size_t R) {
    fed_agg *agg = NULL;
    feeder f = {0};
    fed_err err = fed_agg_new(&agg, n, slots);
    if (!err) err = feeder_init(&f, n, chunk);
    float *a = fed_aligned_alloc(n, sizeof(float));
    float *b = fed_aligned_alloc(n, sizeof(float));
    float *c = fed_aligned_alloc(n, sizeof(float));
    if (!err && (!a || !b || !c)) err = FED_ENOMEM;
    if (err) return fail_with("throughput run", err);
    for (size_t i = 0; i < n; i++) {
        a[i] = 0.0f;
        b[i] = 1.0f;
        c[i] = 2.0f;
    }
    printf("throughput: %zu updates of %zu floats (%.1f MB) per round, %zu KiB chunks, %zu\n"
           "slots; triad a = b + s*c over the same %zu floats (3 arrays); medians of %zu\n\n",
           clients, n, 4e-6 * (double)n, chunk * sizeof(float) / 1024, slots, n, R);
    printf("%6s %10s %9s %11s %11s %11s %11s %7s\n", "repeat", "triad ms", "triad GB/s",
           "update ms", "write ms", "commit ms", "delta GB/s", "ratio");
    printf("%6s %10s %9s %11s %11s %11s %11s %7s\n", "------", "--------", "----------",
           "---------", "--------", "---------", "----------", "-----");
    double tri[MAX_REPEATS], upd[MAX_REPEATS], wr[MAX_REPEATS], cm[MAX_REPEATS], rat[MAX_REPEATS];
    /* One untimed round and triad first: caches, OpenBLAS, page tables settle. */
    round_times t = {0};
    triad(n, a, b, c, 0.5f);
    if ((err = serve_round(agg, &f, clients, &t))) return fail_with("round", err);
    const float *mean = NULL;
    bool ok = true;
    for (size_t rep = 0; rep < R && ok; rep++) {
        double t0 = fed_now_s();
        triad(n, a, b, c, 0.5f + (float)rep);
        tri[rep] = fed_now_s() - t0;
        fed_agg_begin_round(agg);
        t = (round_times){0};
        t0 = fed_now_s();
        if ((err = serve_round(agg, &f, clients, &t))) return fail_with("round", err);
        upd[rep] = (fed_now_s() - t0) / (double)clients;
        wr[rep] = t.write / (double)clients;
        cm[rep] = t.commit / (double)clients;
        rat[rep] = tri[rep] / upd[rep];
        printf("%6zu %10.2f %9.1f %11.2f %11.2f %11.2f %11.1f %7.2f\n", rep + 1, 1e3 * tri[rep],
               12.0 * (double)n / tri[rep] / 1e9, 1e3 * upd[rep], 1e3 * wr[rep], 1e3 * cm[rep],
               4.0 * (double)n / upd[rep] / 1e9, rat[rep]);
        fflush(stdout);
        if ((err = fed_agg_result(agg, &mean))) return fail_with("result", err);
        ok = mean_ok(&f, mean, clients);
    }
    double t0 = fed_now_s();
    fed_agg_begin_round(agg);
    double t_begin = fed_now_s() - t0;
    if ((err = serve_round(agg, &f, clients, &t))) return fail_with("round", err);
    t0 = fed_now_s();
    if ((err = fed_agg_result(agg, &mean))) return fail_with("result", err);
    double t_result = fed_now_s() - t0;
    double mt = bench_median(tri, R), mu = bench_median(upd, R);
    printf("%6s %10.2f %9.1f %11.2f %11.2f %11.2f %11.1f %7.2f  %s\n", "median", 1e3 * mt,
           12.0 * (double)n / mt / 1e9, 1e3 * mu, 1e3 * bench_median(wr, R),
           1e3 * bench_median(cm, R), 4.0 * (double)n / mu / 1e9, bench_median(rat, R),
           ok ? "(means checked)" : "MEAN WRONG");
    printf("\nper round besides the updates: begin_round (zero the sum) %.2f ms, result\n"
           "(scale to the mean) %.2f ms.\n"
           "triad GB/s counts 12 bytes per element (STREAM); delta GB/s counts the 4 bytes\n"
           "per element of the updates; ratio = triad time / time per update, i.e. how close\n"
           "one fold comes to a single memory-bound pass (sum += w*delta is a triad).\n\n",
           1e3 * t_begin, 1e3 * t_result);
    fed_free(a);
    fed_free(b);
    fed_free(c);
    fed_free(f.pool);
    fed_agg_destroy(&agg);
    return ok ? 0 : 1;
}

/* ---- part 3: float32 sum against double ---------------------------------------------- */

static int precision_part(size_t clients, size_t chunk) {
    const size_t n = (size_t)1 << 18;
    if (chunk > n) chunk = n;
    fed_agg *agg = NULL;
    fed_err err = fed_agg_new(&agg, n, 1);
    double *ref = fed_calloc(n, sizeof(double));
    float *signal = fed_aligned_alloc(n, sizeof(float));
    float *buf = fed_aligned_alloc(chunk, sizeof(float));
    if (!err && (!ref || !signal || !buf)) err = FED_ENOMEM;
    if (err) return fail_with("precision run", err);
    /* Deltas = a shared direction + per-client noise of the same size, as clients that
     * train on different data produce; weights are example counts 100..999. */
    fed_rng r = fed_rng_stream(SEED, 2);
    for (size_t i = 0; i < n; i++) signal[i] = 1e-3f * (2.0f * fed_rng_uniform(&r) - 1.0f);
    double W = 0.0;
    for (size_t k = 0; k < clients; k++) {
        fed_rng rk = fed_rng_stream(SEED + 1, k);
        float w = (float)(100 + fed_rng_below(&rk, 900));
        W += (double)w;
        fed_agg_slot s;
        if ((err = fed_agg_slot_open(agg, &s, w))) return fail_with("open", err);
        for (size_t off = 0; off < n; off += chunk) {
            size_t len = n - off < chunk ? n - off : chunk;
            for (size_t i = 0; i < len; i++) {
                buf[i] = signal[off + i] + 1e-3f * (2.0f * fed_rng_uniform(&rk) - 1.0f);
                ref[off + i] += (double)w * (double)buf[i];
            }
            if ((err = fed_agg_slot_write(agg, s, off, buf, len))) return fail_with("write", err);
        }
        if ((err = fed_agg_slot_commit(agg, s, 0.0))) return fail_with("commit", err);
    }
    const float *mean = NULL;
    if ((err = fed_agg_result(agg, &mean))) return fail_with("result", err);
    double max_err = 0.0, sq_err = 0.0, sq_ref = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double m = ref[i] / W, e = fabs((double)mean[i] - m);
        if (e > max_err) max_err = e;
        if (fabs(m) > max_ref) max_ref = fabs(m);
        sq_err += e * e;
        sq_ref += m * m;
    }
    printf("precision: %zu updates of %zu floats folded in float32 vs a double reference\n"
           "  rms error / rms mean  %.2e\n  max error / max |mean| %.2e   (float32 epsilon "
           "%.2e)\n",
           clients, n, sqrt(sq_err / sq_ref), max_err / max_ref, (double)FLT_EPSILON);
    fed_free(ref);
    fed_free(signal);
    fed_free(buf);
    fed_agg_destroy(&agg);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    options o;
    if (!parse_args(&o, argc, argv)) return 2;
    if (o.help) {
        usage(stdout);
        return 0;
    }
    /* The coordinator folds on its event-loop thread; measure that. */
    fed_blas_set_threads(1);
    size_t n = (size_t)(o.size_mb * 1e6 / sizeof(float));
    size_t chunk = (size_t)o.chunk_kb * 1024 / sizeof(float);

    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", gmtime(&t));
    printf("fedtune bench_agg, %s UTC\n", date);
    printf("OpenBLAS: %s, 1 thread\n", fed_blas_config());
    printf("load average (1 min) at start: %.2f on %ld CPUs\n\n", load_average(),
           sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);

    if (memory_part(n, chunk, 32)) return 1;
    if (throughput_part(n, chunk, (size_t)o.clients, (size_t)o.slots, (size_t)o.repeats)) return 1;
    if (o.prec_n > 0 && precision_part((size_t)o.prec_n, chunk)) return 1;
    printf("\nload average (1 min) at end: %.2f\n", load_average());
    return 0;
}
